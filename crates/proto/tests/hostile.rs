//! Hostile pickles: code, depth, size and memo tricks are refused with an
//! error (never a crash, never executed).

use bytes::BytesMut;
use natter_proto::pickle::{PickleError, decode};
use natter_proto::wire::Direction;
use natter_proto::{Decoder, Encoding, Limits, Value};

fn read(bytes: &[u8]) -> Result<Value, PickleError> {
    let limits = Limits::server_default();
    decode(bytes, limits.max_depth, limits.max_items)
}

fn forbidden(name: &str) -> impl Fn(&PickleError) -> bool + '_ {
    move |e| matches!(e, PickleError::ForbiddenOpcode { name: n, .. } if *n == name)
}

#[test]
fn code_running_opcodes_are_refused() {
    let cases: &[(&str, &[u8])] = &[
        ("GLOBAL", b"cos\nsystem\n(S'touch /tmp/x'\ntR."),
        (
            "STACK_GLOBAL",
            b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x01x\x85R.",
        ),
        ("INST", b"(S'touch /tmp/x'\nios\nsystem\n."),
        ("OBJ", b"(NS'x'\no."),
        ("NEWOBJ", b"\x80\x02N)\x81."),
        ("NEWOBJ_EX", b"\x80\x04N)}\x92."),
        ("BUILD", b"\x80\x02}}b."),
        ("REDUCE", b"\x80\x02N)R."),
        ("PERSID", b"Pfoo\n."),
        ("BINPERSID", b"\x80\x02NQ."),
        ("EXT1", b"\x80\x02\x82\x01."),
        ("EXT2", b"\x80\x02\x83\x01\x00."),
        ("EXT4", b"\x80\x02\x84\x01\x00\x00\x00."),
        ("NEXT_BUFFER", b"\x80\x05\x97."),
        ("READONLY_BUFFER", b"\x80\x05N\x98."),
    ];
    for (name, bytes) in cases {
        let err = read(bytes).unwrap_err();
        assert!(forbidden(name)(&err), "{name}: {err}");
        assert!(
            err.to_string()
                .contains("not allowed: pickles must carry data only")
        );
    }
    let err = read(b"cos\nsystem\n.").unwrap_err();
    assert_eq!(
        err.to_string(),
        "opcode GLOBAL (0x63) is not allowed: pickles must carry data only"
    );
}

#[test]
fn unknown_opcode_bytes_are_refused() {
    assert_eq!(
        read(b"\x80\x02\xff."),
        Err(PickleError::UnknownOpcode(0xff))
    );
    assert_eq!(read(b"Z."), Err(PickleError::UnknownOpcode(b'Z')));
}

#[test]
fn sets_are_refused_with_a_reason() {
    let err = read(b"\x80\x04\x8f(K\x01\x90.").unwrap_err();
    assert!(
        err.to_string()
            .contains("sets are not part of the protocol"),
        "{err}"
    );
}

#[test]
fn two_thousand_nested_lists_are_too_deep() {
    let mut bytes = vec![b']'; 2000];
    bytes.extend(vec![b'a'; 1999]);
    bytes.push(b'.');
    assert_eq!(read(&bytes), Err(PickleError::TooDeep { max: 32 }));
}

#[test]
fn a_hundred_thousand_marks_are_too_deep() {
    let mut bytes = vec![b'('; 100_000];
    bytes.push(b'.');
    assert_eq!(read(&bytes), Err(PickleError::TooDeep { max: 32 }));
}

#[test]
fn nesting_at_the_limit_is_fine_and_one_more_is_not() {
    let nested = |n: usize| {
        let mut bytes = vec![b']'; n];
        bytes.extend(vec![b'a'; n - 1]);
        bytes.push(b'.');
        bytes
    };
    assert!(read(&nested(32)).is_ok());
    assert_eq!(read(&nested(33)), Err(PickleError::TooDeep { max: 32 }));
}

#[test]
fn memo_bombs_are_bounded_by_max_items() {
    // x0 = ["xxxxxxxxxx"]; x1 = [x0] * 1000; x2 = [x1] * 1000: a million
    // values from a few kilobytes.
    let mut bytes = b"\x80\x02]q\x00X\x0a\x00\x00\x00xxxxxxxxxxa".to_vec();
    for level in 0..2u8 {
        bytes.extend_from_slice(b"](");
        for _ in 0..1000 {
            bytes.extend_from_slice(&[b'h', level]);
        }
        bytes.extend_from_slice(&[b'e', b'q', level + 1]);
    }
    bytes.push(b'.');
    assert!(bytes.len() < 5000);
    assert_eq!(
        read(&bytes),
        Err(PickleError::TooManyItems { max: 16 * 1024 })
    );
}

#[test]
fn too_many_values_are_refused() {
    let mut bytes = b"\x80\x02](".to_vec();
    bytes.extend(vec![b'N'; 20_000]);
    bytes.extend_from_slice(b"e.");
    assert_eq!(
        read(&bytes),
        Err(PickleError::TooManyItems { max: 16 * 1024 })
    );
}

#[test]
fn integers_beyond_64_bits_are_refused() {
    // 2**64 as LONG1, and as protocol-0 LONG text.
    assert_eq!(
        read(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01."),
        Err(PickleError::IntegerTooLarge)
    );
    assert_eq!(
        read(b"L18446744073709551616L\n."),
        Err(PickleError::IntegerTooLarge)
    );
}

#[test]
fn memo_reads_of_unset_keys_are_refused() {
    assert_eq!(read(b"\x80\x02h\x05."), Err(PickleError::BadMemo(5)));
}

#[test]
fn malformed_stacks_are_errors_not_panics() {
    let cases: &[&[u8]] = &[
        b".",
        b"a.",
        b"Na.",
        b"NNs.",
        b"e.",
        b"(e.",
        b"N(Ne.",
        b"u.",
        b"t.",
        b"\x87.",
        b"N1.",
        b"0.",
        b"2.",
        b"q\x00.",
        b"}(Nu.",
        b"}(]Nu.",
        b"K\x01]a.",
        b"T\xff\xff\xff\xff.",
        b"S'unterminated\n.",
        b"Vbad \\u12\n.",
        b"\x80\x09N.",
        b"X\x02\x00\x00\x00\xff\xfe.",
    ];
    for bytes in cases {
        assert!(read(bytes).is_err(), "{:?}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn every_truncation_of_a_pickle_is_an_error() {
    let whole = natter_proto::pickle::to_vec(&Value::Dict(vec![(
        Value::Str("k".into()),
        Value::List(vec![Value::Int(1 << 40), Value::Float(0.5), Value::None]),
    )]));
    for cut in 0..whole.len() {
        assert_eq!(
            read(&whole[..cut]),
            Err(PickleError::Truncated),
            "cut at {cut}"
        );
    }
}

#[test]
fn hostile_framed_pickles_leave_the_connection_usable() {
    let mut body = b"JOIN ".to_vec();
    body.extend(vec![b'('; 60_000]);
    body.push(b'.');
    let mut wire = (body.len() as u32).to_be_bytes().to_vec();
    wire.extend(body);
    wire.extend_from_slice(&[0, 0, 0, 7]);
    wire.extend_from_slice(b"GOODBYE");
    let mut buf = BytesMut::from(&wire[..]);
    let mut decoder = Decoder::new(
        Encoding::Framed,
        Direction::ToServer,
        Limits::server_default(),
    );
    let err = decoder.decode(&mut buf).unwrap_err();
    assert!(!err.is_fatal());
    assert!(err.to_string().contains("nested"), "{err}");
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().word, "GOODBYE");
}
