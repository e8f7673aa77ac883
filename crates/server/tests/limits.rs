//! The abuse limits a public server needs: registration deadline, idle
//! timeout, rate limit, connection limits.

mod common;

use std::time::Duration;

use common::*;
use natter_proto::{Command, Encoding, ServerMessage};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn a_connection_that_never_registers_is_closed() {
    let mut config = test_config();
    config.register_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut lurker = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    lurker.send(Command::Caps(vec![])).await; // picks the encoding, no REGISTER
    let error = lurker
        .expect(|m| match m {
            ServerMessage::Error(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert!(error.contains("not registered within"), "{error}");
    lurker.expect_closed().await;
    // A client that registers in time stays.
    let mut alice = TestClient::registered(server.local_addr(), Encoding::Framed, "alice").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice.sync().await;
}

/// Reads a raw connection to its end (bounded); what the server said.
async fn read_to_end(stream: &mut tokio::net::TcpStream) -> String {
    let mut said = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut said))
        .await
        .expect("the server closes the connection")
        .expect("a clean close");
    String::from_utf8_lossy(&said).into_owned()
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_at_the_register_deadline() {
    let mut config = test_config();
    config.register_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut silent = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let connected = tokio::time::Instant::now();
    // Its encoding is unknown, so the ERROR comes in JSON.
    let said = read_to_end(&mut silent).await;
    assert!(
        said.starts_with(r#"{"command":"ERROR","args":"not registered within"#),
        "{said:?}"
    );
    assert!(connected.elapsed() >= Duration::from_millis(300));
    let stats = server.stats().await.unwrap();
    assert_eq!((stats.connections, stats.peers), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn the_register_deadline_counts_from_the_connect_not_the_first_byte() {
    let mut config = test_config();
    config.register_timeout = Duration::from_millis(600);
    let server = start_with(config).await;
    let mut late = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    let connected = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    late.send(Command::Caps(vec![])).await;
    let error = late
        .expect(|m| match m {
            ServerMessage::Error(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert!(error.contains("not registered within"), "{error}");
    late.expect_closed().await;
    // Counted from the first byte it would have been 1.1 s.
    let took = connected.elapsed();
    assert!(took < Duration::from_millis(1000), "closed after {took:?}");
}

#[tokio::test]
async fn a_silent_connection_is_closed_when_an_idle_timeout_is_set() {
    let mut config = test_config();
    config.idle_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut talker = TestClient::registered(server.local_addr(), Encoding::Json, "talker").await;
    let mut quiet = TestClient::registered(server.local_addr(), Encoding::Json, "quiet").await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        talker.sync().await;
    }
    let error = quiet
        .expect(|m| match m {
            ServerMessage::Error(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert!(error.contains("idle"), "{error}");
    quiet.expect_closed().await;
    talker.sync().await;
}

#[tokio::test]
async fn quiet_clients_stay_without_an_idle_timeout() {
    let server = start().await; // idle timeout off by default
    let mut quiet = TestClient::registered(server.local_addr(), Encoding::Classic, "quiet").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    quiet.sync().await;
}

/// A person pastes 30 lines: with the default limits (10 a second, burst
/// 20) the last ones wait their turn instead of being refused, and every
/// line arrives, in order, with no ERROR.
#[tokio::test]
async fn a_paste_of_thirty_lines_is_delivered_whole_and_in_order() {
    let defaults = natter_server::Config::default();
    let mut config = test_config();
    config.rate_limit = defaults.rate_limit;
    config.rate_burst = defaults.rate_burst;
    let server = start_with(config).await;
    let mut alice = TestClient::registered(server.local_addr(), Encoding::Json, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), Encoding::Classic, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    let mut paste = bytes::BytesMut::new();
    for line in 0..30 {
        let text = format!("line {line}");
        natter_proto::codec::encode_command(
            &Command::SendMessage {
                conv,
                text,
                nonce: None,
            },
            Encoding::Json,
            &mut paste,
        );
    }
    let started = tokio::time::Instant::now();
    alice.send_raw(&paste).await;
    for line in 0..30 {
        for client in [&mut alice, &mut bob] {
            match client.recv_msg().await {
                ServerMessage::Message { sender, text, .. } => {
                    assert_eq!((sender.as_str(), text), ("alice", format!("line {line}")));
                }
                other => panic!("{}: {other:?} instead of line {line}", client.name),
            }
        }
    }
    // The setup used a few of the 20 tokens, and 10 come back a second.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "not paced: {took:?}");
    alice.sync().await;
}

/// A frame that does not decode costs the server an ERROR like any other,
/// so it takes its turn under the rate limit too.
#[tokio::test]
async fn frames_that_do_not_decode_count_against_the_rate_limit() {
    let mut config = test_config();
    config.rate_limit = 20;
    config.rate_burst = 5;
    let server = start_with(config).await;
    let mut client = TestClient::registered(server.local_addr(), Encoding::Framed, "bad").await;
    // A whole frame holding a pickle that does not load: ERROR, and the
    // connection stays.
    let body = b"STATUS \xff\xff";
    let mut frames = Vec::new();
    for _ in 0..25 {
        frames.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frames.extend_from_slice(body);
    }
    let started = tokio::time::Instant::now();
    client.send_raw(&frames).await;
    for _ in 0..25 {
        client.expect_error().await;
    }
    // Five in the burst (less the REGISTER), then twenty at 20 a second.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "not counted: {took:?}");
    client.sync().await;
}

#[tokio::test]
async fn connections_over_the_per_address_limit_are_refused_with_an_error() {
    let mut config = test_config();
    config.max_connections_per_ip = 3;
    let server = start_with(config).await;
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(
            TestClient::registered(server.local_addr(), Encoding::Framed, &format!("k{i}")).await,
        );
    }
    let mut refused = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    refused
        .send(Command::Register {
            name: "extra".into(),
            status: "on".into(),
        })
        .await;
    let error = refused.expect_error().await;
    assert!(error.contains("too many connections"), "{error}");
    refused.expect_closed().await;
    // A place frees up when someone leaves.
    kept.pop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _again = TestClient::registered(server.local_addr(), Encoding::Framed, "again").await;
}

/// Over IPv6 (on ::1, the one IPv6 address a test may use) the limit holds
/// as well; `admission`'s unit tests show that it counts a whole /64.
#[tokio::test]
async fn ipv6_connections_over_the_per_address_limit_are_refused() {
    let mut config = test_config();
    config.listen = "[::1]:0".parse().unwrap();
    config.max_connections_per_ip = 2;
    let server = start_with(config).await;
    assert!(server.local_addr().is_ipv6());
    let _a = TestClient::registered(server.local_addr(), Encoding::Json, "a").await;
    let _b = TestClient::registered(server.local_addr(), Encoding::Json, "b").await;
    let mut refused = TestClient::connect(server.local_addr(), Encoding::Json).await;
    refused
        .send(Command::Register {
            name: "c".into(),
            status: "on".into(),
        })
        .await;
    assert!(
        refused
            .expect_error()
            .await
            .contains("too many connections")
    );
    refused.expect_closed().await;
}

#[tokio::test]
async fn connections_over_the_server_limit_are_refused_with_an_error() {
    let mut config = test_config();
    config.max_connections = 2;
    let server = start_with(config).await;
    let _a = TestClient::registered(server.local_addr(), Encoding::Classic, "a").await;
    let _b = TestClient::registered(server.local_addr(), Encoding::Classic, "b").await;
    let mut refused = TestClient::connect(server.local_addr(), Encoding::Classic).await;
    refused
        .send(Command::Register {
            name: "c".into(),
            status: "on".into(),
        })
        .await;
    assert!(refused.expect_error().await.contains("server full"));
    refused.expect_closed().await;
}
