//! The classic encoding (the course's): incremental decoder and encoder.
//!
//! `WORD`, then for words with arguments `SP` and one pickle ending at its
//! STOP opcode. There is no length, so the decoder recognises words from the
//! direction's fixed vocabulary (none is a prefix of another) and finds the
//! pickle's end by walking its opcodes. When something is wrong the end of
//! the message is unknown and the stream cannot be resynchronised: every
//! error here is fatal.
//!
//! Leniencies the course clients need: whitespace (`SP`, `\r`, `\n`) between
//! messages is skipped, and a pickle sent after a word that takes no
//! arguments (`"GOODBYE " + pickle.dumps(None)`) is read and ignored.

use bytes::{Buf, BufMut, BytesMut};

use crate::codec::DecodeError;
use crate::limits::Limits;
use crate::pickle::{Reader, Scan, writer};
use std::borrow::Cow;

use crate::wire::{Decoded, Direction, RawMessage};

/// What the decoder remembers between calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClassicState {
    /// The last word took no arguments, so a pickle may follow to be ignored.
    after_bare_word: bool,
    /// The buffer must reach this length before a pickle scan can progress.
    need: usize,
}

/// A match of the buffer's front against the vocabulary.
enum WordMatch {
    Word(&'static str, bool),
    /// The buffer holds the start of a word and no more.
    Prefix,
    None,
}

fn match_word(buf: &[u8], direction: Direction) -> WordMatch {
    let mut prefix = false;
    for &(word, takes_args) in direction.words() {
        let word_bytes = word.as_bytes();
        if buf.starts_with(word_bytes) {
            return WordMatch::Word(word, takes_args);
        }
        prefix |= word_bytes.starts_with(buf);
    }
    if prefix {
        WordMatch::Prefix
    } else {
        WordMatch::None
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\r' | b'\n')
}

/// Decodes the next message at the front of `buf`.
pub fn decode(
    buf: &mut BytesMut,
    direction: Direction,
    limits: &Limits,
    reader: &mut Reader,
    state: &mut ClassicState,
) -> Result<Option<Decoded>, DecodeError> {
    loop {
        if buf.len() < state.need {
            return Ok(None);
        }
        let spaces = buf.iter().take_while(|&&b| is_space(b)).count();
        if spaces > 0 {
            buf.advance(spaces);
            state.need = 0;
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let (word, takes_args) = match match_word(buf, direction) {
            WordMatch::Word(word, takes_args) => (word, takes_args),
            WordMatch::Prefix => return Ok(None),
            WordMatch::None if state.after_bare_word => {
                // The pickle a course client sent after GOODBYE and the like.
                match scan_pickle(buf, 0, limits, reader, state)? {
                    Some(end) => {
                        buf.advance(end);
                        state.after_bare_word = false;
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            WordMatch::None => return Err(DecodeError::UnknownCommand(preview(buf))),
        };
        state.after_bare_word = !takes_args;
        if !takes_args {
            buf.advance(word.len());
            return Ok(Some(Decoded {
                word: Cow::Borrowed(word),
                args: None,
            }));
        }
        let Some(&after) = buf.get(word.len()) else {
            return Ok(None);
        };
        if after != b' ' {
            return Err(DecodeError::Unrecoverable(format!(
                "{word} must be followed by a space and its pickled arguments"
            )));
        }
        let start = word.len() + 1;
        let Some(len) = scan_pickle(buf, start, limits, reader, state)? else {
            return Ok(None);
        };
        let (args, _) =
            reader
                .build(&buf[start..start + len])
                .map_err(|source| DecodeError::Pickle {
                    source,
                    fatal: true,
                })?;
        buf.advance(start + len);
        return Ok(Some(Decoded {
            word: Cow::Borrowed(word),
            args: Some(args),
        }));
    }
}

/// Finds the end of the pickle at `buf[start..]`: its length, or `None`
/// (with `state.need` set) when more bytes must arrive.
fn scan_pickle(
    buf: &[u8],
    start: usize,
    limits: &Limits,
    reader: &mut Reader,
    state: &mut ClassicState,
) -> Result<Option<usize>, DecodeError> {
    let window = &buf[start..buf.len().min(start.saturating_add(limits.max_frame))];
    match reader.scan(window) {
        Ok(Scan::Complete { end }) => {
            state.need = 0;
            Ok(Some(end))
        }
        Ok(Scan::Incomplete { need }) if need > limits.max_frame => Err(DecodeError::TooLarge {
            max: limits.max_frame,
        }),
        Ok(Scan::Incomplete { need }) => {
            state.need = start + need;
            Ok(None)
        }
        Err(source) => Err(DecodeError::Pickle {
            source,
            fatal: true,
        }),
    }
}

/// The start of an unrecognised word, for the error message.
fn preview(buf: &[u8]) -> String {
    let word: Vec<u8> = buf
        .iter()
        .copied()
        .take_while(|&b| !is_space(b))
        .take(32)
        .collect();
    String::from_utf8_lossy(&word).into_owned()
}

/// Encodes a raw message: `WORD`, or `WORD SP pickle`.
pub fn encode_raw(raw: &RawMessage, out: &mut BytesMut) {
    out.extend_from_slice(raw.word.as_bytes());
    if let Some(args) = &raw.args {
        out.put_u8(b' ');
        writer::write_value(out, args);
    }
}
