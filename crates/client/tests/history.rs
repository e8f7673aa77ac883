//! The outbox, the catch-up and the history API against real servers over
//! real sockets: a server with a store in a temporary directory (or in
//! memory, for what must still work without `history`), stopped and
//! started again on the same port and data dir, and a proxy that loses
//! echoes and cuts connections when the test says.

mod common;

use std::time::Duration;

use common::*;
use natter_client::{
    Client, ClientConfig, ClientError, ConnectionState, Event, Events, MessageInfo, Nonce, Unread,
};

const QUIET: Duration = Duration::from_millis(300);

async fn expect_queued(events: &mut Events, nonce: &Nonce) {
    expect(events, &format!("{nonce} queued"), |event| match event {
        Event::Queued { nonce: n, .. } if n == nonce => Some(()),
        _ => None,
    })
    .await
}

/// Waits for the confirmation of `nonce`; returns its seq.
async fn expect_sent(events: &mut Events, nonce: &Nonce) -> Option<u64> {
    expect(events, &format!("{nonce} confirmed"), |event| match event {
        Event::Sent { nonce: n, seq, .. } if n == nonce => Some(*seq),
        _ => None,
    })
    .await
}

/// Waits for a message with this text; returns its metadata.
async fn expect_info(events: &mut Events, text: &str) -> Option<MessageInfo> {
    expect(events, &format!("message {text:?}"), |event| match event {
        Event::Message { text: t, info, .. } if t == text => Some(info.clone()),
        _ => None,
    })
    .await
}

async fn expect_history(events: &mut Events, conv: u64) -> Vec<(u64, String)> {
    expect(events, "a history answer", |event| match event {
        Event::History { conv: c, entries } if *c == conv => {
            Some(entries.iter().map(|e| (e.seq, e.text.clone())).collect())
        }
        _ => None,
    })
    .await
}

async fn expect_reconnecting(events: &mut Events) {
    expect_state(events, "reconnecting", |state| {
        matches!(state, ConnectionState::Reconnecting { .. })
    })
    .await;
}

async fn expect_connected(events: &mut Events) {
    expect_state(events, "connected again", ConnectionState::is_connected).await;
}

/// The texts of stored messages, oldest first, as another member reads them.
async fn stored(client: &Client, events: &mut Events, conv: u64) -> Vec<String> {
    client.history(conv, 0, 100).await.unwrap();
    let entries = expect_history(events, conv).await;
    entries.into_iter().map(|(_, text)| text).collect()
}

#[tokio::test]
async fn messages_sent_while_the_server_is_down_arrive_once_each_after_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let (alice, mut alice_events) = registered(addr, "alice").await;
    let (bob, mut bob_events) = registered(addr, "bob").await;
    let conv = conversation(&alice, &mut alice_events, &bob, &mut bob_events).await;
    let before = alice.send_message(conv, "before").await.unwrap();
    assert_eq!(expect_sent(&mut alice_events, &before).await, Some(1));
    expect_message(&mut bob_events, conv, "alice", "before").await;

    server.shutdown().await;
    expect_reconnecting(&mut alice_events).await;
    let mut nonces = Vec::new();
    for text in ["one", "two", "three"] {
        let nonce = alice.send_message(conv, text).await.unwrap();
        expect_queued(&mut alice_events, &nonce).await;
        nonces.push(nonce);
    }

    // The same port and data dir: the same server, restarted.
    let server = start_durable(dir.path(), addr).await;
    let is_three = |event: &Event| matches!(event, Event::Message { text, .. } if text == "three");
    let mut alice_saw = until(&mut alice_events, "alice's three", is_three).await;
    alice_saw.extend(drain(&mut alice_events, QUIET).await);
    let mut bob_saw = until(&mut bob_events, "bob's three", is_three).await;
    bob_saw.extend(drain(&mut bob_events, QUIET).await);

    let confirmed: Vec<(Nonce, Option<u64>)> = alice_saw
        .iter()
        .filter_map(|event| match event {
            Event::Sent { nonce, seq, .. } => Some((nonce.clone(), *seq)),
            _ => None,
        })
        .collect();
    let expected: Vec<(Nonce, Option<u64>)> = nonces.into_iter().zip([2, 3, 4].map(Some)).collect();
    assert_eq!(confirmed, expected, "confirmed in order");
    // Once each, on both sides, and "before" not again.
    assert_eq!(message_texts(&alice_saw, conv), ["one", "two", "three"]);
    assert_eq!(message_texts(&bob_saw, conv), ["one", "two", "three"]);
    assert_eq!(
        stored(&bob, &mut bob_events, conv).await,
        ["before", "one", "two", "three"],
        "stored once each"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_whose_echo_was_lost_is_resent_with_its_nonce_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(server.local_addr()).await;
    let (alice, mut alice_events) = registered(proxy.addr(), "alice").await;
    let (bob, mut bob_events) = registered(server.local_addr(), "bob").await;
    let conv = conversation(&alice, &mut alice_events, &bob, &mut bob_events).await;
    alice.send_message(conv, "hello").await.unwrap();
    assert_eq!(
        expect_info(&mut alice_events, "hello").await.unwrap().seq,
        1
    );

    // The server stores the message, but its echo never reaches alice.
    proxy.mute_current();
    let nonce = alice.send_message(conv, "only once").await.unwrap();
    expect_message(&mut bob_events, conv, "alice", "only once").await;
    proxy.cut();
    expect_queued(&mut alice_events, &nonce).await;
    expect_reconnecting(&mut alice_events).await;

    // Resent with the same nonce: the server answers with the original.
    // The message itself may come first, from the catch-up.
    let mut alice_saw = until(
        &mut alice_events,
        "the confirmation",
        |event| matches!(event, Event::Sent { nonce: n, .. } if *n == nonce),
    )
    .await;
    alice_saw.extend(drain(&mut alice_events, QUIET).await);
    let confirmed = alice_saw.iter().find_map(|event| match event {
        Event::Sent { seq, .. } => Some(*seq),
        _ => None,
    });
    assert_eq!(confirmed, Some(Some(2)));
    let shown: Vec<u64> = alice_saw
        .iter()
        .filter_map(|event| match event {
            Event::Message {
                text,
                info: Some(info),
                ..
            } if text == "only once" => Some(info.seq),
            _ => None,
        })
        .collect();
    assert_eq!(shown, [2], "shown once: {alice_saw:#?}");
    assert_eq!(
        stored(&bob, &mut bob_events, conv).await,
        ["hello", "only once"]
    );
    let bob_saw = drain(&mut bob_events, QUIET).await;
    assert!(
        message_texts(&bob_saw, conv).is_empty(),
        "bob saw it twice: {bob_saw:#?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_same_nonce_sent_twice_is_stored_and_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let (alice, mut alice_events) = registered(server.local_addr(), "alice").await;
    let (bob, mut bob_events) = registered(server.local_addr(), "bob").await;
    let conv = conversation(&alice, &mut alice_events, &bob, &mut bob_events).await;
    // An application retrying on its own, with its own idempotency key.
    let again = || natter_client::Command::SendMessage {
        conv,
        text: "pay 10 euros".into(),
        nonce: Some("payment-17".into()),
    };
    alice.send(again()).await.unwrap();
    alice.send(again()).await.unwrap();
    let alice_saw = until(&mut alice_events, "two confirmations", {
        let mut confirmations = 0;
        move |event| {
            confirmations += usize::from(matches!(event, Event::Sent { .. }));
            confirmations == 2
        }
    })
    .await;
    let seqs: Vec<Option<u64>> = alice_saw
        .iter()
        .filter_map(|event| match event {
            Event::Sent { seq, nonce, .. } if nonce.as_str() == "payment-17" => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, [Some(1), Some(1)], "the original, twice");
    let mut alice_saw = alice_saw;
    alice_saw.extend(drain(&mut alice_events, QUIET).await);
    assert_eq!(message_texts(&alice_saw, conv), ["pay 10 euros"]);
    bob.history(conv, 0, 100).await.unwrap();
    let is_history = |event: &Event| matches!(event, Event::History { .. });
    let mut bob_saw = until(&mut bob_events, "bob's history", is_history).await;
    bob_saw.extend(drain(&mut bob_events, QUIET).await);
    assert_eq!(message_texts(&bob_saw, conv), ["pay 10 euros"]);
    let stored: Vec<&str> = bob_saw
        .iter()
        .filter_map(|event| match event {
            Event::History { entries, .. } => Some(entries.iter().map(|e| e.text.as_str())),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(stored, ["pay 10 euros"], "stored once");
    server.shutdown().await;
}

#[tokio::test]
async fn catch_up_delivers_what_was_said_while_we_were_away_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(server.local_addr()).await;
    let (alice, mut alice_events) = registered(proxy.addr(), "alice").await;
    let (bob, mut bob_events) = registered(server.local_addr(), "bob").await;
    let conv = conversation(&alice, &mut alice_events, &bob, &mut bob_events).await;
    bob.send_message(conv, "seen").await.unwrap();
    let seen = expect_info(&mut alice_events, "seen").await.unwrap();
    assert_eq!((seen.seq, seen.catch_up), (1, false));

    proxy.set_up(false);
    proxy.cut();
    expect_reconnecting(&mut alice_events).await;
    expect_members(&mut bob_events, conv, &["bob"]).await;
    for text in ["away 1", "away 2"] {
        let nonce = bob.send_message(conv, text).await.unwrap();
        expect_sent(&mut bob_events, &nonce).await;
    }
    proxy.set_up(true);

    expect_connected(&mut alice_events).await;
    let mut caught_up = Vec::new();
    for text in ["away 1", "away 2"] {
        let info = expect_info(&mut alice_events, text).await.unwrap();
        caught_up.push((info.seq, info.catch_up));
    }
    assert_eq!(caught_up, [(2, true), (3, true)]);
    bob.send_message(conv, "live").await.unwrap();
    let live = expect_info(&mut alice_events, "live").await.unwrap();
    assert_eq!((live.seq, live.catch_up), (4, false));
    let again = drain(&mut alice_events, QUIET).await;
    assert!(message_texts(&again, conv).is_empty(), "{again:#?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_backlog_larger_than_the_servers_burst_is_paced_not_refused() {
    // The server's default rate limit: 10 commands a second, burst 20.
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(server.local_addr()).await;
    let (alice, mut alice_events) = registered(proxy.addr(), "alice").await;
    let (bob, mut bob_events) = registered(server.local_addr(), "bob").await;
    let conv = conversation(&alice, &mut alice_events, &bob, &mut bob_events).await;
    proxy.set_up(false);
    proxy.cut();
    expect_reconnecting(&mut alice_events).await;
    let backlog: Vec<String> = (1..=30).map(|i| format!("backlog {i}")).collect();
    for text in &backlog {
        alice.send_message(conv, text.as_str()).await.unwrap();
    }
    proxy.set_up(true);

    // 30 messages on top of CAPS, REGISTER, JOIN and HISTORY: about two
    // seconds at 8 a second after a burst of 16.
    let mut bob_saw = Vec::new();
    for text in &backlog {
        bob_saw.extend(
            until(
                &mut bob_events,
                text,
                |e| matches!(e, Event::Message { text: t, .. } if t == text),
            )
            .await,
        );
    }
    assert_eq!(message_texts(&bob_saw, conv), backlog);
    let alice_saw = drain(&mut alice_events, QUIET).await;
    let refusals: Vec<&Event> = alice_saw
        .iter()
        .filter(|e| matches!(e, Event::ServerError(_) | Event::NotSent { .. }))
        .collect();
    assert!(refusals.is_empty(), "{refusals:#?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_conversation_joined_just_before_a_restart_is_still_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let proxy = Proxy::start(addr).await;
    let (alice, mut alice_events) = registered(addr, "alice").await;
    let (bob, mut bob_events) = registered(proxy.addr(), "bob").await;
    alice.watch(["bob"]).await.unwrap();
    expect_online(&mut alice_events, "bob", Some("online")).await;
    alice.invite(["bob"]).await.unwrap();
    let (conv, _) = expect_invitation(&mut bob_events).await;
    alice.join(conv).await.unwrap();
    // Bob joins, but never hears back: he cannot know where the
    // conversation stood when he joined.
    proxy.mute_current();
    bob.join(conv).await.unwrap();
    expect_members(&mut alice_events, conv, &["alice", "bob"]).await;

    proxy.set_up(false);
    server.shutdown().await;
    let server = start_durable(dir.path(), addr).await;
    let nonce = alice
        .send_message(conv, "said while bob was away")
        .await
        .unwrap();
    assert_eq!(expect_sent(&mut alice_events, &nonce).await, Some(1));
    proxy.set_up(true);

    let info = expect_info(&mut bob_events, "said while bob was away").await;
    assert_eq!(info.map(|i| (i.seq, i.catch_up)), Some((1, true)));
    server.shutdown().await;
}

#[tokio::test]
async fn without_history_a_message_typed_while_disconnected_is_still_sent() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(server.local_addr()).await;
    let (alice, mut alice_events) = registered(proxy.addr(), "alice").await;
    let caps = expect(&mut alice_events, "the capabilities", |event| match event {
        Event::Capabilities(caps) => Some(caps.clone()),
        _ => None,
    })
    .await;
    assert!(!caps.contains(&"history".to_string()), "{caps:?}");
    let (bob, mut bob_events) = registered(server.local_addr(), "bob").await;
    let conv = conversation(&alice, &mut alice_events, &bob, &mut bob_events).await;

    proxy.set_up(false);
    proxy.cut();
    expect_reconnecting(&mut alice_events).await;
    let nonce = alice.send_message(conv, "typed offline").await.unwrap();
    expect_queued(&mut alice_events, &nonce).await;
    proxy.set_up(true);

    // Confirmed by the echo's text: no seq without a store.
    assert_eq!(expect_sent(&mut alice_events, &nonce).await, None);
    expect_message(&mut bob_events, conv, "alice", "typed offline").await;
    let info = expect_info(&mut alice_events, "typed offline").await;
    assert_eq!(info, None);
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_outbox_refuses_more_until_messages_are_confirmed() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(server.local_addr()).await;
    let config = ClientConfig {
        outbox_capacity: 2,
        ..fast_config(proxy.addr())
    };
    let (alice, mut alice_events) = registered_with(config, "alice").await;
    let (bob, mut bob_events) = registered(server.local_addr(), "bob").await;
    let conv = conversation(&alice, &mut alice_events, &bob, &mut bob_events).await;

    proxy.set_up(false);
    proxy.cut();
    expect_reconnecting(&mut alice_events).await;
    let first = alice.send_message(conv, "first").await.unwrap();
    let second = alice.send_message(conv, "second").await.unwrap();
    let full = alice.send_message(conv, "third").await.unwrap_err();
    assert_eq!(full, ClientError::OutboxFull { capacity: 2 });
    assert_eq!(
        full.to_string(),
        "the outbox is full: 2 messages are waiting for the server to confirm them"
    );
    assert_eq!(
        alice.send_message(conv, "").await,
        Err(ClientError::EmptyMessage)
    );

    proxy.set_up(true);
    expect_sent(&mut alice_events, &first).await;
    expect_sent(&mut alice_events, &second).await;
    let third = alice.send_message(conv, "third").await.unwrap();
    expect_sent(&mut alice_events, &third).await;
    let bob_saw = drain(&mut bob_events, QUIET).await;
    assert_eq!(message_texts(&bob_saw, conv), ["first", "second", "third"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_the_server_refuses_leaves_the_outbox_as_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let config = ClientConfig {
        outbox_capacity: 1,
        ..fast_config(addr)
    };
    let (alice, mut alice_events) = registered_with(config, "alice").await;
    for conv in [41, 42] {
        // With a capacity of one, the second send proves the first left.
        let nonce = alice.send_message(conv, "anyone?").await.unwrap();
        let (command, reason) = expect(&mut alice_events, "not sent", |event| match event {
            Event::NotSent { command, reason } => Some((command.clone(), reason.clone())),
            _ => None,
        })
        .await;
        assert_eq!(reason, format!("no conversation {conv}"));
        assert_eq!(
            command,
            natter_client::Command::SendMessage {
                conv,
                text: "anyone?".into(),
                nonce: Some(nonce.to_string()),
            }
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn history_topics_and_read_markers_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let (alice, mut alice_events) = registered(addr, "alice").await;
    let caps = expect(&mut alice_events, "the capabilities", |event| match event {
        Event::Capabilities(caps) => Some(caps.clone()),
        _ => None,
    })
    .await;
    assert!(caps.contains(&"history".to_string()) && caps.contains(&"topics".to_string()));
    let (bob, mut bob_events) = registered(addr, "bob").await;
    let conv = conversation(&alice, &mut alice_events, &bob, &mut bob_events).await;

    alice.topic(conv, "friday lunch").await.unwrap();
    let topic = expect(&mut bob_events, "the topic", |event| match event {
        Event::Topic {
            conv: c,
            text,
            setter,
        } if *c == conv => Some((text.clone(), setter.clone())),
        _ => None,
    })
    .await;
    assert_eq!(topic, ("friday lunch".to_string(), "alice".to_string()));

    for text in ["m1", "m2", "m3"] {
        bob.send_message(conv, text).await.unwrap();
    }
    assert_eq!(expect_info(&mut alice_events, "m3").await.unwrap().seq, 3);
    alice.history(conv, 0, 2).await.unwrap();
    let newest = expect_history(&mut alice_events, conv).await;
    assert_eq!(newest, [(2, "m2".to_string()), (3, "m3".to_string())]);
    alice.history(conv, 2, 10).await.unwrap();
    assert_eq!(
        expect_history(&mut alice_events, conv).await,
        [(1, "m1".to_string())]
    );
    assert_eq!(
        alice.history(conv, 0, 0).await,
        Err(ClientError::ZeroHistoryLimit)
    );

    alice.read(conv, 2).await.unwrap();
    // The server answers one connection's commands in order: once this
    // answer is back, the READ was applied.
    alice.history(conv, 0, 1).await.unwrap();
    expect_history(&mut alice_events, conv).await;
    server.shutdown().await;
    expect_reconnecting(&mut alice_events).await;

    let server = start_durable(dir.path(), addr).await;
    let unread = expect(&mut alice_events, "UNREAD", |event| match event {
        Event::Unread(list) => Some(list.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        unread,
        [Unread {
            conv,
            last_seq: 3,
            last_read_seq: 2
        }]
    );
    // The topic comes back with the conversation.
    let topic = expect(&mut alice_events, "the topic again", |event| match event {
        Event::Topic { conv: c, text, .. } if *c == conv => Some(text.clone()),
        _ => None,
    })
    .await;
    assert_eq!(topic, "friday lunch");
    server.shutdown().await;
}
