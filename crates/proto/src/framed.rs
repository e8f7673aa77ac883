//! The framed encoding: incremental decoder and encoder.
//!
//! A message is a 4-byte big-endian length `N` and `N` bytes of body; the
//! body is `WORD` or `WORD SP pickle`. Because the frame says where the
//! message ends, anything wrong inside a body (a bad pickle, bytes after its
//! STOP, an unknown word) costs only that message. A length of 0 or over the
//! limit is a framing violation: the next frame's start is unknown, so it is
//! fatal.

use bytes::{Buf, BufMut, BytesMut};

use crate::codec::DecodeError;
use crate::command::Command;
use crate::limits::Limits;
use crate::pickle::{Reader, shortcut, writer};
use std::borrow::Cow;

use crate::wire::{CLIENT_WORDS, Decoded, RawMessage, SERVER_WORDS};

/// Bytes in the length prefix.
pub const LENGTH_BYTES: usize = 4;

/// Decodes the frame at the front of `buf`, if it is all there.
pub fn decode(
    buf: &mut BytesMut,
    limits: &Limits,
    reader: &mut Reader,
) -> Result<Option<Decoded>, DecodeError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len == 0 || len > limits.max_frame {
        return Err(DecodeError::BadFrameLength {
            len,
            max: limits.max_frame,
        });
    }
    let frame_end = LENGTH_BYTES + len;
    if buf.len() < frame_end {
        buf.reserve(frame_end - buf.len());
        return Ok(None);
    }
    let result = parse_body(&buf[LENGTH_BYTES..frame_end], reader);
    buf.advance(frame_end);
    result.map(Some)
}

/// The server's hot path: a whole, valid `SEND_MESSAGE` frame at the front
/// of `buf` in one of the common pickle shapes becomes its command directly
/// (and leaves `buf`). Anything else, valid or not, is left in place for
/// [`decode`], which gives the same command or the proper error.
pub fn decode_send_message(buf: &mut BytesMut, limits: &Limits) -> Option<Command> {
    const PREFIX: &[u8] = b"SEND_MESSAGE ";
    let len = u32::from_be_bytes(*buf.first_chunk::<LENGTH_BYTES>()?) as usize;
    let frame_end = LENGTH_BYTES + len;
    if len > limits.max_frame || buf.len() < frame_end {
        return None;
    }
    let pickle = buf[LENGTH_BYTES..frame_end].strip_prefix(PREFIX)?;
    let (conv, text, _) = shortcut::read_int_str(pickle)?;
    let conv = u64::try_from(conv).ok()?;
    if text.len() > limits.max_message {
        return None;
    }
    buf.advance(frame_end);
    Some(Command::SendMessage {
        conv,
        text,
        nonce: None,
    })
}

/// A body: `WORD` or `WORD SP pickle`, the pickle ending exactly at the end.
pub fn parse_body(body: &[u8], reader: &mut Reader) -> Result<Decoded, DecodeError> {
    let (word, pickle) = match body.iter().position(|&b| b == b' ') {
        Some(space) => (&body[..space], Some(&body[space + 1..])),
        None => (body, None),
    };
    let word = parse_word(word)?;
    let Some(pickle) = pickle else {
        return Ok(Decoded { word, args: None });
    };
    // Chat messages are nearly all one shape: read it directly.
    if word == "SEND_MESSAGE"
        && let Some(args) = shortcut::int_str_pair(pickle)
    {
        return Ok(Decoded {
            word,
            args: Some(args),
        });
    }
    let (args, end) = reader
        .read_complete(pickle)
        .map_err(|source| DecodeError::Pickle {
            source,
            fatal: false,
        })?;
    if end != pickle.len() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(Decoded {
        word,
        args: Some(args),
    })
}

/// A command word: non-empty UTF-8. Whether it is a known word is for the
/// typing layer to say.
fn parse_word(word: &[u8]) -> Result<Cow<'static, str>, DecodeError> {
    if word.is_empty() {
        return Err(DecodeError::Malformed(
            "the frame has no command word".into(),
        ));
    }
    let known = CLIENT_WORDS
        .iter()
        .chain(SERVER_WORDS)
        .find(|(w, _)| w.as_bytes() == word);
    if let Some((known, _)) = known {
        return Ok(Cow::Borrowed(*known));
    }
    match std::str::from_utf8(word) {
        Ok(word) => Ok(Cow::Owned(word.to_owned())),
        Err(_) => Err(DecodeError::Malformed(
            "the command word is not UTF-8".into(),
        )),
    }
}

/// Reserves the length prefix; returns where the frame starts.
pub(crate) fn begin_frame(out: &mut BytesMut) -> usize {
    let start = out.len();
    out.put_u32(0);
    start
}

/// Writes the body length into the prefix reserved at `start`.
pub(crate) fn end_frame(out: &mut BytesMut, start: usize) {
    let len = out.len() - start - LENGTH_BYTES;
    let len = u32::try_from(len).expect("frames are under 4 GiB");
    out[start..start + LENGTH_BYTES].copy_from_slice(&len.to_be_bytes());
}

/// Encodes a raw message as one frame.
pub fn encode_raw(raw: &RawMessage, out: &mut BytesMut) {
    let start = begin_frame(out);
    out.extend_from_slice(raw.word.as_bytes());
    if let Some(args) = &raw.args {
        out.put_u8(b' ');
        writer::write_value(out, args);
    }
    end_frame(out, start);
}
