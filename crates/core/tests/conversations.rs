//! Rules about invitations, membership, policies and messages.

mod common;

use common::*;
use natter_core::{Output, Outputs, Policy, Recipients};
use natter_proto::{Command, ServerMessage};

fn invitation(conv: u64, inviter: &str) -> ServerMessage {
    ServerMessage::Invitation {
        conv,
        inviter: inviter.into(),
    }
}

fn message(conv: u64, sender: &str, text: &str) -> ServerMessage {
    ServerMessage::Message {
        conv,
        sender: sender.into(),
        text: text.into(),
        meta: None,
    }
}

fn listing(entries: &[(u64, &[&str])]) -> ServerMessage {
    ServerMessage::Conversations(
        entries
            .iter()
            .map(|(id, names)| (*id, names.iter().map(|n| n.to_string()).collect()))
            .collect(),
    )
}

#[test]
fn invitation_goes_to_inviter_and_invitees() {
    let mut h = Harness::new();
    let alice = h.user("Alice");
    let bob = h.user("bob");
    let carol = h.user("carol");
    h.user("dave");
    assert_eq!(
        h.send(alice, invite(&["carol", "BOB"])),
        vec![many(&[alice, carol, bob], invitation(1, "Alice"))]
    );
}

#[test]
fn invite_dedupes_ignores_self_and_reports_offline_in_one_error() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let names = &["Bob", "alice", "zed", "bob", "BOB", "carol", "ZED"];
    assert_eq!(
        h.send(alice, invite(names)),
        vec![
            many(&[alice, bob], invitation(1, "alice")),
            error_to(alice, "cannot invite zed, carol: not online"),
        ]
    );
    assert_eq!(h.chat.conversation_count(), 1);
}

#[test]
fn invite_with_no_valid_name_is_an_error_and_creates_nothing() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    assert_eq!(
        h.send(alice, invite(&["ALICE"])),
        vec![error_to(
            alice,
            "INVITE needs at least one other online user"
        )]
    );
    assert_eq!(
        h.send(alice, invite(&[])),
        vec![error_to(
            alice,
            "INVITE needs at least one other online user"
        )]
    );
    assert_eq!(
        h.send(alice, invite(&["bob", "alice"])),
        vec![error_to(
            alice,
            "cannot invite bob: not online; INVITE needs at least one other online user, \
             so no conversation was created"
        )]
    );
    assert_eq!(h.chat.conversation_count(), 0);
}

#[test]
fn nobody_is_a_member_until_join() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let id = invitation_id(&h.send(alice, invite(&["bob"])));
    assert_eq!(h.chat.members(id), Some(vec![]));
    assert_eq!(
        h.send(alice, say(id, "anyone?")),
        vec![error_to(alice, "you are not a member of conversation 1")]
    );
    h.send(bob, Command::Join(id));
    assert_eq!(h.chat.members(id), Some(vec!["bob".to_string()]));
    assert_eq!(
        h.send(bob, say(id, "hi")),
        vec![many(&[bob], message(id, "bob", "hi"))]
    );
}

#[test]
fn conversation_ids_count_up_and_are_never_reused() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let first = invitation_id(&h.send(alice, invite(&["bob"])));
    let second = invitation_id(&h.send(alice, invite(&["bob"])));
    assert_eq!((first, second), (1, 2));
    // Both die when their users go away...
    h.disconnect(bob);
    h.disconnect(alice);
    assert_eq!(h.chat.conversation_count(), 0);
    // ...and the next one still gets a fresh id.
    let alice = h.user("alice");
    h.user("bob");
    assert_eq!(invitation_id(&h.send(alice, invite(&["bob"]))), 3);
    assert_eq!(
        h.send(alice, Command::Join(1)),
        vec![error_to(alice, "no conversation 1")]
    );
}

#[test]
fn conversation_is_removed_when_no_members_and_no_online_invitee() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let carol = h.user("carol");
    let id = invitation_id(&h.send(alice, invite(&["bob", "carol"])));
    h.send(alice, Command::Join(id));
    h.send(alice, Command::Leave(id));
    // bob and carol are still invited and online: it stays.
    assert_eq!(h.chat.conversation_ids(), vec![id]);
    h.send(bob, Command::Join(id));
    h.disconnect(carol);
    assert_eq!(h.chat.conversation_ids(), vec![id], "bob is a member");
    h.send(bob, Command::Leave(id));
    assert_eq!(h.chat.conversation_count(), 0, "no members, nobody pending");
    assert_eq!(
        h.send(bob, Command::Join(id)),
        vec![error_to(bob, &format!("no conversation {id}"))]
    );
}

#[test]
fn pending_invitee_who_disconnects_is_dropped() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let id = invitation_id(&h.send(alice, invite(&["bob"])));
    h.disconnect(alice);
    assert_eq!(h.chat.conversation_ids(), vec![id], "bob is still invited");
    h.disconnect(bob);
    assert_eq!(h.chat.conversation_count(), 0);
}

#[test]
fn open_policy_lets_anyone_join_and_lists_everything() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let zed = h.user("zed");
    let id = h.conversation(alice, &[("bob", bob)]);
    invitation_id(&h.send(alice, invite(&["bob"])));
    assert_eq!(
        h.send(zed, Command::ListConversations),
        vec![one(zed, listing(&[(1, &["alice", "bob"]), (2, &[])]))]
    );
    assert_eq!(h.send(zed, Command::Join(id)), vec![]);
    assert_eq!(
        h.send(zed, say(id, "hello")),
        vec![many(&[alice, bob, zed], message(id, "zed", "hello"))]
    );
}

#[test]
fn invite_only_join_needs_an_invitation() {
    let mut h = Harness::with_policy(Policy::InviteOnly);
    let alice = h.user("alice");
    let bob = h.user("bob");
    let zed = h.user("zed");
    let id = h.conversation(alice, &[("bob", bob)]);
    assert_eq!(
        h.send(zed, Command::Join(id)),
        vec![error_to(zed, "conversation 1: you are not invited")]
    );
    assert_eq!(h.chat.members(id), Some(vec!["alice".into(), "bob".into()]));
}

#[test]
fn invite_only_lists_conversations_where_member_or_invited() {
    let mut h = Harness::with_policy(Policy::InviteOnly);
    let alice = h.user("alice");
    let bob = h.user("Bob");
    let carol = h.user("carol");
    let first = h.conversation(alice, &[("bob", bob)]);
    let second = invitation_id(&h.send(carol, invite(&["bob"])));
    let third = invitation_id(&h.send(carol, invite(&["alice"])));
    assert_eq!(
        h.send(bob, Command::ListConversations),
        vec![one(
            bob,
            listing(&[(first, &["alice", "Bob"]), (second, &[])])
        )]
    );
    assert_eq!(
        h.send(alice, Command::ListConversations),
        vec![one(
            alice,
            listing(&[(first, &["alice", "Bob"]), (third, &[])])
        )]
    );
}

#[test]
fn allowed_user_may_rejoin_after_leaving_or_reconnecting() {
    let mut h = Harness::with_policy(Policy::InviteOnly);
    let alice = h.user("alice");
    let bob = h.user("bob");
    let id = h.conversation(alice, &[("bob", bob)]);
    h.send(bob, Command::Leave(id));
    assert_eq!(h.send(bob, Command::Join(id)), vec![]);
    h.disconnect(bob);
    let bob_again = h.user("BOB");
    assert_eq!(h.send(bob_again, Command::Join(id)), vec![]);
    assert_eq!(h.chat.members(id), Some(vec!["alice".into(), "BOB".into()]));
}

#[test]
fn join_unknown_conversation_is_an_error() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    assert_eq!(
        h.send(alice, Command::Join(7)),
        vec![error_to(alice, "no conversation 7")]
    );
}

#[test]
fn join_twice_changes_nothing() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user_with_caps("bob", &["members"]);
    let id = h.conversation(alice, &[("bob", bob)]);
    assert_eq!(h.send(alice, Command::Join(id)), vec![]);
    // With `members`, the repeated JOIN is still acknowledged, to bob only.
    assert_eq!(
        h.send(bob, Command::Join(id)),
        vec![one(bob, members(id, &["alice", "bob"]))]
    );
    assert_eq!(h.chat.members(id), Some(vec!["alice".into(), "bob".into()]));
}

#[test]
fn send_or_leave_when_not_a_member_is_an_error() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    // bob is invited but has not joined.
    let id = invitation_id(&h.send(alice, invite(&["bob"])));
    h.send(alice, Command::Join(id));
    for cmd in [say(id, "hi"), Command::Leave(id)] {
        assert_eq!(
            h.send(bob, cmd),
            vec![error_to(bob, "you are not a member of conversation 1")]
        );
    }
    for cmd in [say(7, "hi"), Command::Leave(7)] {
        assert_eq!(h.send(bob, cmd), vec![error_to(bob, "no conversation 7")]);
    }
    // Left means no longer a member.
    h.send(alice, Command::Leave(id));
    assert_eq!(
        h.send(alice, say(id, "hi")),
        vec![error_to(alice, "you are not a member of conversation 1")]
    );
}

#[test]
fn message_goes_to_every_member_in_order() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let carol = h.user("carol");
    h.user("dave"); // online, invited elsewhere, not a member
    let id = h.conversation(alice, &[("bob", bob), ("carol", carol)]);
    let mut out = Outputs::new();
    for (conn, text) in [(bob, "one"), (alice, "two"), (carol, "three")] {
        h.chat.handle(conn, say(id, text), &mut out);
    }
    let sent = flatten(out);
    assert_eq!(
        sent,
        vec![
            many(&[alice, bob, carol], message(id, "bob", "one")),
            many(&[alice, bob, carol], message(id, "alice", "two")),
            many(&[alice, bob, carol], message(id, "carol", "three")),
        ]
    );
}

#[test]
fn empty_message_is_an_error() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let id = h.conversation(alice, &[("bob", bob)]);
    assert_eq!(
        h.send(alice, say(id, "")),
        vec![error_to(alice, "message is empty")]
    );
}

#[test]
fn message_fanout_is_one_arc_and_one_recipient_list() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let others: Vec<_> = (0..50)
        .map(|n| (format!("u{n}"), h.user(&format!("u{n}"))))
        .collect();
    let pairs: Vec<(&str, _)> = others.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    let id = h.conversation(alice, &pairs);
    let mut out = Outputs::new();
    h.chat.handle(alice, say(id, "hello, all"), &mut out);
    let [
        Output::Send {
            to: Recipients::Many(to),
            message,
        },
    ] = out.as_slice()
    else {
        panic!("expected one output to many: {out:?}")
    };
    assert_eq!(to.len(), 51);
    assert_eq!(
        std::sync::Arc::strong_count(message),
        1,
        "one shared message"
    );
}

#[test]
fn members_cap_announces_membership_changes() {
    let mut h = Harness::new();
    let alice = h.user_with_caps("alice", &["members"]);
    let bob = h.user("bob");
    let carol = h.user_with_caps("carol", &["members"]);
    let id = invitation_id(&h.send(alice, invite(&["bob", "carol"])));
    // A join: the joiner's acknowledgement.
    assert_eq!(
        h.send(alice, Command::Join(id)),
        vec![many(&[alice], members(id, &["alice"]))]
    );
    // A classic joiner gets nothing, cap members do.
    assert_eq!(
        h.send(bob, Command::Join(id)),
        vec![many(&[alice], members(id, &["alice", "bob"]))]
    );
    assert_eq!(
        h.send(carol, Command::Join(id)),
        vec![many(
            &[alice, carol],
            members(id, &["alice", "bob", "carol"])
        )]
    );
    // A leave: the remaining cap members and the leaver.
    assert_eq!(
        h.send(carol, Command::Leave(id)),
        vec![many(&[alice, carol], members(id, &["alice", "bob"]))]
    );
    // A disconnect: the remaining cap members only.
    assert_eq!(
        h.disconnect(bob),
        vec![many(&[alice], members(id, &["alice"]))]
    );
    // The last member leaving still gets its acknowledgement.
    assert_eq!(
        h.send(alice, Command::Leave(id)),
        vec![many(&[alice], members(id, &[]))]
    );
    assert_eq!(h.chat.conversation_count(), 0);
}
