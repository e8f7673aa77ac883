//! natter's wire protocol, with no sockets and no async.
//!
//! Bytes come in, typed [`Command`]s and [`ServerMessage`]s come out, and the
//! other way round. Everything here is a pure function of its input, so the
//! server, the client library, the fuzzers and the benchmarks all share one
//! implementation of the contract in `docs/PROTOCOL.md`.
//!
//! Layers, bottom up:
//! - [`pickle`]: a bounded reader for the data subset of Python's pickle
//!   (protocols 0–5) and a protocol-2 writer.
//! - [`wire`]: a message on the wire before it is typed: a command word and
//!   optional arguments ([`wire::RawMessage`]).
//! - [`framed`], [`classic`], [`json`]: the three encodings, each an
//!   incremental decoder and an encoder.
//! - [`command`] and [`message`]: the typed vocabulary in each direction and
//!   the validation of arguments.
//! - [`codec`]: picks the encoding from the first byte and ties it together.

pub mod classic;
pub mod codec;
pub mod command;
pub mod framed;
pub mod json;
pub mod limits;
pub mod message;
pub mod pickle;
mod sink;
pub mod wire;

pub use codec::{DecodeError, Decoder, Encoding};
pub use command::{Command, CommandError, Secret};
pub use limits::Limits;
pub use message::{HistoryEntry, MessageMeta, ServerMessage};
pub use pickle::Value;

/// A conversation id, as the server hands them out (1, 2, 3, ...).
pub type ConvId = u64;
