//! The JSON-lines encoding: incremental decoder and encoder.
//!
//! One JSON object per line: `{"command":"SEND_MESSAGE","args":[3,"hi"]}`.
//! `args` may be missing or `null` for commands without arguments; blank
//! lines are skipped and `\r\n` is accepted. A line longer than the frame
//! limit is refused as soon as the buffer passes the limit, so a peer that
//! never sends a newline cannot make us buffer without end.
//!
//! Invalid UTF-8 or JSON is fatal (the contract: the stream cannot be
//! trusted); well-formed JSON of the wrong shape is an ordinary, recoverable
//! error. JSON is parsed straight into [`Value`] (no intermediate tree),
//! keeping the order of object keys and bounding depth and size.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use bytes::{Buf, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::codec::DecodeError;
use crate::limits::Limits;
use crate::pickle::Value;
use crate::wire::RawMessage;

/// What the decoder remembers between calls.
#[derive(Debug, Default)]
pub struct JsonState {
    /// Bytes at the front of the buffer already searched for a newline.
    scanned: usize,
}

/// Decodes the next line at the front of `buf`.
pub fn decode(
    buf: &mut BytesMut,
    limits: &Limits,
    state: &mut JsonState,
) -> Result<Option<RawMessage>, DecodeError> {
    loop {
        let from = state.scanned.min(buf.len());
        let Some(offset) = buf[from..].iter().position(|&b| b == b'\n') else {
            state.scanned = buf.len();
            // One more byte than the limit may be the `\r` of a `\r\n`.
            if buf.len() > limits.max_frame + 1 {
                return Err(DecodeError::TooLarge {
                    max: limits.max_frame,
                });
            }
            return Ok(None);
        };
        let newline = from + offset;
        state.scanned = 0;
        let line = buf[..newline]
            .strip_suffix(b"\r")
            .unwrap_or(&buf[..newline]);
        if line.len() > limits.max_frame {
            return Err(DecodeError::TooLarge {
                max: limits.max_frame,
            });
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            buf.advance(newline + 1);
            continue;
        }
        let result = parse_line(line, limits);
        buf.advance(newline + 1);
        return result.map(Some);
    }
}

/// Parses one line holding one message.
pub fn parse_line(line: &[u8], limits: &Limits) -> Result<RawMessage, DecodeError> {
    let text = std::str::from_utf8(line).map_err(|_| DecodeError::InvalidUtf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let envelope = EnvelopeSeed { limits }.deserialize(&mut de).and_then(|m| {
        de.end()?;
        Ok(m)
    });
    envelope.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DecodeError::Malformed(e.to_string()),
        _ => DecodeError::Json(e.to_string()),
    })
}

/// Encodes a raw message as one line.
pub fn encode_raw(raw: &RawMessage, out: &mut BytesMut) {
    out.extend_from_slice(b"{\"command\":");
    write_str(out, &raw.word);
    if let Some(args) = &raw.args {
        out.extend_from_slice(b",\"args\":");
        write_value(out, args);
    }
    out.extend_from_slice(b"}\n");
}

/// Starts a message line up to the `args` value.
pub(crate) fn begin_message(out: &mut BytesMut, word: &str) {
    out.extend_from_slice(b"{\"command\":\"");
    // Command words are plain ASCII capitals and `_`: nothing to escape.
    out.extend_from_slice(word.as_bytes());
    out.extend_from_slice(b"\",\"args\":");
}

pub(crate) fn end_message(out: &mut BytesMut) {
    out.extend_from_slice(b"}\n");
}

pub(crate) fn write_int(out: &mut BytesMut, value: i64) {
    let mut digits = [0u8; 20];
    let mut n = value.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        out.extend_from_slice(b"-");
    }
    out.extend_from_slice(&digits[at..]);
}

/// A JSON string literal: `"`, `\` and control characters escaped, the
/// rest as UTF-8.
pub(crate) fn write_str(out: &mut BytesMut, value: &str) {
    out.reserve(value.len() + 2);
    out.extend_from_slice(b"\"");
    let bytes = value.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        clean_from = i + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.extend_from_slice(b"\"");
}

/// Any [`Value`] as JSON. Tuples become arrays, bytes a string of their
/// Latin-1 characters, non-finite floats `null`, and dict keys strings
/// (`3` becomes `"3"`, as Python's `json` module does).
pub fn write_value(out: &mut BytesMut, value: &Value) {
    enum Work<'v> {
        Value(&'v Value),
        Key(&'v Value),
        Text(&'static [u8]),
    }
    let mut todo = vec![Work::Value(value)];
    while let Some(work) = todo.pop() {
        let value = match work {
            Work::Text(text) => {
                out.extend_from_slice(text);
                continue;
            }
            Work::Key(key) => {
                write_key(out, key);
                continue;
            }
            Work::Value(value) => value,
        };
        match value {
            Value::None => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => write_int(out, *i),
            Value::Float(f) => write_float(out, *f),
            Value::Str(s) => write_str(out, s),
            Value::Bytes(b) => {
                write_str(out, &b.iter().map(|&c| char::from(c)).collect::<String>())
            }
            Value::List(items) | Value::Tuple(items) => {
                out.extend_from_slice(b"[");
                todo.push(Work::Text(b"]"));
                for (i, item) in items.iter().enumerate().rev() {
                    todo.push(Work::Value(item));
                    if i > 0 {
                        todo.push(Work::Text(b","));
                    }
                }
            }
            Value::Dict(pairs) => {
                out.extend_from_slice(b"{");
                todo.push(Work::Text(b"}"));
                for (i, (k, v)) in pairs.iter().enumerate().rev() {
                    todo.push(Work::Value(v));
                    todo.push(Work::Text(b":"));
                    todo.push(Work::Key(k));
                    if i > 0 {
                        todo.push(Work::Text(b","));
                    }
                }
            }
        }
    }
}

/// Always keeps a `.` or exponent, so the number reads back as a float.
fn write_float(out: &mut BytesMut, value: f64) {
    if value.is_finite() {
        out.extend_from_slice(format!("{value:?}").as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_key(out: &mut BytesMut, key: &Value) {
    match key {
        Value::Str(s) => write_str(out, s),
        Value::Int(i) => {
            out.extend_from_slice(b"\"");
            write_int(out, *i);
            out.extend_from_slice(b"\"");
        }
        other => {
            let mut text = BytesMut::new();
            write_value(&mut text, other);
            write_str(out, &String::from_utf8_lossy(&text));
        }
    }
}

/// Reads `{"command": ..., "args": ...}`, ignoring other keys.
struct EnvelopeSeed<'l> {
    limits: &'l Limits,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = RawMessage;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawMessage, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = RawMessage;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object {\"command\": \"WORD\", \"args\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMessage, A::Error> {
        let mut word = None;
        let mut args = None;
        let mut budget = Budget {
            depth_left: self.limits.max_depth,
            items_left: self.limits.max_items,
            max_depth: self.limits.max_depth,
            max_items: self.limits.max_items,
        };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "command" => word = Some(map.next_value::<String>()?),
                "args" => {
                    let value = map.next_value_seed(ValueSeed {
                        budget: &mut budget,
                    })?;
                    args = Some(value).filter(|v| *v != Value::None);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let word = word.ok_or_else(|| de::Error::custom("the object has no \"command\""))?;
        Ok(RawMessage { word, args })
    }
}

/// What is left of the depth and size bounds while reading `args`.
struct Budget {
    depth_left: usize,
    items_left: usize,
    max_depth: usize,
    max_items: usize,
}

impl Budget {
    fn take_item<E: de::Error>(&mut self) -> Result<(), E> {
        if self.items_left == 0 {
            let max = self.max_items;
            return Err(E::custom(format_args!(
                "the arguments hold more than {max} values"
            )));
        }
        self.items_left -= 1;
        Ok(())
    }
}

/// Reads one JSON value as a [`Value`].
struct ValueSeed<'b> {
    budget: &'b mut Budget,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn scalar<E: de::Error>(self, value: Value) -> Result<Value, E> {
        self.budget.take_item::<E>()?;
        Ok(value)
    }

    /// Enters a list or object: one level deeper.
    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.budget.take_item::<E>()?;
        if self.budget.depth_left == 0 {
            let max = self.budget.max_depth;
            return Err(E::custom(format_args!(
                "values are nested more than {max} levels deep"
            )));
        }
        self.budget.depth_left -= 1;
        Ok(())
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.scalar(Value::None)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.scalar(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.scalar(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        let value = i64::try_from(v).map_or(Value::Float(v as f64), Value::Int);
        self.scalar(value)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.scalar(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.scalar(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.scalar(Value::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        self.enter::<A::Error>()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(ValueSeed {
            budget: self.budget,
        })? {
            items.push(item);
        }
        self.budget.depth_left += 1;
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        self.enter::<A::Error>()?;
        let mut pairs: Vec<(Value, Value)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        while let Some(key) = map.next_key::<String>()? {
            self.budget.take_item::<A::Error>()?;
            let value = map.next_value_seed(ValueSeed {
                budget: self.budget,
            })?;
            // JSON allows duplicate keys; like Python, the last one wins
            // and keeps the first one's place.
            match index.entry(key) {
                Entry::Occupied(at) => pairs[*at.get()].1 = value,
                Entry::Vacant(slot) => {
                    pairs.push((Value::Str(slot.key().clone()), value));
                    slot.insert(pairs.len() - 1);
                }
            }
        }
        self.budget.depth_left += 1;
        Ok(Value::Dict(pairs))
    }
}
