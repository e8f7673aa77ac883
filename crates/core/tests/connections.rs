//! Rules about connections, registration and capabilities.

mod common;

use common::*;
use natter_proto::{Command, ServerMessage};

#[test]
fn before_register_only_register_and_caps_are_accepted() {
    let mut h = Harness::new();
    let conn = h.connect();
    let refusal = "not registered: send REGISTER [username, status] first";
    for cmd in [
        Command::Status("away".into()),
        Command::Goodbye,
        invite(&["bob"]),
        Command::ListConversations,
        Command::Join(1),
        say(1, "hi"),
        Command::Leave(1),
    ] {
        assert_eq!(
            h.send(conn, cmd.clone()),
            vec![error_to(conn, refusal)],
            "{cmd:?}"
        );
    }
    assert_eq!(h.chat.user_count(), 0);
    assert!(h.chat.is_connected(conn), "the connection stays usable");
    assert_eq!(
        h.send(conn, caps_cmd(&["members"])),
        vec![one(conn, ServerMessage::Caps(vec!["members".into()]))]
    );
    assert_eq!(h.send(conn, register("alice")), vec![]);
    assert_eq!(h.chat.user_name(conn), Some("alice"));
}

#[test]
fn second_register_is_an_error() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let replies = h.send(alice, register("alicia"));
    assert_eq!(
        replies,
        vec![error_to(
            alice,
            "already registered as alice: one connection carries one user"
        )]
    );
    assert_eq!(h.chat.user_name(alice), Some("alice"));
    assert_eq!(h.chat.user_count(), 1);
    assert!(!h.chat.presence_pending());
}

#[test]
fn caps_after_register_is_an_error() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    assert_eq!(
        h.send(alice, caps_cmd(&["members"])),
        vec![error_to(alice, "CAPS must be sent before REGISTER")]
    );
    // Not enabled: joining gives no MEMBERS.
    h.user("bob");
    let id = invitation_id(&h.send(alice, invite(&["bob"])));
    assert_eq!(h.send(alice, Command::Join(id)), vec![]);
}

#[test]
fn caps_answers_known_names_in_order_deduped() {
    let mut h = Harness::new();
    let conn = h.connect();
    let asked = &[
        "members",
        "telepathy",
        "presence-delta",
        "members",
        "Members",
    ];
    assert_eq!(
        h.send(conn, caps_cmd(asked)),
        vec![one(
            conn,
            ServerMessage::Caps(vec!["members".into(), "presence-delta".into()])
        )]
    );
    let other = h.connect();
    assert_eq!(
        h.send(other, caps_cmd(&["telepathy"])),
        vec![one(other, ServerMessage::Caps(vec![]))]
    );
}

#[test]
fn repeated_caps_add_to_the_set() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let carol = h.connect();
    assert_eq!(
        h.send(carol, caps_cmd(&["presence-delta"])),
        vec![one(
            carol,
            ServerMessage::Caps(vec!["presence-delta".into()])
        )]
    );
    assert_eq!(
        h.send(carol, caps_cmd(&["members"])),
        vec![one(carol, ServerMessage::Caps(vec!["members".into()]))]
    );
    h.send(carol, register("carol"));
    h.flush();
    // presence-delta still on: a departure is a PRESENCE, not ONLINE_USERS.
    h.send(alice, Command::Status("away".into()));
    let flushed = h.flush();
    assert!(flushed.contains(&one(
        carol,
        ServerMessage::Presence(vec![("alice".into(), Some("away".into()))])
    )));
    // members on too: JOIN is acknowledged with MEMBERS.
    let id = invitation_id(&h.send(alice, invite(&["carol"])));
    assert_eq!(
        h.send(carol, Command::Join(id)),
        vec![one(carol, members(id, &["carol"]))]
    );
}

#[test]
fn usernames_are_unique_case_insensitively() {
    let mut h = Harness::new();
    let alice = h.user("Alice");
    let other = h.connect();
    assert_eq!(
        h.send(other, register("aLiCe")),
        vec![error_to(other, "name aLiCe is taken")]
    );
    assert_eq!(h.chat.user_name(other), None);
    // The connection may try again.
    assert_eq!(h.send(other, register("alicia")), vec![]);
    assert_eq!(h.chat.user_name(other), Some("alicia"));
    // The display form is kept as given.
    assert_eq!(h.chat.user_name(alice), Some("Alice"));
    // Unicode letters are compared case-insensitively too.
    let d1 = h.connect();
    let d2 = h.connect();
    assert_eq!(h.send(d1, register("Ärger")), vec![]);
    assert_eq!(
        h.send(d2, register("äRGER")),
        vec![error_to(d2, "name äRGER is taken")]
    );
}

#[test]
fn goodbye_leaves_everything_and_closes() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user_with_caps("bob", &["members"]);
    let carol = h.user("carol");
    let id = h.conversation(alice, &[("bob", bob)]);
    let pending = invitation_id(&h.send(alice, invite(&["carol"])));

    let replies = h.send(alice, Command::Goodbye);
    assert_eq!(
        replies,
        vec![many(&[bob], members(id, &["bob"])), Sent::Close(alice)]
    );
    assert_eq!(h.chat.members(id), Some(vec!["bob".to_string()]));
    assert!(!h.chat.is_connected(alice));
    assert_eq!(h.chat.user_count(), 2);
    // carol is still invited to the other one, so it stays.
    assert_eq!(h.chat.members(pending), Some(vec![]));
    // The departure is a presence change, sent at the flush.
    assert_eq!(
        h.flush(),
        vec![many(
            &[bob, carol],
            online(&[("bob", "here"), ("carol", "here")])
        )]
    );
    // The name is free again.
    let again = h.connect();
    assert_eq!(h.send(again, register("ALICE")), vec![]);
}

#[test]
fn inputs_after_disconnect_are_ignored() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let id = h.conversation(alice, &[("bob", bob)]);
    assert_eq!(h.disconnect(alice), vec![]);
    assert!(!h.chat.is_connected(alice));
    for cmd in [say(id, "still here?"), register("alice"), Command::Goodbye] {
        assert_eq!(h.send(alice, cmd), vec![]);
    }
    assert_eq!(h.disconnect(alice), vec![]);
    assert_eq!(h.chat.user_count(), 1);
    assert_eq!(h.chat.members(id), Some(vec!["bob".to_string()]));
    // A connection that never connected is ignored as well.
    let ghost = natter_core::ConnId(999);
    assert_eq!(h.send(ghost, register("ghost")), vec![]);
    assert_eq!(h.chat.user_count(), 1);
}

#[test]
fn errors_go_to_the_sender_only() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let id = h.conversation(alice, &[("bob", bob)]);
    let carol = h.user("carol");
    let cases = [
        (say(id, "let me in"), format!("you are not a member of conversation {id}")),
        (Command::Leave(id), format!("you are not a member of conversation {id}")),
        (Command::Join(99), "no conversation 99".to_string()),
        (say(99, "hello?"), "no conversation 99".to_string()),
        (invite(&["nobody"]), "cannot invite nobody: not online; INVITE needs at least one other online user, so no conversation was created".to_string()),
        (register("dave"), "already registered as carol: one connection carries one user".to_string()),
    ];
    for (cmd, text) in cases {
        assert_eq!(
            h.send(carol, cmd.clone()),
            vec![error_to(carol, &text)],
            "{cmd:?}"
        );
    }
}

/// A connection lost with its server (a cluster node that died) is not a
/// departure: the guest stays a member until it registers again, or until
/// the rejoin grace ends; a plain disconnect still leaves.
#[test]
fn a_lost_connection_keeps_a_guests_memberships_until_the_grace_ends() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let carol = h.user("carol");
    let id = h.conversation(alice, &[("bob", bob), ("carol", carol)]);
    let mut out = Vec::new();
    h.chat.connection_lost(bob, &mut out);
    h.chat.check_invariants().expect("invariants hold");
    assert!(!h.chat.is_connected(bob));
    assert_eq!(h.chat.user_count(), 2, "bob is offline");
    assert_eq!(
        h.chat.members(id).unwrap(),
        ["alice", "bob", "carol"],
        "and still a member"
    );
    // Back on another connection: a member again, at once.
    let again = h.user("bob");
    assert!(h.chat.member_conns(id).unwrap().contains(&again));
    // Lost again, and never back: the grace ends, he leaves.
    h.chat.connection_lost(again, &mut out);
    h.chat.end_rejoin_grace(&mut out);
    h.chat.check_invariants().expect("invariants hold");
    assert_eq!(h.chat.members(id).unwrap(), ["alice", "carol"]);
    // A plain disconnect is a departure, as always.
    h.disconnect(carol);
    assert_eq!(h.chat.members(id).unwrap(), ["alice"]);
}
