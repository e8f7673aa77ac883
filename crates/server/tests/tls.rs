//! TLS on the chat port: the same conversation in every encoding over TLS,
//! next to plaintext; `--require-tls`; and handshakes that stall or are
//! garbage costing only their own connection. Certificates come from a CA
//! the test makes.

mod common;

use std::time::Duration;

use common::*;
use natter_proto::Encoding;
use natter_server::tls::Plaintext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ENCODINGS: [Encoding; 3] = [Encoding::Framed, Encoding::Classic, Encoding::Json];

#[tokio::test]
async fn every_encoding_chats_over_tls_with_plaintext_clients() {
    let tls = TestTls::new();
    let server = start_with(tls.config()).await;
    let addr = server.local_addr();
    for encoding in ENCODINGS {
        let tag = format!("{encoding:?}").to_lowercase();
        let mut secure =
            TestClient::registered_tls(addr, encoding, &format!("tls-{tag}"), &tls).await;
        let mut plain = TestClient::registered(addr, encoding, &format!("plain-{tag}")).await;
        let conv = secure.invite(&[&plain.name.clone()]).await;
        secure.join(conv).await;
        assert_eq!(plain.expect_invitation().await, conv);
        plain.join(conv).await;
        // Each waits for the hub to take the first message (its echo):
        // two connections' messages have no order of their own.
        let over_tls = (conv, format!("tls-{tag}"), "over TLS".to_string());
        let in_the_clear = (conv, format!("plain-{tag}"), "in the clear".to_string());
        secure.say(conv, "over TLS").await;
        assert_eq!(secure.expect_message().await, over_tls);
        plain.say(conv, "in the clear").await;
        assert_eq!(secure.expect_message().await, in_the_clear);
        assert_eq!(plain.expect_message().await, over_tls);
        assert_eq!(plain.expect_message().await, in_the_clear);
    }
    server.shutdown().await;
}

/// A batch the hub writes in one go (a burst of messages to one TLS
/// client) arrives whole and in order, across several TLS records.
#[tokio::test]
async fn a_burst_larger_than_a_record_arrives_in_order_over_tls() {
    let tls = TestTls::new();
    let server = start_with(tls.config()).await;
    let addr = server.local_addr();
    let mut talker = TestClient::registered_tls(addr, Encoding::Framed, "talker", &tls).await;
    let mut reader = TestClient::registered_tls(addr, Encoding::Json, "reader", &tls).await;
    let conv = talker.invite(&["reader"]).await;
    talker.join(conv).await;
    assert_eq!(reader.expect_invitation().await, conv);
    reader.join(conv).await;
    let text = "x".repeat(2000);
    for i in 0..40 {
        talker.say(conv, &format!("{i} {text}")).await;
    }
    for i in 0..40 {
        let (_, from, said) = reader.expect_message().await;
        assert_eq!(from, "talker");
        assert_eq!(said, format!("{i} {text}"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn require_tls_refuses_plaintext_in_its_own_encoding_and_says_why() {
    let tls = TestTls::new();
    let config = natter_server::Config {
        plaintext: Plaintext::Nowhere,
        ..tls.config()
    };
    let server = start_with(config).await;
    let addr = server.local_addr();
    for encoding in ENCODINGS {
        // 127.0.0.2: any address other than the usual one; the rule in
        // force here (Nowhere) refuses loopback too.
        let mut plain = TestClient::connect_from(addr, [127, 0, 0, 2], encoding).await;
        plain
            .send(natter_proto::Command::Register {
                name: "eve".into(),
                status: "online".into(),
            })
            .await;
        let error = plain.expect_error().await;
        assert!(error.contains("TLS required"), "{encoding:?}: {error}");
        assert!(error.contains("127.0.0.2"), "{encoding:?}: {error}");
        plain.expect_closed().await;
        // TLS from the same address is welcome.
        TestClient::registered_tls(addr, encoding, "alice", &tls)
            .await
            .send(natter_proto::Command::Goodbye)
            .await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn require_tls_still_lets_loopback_speak_plaintext() {
    let tls = TestTls::new();
    let config = natter_server::Config {
        plaintext: Plaintext::Loopback,
        ..tls.config()
    };
    let server = start_with(config).await;
    let addr = server.local_addr();
    let mut local = TestClient::connect_from(addr, [127, 0, 0, 2], Encoding::Json).await;
    local.register("local", "online").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_stalled_handshake_times_out_while_others_chat() {
    let tls = TestTls::new();
    let config = natter_server::Config {
        tls_handshake_timeout: Duration::from_millis(300),
        ..tls.config()
    };
    let server = start_with(config).await;
    let addr = server.local_addr();
    // Half a ClientHello record header, then nothing.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut a = TestClient::registered_tls(addr, Encoding::Json, "a", &tls).await;
    let mut b = TestClient::registered(addr, Encoding::Framed, "b").await;
    let conv = a.invite(&["b"]).await;
    a.join(conv).await;
    assert_eq!(b.expect_invitation().await, conv);
    b.join(conv).await;
    a.say(conv, "still here").await;
    assert_eq!(b.expect_message().await.2, "still here");
    assert_eq!(a.expect_message().await.2, "still here");
    // The stalled one is closed by the timeout, and only it.
    let mut sink = [0u8; 64];
    let closed = tokio::time::timeout(PATIENCE, stalled.read(&mut sink)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    b.say(conv, "and still").await;
    assert_eq!(a.expect_message().await.2, "and still");
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_after_0x16_closes_only_that_connection() {
    let tls = TestTls::new();
    let server = start_with(tls.config()).await;
    let addr = server.local_addr();
    let mut a = TestClient::registered_tls(addr, Encoding::Classic, "a", &tls).await;
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    let mut bytes = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    bytes.extend(std::iter::repeat_n(0xAB, 64));
    garbage.write_all(&bytes).await.unwrap();
    let mut sink = [0u8; 256];
    // rustls may answer with an alert before closing: read to the end.
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match garbage.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the garbage connection stayed open");
    let mut b = TestClient::registered_tls(addr, Encoding::Framed, "b", &tls).await;
    let conv = a.invite(&["b"]).await;
    a.join(conv).await;
    assert_eq!(b.expect_invitation().await, conv);
    server.shutdown().await;
}

/// Without a certificate, 0x16 is just an unknown first byte.
#[tokio::test]
async fn without_a_certificate_a_handshake_gets_the_unknown_encoding_error() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream.write_all(&[0x16, 0x03, 0x01, 0x00]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("ERROR"), "{answer}");
    server.shutdown().await;
}

/// With a certificate the web listener speaks HTTPS only: the page over a
/// TLS GET, the WebSocket over wss, and a plain HTTP request gets no page.
#[tokio::test]
async fn the_web_page_and_its_websocket_are_served_over_https() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let tls = TestTls::new();
    let config = natter_server::Config {
        web: Some("127.0.0.1:0".parse().unwrap()),
        ..tls.config()
    };
    let server = start_with(config).await;
    let web = server.web_addr().unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();

    let tcp = TcpStream::connect(web).await.unwrap();
    let mut page = tls.connector.connect(name.clone(), tcp).await.unwrap();
    page.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, page.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("<html"), "{response}");

    let tcp = TcpStream::connect(web).await.unwrap();
    let wss = tls.connector.connect(name, tcp).await.unwrap();
    let (mut ws, answer) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws", web.port()), wss)
            .await
            .expect("WebSocket over TLS");
    assert_eq!(answer.status(), 101);
    let register = r#"{"command":"REGISTER","args":["webby","online"]}"#;
    ws.send(Message::text(register)).await.unwrap();
    let first = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = first.into_text().unwrap();
    assert!(
        text.contains("ONLINE_USERS") && text.contains("webby"),
        "{text}"
    );

    let mut plain = TcpStream::connect(web).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
    server.shutdown().await;
}

/// The slow-consumer rule holds over TLS: what rustls took counts as
/// written, the rest as queued, and a TLS client that never reads is cut
/// off once its queue passes the limit, while the sender chats on.
#[tokio::test]
async fn a_tls_client_that_never_reads_is_cut_off_as_a_slow_consumer() {
    let tls = TestTls::new();
    let config = natter_server::Config {
        send_queue: 128 * 1024,
        ..tls.config()
    };
    let server = start_with(config).await;
    let addr = server.local_addr();
    let mut alice = TestClient::registered_tls(addr, Encoding::Framed, "alice", &tls).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let sloth_tls = tls.connector.connect(name, tcp).await.unwrap();
    let mut sloth = TestClient::over_wire(Wire::Tls(Box::new(sloth_tls)), Encoding::Json);
    sloth.register("sloth", "zzz").await;
    let conv = alice.invite(&["sloth"]).await;
    alice.join(conv).await;
    sloth.join(conv).await;
    let text = "s".repeat(8000);
    let mut cut_off = false;
    for k in 0..400 {
        alice.say(conv, &format!("{k} {text}")).await;
        assert_eq!(alice.expect_message().await.2, format!("{k} {text}"));
        if k % 10 == 0 && server.stats().await.unwrap().users == 1 {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "the sloth was never cut off");
    server.shutdown().await;
}
