//! The three encodings side by side, pickles from real CPython, hostile
//! pickles, and the framing rules that close a connection.

mod common;

use std::process::Command as Process;
use std::time::Duration;

use common::*;
use natter_proto::{Command, Encoding, ServerMessage};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn framed_classic_and_json_clients_share_a_conversation() {
    let server = start().await;
    let addr = server.local_addr();
    let mut framed = TestClient::registered(addr, Encoding::Framed, "framed").await;
    let mut classic = TestClient::registered(addr, Encoding::Classic, "classic").await;
    let mut json = TestClient::registered(addr, Encoding::Json, "json").await;
    let conv = framed.invite(&["classic", "json"]).await;
    framed.join(conv).await;
    assert_eq!(classic.expect_invitation().await, conv);
    classic.join(conv).await;
    assert_eq!(json.expect_invitation().await, conv);
    json.join(conv).await;
    for (speaker, text) in [(0, "from framed"), (1, "from classic"), (2, "from json")] {
        let clients = [&mut framed, &mut classic, &mut json];
        let sender = clients[speaker].name.clone();
        let [a, b, c] = clients;
        [a, b, c][speaker].say(conv, text).await;
        for client in [&mut framed, &mut classic, &mut json] {
            assert_eq!(
                client.expect_message().await,
                (conv, sender.clone(), text.to_string())
            );
        }
    }
}

/// Runs python3 and returns what it wrote to stdout.
fn python(code: &str) -> Vec<u8> {
    let out = Process::new("python3")
        .args(["-c", code])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn cpython_pickles_of_every_protocol_are_understood() {
    let server = start().await;
    let mut watcher =
        TestClient::registered(server.local_addr(), Encoding::Framed, "watcher").await;
    for protocol in 0..=5 {
        let name = format!("py{protocol}");
        // Classic: exactly what a course client sends.
        let classic = python(&format!(
            "import pickle,sys; sys.stdout.buffer.write(b'REGISTER ' + pickle.dumps(['{name}', 'online'], protocol={protocol}))"
        ));
        let mut client = TestClient::connect(server.local_addr(), Encoding::Classic).await;
        client.send_raw(&classic).await;
        client.name = name.clone();
        client.expect_online_users().await;
        watcher
            .expect_online_users_where(|u| u.iter().any(|(n, _)| *n == name))
            .await;
        // Framed: the same body behind a length, with a tuple this time.
        let framed = python(&format!(
            "import pickle,struct,sys; b = b'STATUS ' + pickle.dumps(('proto {protocol}',), protocol={protocol}); sys.stdout.buffer.write(struct.pack('>I', len(b)) + b)"
        ));
        let mut framed_client = TestClient::connect(server.local_addr(), Encoding::Framed).await;
        framed_client.register(&format!("f{protocol}"), "x").await;
        framed_client.send_raw(&framed).await;
        let status = format!("proto {protocol}");
        framed_client
            .expect_online_users_where(|u| u.iter().any(|(_, s)| *s == status))
            .await;
        std::mem::forget(client);
        std::mem::forget(framed_client);
    }
}

#[tokio::test]
async fn python2_str_pickles_are_read_as_text() {
    // Protocol 0 and 2 pickles of Python 2 `str`, made by hand as Jython
    // would: STRING / SHORT_BINSTRING opcodes.
    let server = start().await;
    let mut client = TestClient::connect(server.local_addr(), Encoding::Classic).await;
    client
        .send_raw(b"REGISTER (lp0\nS'jython'\np1\naS'online'\np2\na.")
        .await;
    client.name = "jython".into();
    let users = client.expect_online_users().await;
    assert_eq!(users, vec![("jython".to_string(), "online".to_string())]);
    client
        .send_raw(b"STATUS \x80\x02]q\x00U\x04awayq\x01a.")
        .await;
    client.expect_online_users_where(|u| u[0].1 == "away").await;
}

#[tokio::test]
async fn code_running_pickles_are_refused_and_nothing_runs() {
    let server = start().await;
    let marker = std::env::temp_dir().join(format!("natter-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let payloads = python(&format!(
        r#"
import pickle, os, struct, sys
class Evil:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
bodies = [pickle.dumps(Evil(), protocol=p) for p in range(0, 6)]
# INST, OBJ and BUILD by hand (protocol 0/1 object opcodes)
bodies.append(b"(S'touch {marker}'\nios\nsystem\n.")
bodies.append(b"(cos\nsystem\nS'touch {marker}'\no.")
bodies.append(b"\x80\x02c__builtin__\nobject\n)\x81}}b.")
bodies.append(b"\x80\x02]P1\n.")
bodies.append(b"\x80\x02\x82\x01.")
for b in bodies:
    body = b"STATUS " + b
    sys.stdout.buffer.write(struct.pack('>I', len(body)) + body)
"#,
        marker = marker.display()
    ));
    let mut client = TestClient::registered(server.local_addr(), Encoding::Framed, "mallory").await;
    client.send_raw(&payloads).await;
    for _ in 0..11 {
        let error = client.expect_error().await;
        assert!(
            error.contains("not allowed") || error.contains("pickle"),
            "{error}"
        );
    }
    // The framed connection survives each refusal.
    client.sync().await;
    assert!(!marker.exists(), "a pickle ran code");
    // In classic mode the stream cannot be trusted after one: ERROR, close.
    let evil = python(&format!(
        "import pickle,os,sys\nclass E:\n  def __reduce__(self): return (os.system, ('touch {}',))\nsys.stdout.buffer.write(b'STATUS ' + pickle.dumps(E(), protocol=2))",
        marker.display()
    ));
    let mut classic =
        TestClient::registered(server.local_addr(), Encoding::Classic, "mallory2").await;
    classic.send_raw(&evil).await;
    classic.expect_error().await;
    classic.expect_closed().await;
    assert!(!marker.exists(), "a pickle ran code");
}

#[tokio::test]
async fn deeply_nested_pickles_are_refused_without_crashing() {
    let server = start().await;
    let mut client = TestClient::registered(server.local_addr(), Encoding::Framed, "deep").await;
    let mut body = b"STATUS ".to_vec();
    body.extend(std::iter::repeat_n(b']', 2000));
    body.extend(std::iter::repeat_n(b'a', 1999));
    body.push(b'.');
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    client.send_raw(&frame).await;
    client.expect_error().await;
    client.sync().await;
}

/// A client whose first bytes break the framing gets ERROR and a close;
/// a bystander keeps chatting.
async fn framing_violation_closes_only_the_offender(bytes: &[u8]) {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), Encoding::Framed, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), Encoding::Framed, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;

    let mut offender = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut offender, bytes)
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(PATIENCE, offender.read_to_end(&mut reply))
        .await
        .expect("offender is closed")
        .ok();
    assert!(
        String::from_utf8_lossy(&reply).contains("ERROR")
            || reply.windows(5).any(|w| w == b"ERROR"),
        "no ERROR before close: {reply:?}"
    );

    alice.say(conv, "unaffected").await;
    assert_eq!(bob.expect_message().await.2, "unaffected");
}

#[tokio::test]
async fn a_zero_length_frame_closes_the_connection() {
    framing_violation_closes_only_the_offender(&[0, 0, 0, 0]).await;
}

#[tokio::test]
async fn an_oversized_frame_closes_the_connection() {
    framing_violation_closes_only_the_offender(&[0, 0x10, 0, 0, b'R']).await;
}

#[tokio::test]
async fn an_unknown_classic_command_closes_the_connection() {
    framing_violation_closes_only_the_offender(b"HELLO world").await;
}

#[tokio::test]
async fn invalid_json_closes_the_connection() {
    framing_violation_closes_only_the_offender(b"{\"command\": REGISTER}\n").await;
}

#[tokio::test]
async fn an_unknown_first_byte_gets_a_readable_error_and_a_close() {
    framing_violation_closes_only_the_offender(b"hello there\n").await;
}

#[tokio::test]
async fn unknown_commands_in_framed_and_json_are_errors_not_disconnects() {
    let server = start().await;
    for enc in [Encoding::Framed, Encoding::Json] {
        let mut client =
            TestClient::registered(server.local_addr(), enc, &format!("u{enc:?}")).await;
        client
            .send_words(natter_proto::wire::RawMessage {
                word: "FLY".into(),
                args: None,
            })
            .await;
        assert!(client.expect_error().await.contains("FLY"));
        client.sync().await;
    }
}

#[tokio::test]
async fn classic_no_argument_commands_tolerate_whitespace_and_a_pickle() {
    let server = start().await;
    let mut client = TestClient::connect(server.local_addr(), Encoding::Classic).await;
    let register = python(
        "import pickle,sys; sys.stdout.buffer.write(b'REGISTER ' + pickle.dumps(['cl', 'on'], 2))",
    );
    client.send_raw(&register).await;
    client.name = "cl".into();
    client.expect_online_users().await;
    // LIST_CONVERSATIONS with trailing CRLF, then one with a pickled None.
    client.send_raw(b"LIST_CONVERSATIONS\r\n").await;
    client
        .expect(|m| matches!(m, ServerMessage::Conversations(_)).then_some(()))
        .await;
    let with_none = python(
        "import pickle,sys; sys.stdout.buffer.write(b'LIST_CONVERSATIONS ' + pickle.dumps(None))",
    );
    client.send_raw(&with_none).await;
    client
        .expect(|m| matches!(m, ServerMessage::Conversations(_)).then_some(()))
        .await;
    client.send(Command::Goodbye).await;
    client.expect_closed().await;
}

#[tokio::test]
async fn bytes_split_anywhere_are_reassembled() {
    let server = start().await;
    let mut client = TestClient::connect(server.local_addr(), Encoding::Classic).await;
    let register = python(
        "import pickle,sys; sys.stdout.buffer.write(b'REGISTER ' + pickle.dumps(['slow', 'typing'], 0))",
    );
    for byte in &register {
        client.send_raw(std::slice::from_ref(byte)).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    client.name = "slow".into();
    assert_eq!(
        client.expect_online_users().await,
        vec![("slow".to_string(), "typing".to_string())]
    );
}
