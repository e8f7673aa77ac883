//! Durable chat state: facts, message ids, nonces, read markers, topics,
//! and what comes back after a restart (version 2 of the contract).

mod common;

use std::sync::Arc;

use common::*;
use natter_core::facts::{RestoredConversation, RestoredMember};
use natter_core::{Chat, Config, ConnId, Fact, Snapshot, StoredMessage};
use natter_proto::{Command, MessageMeta, ServerMessage};

fn meta(seq: u64, ts: i64, nonce: Option<&str>) -> Option<MessageMeta> {
    Some(MessageMeta {
        seq,
        ts,
        nonce: nonce.map(str::to_owned),
    })
}

fn message(conv: u64, sender: &str, text: &str, meta: Option<MessageMeta>) -> ServerMessage {
    ServerMessage::Message {
        conv,
        sender: sender.into(),
        text: text.into(),
        meta,
    }
}

fn say_once(conv: u64, text: &str, nonce: &str) -> Command {
    Command::SendMessage {
        conv,
        text: text.into(),
        nonce: Some(nonce.into()),
    }
}

fn facts(sent: &[Sent]) -> Vec<Fact> {
    sent.iter()
        .filter_map(|s| match s {
            Sent::Fact(fact) => Some(fact.clone()),
            _ => None,
        })
        .collect()
}

fn stored(conv: u64, seq: u64, ts: i64, sender: &str, text: &str) -> Arc<StoredMessage> {
    Arc::new(StoredMessage {
        conv,
        seq,
        ts,
        sender_key: sender.to_lowercase(),
        sender: sender.into(),
        text: text.into(),
        nonce: None,
    })
}

/// alice (history) and bob (classic) in conversation 1, both joined.
fn two_in_a_room() -> (Harness, ConnId, ConnId) {
    let mut h = Harness::durable();
    h.chat.set_time(1_000);
    let alice = h.user_with_caps("alice", &["history"]);
    let bob = h.user("bob");
    let conv = h.conversation(alice, &[("bob", bob)]);
    assert_eq!(conv, 1);
    (h, alice, bob)
}

#[test]
fn history_capability_is_only_offered_when_history_is_kept() {
    let mut ephemeral = Harness::new();
    let conn = ephemeral.connect();
    assert_eq!(
        ephemeral.send(conn, caps_cmd(&["history", "topics"])),
        vec![one(conn, ServerMessage::Caps(vec!["topics".into()]))]
    );
    let mut durable = Harness::durable();
    let conn = durable.connect();
    assert_eq!(
        durable.send(conn, caps_cmd(&["history", "topics"])),
        vec![one(
            conn,
            ServerMessage::Caps(vec!["history".into(), "topics".into()])
        )]
    );
}

#[test]
fn every_change_is_a_fact_before_the_deliveries_that_reveal_it() {
    let mut h = Harness::durable();
    h.chat.set_time(5);
    let alice = h.user("alice");
    let bob = h.user("bob");
    let sent = h.send(alice, invite(&["bob"]));
    assert_eq!(
        sent[0],
        Sent::Fact(Fact::ConversationCreated {
            conv: 1,
            ts: 5,
            invited: vec![
                ("alice".into(), "alice".into()),
                ("bob".into(), "bob".into())
            ],
        })
    );
    let sent = h.send(bob, Command::Join(1));
    assert_eq!(
        facts(&sent),
        [Fact::Joined {
            conv: 1,
            key: "bob".into(),
            display: "bob".into()
        }]
    );
    let sent = h.send(bob, say(1, "hi"));
    assert!(
        matches!(&sent[0], Sent::Fact(Fact::MessageAccepted(m)) if m.seq == 1 && m.text == "hi")
    );
    assert_eq!(sent[1], many(&[bob], message(1, "bob", "hi", None)));
    let sent = h.send(bob, Command::Leave(1));
    assert_eq!(
        facts(&sent),
        [Fact::Left {
            conv: 1,
            key: "bob".into()
        }]
    );
    // alice never joined; when she goes, nobody is left.
    let sent = h.disconnect(alice);
    assert_eq!(
        facts(&sent),
        [
            Fact::InvitationLapsed {
                conv: 1,
                key: "alice".into()
            },
            Fact::ConversationEnded { conv: 1, ts: 5 }
        ]
    );
}

#[test]
fn history_clients_get_seq_and_time_others_get_the_classic_message() {
    let (mut h, alice, bob) = two_in_a_room();
    let sent = h.send(bob, say(1, "one"));
    assert_eq!(
        sent[1..],
        [
            many(&[bob], message(1, "bob", "one", None)),
            many(&[alice], message(1, "bob", "one", meta(1, 1_000, None))),
        ]
    );
    h.chat.set_time(2_000);
    let sent = h.send(alice, say(1, "two"));
    assert!(sent.contains(&many(
        &[alice],
        message(1, "alice", "two", meta(2, 2_000, None))
    )));
}

#[test]
fn a_resent_nonce_is_answered_with_the_original_and_not_stored_twice() {
    let (mut h, alice, bob) = two_in_a_room();
    let first = h.send(alice, say_once(1, "hello", "n-1"));
    assert_eq!(facts(&first).len(), 1);
    assert!(first.contains(&one(
        alice,
        message(1, "alice", "hello", meta(1, 1_000, Some("n-1")))
    )));
    assert!(first.contains(&many(&[bob], message(1, "alice", "hello", None))));
    h.chat.set_time(9_000);
    let again = h.send(alice, say_once(1, "hello", "n-1"));
    assert_eq!(
        again,
        [one(
            alice,
            message(1, "alice", "hello", meta(1, 1_000, Some("n-1")))
        )]
    );
    // Another user's nonce, or another nonce, is a new message.
    let other = h.send(bob, say_once(1, "hello", "n-1"));
    assert_eq!(facts(&other).len(), 1);
    let next = h.send(alice, say_once(1, "hello", "n-2"));
    assert!(matches!(&facts(&next)[..], [Fact::MessageAccepted(m)] if m.seq == 3));
}

#[test]
fn a_lost_message_frees_its_nonce() {
    let (mut h, alice, _bob) = two_in_a_room();
    let sent = h.send(alice, say_once(1, "hello", "n-1"));
    let Fact::MessageAccepted(lost) = &facts(&sent)[0] else {
        panic!("no message fact: {sent:?}");
    };
    h.chat.message_lost(lost);
    let retry = h.send(alice, say_once(1, "hello", "n-1"));
    assert!(matches!(&facts(&retry)[..], [Fact::MessageAccepted(m)] if m.seq == 2));
}

#[test]
fn history_is_fetched_only_for_members_and_only_when_kept() {
    let (mut h, alice, _bob) = two_in_a_room();
    let carol = h.user("carol");
    let history = Command::History {
        conv: 1,
        before_seq: 0,
        limit: 50,
    };
    assert_eq!(
        h.send(alice, history.clone()),
        [Sent::FetchHistory {
            conn: alice,
            conv: 1,
            before_seq: 0,
            limit: 50
        }]
    );
    assert_eq!(
        h.send(carol, history.clone()),
        [error_to(carol, "you are not a member of conversation 1")]
    );
    let mut ephemeral = Harness::new();
    let dave = ephemeral.user("dave");
    assert_eq!(
        ephemeral.send(dave, history),
        [error_to(
            dave,
            "this server keeps no history (it runs with --ephemeral)"
        )]
    );
}

#[test]
fn read_markers_only_move_forward_and_never_past_the_last_message() {
    let (mut h, alice, bob) = two_in_a_room();
    h.send(bob, say(1, "one"));
    h.send(bob, say(1, "two"));
    let sent = h.send(alice, Command::Read { conv: 1, seq: 99 });
    assert_eq!(
        sent,
        [Sent::Fact(Fact::ReadUpTo {
            key: "alice".into(),
            conv: 1,
            seq: 2
        })]
    );
    assert_eq!(h.send(alice, Command::Read { conv: 1, seq: 1 }), []);
}

#[test]
fn topics_reach_members_with_the_capability_and_new_joiners() {
    let mut h = Harness::durable();
    let alice = h.user_with_caps("alice", &["topics"]);
    let bob = h.user("bob");
    let carol = h.user_with_caps("carol", &["topics"]);
    let conv = h.conversation(alice, &[("bob", bob)]);
    let topic = ServerMessage::Topic {
        conv,
        text: "lunch".into(),
        setter: "bob".into(),
    };
    let sent = h.send(
        bob,
        Command::Topic {
            conv,
            text: "lunch".into(),
        },
    );
    assert_eq!(
        sent,
        [
            Sent::Fact(Fact::TopicSet {
                conv,
                text: "lunch".into(),
                setter: "bob".into()
            }),
            many(&[alice], topic.clone()),
        ]
    );
    let sent = h.send(carol, Command::Join(conv));
    assert!(sent.contains(&one(carol, topic)), "{sent:?}");
    let dave = h.user("dave");
    assert_eq!(
        h.send(
            dave,
            Command::Topic {
                conv,
                text: "x".into()
            }
        ),
        [error_to(dave, "you are not a member of conversation 1")]
    );
}

fn snapshot() -> Snapshot {
    Snapshot {
        next_conv_id: 8,
        conversations: vec![RestoredConversation {
            id: 5,
            last_seq: 42,
            topic: Some(("plans".into(), "Alice".into())),
            members: vec![
                RestoredMember {
                    key: "alice".into(),
                    display: "Alice".into(),
                    read_seq: 40,
                },
                RestoredMember {
                    key: "bob".into(),
                    display: "bob".into(),
                    read_seq: 0,
                },
            ],
            pending: vec![("carol".into(), "carol".into())],
            allowed: vec!["alice".into(), "bob".into(), "carol".into()],
        }],
        recent_nonces: vec![StoredMessage {
            nonce: Some("n-7".into()),
            ..(*stored(5, 42, 1_000, "Alice", "last words")).clone()
        }],
    }
}

fn restored() -> Harness {
    let config = Config {
        durable: true,
        ..Config::default()
    };
    let mut h = Harness::over(Chat::restore(config, snapshot()));
    h.chat.set_time(2_000);
    h
}

#[test]
fn a_restart_keeps_ids_and_nobody_is_online() {
    let mut h = restored();
    assert_eq!(h.chat.conversation_ids(), [5]);
    assert_eq!(h.chat.user_count(), 0);
    assert_eq!(
        h.chat.members(5),
        Some(vec!["Alice".to_string(), "bob".to_string()])
    );
    h.chat.check_invariants().unwrap();
    // A new conversation gets an id above every one ever used.
    let x = h.user("x");
    h.user("y");
    let sent = h.send(x, invite(&["y"]));
    assert_eq!(
        sent[1..],
        [many(
            &[x, ConnId(2)],
            ServerMessage::Invitation {
                conv: 8,
                inviter: "x".into()
            }
        )]
    );
}

#[test]
fn a_user_who_registers_again_is_back_in_its_conversations_with_unread_counts() {
    let mut h = restored();
    let conn = h.connect();
    h.send(conn, caps_cmd(&["history", "topics", "members"]));
    let sent = h.send(conn, register("alice"));
    assert_eq!(
        sent,
        [
            one(conn, ServerMessage::Unread(vec![(5, 42, 40)])),
            one(conn, members(5, &["alice", "bob"])),
            one(
                conn,
                ServerMessage::Topic {
                    conv: 5,
                    text: "plans".into(),
                    setter: "Alice".into()
                }
            ),
        ]
    );
    // A member again: messages continue after the last seq.
    let sent = h.send(conn, say(5, "back"));
    assert!(matches!(&facts(&sent)[..], [Fact::MessageAccepted(m)] if m.seq == 43));
    // And the nonce from before the restart is still recognised.
    let again = h.send(conn, say_once(5, "last words", "n-7"));
    assert_eq!(
        again,
        [one(
            conn,
            message(5, "Alice", "last words", meta(42, 1_000, Some("n-7")))
        )]
    );
}

#[test]
fn after_the_rejoin_grace_absent_guests_leave_and_empty_conversations_end() {
    let mut h = restored();
    let bob = h.user("bob");
    assert!(h.chat.awaiting_rejoin());
    let mut out = Vec::new();
    h.chat.end_rejoin_grace(&mut out);
    h.chat.check_invariants().unwrap();
    let sent = flatten(out);
    assert!(sent.contains(&Sent::Fact(Fact::Left {
        conv: 5,
        key: "alice".into()
    })));
    assert!(sent.contains(&Sent::Fact(Fact::InvitationLapsed {
        conv: 5,
        key: "carol".into()
    })));
    assert_eq!(h.chat.members(5), Some(vec!["bob".to_string()]));
    assert!(!h.chat.awaiting_rejoin());
    // bob leaving now ends it, for good.
    let sent = h.send(bob, Command::Leave(5));
    assert!(sent.contains(&Sent::Fact(Fact::ConversationEnded { conv: 5, ts: 2_000 })));
    assert_eq!(h.chat.conversation_count(), 0);
}

/// A copy of a replicated state builds deliveries for its own connections
/// only, and still applies every message: the seq advances alike.
#[test]
fn a_copy_delivers_messages_only_within_its_connections() {
    let (mut h, alice, bob) = two_in_a_room();
    h.chat.deliver_messages_within(bob..=bob);
    let sent = h.send(alice, say(1, "hi"));
    let fact = stored(1, 1, 1_000, "alice", "hi");
    assert_eq!(
        sent,
        vec![
            Sent::Fact(Fact::MessageAccepted(fact)),
            many(&[bob], message(1, "alice", "hi", None)),
        ],
        "bob's copy only, not alice's (with metadata)"
    );
    h.chat.deliver_messages_within(ConnId(100)..=ConnId(200));
    let sent = h.send(bob, say(1, "elsewhere"));
    assert!(
        matches!(&sent[..], [Sent::Fact(Fact::MessageAccepted(m))] if m.seq == 2),
        "no local member: the fact alone, {sent:?}"
    );
}

#[test]
fn an_ephemeral_copy_delivers_only_within_its_connections_too() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let conv = h.conversation(alice, &[("bob", bob)]);
    h.chat.deliver_messages_within(alice..=alice);
    assert_eq!(
        h.send(bob, say(conv, "hi")),
        vec![many(&[alice], message(conv, "bob", "hi", None))]
    );
}
