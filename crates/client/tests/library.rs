//! The client library against the real in-process server (and, for bad
//! data, against a fake server written here). Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use natter_client::{Backoff, Client, ClientError, ConnectionState, Event};
use natter_proto::codec::{Decoder, Encoding, encode_message};
use natter_proto::wire::Direction;
use natter_proto::{Limits, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn the_first_event_is_connected_and_registering_lists_ourselves_and_whom_we_watch() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let (_alice, mut alice_events) = Client::connect_with(fast_config(addr)).await.unwrap();
    assert_eq!(
        alice_events.recv().await,
        Some(Event::State(ConnectionState::Connected {
            addr: addr.to_string()
        }))
    );
    _alice.register("alice", "online").await.unwrap();
    expect_online(&mut alice_events, "alice", Some("online")).await;
    _alice.watch(["Bob"]).await.unwrap();

    let (_bob, mut bob_events) = registered(addr, "bob").await;
    let users = expect(
        &mut bob_events,
        "bob's first online list",
        |event| match event {
            Event::OnlineUsers { users, .. } => Some(users.clone()),
            _ => None,
        },
    )
    .await;
    // presence-scope: bob shares nothing with alice, so sees only himself.
    assert_eq!(users.keys().collect::<Vec<_>>(), ["bob"]);
    expect_online(&mut alice_events, "bob", Some("online")).await;
    server.shutdown().await;
}

#[tokio::test]
async fn status_changes_and_departures_keep_the_full_online_list() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let (alice, mut alice_events) = registered(addr, "alice").await;
    alice.watch(["bob"]).await.unwrap();
    let (bob, _bob_events) = registered(addr, "bob").await;
    expect_online(&mut alice_events, "bob", Some("online")).await;

    bob.status("away").await.unwrap();
    expect_online(&mut alice_events, "bob", Some("away")).await;

    bob.goodbye().await.unwrap();
    let users = expect(&mut alice_events, "bob leaving", |event| match event {
        Event::OnlineUsers { users, changes } if changes.contains(&("bob".into(), None)) => {
            Some(users.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(users.keys().collect::<Vec<_>>(), ["alice"]);
    assert_eq!(
        bob.join(1).await,
        Err(ClientError::Closed),
        "nothing after goodbye"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn two_clients_invite_join_chat_and_leave() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let (alice, mut alice_events) = registered(addr, "alice").await;
    let (bob, mut bob_events) = registered(addr, "bob").await;
    alice.watch(["bob"]).await.unwrap();
    expect_online(&mut alice_events, "bob", Some("online")).await;

    alice.invite(["bob"]).await.unwrap();
    let (conv, inviter) = expect_invitation(&mut bob_events).await;
    assert_eq!(inviter, "alice");
    assert_eq!(
        expect_invitation(&mut alice_events).await,
        (conv, "alice".to_string())
    );

    // The inviter is in the conversation it created without asking.
    expect_members(&mut alice_events, conv, &["alice"]).await;
    bob.join(conv).await.unwrap();
    expect_members(&mut alice_events, conv, &["alice", "bob"]).await;
    expect_members(&mut bob_events, conv, &["alice", "bob"]).await;

    alice.send_message(conv, "hello bob").await.unwrap();
    expect_message(&mut bob_events, conv, "alice", "hello bob").await;
    expect_message(&mut alice_events, conv, "alice", "hello bob").await;
    bob.send_message(conv, "hi alice").await.unwrap();
    expect_message(&mut alice_events, conv, "bob", "hi alice").await;

    bob.list_conversations().await.unwrap();
    let listed = expect(
        &mut bob_events,
        "the conversation list",
        |event| match event {
            Event::Conversations(list) => Some(list.clone()),
            _ => None,
        },
    )
    .await;
    assert_eq!(
        listed,
        vec![(conv, vec!["alice".to_string(), "bob".to_string()])]
    );

    bob.leave(conv).await.unwrap();
    expect_members(&mut alice_events, conv, &["alice"]).await;
    expect_members(&mut bob_events, conv, &["alice"]).await;
    bob.send_message(conv, "still here?").await.unwrap();
    let error = expect(&mut bob_events, "an error", |event| match event {
        Event::ServerError(text) => Some(text.clone()),
        _ => None,
    })
    .await;
    assert!(error.contains("not a member"), "{error}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_taken_name_is_an_error_and_another_name_can_be_tried() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let (_alice, _alice_events) = registered(addr, "alice").await;

    let (impostor, mut impostor_events) = Client::connect_with(fast_config(addr)).await.unwrap();
    let err = impostor.register("alice", "online").await.unwrap_err();
    assert_eq!(err, ClientError::NameTaken("alice".into()));
    assert_eq!(err.to_string(), "name alice is taken");

    impostor.register("alice2", "online").await.unwrap();
    expect_online(&mut impostor_events, "alice2", Some("online")).await;
    assert!(matches!(
        impostor.register("alice3", "online").await,
        Err(ClientError::AlreadyRegistered(name)) if name == "alice2"
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_server_is_reported_in_words() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::connect(addr.to_string()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot reach {addr}: connection refused")
    );
}

/// Writes one framed server message the way a real server would.
fn frame(message: &ServerMessage) -> Vec<u8> {
    encode_message(message, Encoding::Framed).to_vec()
}

fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// Reads client commands off a socket until `REGISTER`; returns its name.
async fn read_until_register(socket: &mut tokio::net::TcpStream) -> String {
    let mut decoder = Decoder::new(
        Encoding::Framed,
        Direction::ToServer,
        Limits::server_default(),
    );
    let mut buf = BytesMut::new();
    loop {
        while let Some(raw) = decoder.decode(&mut buf).expect("client sends valid frames") {
            if raw.word == "REGISTER" {
                let command =
                    natter_proto::Command::from_raw(raw, &Limits::server_default()).unwrap();
                match command {
                    natter_proto::Command::Register { name, .. } => return name,
                    other => panic!("{other:?}"),
                }
            }
        }
        let n = socket.read_buf(&mut buf).await.unwrap();
        assert!(n > 0, "client closed before registering");
    }
}

#[tokio::test]
async fn garbage_before_registering_is_a_decode_error_not_a_panic() {
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = fake.accept().await.unwrap();
        read_until_register(&mut socket).await;
        // An unknown word in a good frame: the stream goes on.
        socket.write_all(&raw_frame(b"BOGUS 123")).await.unwrap();
        // A frame length over any limit: the stream is unusable.
        socket
            .write_all(&[0xff, 0xff, 0xff, 0xff, b'x'])
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await;
    });

    let (client, mut events) = Client::connect_with(fast_config(addr)).await.unwrap();
    let err = client.register("alice", "online").await.unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err:?}");
    assert!(
        err.to_string().contains("bad data from the server"),
        "{err}"
    );

    let first = expect(&mut events, "a decode error", |event| match event {
        Event::DecodeError { fatal, .. } => Some(*fatal),
        _ => None,
    })
    .await;
    assert!(!first, "an unknown word is not fatal");
    let second = expect(&mut events, "a fatal decode error", |event| match event {
        Event::DecodeError { fatal, error } => Some((*fatal, error.clone())),
        _ => None,
    })
    .await;
    assert!(second.0, "{second:?}");
    expect_state(&mut events, "disconnected", |state| {
        matches!(state, ConnectionState::Disconnected { .. })
    })
    .await;
    assert_eq!(events.recv().await, None, "no events after disconnecting");
    server.await.unwrap();
}

#[tokio::test]
async fn garbage_after_registering_makes_the_client_reconnect_and_re_register() {
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap();
    let (names_tx, mut names) = tokio::sync::mpsc::channel(4);
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (mut socket, _) = fake.accept().await.unwrap();
            let name = read_until_register(&mut socket).await;
            let mut reply = frame(&ServerMessage::Caps(vec!["members".into()]));
            reply.extend(frame(&ServerMessage::OnlineUsers(vec![(
                name.clone(),
                "online".into(),
            )])));
            socket.write_all(&reply).await.unwrap();
            names_tx.send(name).await.unwrap();
            // Garbage the client cannot resynchronise after.
            socket.write_all(&[0xff; 8]).await.unwrap();
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await;
        }
    });

    let (client, mut events) = Client::connect_with(fast_config(addr)).await.unwrap();
    client.register("alice", "online").await.unwrap();
    expect(&mut events, "a fatal decode error", |event| match event {
        Event::DecodeError { fatal: true, .. } => Some(()),
        _ => None,
    })
    .await;
    let state = expect_state(&mut events, "reconnecting", |state| {
        matches!(state, ConnectionState::Reconnecting { .. })
    })
    .await;
    let ConnectionState::Reconnecting {
        attempt, reason, ..
    } = state
    else {
        unreachable!()
    };
    assert_eq!(attempt, 1);
    assert!(reason.contains("bad data from the server"), "{reason}");
    expect_state(
        &mut events,
        "connected again",
        ConnectionState::is_connected,
    )
    .await;

    assert_eq!(names.recv().await.as_deref(), Some("alice"));
    assert_eq!(
        names.recv().await.as_deref(),
        Some("alice"),
        "re-registered as alice"
    );
    client.goodbye().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn after_a_server_restart_the_client_reconnects_re_registers_and_re_joins() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    // Attempt 1 comes after at least 0.8 s: time enough to set up the
    // conversation on the new server before the clients return.
    let slow = |addr: SocketAddr| {
        let mut config = fast_config(addr);
        config.backoff = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(2),
        };
        config
    };
    let (alice, mut alice_events) = Client::connect_with(slow(addr)).await.unwrap();
    alice.register("alice", "online").await.unwrap();
    let (bob, mut bob_events) = Client::connect_with(slow(addr)).await.unwrap();
    bob.register("bob", "busy").await.unwrap();
    alice.watch(["bob"]).await.unwrap();
    expect_online(&mut alice_events, "bob", Some("busy")).await;
    alice.invite(["bob"]).await.unwrap();
    let (conv, _) = expect_invitation(&mut bob_events).await;
    bob.join(conv).await.unwrap();
    expect_members(&mut alice_events, conv, &["alice", "bob"]).await;

    server.shutdown().await;
    for events in [&mut alice_events, &mut bob_events] {
        let said = expect(events, "the shutdown error", |event| match event {
            Event::ServerError(text) => Some(text.clone()),
            _ => None,
        })
        .await;
        assert_eq!(said, natter_server::SHUTDOWN_MESSAGE);
        expect_state(events, "reconnecting", |state| {
            matches!(state, ConnectionState::Reconnecting { attempt: 1, .. })
        })
        .await;
    }

    // The new server numbers conversations from the start again: make the
    // same id exist there before the clients come back.
    let server = start_server(addr).await;
    let (carol, _carol_events) = registered(addr, "carol").await;
    let (dave, mut dave_events) = registered(addr, "dave").await;
    carol.invite(["dave"]).await.unwrap();
    let (recreated, _) = expect_invitation(&mut dave_events).await;
    assert_eq!(recreated, conv, "the new server reuses the first id");
    dave.join(conv).await.unwrap();
    expect_members(&mut dave_events, conv, &["carol", "dave"]).await;

    expect_state(
        &mut alice_events,
        "alice connected again",
        ConnectionState::is_connected,
    )
    .await;
    expect_state(
        &mut bob_events,
        "bob connected again",
        ConnectionState::is_connected,
    )
    .await;
    // Bob came back with the status he had.
    expect_online(&mut dave_events, "bob", Some("busy")).await;
    expect_members(&mut alice_events, conv, &["alice", "bob", "carol", "dave"]).await;

    bob.send_message(conv, "back again").await.unwrap();
    expect_message(&mut alice_events, conv, "bob", "back again").await;
    expect_message(&mut dave_events, conv, "bob", "back again").await;
    server.shutdown().await;
}

#[tokio::test]
async fn list_users_searches_everyone_and_unwatch_hides_a_user() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let (alice, mut alice_events) = registered(addr, "alice").await;
    let (_bob, _bob_events) = registered(addr, "Bobby").await;
    let (_bea, _bea_events) = registered(addr, "bea").await;
    // Nobody shares a conversation with alice, yet search finds them.
    alice.list_users("B", 500).await.unwrap();
    let found = expect(&mut alice_events, "a USERS answer", |event| match event {
        Event::Users(found) => Some(found.clone()),
        _ => None,
    })
    .await;
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["bea", "Bobby"]);
    alice.watch(["bobby"]).await.unwrap();
    expect_online(&mut alice_events, "Bobby", Some("online")).await;
    alice.unwatch(["BOBBY"]).await.unwrap();
    expect_online(&mut alice_events, "Bobby", None).await;
    server.shutdown().await;
}
