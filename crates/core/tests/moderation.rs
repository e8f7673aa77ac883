//! What an operator does to the chat state: bans (with their facts and
//! their end), kicks and notices, as outputs in order.

mod common;

use common::*;
use natter_core::bans::{Ban, BanTarget};
use natter_core::state::NOTICE_SENDER;
use natter_core::{Fact, Outputs};
use natter_proto::{Command, ServerMessage};

fn ban(name: &str, until: Option<i64>) -> Ban {
    Ban {
        target: BanTarget::parse(name).unwrap(),
        until,
        reason: "spam".into(),
        created: 0,
    }
}

/// With a store, the fact comes first (so the ERROR that reveals the ban
/// waits for it to be kept); then each device is told and closed, and
/// the others see the user leave.
#[test]
fn a_ban_is_a_fact_then_an_error_and_a_close_for_each_device() {
    let mut h = Harness::durable();
    h.chat.set_time(1_000);
    let alice = h.user("alice");
    let bob = h.user("Bob");
    let mut out = Outputs::new();
    assert_eq!(h.chat.ban_user(ban("bob", Some(61_000)), &mut out), 1);
    let sent = flatten(out);
    assert_eq!(sent[0], Sent::Fact(Fact::Banned(ban("bob", Some(61_000)))));
    assert_eq!(
        sent[1],
        error_to(bob, "Bob is banned from this server for 1m more: spam")
    );
    assert_eq!(sent[2], Sent::Close(bob));
    assert_eq!(h.chat.user_count(), 1);
    h.flush();
    let _ = alice;

    // Every spelling is refused while it holds; not after its end.
    let again = h.connect();
    assert_eq!(
        h.send(again, register("BOB")),
        vec![error_to(
            again,
            "BOB is banned from this server for 1m more: spam"
        )]
    );
    h.chat.set_time(61_000);
    assert_eq!(h.send(again, register("BOB")), vec![]);
    assert_eq!(h.chat.user_bans(), vec![], "a lapsed ban is not listed");
}

#[test]
fn unban_lifts_a_ban_and_says_whether_there_was_one() {
    let mut h = Harness::durable();
    let mut out = Outputs::new();
    assert_eq!(h.chat.ban_user(ban("carol", None), &mut out), 0);
    let target = BanTarget::User("carol".into());
    let mut out = Outputs::new();
    assert_eq!(
        h.chat.unban_user(&target, &mut out),
        Some(ban("carol", None))
    );
    assert_eq!(
        flatten(out),
        vec![Sent::Fact(Fact::Unbanned(target.clone()))]
    );
    let mut out = Outputs::new();
    assert_eq!(h.chat.unban_user(&target, &mut out), None);
    assert!(out.is_empty());
    h.user("carol");
}

#[test]
fn a_kick_tells_every_device_why_and_closes_it() {
    let mut h = Harness::new();
    let dave = h.user("dave");
    let mut out = Outputs::new();
    assert_eq!(h.chat.kick("DAVE", "flooding", &mut out), 1);
    assert_eq!(
        flatten(out),
        vec![
            error_to(dave, "disconnected by an operator: flooding"),
            Sent::Close(dave)
        ]
    );
    let mut out = Outputs::new();
    assert_eq!(h.chat.kick("dave", "", &mut out), 0, "no longer online");
    // Kicked is not banned: the name is free again.
    let back = h.connect();
    assert_eq!(h.send(back, register("dave")), vec![]);
}

/// A notice is one MESSAGE in conversation 0, to every registered device
/// and nobody else, without history metadata.
#[test]
fn a_notice_goes_to_every_registered_device_as_conversation_0() {
    let mut h = Harness::durable();
    let a = h.user("a");
    let b = h.user_with_caps("b", &["history"]);
    let _unregistered = h.connect();
    let mut out = Outputs::new();
    assert_eq!(h.chat.notice("back soon", &mut out), 2);
    assert_eq!(
        flatten(out),
        vec![many(
            &[a, b],
            ServerMessage::Message {
                conv: 0,
                sender: NOTICE_SENDER.into(),
                text: "back soon".into(),
                meta: None,
            }
        )]
    );
    // Conversation 0 does not exist for anyone.
    assert_eq!(
        h.send(a, Command::Join(0)),
        vec![error_to(a, "no conversation 0")]
    );
}
