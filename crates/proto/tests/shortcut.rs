//! The SEND_MESSAGE shortcut agrees with the general pickle reader: whenever
//! it reads something, the reader reads the same value, and it reads the
//! shapes Python and natter actually write.

use natter_proto::pickle::{self, Value, shortcut};
use proptest::prelude::*;

fn general(pickle: &[u8]) -> Option<Value> {
    pickle::decode(pickle, 32, 16 * 1024).ok()
}

fn pair(conv: i64, text: &str) -> Value {
    Value::List(vec![Value::Int(conv), Value::Str(text.into())])
}

/// `[conv, text]` as Python's protocol 4 writes it: a FRAME, a short
/// string and MEMOIZE after each container and string.
fn protocol_4(conv: u8, text: &str) -> Vec<u8> {
    let mut body = vec![b']', 0x94, b'(', b'K', conv, 0x8c, text.len() as u8];
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(&[0x94, b'e', b'.']);
    let mut pickle = vec![0x80, 4, 0x95];
    pickle.extend_from_slice(&(body.len() as u64).to_le_bytes());
    pickle.extend(body);
    pickle
}

#[test]
fn natter_and_python_shapes_take_the_shortcut() {
    let ours = pickle::to_vec(&pair(3, "héllo"));
    assert_eq!(shortcut::int_str_pair(&ours), Some(pair(3, "héllo")));
    let python4 = protocol_4(3, "hi");
    assert_eq!(shortcut::int_str_pair(&python4), general(&python4));
    assert_eq!(shortcut::int_str_pair(&python4), Some(pair(3, "hi")));
    // Python 3, protocol 2, list and tuple.
    let list2 = b"\x80\x02]q\x00(K\x03X\x02\x00\x00\x00hiq\x01e.";
    assert_eq!(shortcut::int_str_pair(list2), Some(pair(3, "hi")));
    let tuple2 = b"\x80\x02K\x03X\x02\x00\x00\x00hiq\x00\x86q\x01.";
    assert_eq!(
        shortcut::int_str_pair(tuple2),
        Some(Value::Tuple(vec![Value::Int(3), Value::Str("hi".into())]))
    );
    assert_eq!(shortcut::int_str_pair(tuple2), general(tuple2));
}

#[test]
fn cpython_pickles_of_every_protocol_agree() {
    // python3 is on every supported machine: without it this test fails.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import pickle,sys\nfor p in range(0, 6):\n  for v in ([7, 'héllo wörld'], (65535, 'x' * 300), [2**31 - 1, '']):\n    sys.stdout.write(pickle.dumps(v, p).hex() + '\\n')",
        ])
        .output()
        .expect("python3 is needed by this test (see the README: what the tests need)");
    assert!(out.status.success(), "python3 failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut shortcuts = 0;
    for line in text.lines() {
        let bytes: Vec<u8> = (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
            .collect();
        let expected = general(&bytes).expect("the reader reads CPython's pickle");
        if let Some(value) = shortcut::int_str_pair(&bytes) {
            assert_eq!(value, expected, "{line}");
            shortcuts += 1;
        }
    }
    // Protocols 2 to 5 (three values each) are all shortcut-shaped.
    assert!(shortcuts >= 12, "only {shortcuts} took the shortcut");
}

#[test]
fn near_misses_go_the_general_way() {
    let good = pickle::to_vec(&pair(3, "hi"));
    // Trailing bytes, a missing STOP, a GET, a wrong FRAME length.
    let mut trailing = good.clone();
    trailing.push(b'.');
    assert_eq!(shortcut::int_str_pair(&trailing), None);
    assert_eq!(shortcut::int_str_pair(&good[..good.len() - 1]), None);
    let mut framed = protocol_4(3, "hi");
    framed[3] += 1;
    assert_eq!(shortcut::int_str_pair(&framed), None);
    // Invalid UTF-8 in the string.
    let bad = b"\x80\x02]q\x00(K\x03X\x02\x00\x00\x00\xff\xfeq\x01e.";
    assert_eq!(shortcut::int_str_pair(bad), None);
}

proptest! {
    #[test]
    fn the_shortcut_reads_what_the_writer_writes(conv in 0i64..=i64::from(i32::MAX), text in ".{0,300}") {
        let pickle = pickle::to_vec(&pair(conv, &text));
        prop_assert_eq!(shortcut::int_str_pair(&pickle), Some(pair(conv, &text)));
    }

    #[test]
    fn whatever_the_shortcut_reads_the_reader_reads_the_same(
        conv in 0u8..=255, text in ".{0,40}", flips in proptest::collection::vec((0usize..64, any::<u8>()), 0..3)
    ) {
        let mut pickle = if text.len() < 256 { protocol_4(conv, &text) } else { pickle::to_vec(&pair(conv.into(), &text)) };
        for (at, byte) in flips {
            let at = at % pickle.len();
            pickle[at] = byte;
        }
        if let Some(value) = shortcut::int_str_pair(&pickle) {
            prop_assert_eq!(Some(value), general(&pickle));
        }
    }
}

/// A framed SEND_MESSAGE whose arguments are `args`.
fn frame(args: &Value) -> bytes::BytesMut {
    let mut body = b"SEND_MESSAGE ".to_vec();
    body.extend(pickle::to_vec(args));
    let mut frame = bytes::BytesMut::new();
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

proptest! {
    /// The server's hot path gives exactly what decoding then typing gives:
    /// the same command, or the same error (negative ids, long texts).
    #[test]
    fn the_hot_path_agrees_with_decode_then_type(conv in any::<i32>(), text in ".{0,40}", long in 0usize..2) {
        use natter_proto::wire::Direction;
        use natter_proto::{Command, Decoder, Encoding, Limits};
        let mut limits = Limits::server_default();
        limits.max_message = 20 + long * 100;
        let wire = frame(&pair(conv.into(), &text));
        let mut fast = Decoder::new(Encoding::Framed, Direction::ToServer, limits.clone());
        let mut slow = Decoder::new(Encoding::Framed, Direction::ToServer, limits.clone());
        let (mut a, mut b) = (wire.clone(), wire);
        let got = fast.decode_command(&mut a).unwrap().unwrap();
        let raw = slow.decode(&mut b).unwrap().unwrap();
        prop_assert_eq!(got, Command::from_raw(raw, &limits));
        prop_assert!(a.is_empty() && b.is_empty());
    }
}
