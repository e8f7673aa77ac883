//! A shortcut for the most common pickle of all: the `[convID, message]`
//! of a `SEND_MESSAGE`, written by Python's pickler (protocols 2 to 5) or by
//! natter's own writer.
//!
//! The general [`Reader`](super::Reader) reads any data pickle in two passes
//! (find the end, then build); that generality is most of the cost of
//! decoding a chat message. This recognises the few byte shapes an
//! `[int, str]` list or `(int, str)` tuple takes and reads them in one
//! straight pass. Anything else, including anything unusual about those
//! shapes, returns `None` and goes the general way, so the shortcut can
//! only ever agree with the reader (a test checks that it does).

use super::Value;

/// Opcodes the shapes use.
const PROTO: u8 = 0x80;
const FRAME: u8 = 0x95;
const EMPTY_LIST: u8 = b']';
const MARK: u8 = b'(';
const APPENDS: u8 = b'e';
const TUPLE2: u8 = 0x86;
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const MEMOIZE: u8 = 0x94;
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const BINUNICODE: u8 = b'X';
const SHORT_BINUNICODE: u8 = 0x8c;
const STOP: u8 = b'.';

/// Reads `pickle` if it is exactly an `[int, str]` list or `(int, str)`
/// tuple in one of the common shapes; `None` otherwise.
pub fn int_str_pair(pickle: &[u8]) -> Option<Value> {
    let (int, text, shape) = read_int_str(pickle)?;
    let items = vec![Value::Int(int), Value::Str(text)];
    Some(match shape {
        Shape::List => Value::List(items),
        Shape::Tuple => Value::Tuple(items),
    })
}

/// Which container held the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    List,
    Tuple,
}

/// Like [`int_str_pair`], without building a [`Value`]: for the server's
/// hot path, which wants the two fields themselves.
pub fn read_int_str(pickle: &[u8]) -> Option<(i64, String, Shape)> {
    let mut input = Input(pickle);
    if input.peek()? == PROTO {
        input.skip(1);
        if !(2..=5).contains(&input.byte()?) {
            return None;
        }
    }
    if input.peek()? == FRAME {
        input.skip(1);
        let len = u64::from_le_bytes(input.take(8)?.try_into().ok()?);
        if len != input.0.len() as u64 {
            return None;
        }
    }
    let (int, text, shape) = if input.peek()? == EMPTY_LIST {
        input.skip(1);
        input.memo();
        input.expect(MARK)?;
        let (int, text) = input.int_and_str()?;
        input.expect(APPENDS)?;
        (int, text, Shape::List)
    } else {
        let (int, text) = input.int_and_str()?;
        input.expect(TUPLE2)?;
        (int, text, Shape::Tuple)
    };
    input.memo();
    input.expect(STOP)?;
    input.0.is_empty().then_some((int, text, shape))
}

/// The bytes still to read.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn skip(&mut self, n: usize) {
        self.0 = &self.0[n..];
    }

    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(taken)
    }

    fn expect(&mut self, opcode: u8) -> Option<()> {
        (self.byte()? == opcode).then_some(())
    }

    /// Skips one optional memo store; it cannot change the value, since
    /// these shapes never read the memo back.
    fn memo(&mut self) {
        let skip = match self.peek() {
            Some(BINPUT) => 2,
            Some(LONG_BINPUT) => 5,
            Some(MEMOIZE) => 1,
            _ => 0,
        };
        if self.0.len() >= skip {
            self.skip(skip);
        }
    }

    fn int_and_str(&mut self) -> Option<(i64, String)> {
        let int = self.int()?;
        let text = self.str()?;
        self.memo();
        Some((int, text))
    }

    fn int(&mut self) -> Option<i64> {
        match self.byte()? {
            BININT1 => Some(i64::from(self.byte()?)),
            BININT2 => Some(i64::from(u16::from_le_bytes(
                self.take(2)?.try_into().ok()?,
            ))),
            BININT => Some(i64::from(i32::from_le_bytes(
                self.take(4)?.try_into().ok()?,
            ))),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<String> {
        let len = match self.byte()? {
            SHORT_BINUNICODE => usize::from(self.byte()?),
            BINUNICODE => u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize,
            _ => return None,
        };
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }
}
