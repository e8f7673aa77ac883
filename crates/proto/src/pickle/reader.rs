//! Bounded pickle opcode reader (data subset only).
//!
//! Reading happens in two passes over the bytes, both iterative:
//!
//! 1. [`Reader::scan`] walks the opcodes without building anything. It finds
//!    the STOP that ends the pickle (or says how many bytes are missing, so a
//!    stream decoder need not retry before they arrive), rejects forbidden
//!    opcodes before any value exists, and notes which memo keys are ever
//!    read back (GET).
//! 2. [`Reader::build`] runs the opcodes on an explicit stack and produces a
//!    [`Value`]. Nothing is ever imported, called or constructed beyond plain
//!    data.
//!
//! Python's memo shares objects: `[x, x]` refers to one list twice. We copy
//! instead (a tree, not a graph): a memoized value is cloned when it is read
//! back, and every cloned value counts against `max_items`, so "billion
//! laughs" input stays bounded. Because pass 1 knows which keys are read,
//! values nobody reads back are never copied. A container that ends up
//! inside itself (a recursive structure) is rejected.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

use super::Value;
use super::opcodes::{self as op, name};

/// Why a pickle was refused. The `Display` text goes to the user in ERROR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    #[error("the pickle ends before its STOP opcode")]
    Truncated,
    #[error("opcode {name} ({code:#04x}) is not allowed: pickles must carry data only")]
    ForbiddenOpcode { name: &'static str, code: u8 },
    #[error("byte {0:#04x} is not a pickle opcode")]
    UnknownOpcode(u8),
    #[error("opcode {name} ({code:#04x}) is not supported: {why}")]
    Unsupported {
        name: &'static str,
        code: u8,
        why: &'static str,
    },
    #[error("pickle protocol {0} is not supported (protocols 0 to 5 are)")]
    UnsupportedProtocol(u8),
    #[error("values are nested more than {max} levels deep")]
    TooDeep { max: usize },
    #[error("the pickle holds more than {max} values")]
    TooManyItems { max: usize },
    #[error("integer does not fit in 64 bits")]
    IntegerTooLarge,
    #[error("memo key {0} is read before it is set")]
    BadMemo(u64),
    #[error("opcode {0} needs a value on the stack that is not there")]
    StackUnderflow(&'static str),
    #[error("opcode {0} needs a MARK before it")]
    NoMark(&'static str),
    #[error("opcode {opcode} needs a {expected} to add to, found {found}")]
    WrongTarget {
        opcode: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("a {0} cannot be a dict key (it is unhashable in Python)")]
    UnhashableKey(&'static str),
    #[error("recursive structures (a container inside itself) are not supported")]
    Recursive,
    /// Python would change every reference to the shared object; natter
    /// holds copies, so it refuses rather than read a different value.
    /// Python's pickler never writes this (it fills a container before any
    /// GET reads it back, recursion aside).
    #[error("a list or dict is changed after the memo shared it, which is not supported")]
    SharedMutation,
    #[error("bad argument to opcode {opcode}: {why}")]
    BadArgument {
        opcode: &'static str,
        why: &'static str,
    },
    #[error("bytes follow the pickle's STOP opcode")]
    TrailingBytes,
}

/// Where the pickle at the front of a buffer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// `buf[..end]` is one whole pickle, ending with STOP.
    Complete { end: usize },
    /// The pickle is cut short: the buffer must hold at least `need` bytes
    /// before scanning again can make progress.
    Incomplete { need: usize },
}

/// Finds where the pickle starting at `buf[0]` ends: `Ok(Some(n))` when
/// `buf[..n]` is a whole pickle (ending with STOP), `Ok(None)` when more
/// bytes are needed.
///
/// Depth and size are only checked when the pickle is decoded; the
/// arguments are kept for callers of the original signature.
pub fn find_end(
    buf: &[u8],
    max_depth: usize,
    max_items: usize,
) -> Result<Option<usize>, PickleError> {
    match Reader::new(max_depth, max_items).scan(buf)? {
        Scan::Complete { end } => Ok(Some(end)),
        Scan::Incomplete { .. } => Ok(None),
    }
}

/// Decodes one whole pickle: `buf` must end exactly at its STOP.
pub fn decode(buf: &[u8], max_depth: usize, max_items: usize) -> Result<Value, PickleError> {
    let mut reader = Reader::new(max_depth, max_items);
    match reader.read_prefix(buf)? {
        Some((value, end)) if end == buf.len() => Ok(value),
        Some(_) => Err(PickleError::TrailingBytes),
        None => Err(PickleError::Truncated),
    }
}

/// A reusable pickle reader. Keeping one per connection reuses its scratch
/// buffers, which matters on the hot path (a chat line is ~40 bytes).
#[derive(Debug)]
pub struct Reader {
    max_depth: usize,
    max_items: usize,
    /// Memo keys that some GET reads, sorted; filled by [`Reader::scan`].
    read_keys: Vec<u64>,
    /// Boxed and made on first use, so that a reader between pickles costs
    /// one pointer once its scratch space is released.
    machine: Option<Box<Machine>>,
}

impl Reader {
    pub fn new(max_depth: usize, max_items: usize) -> Self {
        Reader {
            max_depth,
            max_items,
            read_keys: Vec::new(),
            machine: None,
        }
    }

    /// Frees the scratch space kept between pickles: a server calls this
    /// when a connection goes idle, so that idle clients hold no heap.
    pub fn release_scratch(&mut self) {
        self.read_keys = Vec::new();
        self.machine = None;
    }

    /// Pass 1: where does the pickle at the front of `buf` end?
    pub fn scan(&mut self, buf: &[u8]) -> Result<Scan, PickleError> {
        self.read_keys.clear();
        let scan = scan(buf, &mut self.read_keys)?;
        self.read_keys.sort_unstable();
        self.read_keys.dedup();
        Ok(scan)
    }

    /// Pass 2: decodes `buf`, which [`Reader::scan`] just found to be one
    /// whole pickle. Returns the value and the bytes consumed.
    pub fn build(&mut self, buf: &[u8]) -> Result<(Value, usize), PickleError> {
        let machine = self.machine.get_or_insert_with(Box::default);
        let result = machine.run(buf, &self.read_keys, self.max_depth, self.max_items);
        machine.reset();
        result
    }

    /// Reads the pickle at the front of `buf`: `Ok(None)` when it is not all
    /// there yet, else the value and how many bytes it took.
    pub fn read_prefix(&mut self, buf: &[u8]) -> Result<Option<(Value, usize)>, PickleError> {
        match self.scan(buf)? {
            Scan::Complete { end } => self.build(&buf[..end]).map(Some),
            Scan::Incomplete { .. } => Ok(None),
        }
    }

    /// Reads a pickle known to end within `buf` (a framed body): the value
    /// and the bytes it took. Skips the scan pass when the pickle reads no
    /// memo entry, which is the common case; otherwise scans and rereads.
    pub fn read_complete(&mut self, buf: &[u8]) -> Result<(Value, usize), PickleError> {
        self.read_keys.clear();
        match self.build(buf) {
            Err(PickleError::BadMemo(_)) => match self.scan(buf)? {
                Scan::Complete { end } => self.build(&buf[..end]),
                Scan::Incomplete { .. } => Err(PickleError::Truncated),
            },
            other => other,
        }
    }
}

/// Bytes missing at the end of the buffer: `need` is the length the buffer
/// must reach.
struct Short {
    need: usize,
}

/// A position in the pickle's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn byte(&mut self) -> Result<u8, Short> {
        let b = *self.buf.get(self.pos).ok_or(Short { need: self.pos + 1 })?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.pos.saturating_add(n);
        let bytes = self.buf.get(self.pos..end).ok_or(Short { need: end })?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// The text up to the next `\n`, which is consumed but not returned.
    fn line(&mut self) -> Result<&'a [u8], Short> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        let len = rest.iter().position(|&b| b == b'\n').ok_or(Short {
            need: self.buf.len() + 1,
        })?;
        self.pos += len + 1;
        Ok(&rest[..len])
    }

    /// A length-prefixed argument whose length is `len_bytes` little-endian.
    fn counted(
        &mut self,
        len_bytes: usize,
        opcode: u8,
    ) -> Result<Result<&'a [u8], PickleError>, Short> {
        let len = match len_bytes {
            1 => u64::from(self.byte()?),
            4 => {
                let raw = self.array::<4>()?;
                if matches!(opcode, op::BINSTRING | op::LONG4) {
                    let signed = i32::from_le_bytes(raw);
                    if signed < 0 {
                        return Ok(Err(PickleError::BadArgument {
                            opcode: opname(opcode),
                            why: "negative length",
                        }));
                    }
                }
                u64::from(u32::from_le_bytes(raw))
            }
            _ => u64::from_le_bytes(self.array::<8>()?),
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        Ok(Ok(self.take(len)?))
    }
}

fn opname(code: u8) -> &'static str {
    name(code).unwrap_or("?")
}

/// Classifies an opcode byte that neither pass accepts.
fn refuse(code: u8) -> PickleError {
    match (op::is_forbidden(code), name(code)) {
        (true, Some(name)) => PickleError::ForbiddenOpcode { name, code },
        (_, Some(name)) if matches!(code, op::EMPTY_SET | op::ADDITEMS | op::FROZENSET) => {
            PickleError::Unsupported {
                name,
                code,
                why: "sets are not part of the protocol; send a list",
            }
        }
        _ => PickleError::UnknownOpcode(code),
    }
}

/// Pass 1: opcode boundaries only. Collects the memo keys GET reads.
fn scan(buf: &[u8], read_keys: &mut Vec<u64>) -> Result<Scan, PickleError> {
    let mut c = Cursor { buf, pos: 0 };
    match scan_ops(&mut c, read_keys) {
        Ok(result) => result,
        Err(Short { need }) => Ok(Scan::Incomplete { need }),
    }
}

fn scan_ops(
    c: &mut Cursor<'_>,
    read_keys: &mut Vec<u64>,
) -> Result<Result<Scan, PickleError>, Short> {
    loop {
        let code = c.byte()?;
        match code {
            op::STOP => return Ok(Ok(Scan::Complete { end: c.pos })),
            op::MARK
            | op::POP
            | op::POP_MARK
            | op::DUP
            | op::NONE
            | op::APPEND
            | op::APPENDS
            | op::DICT
            | op::EMPTY_DICT
            | op::LIST
            | op::EMPTY_LIST
            | op::SETITEM
            | op::SETITEMS
            | op::TUPLE
            | op::EMPTY_TUPLE
            | op::TUPLE1
            | op::TUPLE2
            | op::TUPLE3
            | op::NEWTRUE
            | op::NEWFALSE
            | op::MEMOIZE => {}
            op::INT | op::LONG | op::FLOAT | op::STRING | op::UNICODE | op::PUT => {
                c.line()?;
            }
            op::GET => match decimal_key(c.line()?, op::GET) {
                Ok(key) => read_keys.push(key),
                Err(e) => return Ok(Err(e)),
            },
            op::PROTO => {
                let version = c.byte()?;
                if version > op::HIGHEST_PROTOCOL {
                    return Ok(Err(PickleError::UnsupportedProtocol(version)));
                }
            }
            op::BININT1 | op::BINPUT => {
                c.take(1)?;
            }
            op::BINGET => read_keys.push(u64::from(c.byte()?)),
            op::BININT2 => {
                c.take(2)?;
            }
            op::BININT | op::LONG_BINPUT => {
                c.take(4)?;
            }
            op::LONG_BINGET => read_keys.push(u64::from(u32::from_le_bytes(c.array()?))),
            op::BINFLOAT | op::FRAME => {
                c.take(8)?;
            }
            op::LONG1 | op::SHORT_BINSTRING | op::SHORT_BINUNICODE | op::SHORT_BINBYTES => {
                if let Err(e) = c.counted(1, code)? {
                    return Ok(Err(e));
                }
            }
            op::LONG4 | op::BINSTRING | op::BINUNICODE | op::BINBYTES => {
                if let Err(e) = c.counted(4, code)? {
                    return Ok(Err(e));
                }
            }
            op::BINUNICODE8 | op::BINBYTES8 | op::BYTEARRAY8 => {
                if let Err(e) = c.counted(8, code)? {
                    return Ok(Err(e));
                }
            }
            other => return Ok(Err(refuse(other))),
        }
    }
}

/// One value on the build stack with what the bounds need to know about it.
#[derive(Debug)]
struct Entry {
    value: Value,
    /// This value and everything inside it.
    items: usize,
    /// 0 for scalars, 1 + the deepest child for containers.
    depth: u32,
    /// Unique per entry, so recursion can be recognised.
    id: u32,
    /// A container that a GET has copied, or that is such a copy: in
    /// Python both are one object, so neither may change any more.
    shared: bool,
    /// What only memo sharing and big dicts need, boxed so that the common
    /// entry stays small and cheap to move.
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Default)]
struct Extra {
    /// Ids of containers still being built of which this value holds a
    /// copy. Putting such a value into one of them would make it recursive.
    open_refs: Vec<u32>,
    /// For large dicts: hash of key → position, to replace duplicate keys
    /// without a quadratic search.
    dict_index: Option<HashMap<u64, usize>>,
}

impl Entry {
    fn open_refs(&self) -> &[u32] {
        self.extra.as_ref().map_or(&[], |e| &e.open_refs)
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }
}

/// A memo entry that some GET will read.
#[derive(Debug)]
enum Memo {
    /// The value still sits on the stack at this index (and may still grow).
    OnStack(usize),
    /// The value has left the stack; this is a copy of it as it was then.
    Saved {
        value: Value,
        depth: usize,
        items: usize,
        open_refs: Vec<u32>,
    },
}

/// Memo keys below this are stored in a vector; larger ones in a map.
const DENSE_MEMO_KEYS: u64 = 4096;

/// Pass 2's state, kept between pickles to reuse its allocations.
#[derive(Debug, Default)]
struct Machine {
    stack: Vec<Entry>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    dense_memo: Vec<Option<Memo>>,
    sparse_memo: HashMap<u64, Memo>,
    /// (memo key, stack index) for every `Memo::OnStack`.
    on_stack: Vec<(u64, usize)>,
    /// Distinct memo keys set so far: MEMOIZE uses it as the next key.
    memo_len: u64,
    items: usize,
    next_id: u32,
    hasher: Option<RandomState>,
}

/// Limits for one run of the machine.
struct Bounds<'k> {
    max_depth: usize,
    max_items: usize,
    read_keys: &'k [u64],
}

impl Machine {
    fn reset(&mut self) {
        self.stack.clear();
        self.marks.clear();
        self.dense_memo.clear();
        self.sparse_memo.clear();
        self.on_stack.clear();
        self.memo_len = 0;
        self.items = 0;
        self.next_id = 0;
    }

    fn run(
        &mut self,
        buf: &[u8],
        read_keys: &[u64],
        max_depth: usize,
        max_items: usize,
    ) -> Result<(Value, usize), PickleError> {
        let bounds = Bounds {
            max_depth,
            max_items,
            read_keys,
        };
        let mut c = Cursor { buf, pos: 0 };
        loop {
            let code = c.byte().map_err(|_| PickleError::Truncated)?;
            if code == op::STOP {
                let top = self.pop("STOP")?;
                return Ok((top.value, c.pos));
            }
            self.step(code, &mut c, &bounds)?;
        }
    }

    /// Runs one opcode (not STOP).
    fn step(&mut self, code: u8, c: &mut Cursor<'_>, b: &Bounds<'_>) -> Result<(), PickleError> {
        let short = |_: Short| PickleError::Truncated;
        match code {
            op::MARK => {
                if self.marks.len() >= b.max_depth {
                    return Err(PickleError::TooDeep { max: b.max_depth });
                }
                self.marks.push(self.stack.len());
            }
            op::POP => {
                if self.stack.len() > self.base() {
                    self.pop("POP")?;
                } else {
                    self.pop_mark("POP")?;
                }
            }
            op::POP_MARK => {
                self.pop_mark("POP_MARK")?;
            }
            op::DUP => {
                let top = self
                    .stack
                    .len()
                    .checked_sub(1)
                    .filter(|&i| i >= self.base());
                let index = top.ok_or(PickleError::StackUnderflow("DUP"))?;
                self.push_copy_of_slot(index, b)?;
            }
            op::NONE => self.push_scalar(Value::None, b)?,
            op::NEWTRUE => self.push_scalar(Value::Bool(true), b)?,
            op::NEWFALSE => self.push_scalar(Value::Bool(false), b)?,
            op::INT => {
                let value = match c.line().map_err(short)? {
                    b"01" => Value::Bool(true),
                    b"00" => Value::Bool(false),
                    text => Value::Int(decimal_int(text, op::INT)?),
                };
                self.push_scalar(value, b)?;
            }
            op::LONG => {
                let text = c.line().map_err(short)?;
                let text = text.strip_suffix(b"L").unwrap_or(text);
                self.push_scalar(Value::Int(decimal_int(text, op::LONG)?), b)?;
            }
            op::BININT => {
                let v = i32::from_le_bytes(c.array().map_err(short)?);
                self.push_scalar(Value::Int(v.into()), b)?;
            }
            op::BININT1 => {
                let v = c.byte().map_err(short)?;
                self.push_scalar(Value::Int(v.into()), b)?;
            }
            op::BININT2 => {
                let v = u16::from_le_bytes(c.array().map_err(short)?);
                self.push_scalar(Value::Int(v.into()), b)?;
            }
            op::LONG1 | op::LONG4 => {
                let len_bytes = if code == op::LONG1 { 1 } else { 4 };
                let bytes = c.counted(len_bytes, code).map_err(short)??;
                self.push_scalar(Value::Int(twos_complement(bytes)?), b)?;
            }
            op::FLOAT => {
                let text = c.line().map_err(short)?;
                let v = std::str::from_utf8(text)
                    .ok()
                    .and_then(|t| t.trim().parse::<f64>().ok())
                    .ok_or(PickleError::BadArgument {
                        opcode: "FLOAT",
                        why: "not a decimal number",
                    })?;
                self.push_scalar(Value::Float(v), b)?;
            }
            op::BINFLOAT => {
                let v = f64::from_be_bytes(c.array().map_err(short)?);
                self.push_scalar(Value::Float(v), b)?;
            }
            op::STRING => {
                let bytes = python_string_literal(c.line().map_err(short)?)?;
                self.push_scalar(Value::Str(py2_str(bytes)), b)?;
            }
            op::BINSTRING | op::SHORT_BINSTRING => {
                let len_bytes = if code == op::BINSTRING { 4 } else { 1 };
                let bytes = c.counted(len_bytes, code).map_err(short)??;
                self.push_scalar(Value::Str(py2_str(bytes.to_vec())), b)?;
            }
            op::UNICODE => {
                let text = raw_unicode_escape(c.line().map_err(short)?)?;
                self.push_scalar(Value::Str(text), b)?;
            }
            op::BINUNICODE | op::SHORT_BINUNICODE | op::BINUNICODE8 => {
                let len_bytes = match code {
                    op::SHORT_BINUNICODE => 1,
                    op::BINUNICODE => 4,
                    _ => 8,
                };
                let bytes = c.counted(len_bytes, code).map_err(short)??;
                let text = std::str::from_utf8(bytes).map_err(|_| PickleError::BadArgument {
                    opcode: opname(code),
                    why: "text is not valid UTF-8",
                })?;
                self.push_scalar(Value::Str(text.to_owned()), b)?;
            }
            op::BINBYTES | op::SHORT_BINBYTES | op::BINBYTES8 | op::BYTEARRAY8 => {
                let len_bytes = match code {
                    op::SHORT_BINBYTES => 1,
                    op::BINBYTES => 4,
                    _ => 8,
                };
                let bytes = c.counted(len_bytes, code).map_err(short)??;
                self.push_scalar(Value::Bytes(bytes.to_vec()), b)?;
            }
            op::EMPTY_LIST => self.push_container(Value::List(Vec::new()), b)?,
            op::EMPTY_TUPLE => self.push_container(Value::Tuple(Vec::new()), b)?,
            op::EMPTY_DICT => self.push_container(Value::Dict(Vec::new()), b)?,
            op::LIST | op::TUPLE | op::DICT => {
                let empty = match code {
                    op::LIST => Value::List(Vec::new()),
                    op::TUPLE => Value::Tuple(Vec::new()),
                    _ => Value::Dict(Vec::new()),
                };
                let start = self.pop_mark_keep(opname(code))?;
                self.collect_into_new(empty, start, code, b)?;
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(code - op::TUPLE1) + 1;
                let start = self
                    .stack
                    .len()
                    .checked_sub(n)
                    .filter(|&s| s >= self.base())
                    .ok_or(PickleError::StackUnderflow(opname(code)))?;
                self.collect_into_new(Value::Tuple(Vec::new()), start, code, b)?;
            }
            op::APPEND | op::SETITEM => {
                let n = if code == op::APPEND { 1 } else { 2 };
                let start = self
                    .stack
                    .len()
                    .checked_sub(n)
                    .filter(|&s| s > self.base())
                    .ok_or(PickleError::StackUnderflow(opname(code)))?;
                self.add_to_target(start, code, b)?;
            }
            op::APPENDS | op::SETITEMS => {
                let start = self.pop_mark_keep(opname(code))?;
                if start <= self.base() {
                    return Err(PickleError::StackUnderflow(opname(code)));
                }
                self.add_to_target(start, code, b)?;
            }
            op::PUT => {
                let key = decimal_key(c.line().map_err(short)?, op::PUT)?;
                self.memo_put(key, "PUT", b)?;
            }
            op::BINPUT => {
                let key = c.byte().map_err(short)?;
                self.memo_put(key.into(), "BINPUT", b)?;
            }
            op::LONG_BINPUT => {
                let key = u32::from_le_bytes(c.array().map_err(short)?);
                self.memo_put(key.into(), "LONG_BINPUT", b)?;
            }
            op::MEMOIZE => self.memo_put(self.memo_len, "MEMOIZE", b)?,
            op::GET => {
                let key = decimal_key(c.line().map_err(short)?, op::GET)?;
                self.memo_get(key, b)?;
            }
            op::BINGET => {
                let key = c.byte().map_err(short)?;
                self.memo_get(key.into(), b)?;
            }
            op::LONG_BINGET => {
                let key = u32::from_le_bytes(c.array().map_err(short)?);
                self.memo_get(key.into(), b)?;
            }
            op::PROTO => {
                let version = c.byte().map_err(short)?;
                if version > op::HIGHEST_PROTOCOL {
                    return Err(PickleError::UnsupportedProtocol(version));
                }
            }
            op::FRAME => {
                // A framing hint for buffered readers; the bytes that follow
                // are ordinary opcodes.
                c.take(8).map_err(short)?;
            }
            other => return Err(refuse(other)),
        }
        Ok(())
    }

    /// Where the current MARK's items begin (0 without a MARK).
    #[inline]
    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    #[inline]
    fn count(&mut self, n: usize, b: &Bounds<'_>) -> Result<(), PickleError> {
        self.items = self.items.saturating_add(n);
        if self.items > b.max_items {
            return Err(PickleError::TooManyItems { max: b.max_items });
        }
        Ok(())
    }

    #[inline]
    fn new_entry(
        &mut self,
        value: Value,
        depth: usize,
        items: usize,
        open_refs: Vec<u32>,
    ) -> Entry {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let extra = (!open_refs.is_empty()).then(|| {
            Box::new(Extra {
                open_refs,
                dict_index: None,
            })
        });
        Entry {
            value,
            depth: depth as u32,
            items,
            id,
            shared: false,
            extra,
        }
    }

    #[inline]
    fn push_scalar(&mut self, value: Value, b: &Bounds<'_>) -> Result<(), PickleError> {
        self.count(1, b)?;
        let entry = self.new_entry(value, 0, 1, Vec::new());
        self.stack.push(entry);
        Ok(())
    }

    #[inline]
    fn push_container(&mut self, value: Value, b: &Bounds<'_>) -> Result<(), PickleError> {
        self.count(1, b)?;
        if b.max_depth == 0 {
            return Err(PickleError::TooDeep { max: 0 });
        }
        let entry = self.new_entry(value, 1, 1, Vec::new());
        self.stack.push(entry);
        Ok(())
    }

    /// Before values leave the stack from `from` upwards, saves a copy of
    /// those a GET will still read.
    #[inline]
    fn retire(&mut self, from: usize) {
        if !self.on_stack.is_empty() {
            self.save_memo_copies(from);
        }
    }

    #[cold]
    fn save_memo_copies(&mut self, from: usize) {
        let mut i = 0;
        while i < self.on_stack.len() {
            let (key, slot) = self.on_stack[i];
            if slot >= from {
                let entry = &self.stack[slot];
                let saved = Memo::Saved {
                    value: entry.value.clone(),
                    depth: entry.depth as usize,
                    items: entry.items,
                    open_refs: entry.open_refs().to_vec(),
                };
                self.memo_set(key, saved);
                self.on_stack.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn pop(&mut self, opcode: &'static str) -> Result<Entry, PickleError> {
        if self.stack.len() <= self.base() {
            return Err(PickleError::StackUnderflow(opcode));
        }
        self.retire(self.stack.len() - 1);
        Ok(self.stack.pop().expect("checked above"))
    }

    /// Closes the innermost MARK, dropping the values above it.
    fn pop_mark(&mut self, opcode: &'static str) -> Result<(), PickleError> {
        let start = self.pop_mark_keep(opcode)?;
        self.retire(start);
        self.stack.truncate(start);
        Ok(())
    }

    /// Closes the innermost MARK and returns where its values start; they
    /// stay on the stack for the caller to collect.
    fn pop_mark_keep(&mut self, opcode: &'static str) -> Result<usize, PickleError> {
        self.marks.pop().ok_or(PickleError::NoMark(opcode))
    }

    /// Builds a list, tuple or dict from `stack[start..]`.
    fn collect_into_new(
        &mut self,
        empty: Value,
        start: usize,
        code: u8,
        b: &Bounds<'_>,
    ) -> Result<(), PickleError> {
        self.count(1, b)?;
        let mut target = self.new_entry(empty, 1, 1, Vec::new());
        self.retire(start);
        adopt_all(
            &mut target,
            &mut self.stack[start..],
            code,
            b,
            &mut self.hasher,
        )?;
        self.stack.truncate(start);
        self.stack.push(target);
        Ok(())
    }

    /// APPEND(S) / SETITEM(S): moves `stack[start..]` into `stack[start-1]`.
    fn add_to_target(&mut self, start: usize, code: u8, b: &Bounds<'_>) -> Result<(), PickleError> {
        self.retire(start);
        let (below, children) = self.stack.split_at_mut(start);
        let target = below.last_mut().expect("caller checked start > base");
        let expected = if matches!(code, op::APPEND | op::APPENDS) {
            "list"
        } else {
            "dict"
        };
        let fits = matches!(
            (&target.value, expected),
            (Value::List(_), "list") | (Value::Dict(_), "dict")
        );
        if !fits {
            return Err(PickleError::WrongTarget {
                opcode: opname(code),
                expected,
                found: target.value.type_name(),
            });
        }
        adopt_all(target, children, code, b, &mut self.hasher)?;
        self.stack.truncate(start);
        Ok(())
    }

    fn push_copy_of_slot(&mut self, index: usize, b: &Bounds<'_>) -> Result<(), PickleError> {
        let source = &self.stack[index];
        let items = source.items;
        let depth = source.depth as usize;
        let value = source.value.clone();
        let mut open_refs = source.open_refs().to_vec();
        let container = matches!(
            source.value,
            Value::List(_) | Value::Dict(_) | Value::Tuple(_)
        );
        // Scalars cannot contain anything, so cannot be recursive.
        if container {
            open_refs.push(source.id);
            self.stack[index].shared = true;
        }
        self.count(items, b)?;
        let mut entry = self.new_entry(value, depth, items, open_refs);
        entry.shared = container;
        self.stack.push(entry);
        Ok(())
    }

    fn memo_put(
        &mut self,
        key: u64,
        opcode: &'static str,
        b: &Bounds<'_>,
    ) -> Result<(), PickleError> {
        let top = self
            .stack
            .len()
            .checked_sub(1)
            .filter(|&i| i >= self.base())
            .ok_or(PickleError::StackUnderflow(opcode))?;
        if key >= self.memo_len {
            self.memo_len = key + 1;
        }
        if b.read_keys.binary_search(&key).is_err() {
            return Ok(());
        }
        self.on_stack.retain(|&(k, _)| k != key);
        self.on_stack.push((key, top));
        self.memo_set(key, Memo::OnStack(top));
        Ok(())
    }

    fn memo_set(&mut self, key: u64, memo: Memo) {
        if key < DENSE_MEMO_KEYS {
            let index = key as usize;
            if self.dense_memo.len() <= index {
                self.dense_memo.resize_with(index + 1, || None);
            }
            self.dense_memo[index] = Some(memo);
        } else {
            self.sparse_memo.insert(key, memo);
        }
    }

    fn memo_get(&mut self, key: u64, b: &Bounds<'_>) -> Result<(), PickleError> {
        let memo = if key < DENSE_MEMO_KEYS {
            self.dense_memo.get(key as usize).and_then(Option::as_ref)
        } else {
            self.sparse_memo.get(&key)
        };
        match memo.ok_or(PickleError::BadMemo(key))? {
            Memo::OnStack(index) => {
                let index = *index;
                self.push_copy_of_slot(index, b)
            }
            Memo::Saved {
                value,
                depth,
                items,
                open_refs,
            } => {
                let (value, depth, items, open_refs) =
                    (value.clone(), *depth, *items, open_refs.clone());
                self.count(items, b)?;
                let mut entry = self.new_entry(value, depth, items, open_refs);
                entry.shared = matches!(
                    entry.value,
                    Value::List(_) | Value::Dict(_) | Value::Tuple(_)
                );
                self.stack.push(entry);
                Ok(())
            }
        }
    }
}

/// Moves the values of `children` into `target` (a list, tuple or dict),
/// checking depth and recursion. The caller drops the emptied entries.
fn adopt_all(
    target: &mut Entry,
    children: &mut [Entry],
    code: u8,
    b: &Bounds<'_>,
    hasher: &mut Option<RandomState>,
) -> Result<(), PickleError> {
    for child in children.iter() {
        if child.open_refs().contains(&target.id) {
            return Err(PickleError::Recursive);
        }
        let depth = child.depth + 1;
        if depth as usize > b.max_depth {
            return Err(PickleError::TooDeep { max: b.max_depth });
        }
        target.depth = target.depth.max(depth);
        target.items += child.items;
        for r in child.open_refs() {
            if !target.open_refs().contains(r) {
                target.extra_mut().open_refs.push(*r);
            }
        }
    }
    if target.shared {
        return Err(PickleError::SharedMutation);
    }
    let mut values = children
        .iter_mut()
        .map(|e| std::mem::replace(&mut e.value, Value::None));
    match &mut target.value {
        Value::List(items) | Value::Tuple(items) => {
            if items.is_empty() {
                // Allocate exactly once, skipping the growth path.
                *items = Vec::with_capacity(values.len());
            }
            items.extend(values);
            Ok(())
        }
        Value::Dict(_) => {
            if !children_len_is_even(values.len()) {
                return Err(PickleError::BadArgument {
                    opcode: opname(code),
                    why: "a key without a value",
                });
            }
            while let (Some(key), Some(value)) = (values.next(), values.next()) {
                insert_pair(target, key, value, hasher)?;
            }
            Ok(())
        }
        _ => unreachable!("targets are containers"),
    }
}

fn children_len_is_even(len: usize) -> bool {
    len.is_multiple_of(2)
}

/// Dicts this small are searched linearly for a duplicate key.
const LINEAR_DICT: usize = 16;

/// Sets `key` in a dict entry as Python would: a duplicate key keeps its
/// place and takes the new value.
fn insert_pair(
    target: &mut Entry,
    key: Value,
    value: Value,
    hasher: &mut Option<RandomState>,
) -> Result<(), PickleError> {
    check_hashable(&key)?;
    let Entry {
        value: target_value,
        extra,
        ..
    } = target;
    let Value::Dict(pairs) = target_value else {
        unreachable!("insert_pair is only called on dicts")
    };
    if pairs.len() < LINEAR_DICT {
        if let Some(pair) = pairs.iter_mut().find(|(k, _)| same_key(k, &key)) {
            pair.1 = value;
        } else {
            pairs.push((key, value));
        }
        return Ok(());
    }
    let state = hasher.get_or_insert_with(RandomState::new);
    let extra = extra.get_or_insert_with(Box::default);
    let index = extra.dict_index.get_or_insert_with(|| {
        let mut index = HashMap::with_capacity(pairs.len() * 2);
        for (i, (k, _)) in pairs.iter().enumerate() {
            index.insert(hash_key(state, k), i);
        }
        index
    });
    let hash = hash_key(state, &key);
    let existing = match index.get(&hash) {
        Some(&i) if same_key(&pairs[i].0, &key) => Some(i),
        // A hash collision between different keys: search the slow way.
        Some(_) => pairs.iter().position(|(k, _)| same_key(k, &key)),
        None => None,
    };
    match existing {
        Some(i) => pairs[i].1 = value,
        None => {
            index.insert(hash, pairs.len());
            pairs.push((key, value));
        }
    }
    Ok(())
}

fn check_hashable(key: &Value) -> Result<(), PickleError> {
    match key {
        Value::List(_) | Value::Dict(_) => Err(PickleError::UnhashableKey(key.type_name())),
        // Bounded by max_depth, which the tuple already passed.
        Value::Tuple(items) => items.iter().try_for_each(check_hashable),
        _ => Ok(()),
    }
}

fn hash_key(state: &RandomState, key: &Value) -> u64 {
    let mut h = state.build_hasher();
    hash_value(key, &mut h);
    h.finish()
}

/// Python's `==` on dict keys: bool, int and float compare by value
/// (`True == 1 == 1.0`, `0 == -0.0`), so `{1: "a", True: "b"}` is one key.
fn same_key(a: &Value, b: &Value) -> bool {
    match (Number::of(a), Number::of(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => match (a, b) {
            (Value::Tuple(x), Value::Tuple(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_key(x, y))
            }
            _ => a == b,
        },
        _ => false,
    }
}

/// A number as Python compares it: an integer when it is one (whatever its
/// type), else a float. NaN equals nothing, as in Python.
#[derive(PartialEq)]
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn of(value: &Value) -> Option<Number> {
        match value {
            Value::Bool(b) => Some(Number::Int(i64::from(*b))),
            Value::Int(i) => Some(Number::Int(*i)),
            // -2^63 <= f < 2^63: exactly the integral floats an i64 holds.
            Value::Float(f) if f.fract() == 0.0 && *f >= -(2f64.powi(63)) && *f < 2f64.powi(63) => {
                Some(Number::Int(*f as i64))
            }
            Value::Float(f) => Some(Number::Float(*f)),
            _ => None,
        }
    }
}

fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::None => 0u8.hash(h),
        // Equal numbers hash alike, whatever their type (see `same_key`).
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => match Number::of(v) {
            Some(Number::Int(i)) => (2u8, i).hash(h),
            Some(Number::Float(f)) => (3u8, f.to_bits()).hash(h),
            None => unreachable!("numbers are numbers"),
        },
        Value::Str(s) => (4u8, s).hash(h),
        Value::Bytes(b) => (5u8, b).hash(h),
        Value::Tuple(items) | Value::List(items) => {
            (6u8, items.len()).hash(h);
            items.iter().for_each(|i| hash_value(i, h));
        }
        Value::Dict(pairs) => (7u8, pairs.len()).hash(h),
    }
}

/// A memo key written in decimal (protocol 0's GET and PUT).
fn decimal_key(text: &[u8], code: u8) -> Result<u64, PickleError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .ok_or(PickleError::BadArgument {
            opcode: opname(code),
            why: "memo key is not a decimal number",
        })
}

/// Protocol 0's INT and LONG text.
fn decimal_int(text: &[u8], code: u8) -> Result<i64, PickleError> {
    let text = std::str::from_utf8(text)
        .map_err(|_| PickleError::BadArgument {
            opcode: opname(code),
            why: "not a decimal integer",
        })?
        .trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|d| d.is_ascii_digit()) {
        return Err(PickleError::BadArgument {
            opcode: opname(code),
            why: "not a decimal integer",
        });
    }
    text.parse::<i64>()
        .map_err(|_| PickleError::IntegerTooLarge)
}

/// LONG1 / LONG4: a little-endian two's complement integer.
fn twos_complement(bytes: &[u8]) -> Result<i64, PickleError> {
    let Some(&last) = bytes.last() else {
        return Ok(0);
    };
    let fill = if last & 0x80 != 0 { 0xff } else { 0x00 };
    if bytes.len() > 8 {
        // Longer encodings fit only when the extra bytes are sign extension.
        let (low, high) = bytes.split_at(8);
        if high.iter().any(|&b| b != fill) || (low[7] & 0x80 != 0) != (fill == 0xff) {
            return Err(PickleError::IntegerTooLarge);
        }
        return Ok(i64::from_le_bytes(low.try_into().expect("8 bytes")));
    }
    let mut full = [fill; 8];
    full[..bytes.len()].copy_from_slice(bytes);
    Ok(i64::from_le_bytes(full))
}

/// A Python 2 `str` is bytes: UTF-8 when it is valid, else Latin-1.
fn py2_str(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect())
}

/// Protocol 0's STRING argument: a quoted Python 2 `repr` of a `str`.
fn python_string_literal(line: &[u8]) -> Result<Vec<u8>, PickleError> {
    let bad = |why| PickleError::BadArgument {
        opcode: "STRING",
        why,
    };
    let inner = match line {
        [q, inner @ .., last] if (*q == b'\'' || *q == b'"') && q == last => inner,
        _ => return Err(bad("the string is not quoted")),
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&e) = inner.get(i) else {
            return Err(bad("the string ends with a lone backslash"));
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'x' => {
                let hex = inner.get(i..i + 2).ok_or(bad("\\x needs two hex digits"))?;
                let v = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(bad("\\x needs two hex digits"))?;
                out.push(v);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 && matches!(inner.get(i), Some(b'0'..=b'7')) {
                    v = v * 8 + u32::from(inner[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Protocol 0's UNICODE argument: Python's `raw-unicode-escape` codec, in
/// which bytes are Latin-1 and only `\uXXXX` / `\UXXXXXXXX` are escapes.
fn raw_unicode_escape(line: &[u8]) -> Result<String, PickleError> {
    let bad = |why| PickleError::BadArgument {
        opcode: "UNICODE",
        why,
    };
    let mut out = String::with_capacity(line.len());
    // A backslash escapes `u` only when it is not itself escaped, i.e.
    // after an even number of backslashes.
    let mut backslashes = 0usize;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        let digits = match (b, line.get(i + 1)) {
            (b'\\', Some(b'u')) if backslashes.is_multiple_of(2) => 4,
            (b'\\', Some(b'U')) if backslashes.is_multiple_of(2) => 8,
            _ => {
                backslashes = if b == b'\\' { backslashes + 1 } else { 0 };
                out.push(char::from(b));
                i += 1;
                continue;
            }
        };
        backslashes = 0;
        let hex = line
            .get(i + 2..i + 2 + digits)
            .ok_or(bad("truncated \\u escape"))?;
        let code = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or(bad("\\u escape needs hex digits"))?;
        out.push(char::from_u32(code).ok_or(bad("\\U escape is not a Unicode character"))?);
        i += 2 + digits;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Value, PickleError> {
        decode(bytes, 32, 10_000)
    }

    #[test]
    fn twos_complement_matches_python() {
        assert_eq!(twos_complement(&[]).unwrap(), 0);
        assert_eq!(twos_complement(&[0xff]).unwrap(), -1);
        assert_eq!(twos_complement(&[0x00, 0x01]).unwrap(), 256);
        assert_eq!(twos_complement(&[0xff, 0x00]).unwrap(), 255);
        let max = i64::MAX.to_le_bytes();
        assert_eq!(twos_complement(&max).unwrap(), i64::MAX);
        let mut max9 = max.to_vec();
        max9.push(0);
        assert_eq!(twos_complement(&max9).unwrap(), i64::MAX);
        let mut too_big = [0u8; 9];
        too_big[8] = 1;
        assert_eq!(twos_complement(&too_big), Err(PickleError::IntegerTooLarge));
        let mut over = [0u8; 9];
        over[7] = 0x80;
        assert_eq!(twos_complement(&over), Err(PickleError::IntegerTooLarge));
    }

    #[test]
    fn memo_sharing_copies_the_finished_list() {
        // Python 2: x = ["a"]; pickle.dumps([x, x], 2)
        let p = b"\x80\x02]q\x00(]q\x01X\x01\x00\x00\x00aq\x02ah\x01e.";
        let inner = Value::List(vec![Value::Str("a".into())]);
        assert_eq!(read(p).unwrap(), Value::List(vec![inner.clone(), inner]));
    }

    #[test]
    fn a_list_inside_itself_is_refused() {
        // l = []; l.append(l); pickle.dumps(l, 2)
        assert_eq!(read(b"\x80\x02]q\x00h\x00a."), Err(PickleError::Recursive));
        // l = []; m = [l]; l.append(m)
        assert_eq!(
            read(b"\x80\x02]q\x00]q\x01h\x00aa."),
            Err(PickleError::Recursive)
        );
    }

    #[test]
    fn a_container_changed_after_the_memo_shared_it_is_refused() {
        // Found by the pickle fuzz target: Python reads [[...]] (one list
        // inside itself) and ([1], [1]); copies would read [] and ([], [1]).
        assert_eq!(
            read(b"\x80\x02]q\x00h\x00h\x00a."),
            Err(PickleError::SharedMutation)
        );
        assert_eq!(
            read(b"\x80\x02]q\x00h\x00q\x010K\x01ah\x01\x86."),
            Err(PickleError::SharedMutation)
        );
    }

    #[test]
    fn incomplete_scan_says_how_much_is_missing() {
        let mut r = Reader::new(32, 100);
        assert_eq!(
            r.scan(b"\x80\x02X\x10\x00\x00\x00ab").unwrap(),
            Scan::Incomplete { need: 7 + 16 }
        );
    }

    #[test]
    fn protocol_0_strings_unescape() {
        assert_eq!(
            python_string_literal(br"'it\'s\n\x41\101'").unwrap(),
            b"it's\nAA".to_vec()
        );
        assert_eq!(
            raw_unicode_escape(br"caf\xe9 \u263a").unwrap(),
            "caf\\xe9 \u{263a}"
        );
        assert_eq!(raw_unicode_escape(br"a\\u0041").unwrap(), "a\\\\u0041");
    }

    #[test]
    fn duplicate_keys_keep_their_place_and_take_the_last_value() {
        // {"a": 1, "b": 2} then "a" set again to 3 (SETITEMS with a repeat)
        let p =
            b"\x80\x02}(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02X\x01\x00\x00\x00aK\x03u.";
        assert_eq!(
            read(p).unwrap(),
            Value::Dict(vec![
                (Value::Str("a".into()), Value::Int(3)),
                (Value::Str("b".into()), Value::Int(2)),
            ])
        );
    }

    #[test]
    fn numeric_keys_that_python_finds_equal_are_one_key() {
        // Found by the pickle fuzz target. Python: {1: 'a', True: 'b',
        // 1.0: 'c', 0: 'd', -0.0: 'e'} == {1: 'c', 0: 'e'}.
        let p = b"\x80\x02}(K\x01X\x01\x00\x00\x00a\x88X\x01\x00\x00\x00bG?\xf0\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00cK\x00X\x01\x00\x00\x00dG\x80\x00\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00eu.";
        let s = |t: &str| Value::Str(t.into());
        assert_eq!(
            read(p).unwrap(),
            Value::Dict(vec![(Value::Int(1), s("c")), (Value::Int(0), s("e"))])
        );
        // Through the index of a big dict too; 1.5 and NaN stay apart.
        let mut big = b"\x80\x02}(".to_vec();
        for i in 0..40u8 {
            big.extend([b'K', i, b'N']);
        }
        big.extend(b"\x88\x88G?\xf8\x00\x00\x00\x00\x00\x00N");
        big.extend(b"u.");
        let Value::Dict(pairs) = read(&big).unwrap() else {
            panic!("a dict")
        };
        assert_eq!(pairs.len(), 41);
        assert_eq!(pairs[1], (Value::Int(1), Value::Bool(true)));
    }

    #[test]
    fn big_dicts_deduplicate_through_the_index() {
        let mut p = b"\x80\x02}(".to_vec();
        for round in 0..2 {
            for i in 0..40u8 {
                p.extend_from_slice(&[b'K', i, b'K', round]);
            }
        }
        p.extend_from_slice(b"u.");
        let Value::Dict(pairs) = read(&p).unwrap() else {
            panic!("not a dict")
        };
        assert_eq!(pairs.len(), 40);
        assert!(pairs.iter().all(|(_, v)| *v == Value::Int(1)));
    }
}
