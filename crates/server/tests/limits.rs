//! The abuse limits a public server needs: registration deadline, idle
//! timeout, rate limit, connection limits.

mod common;

use std::time::Duration;

use common::*;
use natter_proto::{Command, Encoding, ServerMessage};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_connection_that_never_registers_is_closed() {
    let mut config = test_config();
    config.register_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    // alice connects first and registers in time; the lurker comes after.
    let mut alice = TestClient::registered(server.local_addr(), Encoding::Framed, "alice").await;
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
    // alice's deadline passed before the lurker's did: she is still served.
    alice.sync().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_when_an_idle_timeout_is_set() {
    let mut config = test_config();
    config.idle_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut talker = TestClient::registered(server.local_addr(), Encoding::Json, "talker").await;
    let mut quiet = TestClient::registered(server.local_addr(), Encoding::Json, "quiet").await;
    // The talker speaks every 100 ms until the quiet one is told to go.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let error = loop {
        assert!(tokio::time::Instant::now() < deadline, "quiet never closed");
        talker.sync().await;
        match quiet.try_recv(Duration::from_millis(100)).await {
            Some(Received::Message(ServerMessage::Error(text))) => break text,
            Some(Received::Closed) => panic!("closed without an ERROR"),
            Some(Received::Message(_)) | None => {}
        }
    };
    assert!(error.contains("idle"), "{error}");
    quiet.expect_closed().await;
    // The talker, connected before the quiet one, is still served.
    talker.sync().await;
}

#[tokio::test]
async fn quiet_clients_stay_without_an_idle_timeout() {
    let server = start().await; // idle timeout off by default
    let mut quiet = TestClient::registered(server.local_addr(), Encoding::Classic, "quiet").await;
    // A client of a server with a 300 ms idle timeout, connected after
    // `quiet`, being closed shows that `quiet` has been silent longer.
    let mut config = test_config();
    config.idle_timeout = Duration::from_millis(300);
    let strict = start_with(config).await;
    let mut witness = TestClient::registered(strict.local_addr(), Encoding::Classic, "w").await;
    witness.expect_closed().await;
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
    // A place frees up when someone leaves, as soon as the server has
    // seen the close: until then a newcomer is refused, so try until
    // admitted (bounded).
    kept.pop();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut again = TestClient::connect(server.local_addr(), Encoding::Framed).await;
        again
            .send(Command::Register {
                name: "again".into(),
                status: "on".into(),
            })
            .await;
        match again.recv().await {
            Received::Message(ServerMessage::OnlineUsers(_)) => break,
            Received::Message(ServerMessage::Error(error))
                if error.contains("too many connections") =>
            {
                assert!(tokio::time::Instant::now() < deadline, "no place freed up");
                again.expect_closed().await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
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
