//! What the pickle fuzz target checks.
//!
//! Our bounded reader never panics; when it accepts a pickle, scanning
//! agrees (the pickle ends exactly at the last byte, and every shorter
//! prefix is "incomplete", never an error, asking for no more bytes than
//! the pickle has); and where `serde-pickle` accepts the same bytes, both
//! readers mean the same value.
//!
//! `serde-pickle` only runs on pickles our reader accepted, which bounds
//! their depth and size: on deep input it would overflow the stack, which
//! is one reason natter has its own reader.
//!
//! Also compiled into `crates/proto/tests/fuzz_corpus.rs`.

use std::collections::BTreeMap;

use natter_proto::Value;
use natter_proto::pickle::{Reader, Scan, decode};
use serde_pickle::{HashableValue, Value as Oracle};

const MAX_DEPTH: usize = 32;
const MAX_ITEMS: usize = 4096;

/// Prefixes of an accepted pickle that are scanned (evenly spread).
const PREFIXES: usize = 16;

pub fn check_pickle(data: &[u8]) {
    let Ok(ours) = decode(data, MAX_DEPTH, MAX_ITEMS) else {
        return;
    };
    check_scan_agrees(data);
    if serde_pickle_strips_carriage_returns(data)
        || serde_pickle_memo_differs(data)
        || has_nan_key(&ours)
    {
        return;
    }
    let options = serde_pickle::DeOptions::new().decode_strings();
    if let Ok(theirs) = serde_pickle::value_from_slice(data, options) {
        assert!(
            same(&theirs, &to_oracle(&ours)),
            "serde-pickle reads {theirs:?}, we read {ours:?}"
        );
    }
}

/// Protocol 0's text opcodes end at `\n`: Python keeps a `\r` before it
/// (`V...\r\n` is a string ending in `\r`), and so do we; serde-pickle
/// drops it. Found by this target; such inputs skip the comparison.
fn serde_pickle_strips_carriage_returns(data: &[u8]) -> bool {
    data.windows(2).any(|w| w == b"\r\n")
}

/// Two memo quirks of serde-pickle, both found by this target (Python's
/// pickler writes neither; such inputs skip the comparison):
/// - it resolves memo references against the memo's final state, while
///   Python (and we) resolve a GET when it runs: they differ when a key is
///   set again;
/// - memoizing an object that is already memoized (a PUT right after a PUT
///   or a GET) stores a copy of it as it is then, not the object, so later
///   changes are lost.
///
/// Only called on pickles our reader accepted, so every opcode is a known
/// data opcode with a well-formed argument.
fn serde_pickle_memo_differs(data: &[u8]) -> bool {
    let mut keys = std::collections::HashSet::new();
    let mut top_is_memoized = false;
    let mut at = 0;
    while at < data.len() {
        let op = data[at];
        at += 1;
        let fixed = |n: usize| data.get(at..at + n);
        let le = |n: usize| {
            fixed(n).map(|b| {
                b.iter()
                    .rev()
                    .fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
            })
        };
        let (key, arg_len) = match op {
            b'F' | b'I' | b'L' | b'S' | b'V' | b'g' | b'p' => {
                let line = data[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len() - at, |n| n + 1);
                // As our reader (and Python's int()) read it: "+0" is 0.
                let key = (op == b'p').then(|| {
                    String::from_utf8_lossy(&data[at..at + line])
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(u64::MAX)
                });
                (key, line)
            }
            b'K' | b'h' | 0x80 => (None, 1),
            b'q' => (fixed(1).map(|b| u64::from(b[0])), 1),
            b'M' => (None, 2),
            b'J' | b'j' => (None, 4),
            b'r' => (le(4).map(|k| k as u64), 4),
            b'G' | 0x95 => (None, 8),
            0x94 => (Some(keys.len() as u64), 0),
            b'U' | b'C' | 0x8c | 0x8a => (None, 1 + le(1).unwrap_or(0)),
            b'T' | b'X' | b'B' | 0x8b => (None, 4 + le(4).unwrap_or(0)),
            0x8d | 0x8e | 0x96 => (None, 8 + le(8).unwrap_or(0)),
            b'.' => return false,
            _ => (None, 0),
        };
        if let Some(key) = key {
            if top_is_memoized || !keys.insert(key) {
                return true;
            }
            top_is_memoized = true;
        } else {
            top_is_memoized = matches!(op, b'g' | b'h' | b'j');
        }
        at = at.saturating_add(arg_len);
    }
    false
}

/// serde-pickle keeps dicts in a `BTreeMap` ordered by `partial_cmp`, which
/// a NaN key throws into disorder (it then holds `False` twice). Found by
/// this target; such inputs skip the comparison.
fn has_nan_key(value: &Value) -> bool {
    fn is_nan(key: &Value) -> bool {
        match key {
            Value::Float(f) => f.is_nan(),
            Value::Tuple(items) => items.iter().any(is_nan),
            _ => false,
        }
    }
    match value {
        Value::Dict(pairs) => pairs.iter().any(|(k, v)| is_nan(k) || has_nan_key(v)),
        Value::List(items) | Value::Tuple(items) => items.iter().any(has_nan_key),
        _ => false,
    }
}

fn check_scan_agrees(data: &[u8]) {
    let mut reader = Reader::new(MAX_DEPTH, MAX_ITEMS);
    assert_eq!(
        reader.scan(data),
        Ok(Scan::Complete { end: data.len() }),
        "the whole pickle scans as complete"
    );
    let step = (data.len() / PREFIXES).max(1);
    for len in (0..data.len()).step_by(step) {
        match reader.scan(&data[..len]) {
            Ok(Scan::Incomplete { need }) => assert!(
                need > len && need <= data.len(),
                "prefix of {len} bytes asks for {need} (pickle is {})",
                data.len()
            ),
            other => panic!("prefix of {len} bytes of a good pickle: {other:?}"),
        }
    }
}

/// Our value as serde-pickle represents it. Dict keys are collected as
/// serde-pickle does (a later equal key replaces the value).
pub fn to_oracle(value: &Value) -> Oracle {
    match value {
        Value::None => Oracle::None,
        Value::Bool(b) => Oracle::Bool(*b),
        Value::Int(i) => Oracle::I64(*i),
        Value::Float(f) => Oracle::F64(*f),
        Value::Str(s) => Oracle::String(s.clone()),
        Value::Bytes(b) => Oracle::Bytes(b.clone()),
        Value::List(items) => Oracle::List(items.iter().map(to_oracle).collect()),
        Value::Tuple(items) => Oracle::Tuple(items.iter().map(to_oracle).collect()),
        Value::Dict(pairs) => Oracle::Dict(
            pairs
                .iter()
                .map(|(k, v)| (key_to_oracle(k), to_oracle(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

fn key_to_oracle(key: &Value) -> HashableValue {
    match key {
        Value::None => HashableValue::None,
        Value::Bool(b) => HashableValue::Bool(*b),
        Value::Int(i) => HashableValue::I64(*i),
        Value::Float(f) => HashableValue::F64(*f),
        Value::Str(s) => HashableValue::String(s.clone()),
        Value::Bytes(b) => HashableValue::Bytes(b.clone()),
        Value::Tuple(items) => HashableValue::Tuple(items.iter().map(key_to_oracle).collect()),
        other => panic!("our reader accepted an unhashable key {other:?}"),
    }
}

/// Equality that treats NaN as equal to NaN and an integer the same
/// whether serde-pickle holds it as i64 or as a big integer.
fn same(a: &Oracle, b: &Oracle) -> bool {
    match (a, b) {
        (Oracle::F64(x), Oracle::F64(y)) => same_float(*x, *y),
        (Oracle::I64(_) | Oracle::Int(_), Oracle::I64(_) | Oracle::Int(_)) => {
            int_text(a) == int_text(b)
        }
        (Oracle::List(x), Oracle::List(y)) | (Oracle::Tuple(x), Oracle::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Oracle::Dict(x), Oracle::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| same_key(kx, ky) && same(vx, vy))
        }
        _ => a == b,
    }
}

fn same_key(a: &HashableValue, b: &HashableValue) -> bool {
    match (a, b) {
        (HashableValue::F64(x), HashableValue::F64(y)) => same_float(*x, *y),
        (HashableValue::I64(x), HashableValue::Int(y))
        | (HashableValue::Int(y), HashableValue::I64(x)) => x.to_string() == y.to_string(),
        (HashableValue::Tuple(x), HashableValue::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_key(x, y))
        }
        _ => a == b,
    }
}

fn same_float(x: f64, y: f64) -> bool {
    x == y || (x.is_nan() && y.is_nan())
}

fn int_text(v: &Oracle) -> String {
    match v {
        Oracle::I64(i) => i.to_string(),
        Oracle::Int(i) => i.to_string(),
        _ => unreachable!(),
    }
}
