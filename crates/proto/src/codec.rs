//! Picks the encoding from the first byte and gives one incremental decoder
//! and encoder over all three.

use bytes::{BufMut, Bytes, BytesMut};

use crate::classic::{self, ClassicState};
use crate::command::Command;
use crate::command::CommandError;
use crate::framed;
use crate::json::{self, JsonState};
use crate::limits::Limits;
use crate::message::ServerMessage;
use crate::pickle::{PickleError, Reader, writer};
use crate::sink::{JsonSink, PickleSink};
use crate::wire::{Decoded, Direction, RawMessage};

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
    /// Well-formed framing around a body that makes no sense; the next
    /// message can still be read.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Classic mode: the message cannot be delimited, so neither can the
    /// next one.
    #[error("malformed message: {0}")]
    Unrecoverable(String),
}

impl DecodeError {
    /// Whether the stream can no longer be trusted: the server sends ERROR
    /// and closes. Otherwise it sends ERROR and reads on.
    pub fn is_fatal(&self) -> bool {
        match self {
            DecodeError::UnknownEncoding(_)
            | DecodeError::BadFrameLength { .. }
            | DecodeError::TooLarge { .. }
            | DecodeError::UnknownCommand(_)
            | DecodeError::InvalidUtf8
            | DecodeError::Json(_)
            | DecodeError::Unrecoverable(_) => true,
            DecodeError::Pickle { fatal, .. } => *fatal,
            DecodeError::TrailingBytes | DecodeError::Malformed(_) => false,
        }
    }
}

/// A decoder between messages, reduced to what the next message needs
/// ([`Decoder::sleep`]).
#[derive(Debug, Clone, Copy)]
pub struct Sleeping {
    pub encoding: Encoding,
    direction: Direction,
    classic: ClassicState,
}

/// An incremental decoder for one connection and one direction.
///
/// Feed it the bytes read so far; it consumes whole messages from the front
/// of the buffer and leaves partial ones in place. After a fatal error the
/// decoder must not be used again (it repeats the error if it is).
#[derive(Debug)]
pub struct Decoder {
    pub encoding: Encoding,
    pub direction: Direction,
    pub limits: Limits,
    /// Reused between messages to save allocations.
    reader: Reader,
    classic: ClassicState,
    json: JsonState,
    failed: Option<DecodeError>,
}

impl Decoder {
    /// Frees the scratch space the decoder keeps between messages to save
    /// allocations; call it when the connection goes idle.
    pub fn release_scratch(&mut self) {
        self.reader.release_scratch();
    }

    pub fn new(encoding: Encoding, direction: Direction, limits: Limits) -> Self {
        Decoder {
            encoding,
            direction,
            reader: Reader::new(limits.max_depth, limits.max_items),
            limits,
            classic: ClassicState::default(),
            json: JsonState::default(),
            failed: None,
        }
    }

    /// What this decoder must remember once everything it was given is
    /// decoded (the buffer is empty and no error was fatal): a few bytes,
    /// for a connection that waits with no decoder of its own. The limits
    /// and scratch space are the caller's to give back ([`Decoder::wake`]).
    pub fn sleep(&self) -> Sleeping {
        debug_assert!(
            self.failed.is_none(),
            "a failed decoder is not put to sleep"
        );
        Sleeping {
            encoding: self.encoding,
            direction: self.direction,
            classic: self.classic,
        }
    }

    /// The decoder again, as it was put to sleep, with `limits`.
    pub fn wake(sleeping: Sleeping, limits: Limits) -> Self {
        Decoder {
            classic: sleeping.classic,
            ..Decoder::new(sleeping.encoding, sleeping.direction, limits)
        }
    }

    /// Decodes the next message at the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed (and `buf` holds less than a
    /// maximum-size message; a longer partial message is an error).
    /// `Err(e)` with `!e.is_fatal()`: that message's bytes were consumed and
    /// decoding can go on.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RawMessage>, DecodeError> {
        Ok(self.decode_parts(buf)?.map(RawMessage::from))
    }

    /// Decodes and types the next client command: the server's hot path.
    /// The same as [`Decoder::decode`] then [`Command::from_raw`], without
    /// allocating the command word.
    ///
    /// `Ok(Some(Err(e)))`: a well-formed message that is not a valid
    /// command (the connection goes on).
    #[allow(clippy::type_complexity)]
    pub fn decode_command(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Result<Command, CommandError>>, DecodeError> {
        if self.encoding == Encoding::Framed
            && self.failed.is_none()
            && let Some(command) = framed::decode_send_message(buf, &self.limits)
        {
            return Ok(Some(Ok(command)));
        }
        Ok(self
            .decode_parts(buf)?
            .map(|d| Command::from_parts(&d.word, d.args, &self.limits)))
    }

    /// Like [`Decoder::decode`], the word borrowed when it is a known one.
    pub fn decode_parts(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, DecodeError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = match self.encoding {
            Encoding::Framed => framed::decode(buf, &self.limits, &mut self.reader),
            Encoding::Classic => classic::decode(
                buf,
                self.direction,
                &self.limits,
                &mut self.reader,
                &mut self.classic,
            ),
            Encoding::Json => {
                json::decode(buf, &self.limits, &mut self.json).map(|m| m.map(Decoded::from))
            }
        };
        if let Err(error) = &result
            && error.is_fatal()
        {
            self.failed = Some(error.clone());
        }
        result
    }
}

/// Encodes a raw message (either direction) onto `out` in `encoding`.
pub fn encode_raw(raw: &RawMessage, encoding: Encoding, out: &mut BytesMut) {
    match encoding {
        Encoding::Framed => framed::encode_raw(raw, out),
        Encoding::Classic => classic::encode_raw(raw, out),
        Encoding::Json => json::encode_raw(raw, out),
    }
}

/// Encodes a server message in `encoding`: the server calls this once per
/// encoding in use and shares the bytes among all recipients.
///
/// The arguments are written straight into the output (no `Value` is
/// built), which keeps MESSAGE and large ONLINE_USERS cheap.
pub fn encode_message(msg: &ServerMessage, encoding: Encoding) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.size_hint());
    write_message(msg, encoding, &mut out);
    out.freeze()
}

/// Like [`encode_message`], appending to `out`.
pub fn write_message(msg: &ServerMessage, encoding: Encoding, out: &mut BytesMut) {
    let word = msg.word().as_bytes();
    match encoding {
        Encoding::Framed => {
            let start = framed::begin_frame(out);
            out.put_slice(word);
            out.put_u8(b' ');
            write_pickled_args(msg, out);
            framed::end_frame(out, start);
        }
        Encoding::Classic => {
            out.put_slice(word);
            out.put_u8(b' ');
            write_pickled_args(msg, out);
        }
        Encoding::Json => {
            json::begin_message(out, msg.word());
            msg.write_args(&mut JsonSink(out));
            json::end_message(out);
        }
    }
}

fn write_pickled_args(msg: &ServerMessage, out: &mut BytesMut) {
    writer::begin(out);
    msg.write_args(&mut PickleSink(out));
    writer::end(out);
}

/// Encodes a client command (client side).
pub fn encode_command(cmd: &Command, encoding: Encoding, out: &mut BytesMut) {
    encode_raw(&cmd.to_raw(), encoding, out);
}
