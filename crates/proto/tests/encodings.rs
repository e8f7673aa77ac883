//! Each encoding's framing rules, fed whole and in pieces.

use bytes::BytesMut;
use natter_proto::codec::{encode_command, encode_message};
use natter_proto::pickle::writer;
use natter_proto::wire::{Direction, RawMessage};
use natter_proto::{Command, DecodeError, Decoder, Encoding, Limits, ServerMessage, Value};

fn server_decoder(encoding: Encoding) -> Decoder {
    Decoder::new(encoding, Direction::ToServer, Limits::server_default())
}

fn pickle(value: &Value) -> Vec<u8> {
    natter_proto::pickle::to_vec(value)
}

fn send_message() -> Value {
    Value::List(vec![Value::Int(3), Value::Str("hello world".into())])
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn command(raw: RawMessage) -> Command {
    Command::from_raw(raw, &Limits::server_default()).unwrap()
}

#[test]
fn framed_send_message_decodes() {
    let mut body = b"SEND_MESSAGE ".to_vec();
    body.extend(pickle(&send_message()));
    let mut buf = BytesMut::from(&framed(&body)[..]);
    let raw = server_decoder(Encoding::Framed)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(
        command(raw),
        Command::SendMessage {
            conv: 3,
            text: "hello world".into(),
            nonce: None,
        }
    );
    assert!(buf.is_empty());
}

#[test]
fn framed_zero_length_is_fatal() {
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
    let err = server_decoder(Encoding::Framed)
        .decode(&mut buf)
        .unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadFrameLength {
            len: 0,
            max: 64 * 1024
        }
    );
    assert!(err.is_fatal());
}

#[test]
fn framed_length_over_the_limit_is_fatal_before_the_body_arrives() {
    let mut buf = BytesMut::from(&[0u8, 1, 0, 1][..]);
    let err = server_decoder(Encoding::Framed)
        .decode(&mut buf)
        .unwrap_err();
    assert!(matches!(
        err,
        DecodeError::BadFrameLength { len: 65537, .. }
    ));
    assert!(err.is_fatal());
}

#[test]
fn framed_bad_pickle_costs_only_that_frame() {
    let mut wire = framed(b"JOIN \x80\x02cos\nsystem\n.");
    wire.extend(framed(b"GOODBYE"));
    let mut buf = BytesMut::from(&wire[..]);
    let mut decoder = server_decoder(Encoding::Framed);
    let err = decoder.decode(&mut buf).unwrap_err();
    assert!(!err.is_fatal(), "{err}");
    assert!(err.to_string().contains("GLOBAL"), "{err}");
    assert_eq!(
        command(decoder.decode(&mut buf).unwrap().unwrap()),
        Command::Goodbye
    );
}

#[test]
fn framed_bytes_after_the_stop_are_recoverable() {
    let mut body = b"JOIN ".to_vec();
    body.extend(pickle(&Value::Int(3)));
    body.push(b'x');
    let mut wire = framed(&body);
    wire.extend(framed(b"LIST_CONVERSATIONS"));
    let mut buf = BytesMut::from(&wire[..]);
    let mut decoder = server_decoder(Encoding::Framed);
    assert_eq!(
        decoder.decode(&mut buf).unwrap_err(),
        DecodeError::TrailingBytes
    );
    assert_eq!(
        command(decoder.decode(&mut buf).unwrap().unwrap()),
        Command::ListConversations
    );
}

#[test]
fn framed_unknown_word_is_left_to_typing() {
    let mut buf = BytesMut::from(&framed(b"FLY")[..]);
    let raw = server_decoder(Encoding::Framed)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    let err = Command::from_raw(raw, &Limits::server_default()).unwrap_err();
    assert!(err.to_string().contains("FLY"));
}

#[test]
fn framed_partial_frame_waits() {
    let mut body = b"JOIN ".to_vec();
    body.extend(pickle(&Value::List(vec![Value::Int(7)])));
    let wire = framed(&body);
    let mut decoder = server_decoder(Encoding::Framed);
    let mut buf = BytesMut::new();
    for (i, byte) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let got = decoder.decode(&mut buf).unwrap();
        assert_eq!(got.is_some(), i == wire.len() - 1);
    }
}

#[test]
fn classic_reads_course_client_messages() {
    // What a Python 2 course client sends: protocol-0 pickles, back to back,
    // with a pickle after GOODBYE and whitespace in between.
    let wire: &[u8] = b"REGISTER (lp0\nS'alice'\np1\naS'online'\np2\na.\r\nSTATUS S'away'\np0\n.JOIN I3\n.GOODBYE N.LIST_CONVERSATIONS\nSEND_MESSAGE (I3\nVhi \\u263a\np0\ntp1\n.";
    let mut buf = BytesMut::from(wire);
    let mut decoder = server_decoder(Encoding::Classic);
    let mut got = Vec::new();
    while let Some(raw) = decoder.decode(&mut buf).unwrap() {
        got.push(command(raw));
    }
    assert_eq!(
        got,
        vec![
            Command::Register {
                name: "alice".into(),
                status: "online".into()
            },
            Command::Status("away".into()),
            Command::Join(3),
            Command::Goodbye,
            Command::ListConversations,
            Command::SendMessage {
                conv: 3,
                text: "hi \u{263a}".into(),
                nonce: None,
            },
        ]
    );
}

#[test]
fn classic_word_prefix_waits_and_unknown_word_is_fatal() {
    let mut decoder = server_decoder(Encoding::Classic);
    let mut buf = BytesMut::from(&b"SEND_MES"[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    let mut decoder = server_decoder(Encoding::Classic);
    let mut buf = BytesMut::from(&b"FLY N."[..]);
    let err = decoder.decode(&mut buf).unwrap_err();
    assert_eq!(err, DecodeError::UnknownCommand("FLY".into()));
    assert!(err.is_fatal());
}

#[test]
fn classic_bad_pickle_is_fatal() {
    let mut buf = BytesMut::from(&b"JOIN cos\nsystem\n(S'true'\ntR."[..]);
    let err = server_decoder(Encoding::Classic)
        .decode(&mut buf)
        .unwrap_err();
    assert!(err.is_fatal());
    assert!(err.to_string().contains("GLOBAL"), "{err}");
}

#[test]
fn classic_pickle_longer_than_the_limit_is_fatal() {
    let limits = Limits {
        max_frame: 100,
        ..Limits::server_default()
    };
    let mut decoder = Decoder::new(Encoding::Classic, Direction::ToServer, limits);
    let mut buf = BytesMut::from(&b"STATUS ]"[..]);
    buf.extend_from_slice(&[b'N'; 200]);
    let err = decoder.decode(&mut buf).unwrap_err();
    assert_eq!(err, DecodeError::TooLarge { max: 100 });
    // A string whose declared length is over the limit fails at once.
    let mut decoder = Decoder::new(
        Encoding::Classic,
        Direction::ToServer,
        Limits {
            max_frame: 100,
            ..Limits::server_default()
        },
    );
    let mut buf = BytesMut::from(&b"STATUS X\x00\x00\x01\x00ab"[..]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap_err(),
        DecodeError::TooLarge { max: 100 }
    );
}

#[test]
fn json_lines_decode_with_blank_lines_and_crlf() {
    let wire = b"\n{\"command\":\"SEND_MESSAGE\",\"args\":[3,\"hi\"]}\r\n\r\n{\"command\":\"GOODBYE\"}\n{\"command\":\"LIST_CONVERSATIONS\",\"args\":null}\n";
    let mut buf = BytesMut::from(&wire[..]);
    let mut decoder = server_decoder(Encoding::Json);
    let mut got = Vec::new();
    while let Some(raw) = decoder.decode(&mut buf).unwrap() {
        got.push(command(raw));
    }
    assert_eq!(
        got,
        vec![
            Command::SendMessage {
                conv: 3,
                text: "hi".into(),
                nonce: None,
            },
            Command::Goodbye,
            Command::ListConversations
        ]
    );
}

#[test]
fn json_invalid_json_and_utf8_are_fatal_wrong_shape_is_not() {
    let mut decoder = server_decoder(Encoding::Json);
    let mut buf = BytesMut::from(&b"[1,2]\n{\"command\":\"GOODBYE\"}\n"[..]);
    let err = decoder.decode(&mut buf).unwrap_err();
    assert!(!err.is_fatal(), "{err}");
    assert_eq!(
        command(decoder.decode(&mut buf).unwrap().unwrap()),
        Command::Goodbye
    );

    let mut buf = BytesMut::from(&b"{\"command\": nope}\n"[..]);
    assert!(
        server_decoder(Encoding::Json)
            .decode(&mut buf)
            .unwrap_err()
            .is_fatal()
    );
    let mut buf = BytesMut::from(&b"{\"command\":\"\xff\"}\n"[..]);
    assert_eq!(
        server_decoder(Encoding::Json).decode(&mut buf).unwrap_err(),
        DecodeError::InvalidUtf8
    );
}

#[test]
fn json_line_without_newline_is_refused_once_over_the_limit() {
    let limits = Limits {
        max_frame: 64,
        ..Limits::server_default()
    };
    let mut decoder = Decoder::new(Encoding::Json, Direction::ToServer, limits);
    let mut buf = BytesMut::from(&b"{\"command\":\"STATUS\",\"args\":\""[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(&[b'a'; 40]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap_err(),
        DecodeError::TooLarge { max: 64 }
    );
}

#[test]
fn json_deep_args_are_a_recoverable_error() {
    let mut line = b"{\"command\":\"STATUS\",\"args\":".to_vec();
    line.extend(std::iter::repeat_n(b'[', 40));
    line.extend(std::iter::repeat_n(b']', 40));
    line.extend_from_slice(b"}\n");
    let mut buf = BytesMut::from(&line[..]);
    let err = server_decoder(Encoding::Json).decode(&mut buf).unwrap_err();
    assert!(!err.is_fatal());
    assert!(err.to_string().contains("nested"), "{err}");
}

#[test]
fn server_messages_in_json_look_like_the_contract() {
    let text =
        |m: &ServerMessage| String::from_utf8(encode_message(m, Encoding::Json).to_vec()).unwrap();
    assert_eq!(
        text(&ServerMessage::Message {
            conv: 3,
            sender: "alice".into(),
            text: "hi".into(),
            meta: None,
        }),
        "{\"command\":\"MESSAGE\",\"args\":[3,\"alice\",\"hi\"]}\n"
    );
    assert_eq!(
        text(&ServerMessage::Error("not registered".into())),
        "{\"command\":\"ERROR\",\"args\":\"not registered\"}\n"
    );
    assert_eq!(
        text(&ServerMessage::Conversations(vec![
            (3, vec!["a".into(), "b".into()]),
            (4, vec![])
        ])),
        "{\"command\":\"CONVERSATIONS\",\"args\":{\"3\":[\"a\",\"b\"],\"4\":[]}}\n"
    );
    assert_eq!(
        text(&ServerMessage::Presence(vec![
            ("bob".into(), None),
            ("al".into(), Some("x\"\n".into()))
        ])),
        "{\"command\":\"PRESENCE\",\"args\":{\"bob\":null,\"al\":\"x\\\"\\n\"}}\n"
    );
}

#[test]
fn server_message_pickles_are_protocol_2() {
    let bytes = encode_message(
        &ServerMessage::Message {
            conv: 3,
            sender: "al".into(),
            text: "hi".into(),
            meta: None,
        },
        Encoding::Classic,
    );
    assert_eq!(
        &bytes[..],
        b"MESSAGE \x80\x02](K\x03X\x02\x00\x00\x00alX\x02\x00\x00\x00hie."
    );
    let mut expected = BytesMut::new();
    writer::begin(&mut expected);
    assert_eq!(&bytes[8..10], &expected[..]);
}

#[test]
fn client_commands_encode_and_decode_in_every_encoding() {
    for encoding in Encoding::ALL {
        let mut out = BytesMut::new();
        let cmds = [
            Command::Register {
                name: "alice".into(),
                status: "here".into(),
            },
            Command::Goodbye,
            Command::Invite(vec!["bob".into(), "carol".into()]),
            Command::ListConversations,
            Command::SendMessage {
                conv: 1,
                text: "x".into(),
                nonce: None,
            },
        ];
        for c in &cmds {
            encode_command(c, encoding, &mut out);
        }
        let mut decoder = server_decoder(encoding);
        let mut got = Vec::new();
        while let Some(raw) = decoder.decode(&mut out).unwrap() {
            got.push(command(raw));
        }
        assert_eq!(got, cmds, "{encoding:?}");
    }
}

/// A decoder put to sleep between messages (an idle connection's reader
/// keeps only this) wakes up reading the stream exactly as before: here a
/// course client's `LIST_CONVERSATIONS` and the pickle it sends after it,
/// which the classic decoder must still know to skip.
#[test]
fn a_decoder_put_to_sleep_between_messages_reads_on_as_before() {
    let mut decoder = Decoder::new(
        Encoding::Classic,
        Direction::ToServer,
        Limits::server_default(),
    );
    let mut buf = BytesMut::from(&b"LIST_CONVERSATIONS"[..]);
    let first = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(first.word, "LIST_CONVERSATIONS");
    assert!(buf.is_empty());
    let sleeping = decoder.sleep();
    let mut decoder = Decoder::wake(sleeping, Limits::server_default());
    // pickle.dumps(None, 2), then the next command.
    buf.extend_from_slice(b"\x80\x02N.GOODBYE");
    let next = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(next.word, "GOODBYE");
    assert!(buf.is_empty());
}
