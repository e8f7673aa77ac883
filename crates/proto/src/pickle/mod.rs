//! Python pickles, as data only.
//!
//! [`reader`] is a bounded opcode reader for the data subset of pickle
//! protocols 0–5: it finds where a pickle ends inside a stream, checks depth
//! and size, resolves memo references, and rejects every opcode that would
//! import, call or build an object. [`writer`] writes protocol 2, which both
//! Python 2 (Jython) and Python 3 load.
//!
//! We do not use `serde-pickle` for reading: it overflows the stack on deep
//! input, rejects ordinary memo sharing as "recursive", turns object-building
//! opcodes into dicts, and cannot tell where a pickle ends in a stream. It
//! stays in the tests as a differential oracle.

pub mod opcodes;
pub mod reader;
pub mod shortcut;
pub mod writer;

pub use reader::{PickleError, Reader, Scan, decode, find_end};
pub use writer::{to_vec, write_value};

/// A decoded pickle value: the data subset natter accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    /// Python ints that fit in an i64; larger ones are a [`PickleError`].
    Int(i64),
    Float(f64),
    /// Python 3 `str`, and Python 2 `str` decoded as UTF-8 (Latin-1 when it
    /// is not valid UTF-8).
    Str(String),
    /// Python 3 `bytes` / `bytearray`.
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Key/value pairs in the order the pickle set them (a later duplicate
    /// key replaces the earlier one, as in Python).
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// The elements of a list or tuple.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) | Value::Tuple(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages
    /// ("expected a string, got list").
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
        }
    }
}
