//! Picks the encoding from the first byte and gives one incremental decoder
//! and encoder over all three.

use bytes::{Bytes, BytesMut};

use crate::command::Command;
use crate::limits::Limits;
use crate::message::ServerMessage;
use crate::pickle::PickleError;
use crate::wire::{Direction, RawMessage};

/// The encoding of one connection, fixed by the first byte the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `0x00`: 4-byte big-endian length, then the body.
    Framed,
    /// `A`–`Z`: the course's `COMMAND SP pickle`, no length.
    Classic,
    /// `{`: one JSON object per line.
    Json,
}

impl Encoding {
    /// The encoding a connection uses, from its first byte; `None` when the
    /// byte starts none of them (the server answers ERROR and closes).
    pub fn detect(first_byte: u8) -> Option<Encoding> {
        match first_byte {
            0x00 => Some(Encoding::Framed),
            b'A'..=b'Z' => Some(Encoding::Classic),
            b'{' => Some(Encoding::Json),
            _ => None,
        }
    }

    pub const ALL: [Encoding; 3] = [Encoding::Framed, Encoding::Classic, Encoding::Json];
}

/// Why bytes could not be decoded. `Display` is the text of the `ERROR` the
/// server sends back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first byte selects no encoding.
    #[error("unknown encoding: first byte {0:#04x} is not 0x00, A-Z or '{{'")]
    UnknownEncoding(u8),
    #[error("frame length {len} is out of range (1..={max})")]
    BadFrameLength { len: usize, max: usize },
    #[error("message too large (more than {max} bytes)")]
    TooLarge { max: usize },
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// Arguments whose pickle could not be read. Fatal in classic mode (the
    /// end of the message is unknown), not in framed mode.
    #[error("bad pickle: {source}")]
    Pickle {
        #[source]
        source: PickleError,
        fatal: bool,
    },
    #[error("bytes after the end of the pickle")]
    TrailingBytes,
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// Whether the stream can no longer be trusted: the server sends ERROR
    /// and closes. Otherwise it sends ERROR and reads on.
    pub fn is_fatal(&self) -> bool {
        todo!("implemented by the proto work: {self:?}")
    }
}

/// An incremental decoder for one connection and one direction.
///
/// Feed it the bytes read so far; it consumes whole messages from the front
/// of the buffer and leaves partial ones in place. After a fatal error the
/// decoder must not be used again.
#[derive(Debug)]
pub struct Decoder {
    pub encoding: Encoding,
    pub direction: Direction,
    pub limits: Limits,
}

impl Decoder {
    pub fn new(encoding: Encoding, direction: Direction, limits: Limits) -> Self {
        Decoder {
            encoding,
            direction,
            limits,
        }
    }

    /// Decodes the next message at the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed (and `buf` holds less than a
    /// maximum-size message; a longer partial message is an error).
    /// `Err(e)` with `!e.is_fatal()`: that message's bytes were consumed and
    /// decoding can go on.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RawMessage>, DecodeError> {
        todo!("implemented by the proto work: {}", buf.len())
    }
}

/// Encodes a raw message (either direction) onto `out` in `encoding`.
pub fn encode_raw(raw: &RawMessage, encoding: Encoding, out: &mut BytesMut) {
    todo!("implemented by the proto work: {raw:?} {encoding:?} {}", out.len())
}

/// Encodes a server message in `encoding`: the server calls this once per
/// encoding in use and shares the bytes among all recipients.
pub fn encode_message(msg: &ServerMessage, encoding: Encoding) -> Bytes {
    todo!("implemented by the proto work: {msg:?} {encoding:?}")
}

/// Encodes a client command (client side).
pub fn encode_command(cmd: &Command, encoding: Encoding, out: &mut BytesMut) {
    todo!("implemented by the proto work: {cmd:?} {encoding:?} {}", out.len())
}
