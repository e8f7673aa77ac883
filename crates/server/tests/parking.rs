//! Quiet plaintext connections give up their tasks (crates/server/src/
//! parking.rs) and nobody can tell: they still hear everything, answer in
//! order, time out, and close as before.

mod common;

use std::time::Duration;

use common::*;
use natter_proto::{Command, Encoding, ServerMessage};
use natter_server::ServerHandle;

/// Waits until exactly `n` connections are parked.
async fn until_parked(server: &ServerHandle, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let parked = server.shared().parking.len();
        if parked == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{parked} connections parked, waiting for {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn quiet_clients_hold_no_task_and_still_hear_and_answer_in_order() {
    let server = start().await;
    let addr = server.local_addr();
    let tasks = tokio::runtime::Handle::current().metrics();
    let before = tasks.num_alive_tasks();
    let mut alice = TestClient::registered(addr, Encoding::Framed, "alice").await;
    let mut bob = TestClient::registered(addr, Encoding::Classic, "bob").await;
    let mut carol = TestClient::registered(addr, Encoding::Json, "carol").await;
    let conv = conversation(&mut [&mut alice, &mut bob, &mut carol]).await;
    until_parked(&server, 3).await;
    // Three connections, and not one task more than before they came.
    let after = tasks.num_alive_tasks();
    assert!(
        after <= before,
        "{before} tasks before, {after} with 3 idle clients"
    );

    // A parked sender wakes and its lines go out in order to parked
    // members; each of them can answer at once.
    for line in ["one", "two", "three"] {
        alice.say(conv, line).await;
    }
    for member in [&mut bob, &mut carol] {
        for line in ["one", "two", "three"] {
            let (at, from, text) = member.expect_message().await;
            assert_eq!((at, from.as_str(), text.as_str()), (conv, "alice", line));
        }
        member.sync().await;
    }
    // Quiet again, they park again.
    until_parked(&server, 3).await;
    alice.send(Command::Status("away".into())).await;
    alice.sync().await;
}

#[tokio::test]
async fn a_parked_client_is_closed_at_its_idle_timeout() {
    let mut config = test_config();
    config.idle_timeout = Duration::from_secs(2);
    let server = start_with(config).await;
    // (Before its last bytes went out, which the timeout counts from.)
    let registered = tokio::time::Instant::now();
    let mut quiet = TestClient::registered(server.local_addr(), Encoding::Json, "quiet").await;
    until_parked(&server, 1).await;
    let error = quiet.expect_error().await;
    assert!(error.contains("idle for 2 s"), "{error}");
    quiet.expect_closed().await;
    let took = registered.elapsed();
    assert!(took >= Duration::from_secs(2), "closed after {took:?}");
    assert_eq!(server.shared().parking.len(), 0);
}

/// The hub closes a parked connection (here: it never registered) and the
/// client, silent, keeps its end open: the connection still lingers and
/// ends, and gives its place back (max_connections 1).
#[tokio::test]
async fn a_parked_connection_the_server_closes_gives_its_place_back() {
    let mut config = test_config();
    config.register_timeout = Duration::from_secs(2);
    config.max_connections = 1;
    let server = start_with(config).await;
    let mut lurker = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    lurker.send(Command::Caps(vec![])).await; // picks the encoding only
    until_parked(&server, 1).await;
    let error = lurker
        .expect(|m| match m {
            ServerMessage::Error(text) => Some(text.clone()),
            _ => None,
        })
        .await;
    assert!(error.contains("not registered within"), "{error}");
    // The lurker neither reads on nor closes; its place comes back once
    // the server's linger is over.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.shared().admission.connections() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection still counts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut late = TestClient::registered(server.local_addr(), Encoding::Json, "late").await;
    late.sync().await;
    drop(lurker);
}

#[tokio::test]
async fn shutdown_says_goodbye_to_parked_clients_and_leaves_none_parked() {
    let server = start().await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for (name, encoding) in [
        ("a", Encoding::Framed),
        ("b", Encoding::Classic),
        ("c", Encoding::Json),
    ] {
        clients.push(TestClient::registered(addr, encoding, name).await);
    }
    until_parked(&server, 3).await;
    let shared = server.shared().clone();
    tokio::time::timeout(PATIENCE, server.shutdown())
        .await
        .expect("shutdown ends in time");
    for client in &mut clients {
        let error = client
            .expect(|m| match m {
                ServerMessage::Error(text) => Some(text.clone()),
                _ => None,
            })
            .await;
        assert_eq!(error, natter_server::SHUTDOWN_MESSAGE);
        client.expect_closed().await;
    }
    assert_eq!(shared.parking.len(), 0);
    assert_eq!(shared.admission.connections(), 0);
}
