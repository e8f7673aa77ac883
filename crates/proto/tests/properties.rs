//! Property tests: every command and server message survives every
//! encoding; decoders give the same results however the bytes are split;
//! serde-pickle agrees with our reader and writer.

use bytes::BytesMut;
use natter_proto::codec::{encode_command, encode_message};
use natter_proto::pickle::{decode, to_vec};
use natter_proto::wire::{Direction, RawMessage};
use natter_proto::{Command, DecodeError, Decoder, Encoding, Limits, ServerMessage, Value};
use proptest::prelude::*;

// The fuzz targets' checks, shared so that the property tests and the
// fuzzers decode and compare the same way.
#[allow(dead_code)]
#[path = "../../../fuzz/src/decoders.rs"]
mod decoders;
#[allow(dead_code)]
#[path = "../../../fuzz/src/pickle_oracle.rs"]
mod pickle_oracle;

use decoders::{decode_chunks, split_at};
use pickle_oracle::to_oracle;
use serde_pickle::{HashableValue, Value as Oracle};

fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

fn any_name() -> impl Strategy<Value = String> {
    "[\\p{L}\\p{Nd}_.\\-]{1,32}"
}

fn any_conv() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..10, 0..=i64::MAX as u64]
}

fn any_encoding() -> impl Strategy<Value = Encoding> {
    prop::sample::select(Encoding::ALL.to_vec())
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        prop::collection::vec(any_text(20), 0..4).prop_map(Command::Caps),
        (any_name(), any_text(128)).prop_map(|(name, status)| Command::Register { name, status }),
        any_text(128).prop_map(Command::Status),
        Just(Command::Goodbye),
        prop::collection::vec(any_name(), 1..5).prop_map(Command::Invite),
        Just(Command::ListConversations),
        any_conv().prop_map(Command::Join),
        (any_conv(), any_text(300)).prop_map(|(conv, text)| Command::SendMessage {
            conv,
            text,
            nonce: None
        }),
        any_conv().prop_map(Command::Leave),
        prop::collection::vec(any_name(), 1..5).prop_map(Command::Watch),
        prop::collection::vec(any_name(), 1..5).prop_map(Command::Unwatch),
        (any_text(20), 1..=100usize)
            .prop_map(|(prefix, limit)| Command::ListUsers { prefix, limit }),
    ]
}

fn any_message() -> impl Strategy<Value = ServerMessage> {
    let names = || prop::collection::vec(any_text(12), 0..4);
    prop_oneof![
        prop::collection::btree_map(any_text(12), any_text(12), 0..6)
            .prop_map(|m| ServerMessage::OnlineUsers(m.into_iter().collect())),
        prop::collection::btree_map(any_text(12), prop::option::of(any_text(12)), 0..6)
            .prop_map(|m| ServerMessage::Presence(m.into_iter().collect())),
        (any_conv(), any_text(12))
            .prop_map(|(conv, inviter)| ServerMessage::Invitation { conv, inviter }),
        prop::collection::btree_map(any_conv(), names(), 0..4)
            .prop_map(|m| ServerMessage::Conversations(m.into_iter().collect())),
        (any_conv(), any_text(12), any_text(200)).prop_map(|(conv, sender, text)| {
            ServerMessage::Message {
                conv,
                sender,
                text,
                meta: None,
            }
        }),
        (any_conv(), names()).prop_map(|(conv, members)| ServerMessage::Members { conv, members }),
        names().prop_map(ServerMessage::Caps),
        prop::collection::btree_map(any_text(12), any_text(12), 0..6)
            .prop_map(|m| ServerMessage::Users(m.into_iter().collect())),
        any_text(60).prop_map(ServerMessage::Error),
    ]
}

fn decode_one(
    encoding: Encoding,
    direction: Direction,
    limits: Limits,
    bytes: &[u8],
) -> Result<RawMessage, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let mut decoder = Decoder::new(encoding, direction, limits);
    let raw = decoder.decode(&mut buf)?.expect("a whole message");
    assert!(buf.is_empty() || buf.iter().all(|b| b.is_ascii_whitespace()));
    Ok(raw)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_command_round_trips_in_every_encoding(cmd in any_command(), encoding in any_encoding()) {
        let mut out = BytesMut::new();
        encode_command(&cmd, encoding, &mut out);
        let raw = decode_one(encoding, Direction::ToServer, Limits::server_default(), &out).unwrap();
        prop_assert_eq!(Command::from_raw(raw, &Limits::server_default()), Ok(cmd.clone()));
        // The server's shortcut types the same command.
        let mut decoder = Decoder::new(encoding, Direction::ToServer, Limits::server_default());
        prop_assert_eq!(decoder.decode_command(&mut out).unwrap(), Some(Ok(cmd)));
    }

    #[test]
    fn every_server_message_round_trips_in_every_encoding(msg in any_message(), encoding in any_encoding()) {
        let bytes = encode_message(&msg, encoding);
        let raw = decode_one(encoding, Direction::ToClient, Limits::client_default(), &bytes).unwrap();
        prop_assert_eq!(ServerMessage::from_raw(raw), Ok(msg));
    }

    #[test]
    fn split_input_decodes_as_if_fed_whole(
        encoding in any_encoding(),
        segments in prop::collection::vec(prop_oneof![
            any_command().prop_map(Some),
            Just(None),
        ].prop_flat_map(|cmd| (Just(cmd), prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b' '), Just(0u8)], 0..6))), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        max_frame in prop_oneof![Just(64usize), Just(65536)],
    ) {
        let mut bytes = BytesMut::new();
        for (cmd, junk) in &segments {
            match cmd {
                Some(cmd) => encode_command(cmd, encoding, &mut bytes),
                None => bytes.extend_from_slice(junk),
            }
        }
        let limits = Limits { max_frame, ..Limits::server_default() };
        let whole = decode_chunks(encoding, Direction::ToServer, &limits, &[&bytes]);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let chunks = split_at(&bytes, &points);
        prop_assert_eq!(decode_chunks(encoding, Direction::ToServer, &limits, &chunks), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(encoding in any_encoding(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        for direction in [Direction::ToServer, Direction::ToClient] {
            let limits = Limits { max_frame: 128, ..Limits::server_default() };
            let whole = decode_chunks(encoding, direction, &limits, &[&bytes]);
            let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(decode_chunks(encoding, direction, &limits, &bytewise), whole);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_pickle_reader(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes, 32, 1000);
        let mut prefixed = vec![0x80, 2];
        prefixed.extend(&bytes);
        let _ = decode(&prefixed, 32, 1000);
    }
}

// ---- serde-pickle as a differential oracle ----

fn oracle_key() -> impl Strategy<Value = HashableValue> {
    prop_oneof![
        any::<i64>().prop_map(HashableValue::I64),
        any_text(8).prop_map(HashableValue::String),
        (any::<i64>(), any_text(4)).prop_map(|(i, s)| HashableValue::Tuple(vec![
            HashableValue::I64(i),
            HashableValue::String(s)
        ])),
    ]
}

fn oracle_value(with_bytes: bool) -> impl Strategy<Value = Oracle> {
    let scalars = prop_oneof![
        Just(Oracle::None),
        any::<bool>().prop_map(Oracle::Bool),
        any::<i64>().prop_map(Oracle::I64),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Oracle::F64),
        any_text(20).prop_map(Oracle::String),
    ];
    // Protocol 2 has no bytes opcode (serde-pickle would write a REDUCE).
    let leaf = if with_bytes {
        prop_oneof![
            scalars,
            prop::collection::vec(any::<u8>(), 0..10).prop_map(Oracle::Bytes)
        ]
        .boxed()
    } else {
        scalars.boxed()
    };
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Oracle::List),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Oracle::Tuple),
            prop::collection::btree_map(oracle_key(), inner, 0..6).prop_map(Oracle::Dict),
        ]
    })
}

fn key_from_oracle(key: &HashableValue) -> Value {
    match key {
        HashableValue::None => Value::None,
        HashableValue::Bool(b) => Value::Bool(*b),
        HashableValue::I64(i) => Value::Int(*i),
        HashableValue::F64(f) => Value::Float(*f),
        HashableValue::String(s) => Value::Str(s.clone()),
        HashableValue::Bytes(b) => Value::Bytes(b.clone()),
        HashableValue::Tuple(items) => Value::Tuple(items.iter().map(key_from_oracle).collect()),
        other => panic!("not generated: {other:?}"),
    }
}

fn from_oracle(value: &Oracle) -> Value {
    match value {
        Oracle::None => Value::None,
        Oracle::Bool(b) => Value::Bool(*b),
        Oracle::I64(i) => Value::Int(*i),
        Oracle::F64(f) => Value::Float(*f),
        Oracle::String(s) => Value::Str(s.clone()),
        Oracle::Bytes(b) => Value::Bytes(b.clone()),
        Oracle::List(items) => Value::List(items.iter().map(from_oracle).collect()),
        Oracle::Tuple(items) => Value::Tuple(items.iter().map(from_oracle).collect()),
        Oracle::Dict(map) => Value::Dict(
            map.iter()
                .map(|(k, v)| (key_from_oracle(k), from_oracle(v)))
                .collect(),
        ),
        other => panic!("not generated: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn serde_pickle_protocol_2_and_3_pickles_read_the_same(v2 in oracle_value(false), v3 in oracle_value(true)) {
        let bytes = serde_pickle::value_to_vec(&v2, serde_pickle::SerOptions::new().proto_v2()).unwrap();
        let ours = decode(&bytes, 32, 100_000).unwrap();
        prop_assert_eq!(to_oracle(&ours), v2);
        let bytes = serde_pickle::value_to_vec(&v3, serde_pickle::SerOptions::new()).unwrap();
        let ours = decode(&bytes, 32, 100_000).unwrap();
        prop_assert_eq!(to_oracle(&ours), v3);
    }

    #[test]
    fn serde_pickle_reads_what_our_writer_writes(v in oracle_value(false)) {
        let ours = from_oracle(&v);
        let bytes = to_vec(&ours);
        let theirs = serde_pickle::value_from_slice(&bytes, serde_pickle::DeOptions::new()).unwrap();
        prop_assert_eq!(&theirs, &v);
        prop_assert_eq!(decode(&bytes, 32, 100_000).unwrap(), ours);
    }
}

/// A batch of random values written by us must load in Python 3 and mean
/// the same (Python dumps each back with protocol 2 and we compare).
#[test]
fn python3_reads_random_values_our_writer_writes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::io::Write;
    let mut runner = TestRunner::deterministic();
    let values: Vec<Value> = (0..200)
        .map(|_| from_oracle(&oracle_value(false).new_tree(&mut runner).unwrap().current()))
        .collect();
    let input: String = values
        .iter()
        .map(|v| {
            to_vec(v)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                + "\n"
        })
        .collect();
    let script = "import pickle, sys\nfor line in sys.stdin:\n    print(pickle.dumps(pickle.loads(bytes.fromhex(line.strip())), 2).hex())\n";
    let child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    // python3 is on every supported machine: without it this test fails.
    let mut child =
        child.expect("python3 is needed by this test (see the README: what the tests need)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), values.len());
    for (value, line) in values.iter().zip(lines) {
        let bytes: Vec<u8> = (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(
            to_oracle(&decode(&bytes, 32, 100_000).unwrap()),
            to_oracle(value)
        );
    }
}
