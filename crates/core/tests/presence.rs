//! Rules about presence: coalescing, deltas, snapshots and their cache.

mod common;

use std::sync::Arc;

use common::*;
use natter_core::Outputs;
use natter_proto::{Command, ServerMessage};

fn delta(changes: &[(&str, Option<&str>)]) -> ServerMessage {
    ServerMessage::Presence(
        changes
            .iter()
            .map(|(n, s)| (n.to_string(), s.map(str::to_string)))
            .collect(),
    )
}

#[test]
fn presence_changes_are_coalesced_until_flush() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.connect();
    // Register, status change and a departure: nothing sent right away.
    assert_eq!(h.send(bob, register("bob")), vec![]);
    assert_eq!(h.send(bob, Command::Status("busy".into())), vec![]);
    let carol = h.user_with_caps("carol", &[]);
    h.send(alice, Command::Status("away".into()));
    assert!(h.chat.presence_pending());
    // One message per client, carrying the state after everything.
    assert_eq!(
        h.flush(),
        vec![many(
            &[alice, bob, carol],
            online(&[("alice", "away"), ("bob", "busy"), ("carol", "here")])
        )]
    );
}

#[test]
fn flush_sends_online_users_to_classic_and_new_delta_clients() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let dora = h.user_with_caps("dora", &["presence-delta"]);
    let eve = h.connect();
    h.send(eve, caps_cmd(&["presence-delta"]));
    h.send(eve, register("eve"));
    let bob = h.connect();
    h.send(bob, register("bob"));
    let everyone = online(&[
        ("alice", "here"),
        ("bob", "here"),
        ("dora", "here"),
        ("eve", "here"),
    ]);
    assert_eq!(
        h.flush(),
        vec![
            // classic clients, and eve's one initial snapshot
            many(&[alice, bob, eve], everyone),
            // dora registered earlier: a delta
            many(
                &[dora],
                delta(&[("bob", Some("here")), ("eve", Some("here"))])
            ),
        ]
    );
}

#[test]
fn flush_sends_net_presence_changes_to_delta_clients() {
    let mut h = Harness::new();
    let dora = h.user_with_caps("dora", &["presence-delta"]);
    let alice = h.user("alice");
    let bob = h.user("bob");
    h.send(alice, Command::Status("away".into()));
    h.send(bob, Command::Goodbye);
    let carol = h.connect();
    h.send(carol, register("carol"));
    let flushed = h.flush();
    assert!(flushed.contains(&many(
        &[dora],
        delta(&[
            ("alice", Some("away")),
            ("bob", None),
            ("carol", Some("here"))
        ])
    )));
}

#[test]
fn arrival_and_departure_in_one_window_cancel_out() {
    let mut h = Harness::new();
    let dora = h.user_with_caps("dora", &["presence-delta"]);
    let alice = h.user("alice");
    let bob = h.connect();
    h.send(bob, register("bob"));
    h.disconnect(bob);
    assert!(!h.chat.presence_pending());
    assert_eq!(h.flush(), vec![]);
    // Leaving and coming back under another spelling is a departure and an
    // arrival for delta clients.
    h.send(alice, Command::Goodbye);
    let again = h.connect();
    h.send(again, register("ALICE"));
    assert_eq!(
        h.flush(),
        vec![
            many(&[again], online(&[("ALICE", "here"), ("dora", "here")])),
            many(&[dora], delta(&[("alice", None), ("ALICE", Some("here"))])),
        ]
    );
}

#[test]
fn status_changed_twice_shows_the_last() {
    let mut h = Harness::new();
    let dora = h.user_with_caps("dora", &["presence-delta"]);
    let alice = h.user("alice");
    h.send(alice, Command::Status("away".into()));
    h.send(alice, Command::Status("lunch".into()));
    assert_eq!(
        h.flush(),
        vec![
            many(&[alice], online(&[("alice", "lunch"), ("dora", "here")])),
            many(&[dora], delta(&[("alice", Some("lunch"))])),
        ]
    );
    // Away and back within one window is no change at all.
    h.send(alice, Command::Status("away".into()));
    h.send(alice, Command::Status("lunch".into()));
    assert!(!h.chat.presence_pending());
    assert_eq!(h.flush(), vec![]);
}

#[test]
fn flush_sends_nothing_when_nothing_changed() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    h.user_with_caps("dora", &["presence-delta"]);
    assert!(!h.chat.presence_pending());
    assert_eq!(h.flush(), vec![]);
    // Commands that are not presence changes leave it that way.
    h.send(alice, Command::ListConversations);
    h.send(alice, Command::Join(42));
    assert!(!h.chat.presence_pending());
    assert_eq!(h.flush(), vec![]);
}

#[test]
fn newcomer_gets_its_snapshot_even_if_presence_nets_to_nothing() {
    let mut h = Harness::new();
    h.user_with_caps("dora", &["presence-delta"]);
    let alice = h.user("alice");
    // alice leaves and someone registers the same name and status at once:
    // no net change for dora, but the new connection needs its snapshot.
    h.disconnect(alice);
    let again = h.connect();
    h.send(again, register("alice"));
    assert!(h.chat.presence_pending());
    assert_eq!(
        h.flush(),
        vec![many(
            &[again],
            online(&[("alice", "here"), ("dora", "here")])
        )]
    );
}

#[test]
fn presence_snapshot_goes_to_classic_clients_only() {
    let mut h = Harness::new();
    assert_eq!(h.snapshot(), vec![], "nobody registered");
    h.connect(); // never registers, so never gets presence
    h.user_with_caps("dora", &["presence-delta"]);
    assert_eq!(h.snapshot(), vec![], "only delta clients");
    let alice = h.user("alice");
    let bob = h.user("bob");
    assert_eq!(
        h.snapshot(),
        vec![many(
            &[alice, bob],
            online(&[("alice", "here"), ("bob", "here"), ("dora", "here")])
        )]
    );
}

#[test]
fn presence_snapshot_is_cached_until_presence_changes() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let first = h.chat.online_users();
    let mut out = Outputs::new();
    h.chat.presence_snapshot(&mut out);
    let natter_core::Output::Send { message, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(
        Arc::ptr_eq(&first, message),
        "the snapshot reuses the cache"
    );
    assert!(Arc::ptr_eq(&first, &h.chat.online_users()));
    h.send(alice, Command::Status("away".into()));
    let second = h.chat.online_users();
    assert!(!Arc::ptr_eq(&first, &second), "a change invalidates it");
    assert_eq!(*second, online(&[("alice", "away")]));
}

#[test]
fn online_users_is_sorted_by_lowercase_name() {
    let mut h = Harness::new();
    for name in ["carol", "Bob", "alice", "Dave"] {
        h.user(name);
    }
    assert_eq!(
        *h.chat.online_users(),
        online(&[
            ("alice", "here"),
            ("Bob", "here"),
            ("carol", "here"),
            ("Dave", "here")
        ])
    );
}

#[test]
fn presence_snapshot_ends_the_coalescing_window() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let dora = h.user_with_caps("dora", &["presence-delta"]);
    let bob = h.connect();
    h.send(bob, register("bob"));
    // The periodic snapshot shows bob to everyone at once...
    let everyone = online(&[("alice", "here"), ("bob", "here"), ("dora", "here")]);
    assert_eq!(
        h.snapshot(),
        vec![
            many(&[alice, bob], everyone),
            many(&[dora], delta(&[("bob", Some("here"))])),
        ]
    );
    assert!(!h.chat.presence_pending());
    // ...so his leaving in the same timer window is news for everyone.
    h.disconnect(bob);
    assert_eq!(
        h.flush(),
        vec![
            many(&[alice], online(&[("alice", "here"), ("dora", "here")])),
            many(&[dora], delta(&[("bob", None)])),
        ]
    );
}
