//! Whole-server behaviour: order under fan-out, slow consumers, shutdown.

mod common;

use std::time::Duration;

use common::*;
use natter_proto::{Command, Encoding, ServerMessage};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn fifty_members_see_the_same_order() {
    let server = start().await;
    let addr = server.local_addr();
    let mut members = Vec::new();
    for i in 0..50 {
        let enc = Encoding::ALL[i % 3];
        members.push(TestClient::registered(addr, enc, &format!("m{i}")).await);
    }
    let names: Vec<String> = (1..50).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let conv = members[0].invite(&names).await;
    for m in members.iter_mut() {
        m.join(conv).await;
    }
    // Ten senders talk at once, each with its own running count.
    let mut writers = Vec::new();
    for m in members.iter_mut().take(10) {
        let mut burst = bytes::BytesMut::new();
        for n in 0..20 {
            let text = format!("{}#{n}", m.name);
            natter_proto::codec::encode_command(
                &Command::SendMessage {
                    conv,
                    text,
                    nonce: None,
                },
                m.encoding,
                &mut burst,
            );
        }
        writers.push(burst);
    }
    let sends = members
        .iter_mut()
        .take(10)
        .zip(writers)
        .map(|(m, burst)| async move { m.stream.write_all(&burst).await.unwrap() });
    futures_join_all(sends).await;
    let mut orders = Vec::new();
    for m in members.iter_mut() {
        let mut seen = Vec::new();
        while seen.len() < 200 {
            let (c, _, text) = m.expect_message().await;
            assert_eq!(c, conv);
            seen.push(text);
        }
        orders.push(seen);
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0]);
    }
    // Each sender's own messages stay in the order sent.
    for s in 0..10 {
        let mine: Vec<&String> = orders[0]
            .iter()
            .filter(|t| t.starts_with(&format!("m{s}#")))
            .collect();
        let expected: Vec<String> = (0..20).map(|n| format!("m{s}#{n}")).collect();
        assert_eq!(mine.len(), 20);
        assert!(mine.iter().zip(&expected).all(|(a, b)| *a == b));
    }
}

async fn futures_join_all<F: std::future::Future<Output = ()>>(
    futures: impl IntoIterator<Item = F>,
) {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    for f in set {
        f.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_and_the_others_keep_receiving() {
    let mut config = test_config();
    config.send_queue = 256 * 1024;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let mut talker = TestClient::registered(addr, Encoding::Framed, "talker").await;
    let mut reader = TestClient::registered(addr, Encoding::Framed, "reader").await;
    let mut sleeper = TestClient::connect_small_buffer(addr, Encoding::Framed).await;
    sleeper.register("sleeper", "zzz").await;
    let conv = conversation(&mut [&mut talker, &mut reader, &mut sleeper]).await;

    // The reader reads everything in its own task; the sleeper reads nothing.
    const MESSAGES: usize = 1000;
    let reading = tokio::spawn(async move {
        let mut received = 0;
        while received < MESSAGES {
            if let ServerMessage::Message { .. } = reader.recv_msg().await {
                received += 1;
            }
        }
        (received, reader) // keep the reader connected
    });
    let text = "z".repeat(8000);
    for _ in 0..MESSAGES {
        talker.say(conv, &text).await;
        while talker.try_recv(Duration::from_millis(0)).await.is_some() {}
        tokio::task::yield_now().await;
    }
    let (received, _reader) = tokio::time::timeout(PATIENCE, reading)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, MESSAGES, "the reader missed messages");

    // The sleeper was dropped from the conversation and from presence.
    let convs = talker.conversations().await;
    assert_eq!(
        convs,
        vec![(conv, vec!["reader".to_string(), "talker".to_string()])]
    );
    let mut late = TestClient::connect(addr, Encoding::Framed).await;
    late.send(Command::Register {
        name: "late".into(),
        status: "on".into(),
    })
    .await;
    let users = late.expect_online_users().await;
    assert!(!users.iter().any(|(n, _)| n == "sleeper"), "{users:?}");
}

#[tokio::test]
async fn shutdown_says_so_to_every_client_then_closes() {
    let server = start().await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for (i, enc) in Encoding::ALL.into_iter().enumerate() {
        clients.push(TestClient::registered(addr, enc, &format!("c{i}")).await);
    }
    let stopping = tokio::spawn(server.shutdown());
    for client in clients.iter_mut() {
        let text = client
            .expect(|m| match m {
                ServerMessage::Error(t) => Some(t.clone()),
                _ => None,
            })
            .await;
        assert_eq!(text, natter_server::SHUTDOWN_MESSAGE);
        client.expect_closed().await;
    }
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown finishes")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A hub that dies (here through the test-only hook; in life, a bug) must
/// not leave a server that accepts clients into a dead channel: every
/// client is told and closed, nobody new gets in, and the handle reports
/// the failure so that the process can exit for a supervisor to restart.
#[tokio::test]
async fn a_hub_that_panics_tells_every_client_and_fails_the_server() {
    let server = start().await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for (i, encoding) in Encoding::ALL.into_iter().enumerate() {
        clients.push(TestClient::registered(addr, encoding, &format!("c{i}")).await);
    }
    server.panic_hub_for_test().await;
    for client in &mut clients {
        let error = client.expect_error().await;
        assert_eq!(error, natter_server::supervise::HUB_FAILED_MESSAGE);
        client.expect_closed().await;
    }
    tokio::time::timeout(PATIENCE, server.failed())
        .await
        .expect("the handle reports the failure");
    // No one new is let in to wait on a dead hub.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "a client was accepted after the hub died");
    let stopped = tokio::time::Instant::now();
    server.shutdown().await;
    assert!(stopped.elapsed() < Duration::from_secs(2));
}
