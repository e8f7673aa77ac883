//! Presence at scale: coalescing, the periodic snapshot, CAPS,
//! presence-delta and members.

mod common;

use std::time::Duration;

use common::*;
use natter_proto::{Command, Encoding, ServerMessage};

#[tokio::test]
async fn changes_in_one_window_arrive_as_one_online_users() {
    let mut config = test_config();
    config.presence_coalesce = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut watcher =
        TestClient::registered(server.local_addr(), Encoding::Framed, "watcher").await;
    // Twenty arrivals within one window...
    let mut crowd = Vec::new();
    for i in 0..20 {
        let mut c = TestClient::connect(server.local_addr(), Encoding::Framed).await;
        c.send(Command::Register {
            name: format!("u{i}"),
            status: "on".into(),
        })
        .await;
        crowd.push(c);
    }
    // ...reach the watcher as at most two snapshots (the window may be cut
    // in two), the last one carrying all 21 users.
    let mut snapshots = 0;
    loop {
        let users = watcher.expect_online_users().await;
        snapshots += 1;
        if users.len() == 21 {
            break;
        }
    }
    assert!(snapshots <= 2, "{snapshots} snapshots for one burst");
    watcher.expect_silence().await;
}

#[tokio::test]
async fn a_zero_window_sends_every_change_at_once() {
    let mut config = test_config();
    config.presence_coalesce = Duration::ZERO;
    let server = start_with(config).await;
    let mut watcher =
        TestClient::registered(server.local_addr(), Encoding::Framed, "watcher").await;
    let _a = TestClient::registered(server.local_addr(), Encoding::Framed, "a").await;
    let _b = TestClient::registered(server.local_addr(), Encoding::Framed, "b").await;
    assert_eq!(watcher.expect_online_users().await.len(), 2);
    assert_eq!(watcher.expect_online_users().await.len(), 3);
}

#[tokio::test]
async fn every_presence_interval_brings_a_full_snapshot() {
    let mut config = test_config();
    config.presence_interval = Duration::from_millis(200);
    let server = start_with(config).await;
    let mut alice = TestClient::registered(server.local_addr(), Encoding::Classic, "alice").await;
    for _ in 0..3 {
        let start = tokio::time::Instant::now();
        let users = alice.expect_online_users().await;
        assert_eq!(users.len(), 1);
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}

#[tokio::test]
async fn caps_are_answered_with_what_the_server_enabled() {
    let server = start().await;
    let mut client = TestClient::connect(server.local_addr(), Encoding::Json).await;
    client
        .send(Command::Caps(vec![
            "members".into(),
            "teleport".into(),
            "presence-delta".into(),
        ]))
        .await;
    assert_eq!(
        client.recv_msg().await,
        ServerMessage::Caps(vec!["members".into(), "presence-delta".into()])
    );
}

#[tokio::test]
async fn presence_delta_sends_one_snapshot_then_only_changes() {
    let mut config = test_config();
    config.presence_interval = Duration::from_millis(100);
    let server = start_with(config).await;
    let _alice = TestClient::registered(server.local_addr(), Encoding::Framed, "alice").await;
    let mut delta = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    delta
        .send(Command::Caps(vec!["presence-delta".into()]))
        .await;
    delta.recv_msg().await;
    delta.register("delta", "on").await; // the one full snapshot
    let mut bob = TestClient::registered(server.local_addr(), Encoding::Framed, "bob").await;
    let change = delta
        .expect(|m| match m {
            ServerMessage::Presence(p) => Some(p.clone()),
            ServerMessage::OnlineUsers(u) => panic!("a second full snapshot: {u:?}"),
            _ => None,
        })
        .await;
    assert_eq!(
        change,
        vec![("bob".to_string(), Some("online".to_string()))]
    );
    bob.send(Command::Goodbye).await;
    bob.expect_closed().await;
    let change = delta
        .expect(|m| match m {
            ServerMessage::Presence(p) => Some(p.clone()),
            ServerMessage::OnlineUsers(u) => panic!("a second full snapshot: {u:?}"),
            _ => None,
        })
        .await;
    assert_eq!(change, vec![("bob".to_string(), None)]);
    // No periodic snapshot for delta clients (the interval is 100 ms).
    match delta.try_recv(Duration::from_millis(400)).await {
        None => {}
        Some(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn members_capability_acknowledges_and_tracks_membership() {
    let server = start().await;
    let mut alice = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    alice.send(Command::Caps(vec!["members".into()])).await;
    alice.recv_msg().await;
    alice.register("alice", "on").await;
    let mut bob = TestClient::registered(server.local_addr(), Encoding::Framed, "bob").await;
    let conv = alice.invite(&["bob"]).await;
    alice.send(Command::Join(conv)).await;
    assert_eq!(
        alice.recv_msg().await,
        ServerMessage::Members {
            conv,
            members: vec!["alice".into()]
        }
    );
    bob.expect_invitation().await;
    bob.join(conv).await;
    assert_eq!(
        alice.recv_msg().await,
        ServerMessage::Members {
            conv,
            members: vec!["alice".into(), "bob".into()]
        }
    );
    drop(bob);
    assert_eq!(
        alice.recv_msg().await,
        ServerMessage::Members {
            conv,
            members: vec!["alice".into()]
        }
    );
    alice.send(Command::Leave(conv)).await;
    assert_eq!(
        alice.recv_msg().await,
        ServerMessage::Members {
            conv,
            members: vec![]
        }
    );
}
