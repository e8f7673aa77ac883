//! Protocol-2 pickle writer.
//!
//! Protocol 2 is the newest that Python 2.7 (and so Jython, which the
//! course's clients run on) can load, and Python 3 loads it too. Only
//! protocol-2 opcodes are used: strings are BINUNICODE (`X`), never the
//! protocol-4 SHORT_BINUNICODE; ints are BININT1 / BININT2 / BININT / LONG1.
//! No memo is written: natter's messages share nothing.
//!
//! Two ways in: [`write_value`] for any [`Value`], and the small streaming
//! functions ([`begin`], [`int`], [`str`], [`list_begin`], ...) with which
//! the hot server messages write their arguments straight into the output
//! buffer without building a `Value` first.

use bytes::BufMut;

use super::Value;
use super::opcodes as op;

/// Starts a pickle: PROTO 2.
pub fn begin(out: &mut impl BufMut) {
    out.put_slice(&[op::PROTO, 2]);
}

/// Ends a pickle: STOP.
pub fn end(out: &mut impl BufMut) {
    out.put_u8(op::STOP);
}

pub fn none(out: &mut impl BufMut) {
    out.put_u8(op::NONE);
}

pub fn bool(out: &mut impl BufMut, value: bool) {
    out.put_u8(if value { op::NEWTRUE } else { op::NEWFALSE });
}

/// The shortest protocol-2 form of an integer.
pub fn int(out: &mut impl BufMut, value: i64) {
    if let Ok(small) = u8::try_from(value) {
        out.put_slice(&[op::BININT1, small]);
    } else if let Ok(medium) = u16::try_from(value) {
        out.put_u8(op::BININT2);
        out.put_u16_le(medium);
    } else if let Ok(word) = i32::try_from(value) {
        out.put_u8(op::BININT);
        out.put_i32_le(word);
    } else {
        let bytes = value.to_le_bytes();
        let mut len = 8;
        // Drop high bytes that only repeat the sign of the byte below.
        while len > 1 {
            let top = bytes[len - 1];
            let sign_below = bytes[len - 2] & 0x80 != 0;
            if (top == 0x00 && !sign_below) || (top == 0xff && sign_below) {
                len -= 1;
            } else {
                break;
            }
        }
        out.put_slice(&[op::LONG1, len as u8]);
        out.put_slice(&bytes[..len]);
    }
}

pub fn float(out: &mut impl BufMut, value: f64) {
    out.put_u8(op::BINFLOAT);
    out.put_f64(value);
}

/// A unicode string (BINUNICODE, UTF-8 with a 4-byte length).
pub fn str(out: &mut impl BufMut, value: &str) {
    out.put_u8(op::BINUNICODE);
    out.put_u32_le(u32::try_from(value.len()).expect("strings under 4 GiB"));
    out.put_slice(value.as_bytes());
}

/// Bytes, as a Python 2 `str` (BINSTRING): protocol 2 has no `bytes`
/// opcode. Python 2 loads it as `str`; Python 3 as `str` under its default
/// ASCII decoding, or as `bytes` with `encoding="bytes"`.
pub fn bytes(out: &mut impl BufMut, value: &[u8]) {
    out.put_u8(op::BINSTRING);
    out.put_u32_le(u32::try_from(value.len()).expect("bytes under 2 GiB"));
    out.put_slice(value);
}

/// Opens a list whose items follow; close it with [`list_end`].
pub fn list_begin(out: &mut impl BufMut) {
    out.put_slice(&[op::EMPTY_LIST, op::MARK]);
}

pub fn list_end(out: &mut impl BufMut) {
    out.put_u8(op::APPENDS);
}

/// Opens a dict whose keys and values follow, alternating; close it with
/// [`dict_end`].
pub fn dict_begin(out: &mut impl BufMut) {
    out.put_slice(&[op::EMPTY_DICT, op::MARK]);
}

pub fn dict_end(out: &mut impl BufMut) {
    out.put_u8(op::SETITEMS);
}

/// A whole pickle (PROTO 2 ... STOP) of `value`.
pub fn write_value(out: &mut impl BufMut, value: &Value) {
    begin(out);
    write_body(out, value);
    end(out);
}

/// A whole pickle of `value` in a new vector.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

/// What is left to write: a value, or a closing opcode.
enum Work<'v> {
    Value(&'v Value),
    Opcode(u8),
}

/// Writes `value` without PROTO and STOP. Iterative, so a deep value
/// cannot overflow the stack.
pub fn write_body(out: &mut impl BufMut, value: &Value) {
    let mut todo = vec![Work::Value(value)];
    while let Some(work) = todo.pop() {
        let value = match work {
            Work::Opcode(code) => {
                out.put_u8(code);
                continue;
            }
            Work::Value(value) => value,
        };
        match value {
            Value::None => none(out),
            Value::Bool(b) => bool(out, *b),
            Value::Int(i) => int(out, *i),
            Value::Float(f) => float(out, *f),
            Value::Str(s) => str(out, s),
            Value::Bytes(b) => bytes(out, b),
            Value::List(items) if items.is_empty() => out.put_u8(op::EMPTY_LIST),
            Value::List(items) => {
                list_begin(out);
                todo.push(Work::Opcode(op::APPENDS));
                todo.extend(items.iter().rev().map(Work::Value));
            }
            Value::Tuple(items) => {
                let close = match items.len() {
                    0 => {
                        out.put_u8(op::EMPTY_TUPLE);
                        continue;
                    }
                    1 => op::TUPLE1,
                    2 => op::TUPLE2,
                    3 => op::TUPLE3,
                    _ => {
                        out.put_u8(op::MARK);
                        op::TUPLE
                    }
                };
                todo.push(Work::Opcode(close));
                todo.extend(items.iter().rev().map(Work::Value));
            }
            Value::Dict(pairs) if pairs.is_empty() => out.put_u8(op::EMPTY_DICT),
            Value::Dict(pairs) => {
                dict_begin(out);
                todo.push(Work::Opcode(op::SETITEMS));
                for (k, v) in pairs.iter().rev() {
                    todo.push(Work::Value(v));
                    todo.push(Work::Value(k));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pickle::decode;

    fn ints_written(i: i64) -> Vec<u8> {
        let mut out = Vec::new();
        int(&mut out, i);
        out
    }

    #[test]
    fn ints_use_the_shortest_protocol_2_opcode() {
        assert_eq!(ints_written(5), vec![b'K', 5]);
        assert_eq!(ints_written(300), vec![b'M', 0x2c, 0x01]);
        assert_eq!(ints_written(-1), vec![b'J', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(ints_written(1 << 40), vec![0x8a, 6, 0, 0, 0, 0, 0, 1]);
        assert_eq!(ints_written(1 << 31), vec![0x8a, 5, 0, 0, 0, 0x80, 0]);
        assert_eq!(ints_written(i64::MIN).len(), 10);
    }

    #[test]
    fn every_int_edge_reads_back() {
        for i in [
            0,
            255,
            256,
            65535,
            65536,
            -1,
            -129,
            i32::MAX as i64,
            i32::MIN as i64 - 1,
            i64::MAX,
            i64::MIN,
        ] {
            let v = Value::Int(i);
            assert_eq!(decode(&to_vec(&v), 32, 100).unwrap(), v, "{i}");
        }
    }

    #[test]
    fn nested_values_round_trip() {
        let v = Value::Dict(vec![
            (Value::Str("t".into()), Value::Tuple(vec![Value::Int(1); 5])),
            (
                Value::Str("l".into()),
                Value::List(vec![Value::None, Value::Bool(true), Value::Float(2.5)]),
            ),
            (Value::Str("e".into()), Value::Tuple(vec![])),
        ]);
        assert_eq!(decode(&to_vec(&v), 32, 100).unwrap(), v);
    }
}
