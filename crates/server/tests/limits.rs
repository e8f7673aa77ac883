//! The abuse limits a public server needs: registration deadline, idle
//! timeout, rate limit, connection limits.

mod common;

use std::time::Duration;

use common::*;
use natter_proto::{Command, Encoding, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

#[tokio::test]
async fn commands_over_the_rate_limit_get_errors_and_others_are_unaffected() {
    let mut config = test_config();
    config.rate_limit = 5;
    config.rate_burst = 5;
    let server = start_with(config).await;
    let mut flooder =
        TestClient::registered(server.local_addr(), Encoding::Framed, "flooder").await;
    let mut calm = TestClient::registered(server.local_addr(), Encoding::Framed, "calm").await;
    for _ in 0..20 {
        flooder.send(Command::ListConversations).await;
    }
    let (mut answered, mut refused) = (0, 0);
    while answered + refused < 20 {
        match flooder.recv_msg().await {
            ServerMessage::Conversations(_) => answered += 1,
            ServerMessage::Error(text) => {
                assert!(text.contains("rate limit"), "{text}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The registration used one token of the burst of five.
    assert!((3..=5).contains(&answered), "{answered} answered");
    assert_eq!(refused, 20 - answered);
    calm.sync().await;
}

#[tokio::test]
async fn a_sustained_flood_is_disconnected() {
    let mut config = test_config();
    config.rate_limit = 2;
    config.rate_burst = 2;
    let server = start_with(config).await;
    let mut flooder = TestClient::registered(server.local_addr(), Encoding::Json, "flooder").await;
    let started = tokio::time::Instant::now();
    let mut status = bytes::BytesMut::new();
    natter_proto::codec::encode_command(
        &Command::Status("spam".into()),
        Encoding::Json,
        &mut status,
    );
    // 50 commands a second, 25 times the limit, until the server hangs up.
    let closed = tokio::time::timeout(Duration::from_secs(9), async {
        loop {
            if flooder.stream.write_all(&status).await.is_err() {
                return;
            }
            if let Some(Received::Closed) = flooder.try_recv(Duration::from_millis(20)).await {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "flooder still connected");
    assert!(started.elapsed() >= Duration::from_secs(5));
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
