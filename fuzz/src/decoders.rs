//! What the decoder fuzz targets check, for one encoding at a time.
//!
//! Any bytes, fed whole or cut at fuzzer-chosen points (or one byte at a
//! time), must decode to the same messages and errors; no decoder may
//! panic; a partial message may never hold more than one frame's worth of
//! buffer (a peer cannot make us buffer without end); and whatever decodes
//! to a valid command or server message must encode back to the same one.
//!
//! This file is also compiled into `crates/proto/tests/fuzz_corpus.rs`,
//! which replays the committed corpus under `cargo nextest`, so it uses
//! nothing but `natter_proto` and `bytes`.

use bytes::BytesMut;
use natter_proto::codec::{encode_command, encode_message};
use natter_proto::limits::MAX_FRAME_CEILING;
use natter_proto::wire::{Direction, RawMessage};
use natter_proto::{Command, DecodeError, Decoder, Encoding, Limits, ServerMessage};

/// Longest command word plus the separator and the framed length prefix:
/// what a partial message may hold beyond the frame limit.
const BUFFER_SLACK: usize = 32;

/// A small frame limit the fuzzer can actually reach.
const SMALL_FRAME: usize = 200;

/// Most cut points taken from one input.
const MAX_CUTS: usize = 8;

/// Inputs longer than this are not also fed byte by byte (quadratic-ish
/// and adds nothing the cut points do not).
const MAX_DRIP: usize = 2048;

/// Input layout:
/// - byte 0: bit 0 direction (0 client → server, 1 server → client), bit 1
///   use a small frame limit, bit 2 also feed the stream one byte at a time;
/// - byte 1: number of cut points, modulo [`MAX_CUTS`] + 1;
/// - two bytes per cut point (big-endian, modulo the stream length + 1);
/// - the rest: the stream.
pub fn check_stream(encoding: Encoding, data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&cuts, rest)) = rest.split_first() else {
        return;
    };
    let cuts = usize::from(cuts) % (MAX_CUTS + 1);
    if rest.len() < 2 * cuts {
        return;
    }
    let (cut_bytes, stream) = rest.split_at(2 * cuts);
    let direction = if flags & 1 == 0 {
        Direction::ToServer
    } else {
        Direction::ToClient
    };
    let mut limits = match direction {
        Direction::ToServer => Limits::server_default(),
        Direction::ToClient => Limits::client_default(),
    };
    if flags & 2 != 0 {
        limits.max_frame = SMALL_FRAME;
    }
    let mut points: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    points.sort_unstable();

    let run = |chunks: &[&[u8]]| decode_chunks(encoding, direction, &limits, chunks);
    let whole = run(&[stream]);
    let split = run(&split_at(stream, &points));
    assert_eq!(split, whole, "cut at {points:?}");
    if flags & 4 != 0 && stream.len() <= MAX_DRIP {
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(&bytewise), whole, "fed byte by byte");
    }
}

pub fn split_at<'a>(stream: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut from = 0;
    for &p in points {
        chunks.push(&stream[from..p]);
        from = p;
    }
    chunks.push(&stream[from..]);
    chunks
}

/// Feeds `chunks` one after another, draining the decoder after each, and
/// describes every outcome as text (a NaN inside a value is not equal to
/// itself, its text is). Stops at the first fatal error, as the server does.
pub fn decode_chunks(
    encoding: Encoding,
    direction: Direction,
    limits: &Limits,
    chunks: &[&[u8]],
) -> Vec<String> {
    let mut decoder = Decoder::new(encoding, direction, limits.clone());
    let mut buf = BytesMut::new();
    let mut outcomes = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(raw)) => {
                    check_typed_round_trip(&raw, encoding, direction, limits);
                    outcomes.push(format!("{raw:?}"));
                }
                Ok(None) => {
                    assert!(
                        buf.len() <= limits.max_frame + BUFFER_SLACK,
                        "{} bytes buffered for one partial message (frame limit {})",
                        buf.len(),
                        limits.max_frame
                    );
                    break;
                }
                Err(error) => {
                    outcomes.push(describe(&error));
                    if error.is_fatal() {
                        return outcomes;
                    }
                }
            }
        }
    }
    outcomes
}

/// How much of an unknown word the error quotes depends on how much had
/// arrived; the error itself does not.
fn describe(error: &DecodeError) -> String {
    match error {
        DecodeError::UnknownCommand(_) => "error UnknownCommand".to_owned(),
        other => format!("error {other:?}"),
    }
}

/// A message that types as a valid command (or server message) must come
/// back unchanged from our own encoder and decoder. Our encoding may be
/// longer than the peer's (protocol 2, JSON escapes), so the frame limit is
/// lifted for the second pass; the validation limits stay.
fn check_typed_round_trip(
    raw: &RawMessage,
    encoding: Encoding,
    direction: Direction,
    limits: &Limits,
) {
    let roomy = Limits {
        max_frame: MAX_FRAME_CEILING,
        ..limits.clone()
    };
    match direction {
        Direction::ToServer => {
            let Ok(command) = Command::from_raw(raw.clone(), limits) else {
                return;
            };
            let mut bytes = BytesMut::new();
            encode_command(&command, encoding, &mut bytes);
            let again = decode_single(encoding, direction, &roomy, bytes);
            assert_eq!(Command::from_raw(again, limits), Ok(command));
        }
        Direction::ToClient => {
            let Ok(message) = ServerMessage::from_raw(raw.clone()) else {
                return;
            };
            let bytes = BytesMut::from(&encode_message(&message, encoding)[..]);
            let again = decode_single(encoding, direction, &roomy, bytes);
            assert_eq!(ServerMessage::from_raw(again), Ok(message));
        }
    }
}

fn decode_single(
    encoding: Encoding,
    direction: Direction,
    limits: &Limits,
    mut bytes: BytesMut,
) -> RawMessage {
    let mut decoder = Decoder::new(encoding, direction, limits.clone());
    let raw = decoder
        .decode(&mut bytes)
        .expect("our own encoding decodes")
        .expect("our own encoding is one whole message");
    assert!(bytes.is_empty(), "bytes left after our own message");
    raw
}
