//! Rules of `presence-scope`: who sees whom, WATCH and its bound,
//! LIST_USERS, and classic clients unchanged beside scoped ones.

mod common;

use common::*;
use natter_core::{Chat, Config, ConnId, Outputs, Policy};
use natter_proto::{Command, ServerMessage};

const SCOPE: &[&str] = &["presence-scope"];

fn delta(changes: &[(&str, Option<&str>)]) -> ServerMessage {
    ServerMessage::Presence(
        changes
            .iter()
            .map(|(n, s)| (n.to_string(), s.map(str::to_string)))
            .collect(),
    )
}

fn users(found: &[(&str, &str)]) -> ServerMessage {
    ServerMessage::Users(
        found
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect(),
    )
}

fn watch(names: &[&str]) -> Command {
    Command::Watch(names.iter().map(|n| n.to_string()).collect())
}

fn unwatch(names: &[&str]) -> Command {
    Command::Unwatch(names.iter().map(|n| n.to_string()).collect())
}

fn list_users(prefix: &str, limit: usize) -> Command {
    Command::ListUsers {
        prefix: prefix.into(),
        limit,
    }
}

#[test]
fn caps_presence_scope_is_enabled_and_named() {
    let mut h = Harness::new();
    let conn = h.connect();
    assert_eq!(
        h.send(conn, caps_cmd(&["Presence-Scope", "nope"])),
        vec![one(
            conn,
            ServerMessage::Caps(vec!["presence-scope".into()])
        )]
    );
}

#[test]
fn a_scoped_client_first_sees_only_itself_and_its_contacts() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let bob = h.user("bob");
    let id = h.conversation(alice, &[("bob", bob)]);
    let carol = h.connect();
    h.send(carol, caps_cmd(SCOPE));
    h.send(carol, register("carol"));
    h.send(carol, Command::Join(id));
    let sent = h.flush();
    assert!(sent.contains(&one(
        carol,
        online(&[("alice", "here"), ("bob", "here"), ("carol", "here")])
    )));
    let sam = h.connect();
    h.send(sam, caps_cmd(SCOPE));
    h.send(sam, register("sam"));
    let sent = h.flush();
    assert!(sent.contains(&one(sam, online(&[("sam", "here")]))));
    // carol's contacts did not change, so she hears nothing of sam.
    assert!(
        !sent
            .iter()
            .any(|s| matches!(s, Sent::To(to, _) if to.contains(&carol)))
    );
}

// Devices with the same delta share a message; messages come in the
// order of their content.
#[test]
fn an_invitation_puts_inviter_and_invitees_in_each_others_scope() {
    let mut h = Harness::new();
    let alice = h.user_with_caps("alice", SCOPE);
    let bob = h.user_with_caps("bob", SCOPE);
    let carol = h.user_with_caps("carol", SCOPE);
    h.send(alice, invite(&["bob"]));
    assert_eq!(
        h.flush(),
        vec![
            one(bob, delta(&[("alice", Some("here"))])),
            one(alice, delta(&[("bob", Some("here"))])),
        ]
    );
    // Nothing for carol, who is in no conversation with them.
    let _ = carol;
}

#[test]
fn joining_an_open_conversation_brings_the_joiner_into_scope() {
    let mut h = Harness::new();
    let alice = h.user_with_caps("alice", SCOPE);
    let bob = h.user_with_caps("bob", SCOPE);
    let id = h.conversation(alice, &[("bob", bob)]);
    h.flush();
    let carol = h.user_with_caps("carol", SCOPE);
    h.send(carol, Command::Join(id));
    assert_eq!(
        h.flush(),
        vec![
            one(
                carol,
                delta(&[("alice", Some("here")), ("bob", Some("here"))])
            ),
            many(&[alice, bob], delta(&[("carol", Some("here"))])),
        ]
    );
}

#[test]
fn leaving_takes_users_out_of_each_others_scope() {
    let mut h = Harness::new();
    let alice = h.user_with_caps("alice", SCOPE);
    let bob = h.user_with_caps("bob", SCOPE);
    let id = h.conversation(alice, &[("bob", bob)]);
    h.flush();
    h.send(bob, Command::Leave(id));
    assert_eq!(
        h.flush(),
        vec![
            one(bob, delta(&[("alice", None)])),
            one(alice, delta(&[("bob", None)])),
        ]
    );
}

#[test]
fn status_changes_reach_only_contacts_in_one_shared_message() {
    let mut h = Harness::new();
    let alice = h.user_with_caps("alice", SCOPE);
    let bob = h.user_with_caps("bob", SCOPE);
    let carol = h.user_with_caps("carol", SCOPE);
    h.conversation(alice, &[("bob", bob), ("carol", carol)]);
    let dave = h.user_with_caps("dave", SCOPE);
    h.flush();
    h.send(bob, Command::Status("busy".into()));
    // One message, shared by everyone with bob in scope (bob included).
    assert_eq!(
        h.flush(),
        vec![many(&[alice, bob, carol], delta(&[("bob", Some("busy"))]))]
    );
    let _ = dave;
}

#[test]
fn a_contact_going_offline_and_coming_back_is_seen() {
    let mut h = Harness::new();
    let alice = h.user_with_caps("alice", SCOPE);
    let bob = h.user("bob");
    h.conversation(alice, &[("bob", bob)]);
    h.flush();
    h.disconnect(bob);
    assert_eq!(h.flush(), vec![one(alice, delta(&[("bob", None)]))]);
}

#[test]
fn an_account_back_online_reaches_scoped_members_of_its_conversations() {
    let mut h = Harness::over(Chat::new(Config {
        durable: true,
        ..Config::default()
    }));
    let alice = h.user_with_caps("alice", SCOPE);
    let carl = h.connect();
    let mut out = Outputs::new();
    assert!(h.chat.login(carl, "carl".into(), "here".into(), &mut out));
    h.conversation(alice, &[("carl", carl)]);
    h.flush();
    h.disconnect(carl);
    assert_eq!(h.flush(), vec![one(alice, delta(&[("carl", None)]))]);
    // Still a member while offline; back online, alice sees him again.
    let again = h.connect();
    assert!(h.chat.login(again, "carl".into(), "away".into(), &mut out));
    let sent = h.flush();
    assert!(
        sent.contains(&one(alice, delta(&[("carl", Some("away"))]))),
        "{sent:?}"
    );
}

#[test]
fn watch_shows_a_user_whenever_online_and_unwatch_hides_it() {
    let mut h = Harness::new();
    let alice = h.user_with_caps("alice", SCOPE);
    // Watching someone offline shows nothing yet...
    assert_eq!(h.send(alice, watch(&["Erin"])), vec![]);
    assert_eq!(h.flush(), vec![]);
    // ...until they arrive (bob, unwatched, stays unseen).
    for name in ["erin", "bob"] {
        let conn = h.connect();
        h.send(conn, register(name));
    }
    let sent = h.flush();
    let to_alice: Vec<_> = sent
        .iter()
        .filter(|s| matches!(s, Sent::To(to, _) if to.contains(&alice)))
        .collect();
    assert_eq!(
        to_alice,
        vec![&one(alice, delta(&[("erin", Some("here"))]))]
    );
    h.send(alice, unwatch(&["erin", "nobody"]));
    assert_eq!(h.flush(), vec![one(alice, delta(&[("erin", None)]))]);
}

#[test]
fn watching_an_online_user_shows_it_at_the_next_flush() {
    let mut h = Harness::new();
    let alice = h.user_with_caps("alice", SCOPE);
    h.user("bob");
    h.flush();
    h.send(alice, watch(&["BOB"]));
    assert_eq!(h.flush(), vec![one(alice, delta(&[("bob", Some("here"))]))]);
}

#[test]
fn watch_over_the_bound_is_refused_and_adds_nothing() {
    let mut h = Harness::over(Chat::new(Config {
        max_watched: 2,
        ..Config::default()
    }));
    let alice = h.user_with_caps("alice", SCOPE);
    h.user("bob");
    h.user("carol");
    h.flush();
    let refused = "cannot watch more than 2 users: UNWATCH some first (nothing was added)";
    assert_eq!(
        h.send(alice, watch(&["bob", "carol", "dave"])),
        vec![error_to(alice, refused)]
    );
    assert_eq!(h.flush(), vec![]);
    // Names already watched do not count twice.
    assert_eq!(h.send(alice, watch(&["bob", "carol"])), vec![]);
    assert_eq!(h.send(alice, watch(&["bob"])), vec![]);
    assert_eq!(
        h.send(alice, watch(&["dave"])),
        vec![error_to(alice, refused)]
    );
    h.send(alice, unwatch(&["carol"]));
    assert_eq!(h.send(alice, watch(&["dave"])), vec![]);
}

#[test]
fn the_default_watch_bound_is_a_thousand_names() {
    let mut h = Harness::new();
    let alice = h.user_with_caps("alice", SCOPE);
    let names: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
    assert_eq!(h.send(alice, Command::Watch(names)), vec![]);
    let sent = h.send(alice, watch(&["one-more"]));
    assert!(
        matches!(&sent[..], [Sent::To(_, ServerMessage::Error(e))] if e.contains("1000")),
        "{sent:?}"
    );
}

#[test]
fn watch_needs_the_capability() {
    let mut h = Harness::new();
    let alice = h.user_with_caps("alice", &["presence-delta"]);
    let needs =
        "WATCH needs the presence-scope capability (CAPS [\"presence-scope\"] before REGISTER)";
    assert_eq!(h.send(alice, watch(&["bob"])), vec![error_to(alice, needs)]);
    assert!(h.send(alice, unwatch(&["bob"]))[0] != Sent::Close(alice));
}

#[test]
fn list_users_filters_by_prefix_case_insensitively_sorted_and_limited() {
    let mut h = Harness::new();
    let asker = h.user_with_caps("zed", SCOPE);
    for name in ["Alice", "albert", "ALF", "bob"] {
        h.user(name);
    }
    h.send(
        h.chat.user_conn("albert").unwrap(),
        Command::Status("out".into()),
    );
    let all_al = users(&[("albert", "out"), ("ALF", "here"), ("Alice", "here")]);
    assert_eq!(
        h.send(asker, list_users("aL", 10)),
        vec![one(asker, all_al)]
    );
    assert_eq!(
        h.send(asker, list_users("al", 2)),
        vec![one(asker, users(&[("albert", "out"), ("ALF", "here")]))]
    );
    assert_eq!(
        h.send(asker, list_users("", 1)),
        vec![one(asker, users(&[("albert", "out")]))]
    );
    assert_eq!(
        h.send(asker, list_users("x", 5)),
        vec![one(asker, users(&[]))]
    );
}

#[test]
fn list_users_lists_only_online_users() {
    let mut h = Harness::new();
    let asker = h.user("zed");
    let alice = h.user("alice");
    h.disconnect(alice);
    assert_eq!(
        h.send(asker, list_users("a", 5)),
        vec![one(asker, users(&[]))]
    );
}

#[test]
fn classic_and_delta_clients_see_everyone_beside_scoped_ones() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let dora = h.user_with_caps("dora", &["presence-delta"]);
    let sam = h.user_with_caps("sam", SCOPE);
    h.flush();
    let bob = h.connect();
    h.send(bob, register("bob"));
    let everyone = online(&[
        ("alice", "here"),
        ("bob", "here"),
        ("dora", "here"),
        ("sam", "here"),
    ]);
    // Exactly today's messages for alice, bob and dora; nothing for sam.
    assert_eq!(
        h.flush(),
        vec![
            many(&[alice, bob], everyone.clone()),
            many(&[dora], delta(&[("bob", Some("here"))])),
        ]
    );
    // The periodic snapshot still goes to classic clients only.
    assert_eq!(h.snapshot(), vec![many(&[alice, bob], everyone)]);
    let _ = sam;
}

/// Bringing n scoped users online (in conversations of two) costs
/// presence entries in proportion to n, where classic clients cost n².
#[test]
fn bringing_scoped_users_online_costs_linear_presence() {
    let n = 200;
    let mut h = Harness::with_policy(Policy::Open);
    let mut entries = 0;
    let mut count = |sent: Vec<Sent>| {
        for s in sent {
            if let Sent::To(to, message) = s {
                entries += to.len()
                    * match message {
                        ServerMessage::OnlineUsers(all) => all.len(),
                        ServerMessage::Presence(changes) => changes.len(),
                        _ => 0,
                    };
            }
        }
    };
    let mut conns: Vec<ConnId> = Vec::new();
    for i in 0..n {
        let conn = h.connect();
        h.send(conn, caps_cmd(SCOPE));
        h.send(conn, register(&format!("user{i}")));
        if i % 2 == 1 {
            let id = invitation_id(&h.send(conn, invite(&[&format!("user{}", i - 1)])));
            h.send(conn, Command::Join(id));
            h.send(conns[i - 1], Command::Join(id));
        }
        conns.push(conn);
        if i % 10 == 9 {
            count(h.flush());
        }
    }
    // Each user: itself, then its partner: at most about 3 entries each.
    assert!(entries <= 3 * n, "{entries} presence entries for {n} users");
    assert!(entries >= n, "{entries}: every user saw at least itself");
}
