//! Every rule of the contract, over real sockets, in each encoding.

mod common;

use common::*;
use natter_core::Policy;
use natter_proto::pickle::Value;
use natter_proto::wire::RawMessage;
use natter_proto::{Command, Encoding, ServerMessage};

/// Runs a test body once per encoding, as three tests.
macro_rules! in_every_encoding {
    ($name:ident, |$enc:ident| $body:block) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn framed() {
                let $enc = Encoding::Framed;
                $body
            }
            #[tokio::test]
            async fn classic() {
                let $enc = Encoding::Classic;
                $body
            }
            #[tokio::test]
            async fn json() {
                let $enc = Encoding::Json;
                $body
            }
        }
    };
}

in_every_encoding!(register_announces_the_user_to_everyone, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::connect(server.local_addr(), enc).await;
    bob.register("bob", "away").await;
    let seen = alice
        .expect(|m| match m {
            ServerMessage::OnlineUsers(u) if u.len() == 2 => Some(u.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        seen,
        vec![
            ("alice".to_string(), "online".to_string()),
            ("bob".to_string(), "away".to_string())
        ]
    );
});

in_every_encoding!(only_register_is_accepted_before_registering, |enc| {
    let server = start().await;
    let mut client = TestClient::connect(server.local_addr(), enc).await;
    client.send(Command::Status("busy".into())).await;
    assert!(client.expect_error().await.contains("not registered"));
    client.send(Command::ListConversations).await;
    assert!(client.expect_error().await.contains("not registered"));
    // The connection stays usable.
    client.register("carol", "online").await;
});

in_every_encoding!(second_register_is_an_error, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    alice
        .send(Command::Register {
            name: "alice2".into(),
            status: "x".into(),
        })
        .await;
    alice.expect_error().await;
});

in_every_encoding!(taken_names_are_compared_case_insensitively, |enc| {
    let server = start().await;
    let _alice = TestClient::registered(server.local_addr(), enc, "Alice").await;
    let mut other = TestClient::connect(server.local_addr(), enc).await;
    other
        .send(Command::Register {
            name: "aLICE".into(),
            status: "online".into(),
        })
        .await;
    let error = other.expect_error().await;
    assert!(error.contains("is taken"), "{error}");
    // ...and the connection may try again.
    other.register("alice_2", "online").await;
});

in_every_encoding!(invalid_names_are_refused, |enc| {
    let server = start().await;
    let mut client = TestClient::connect(server.local_addr(), enc).await;
    for bad in ["", "has space", "x".repeat(33).as_str(), "semi;colon"] {
        client
            .send_words(RawMessage {
                word: "REGISTER".into(),
                args: Some(Value::List(vec![
                    Value::Str(bad.into()),
                    Value::Str("online".into()),
                ])),
            })
            .await;
        client.expect_error().await;
    }
    client.register("Zoë.k-9_", "online").await;
});

in_every_encoding!(status_changes_reach_everyone, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    bob.send(Command::Status("in a meeting".into())).await;
    for client in [&mut alice, &mut bob] {
        client
            .expect(|m| match m {
                ServerMessage::OnlineUsers(u) => u
                    .iter()
                    .any(|(n, s)| n == "bob" && s == "in a meeting")
                    .then_some(()),
                _ => None,
            })
            .await;
    }
});

in_every_encoding!(status_longer_than_128_characters_is_refused, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    alice.send(Command::Status("é".repeat(129))).await;
    alice.expect_error().await;
    alice.send(Command::Status("é".repeat(128))).await;
    alice.sync().await;
});

in_every_encoding!(goodbye_closes_and_everyone_sees_the_departure, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    bob.send(Command::Goodbye).await;
    bob.expect_closed().await;
    alice
        .expect_online_users_where(|u| u.len() == 1 && u[0].0 == "alice")
        .await;
    // The name is free again.
    let _bob = TestClient::registered(server.local_addr(), enc, "bob").await;
});

in_every_encoding!(a_disconnect_is_a_goodbye, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    drop(bob);
    alice.expect_online_users_where(|u| u.len() == 1).await;
    let convs = alice.conversations().await;
    assert_eq!(convs, vec![(conv, vec!["alice".to_string()])]);
});

in_every_encoding!(invite_sends_invitation_to_inviter_and_invitees, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    let mut carol = TestClient::registered(server.local_addr(), enc, "carol").await;
    alice.send(Command::Invite(vec!["BOB".into()])).await;
    let (conv, inviter) = alice
        .expect(|m| match m {
            ServerMessage::Invitation { conv, inviter } => Some((*conv, inviter.clone())),
            _ => None,
        })
        .await;
    assert_eq!(inviter, "alice");
    assert_eq!(bob.expect_invitation().await, conv);
    carol.expect_silence().await;
    // Nobody is a member until they join.
    let convs = alice.conversations().await;
    assert_eq!(convs, vec![(conv, vec![])]);
});

in_every_encoding!(invite_reports_offline_names_and_still_creates, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    alice
        .send(Command::Invite(vec![
            "bob".into(),
            "nobody".into(),
            "ghost".into(),
        ]))
        .await;
    // One ERROR naming both, and an INVITATION (in either order).
    let (mut error, mut conv) = (None, None);
    while error.is_none() || conv.is_none() {
        match alice.recv_msg().await {
            ServerMessage::Error(text) => error = Some(text),
            ServerMessage::Invitation { conv: id, .. } => conv = Some(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    let error = error.unwrap();
    assert!(
        error.contains("nobody") && error.contains("ghost"),
        "{error}"
    );
    assert_eq!(bob.expect_invitation().await, conv.unwrap());
});

in_every_encoding!(invite_with_no_valid_name_creates_nothing, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    alice.send(Command::Invite(vec!["nobody".into()])).await;
    alice.expect_error().await;
    alice.send(Command::Invite(vec!["alice".into()])).await;
    alice.expect_error().await;
    let convs = alice.conversations().await;
    assert!(convs.is_empty());
});

in_every_encoding!(messages_reach_every_member_sender_included, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    let mut carol = TestClient::registered(server.local_addr(), enc, "carol").await;
    let conv = alice.invite(&["bob", "carol"]).await;
    alice.join(conv).await;
    bob.expect_invitation().await;
    bob.join(conv).await;
    carol.expect_invitation().await; // carol does not join
    alice.say(conv, "héllo 👋").await;
    for client in [&mut alice, &mut bob] {
        let got = client.expect_message().await;
        assert_eq!(got, (conv, "alice".to_string(), "héllo 👋".to_string()));
    }
    carol.expect_silence().await;
});

in_every_encoding!(sending_outside_a_conversation_is_an_error, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    let conv = alice.invite(&["bob"]).await;
    bob.expect_invitation().await;
    bob.join(conv).await;
    alice.say(conv, "not a member yet").await;
    assert!(alice.expect_error().await.contains("not a member"));
    alice.say(999, "nowhere").await;
    alice.expect_error().await;
    bob.expect_silence().await;
});

in_every_encoding!(leave_stops_membership, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    bob.send(Command::Leave(conv)).await;
    bob.sync().await;
    alice.say(conv, "still there?").await;
    alice.expect_message().await;
    bob.expect_silence().await;
    bob.send(Command::Leave(conv)).await;
    bob.expect_error().await;
    bob.send(Command::Leave(4242)).await;
    bob.expect_error().await;
});

in_every_encoding!(joining_twice_is_harmless, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let conv = alice.invite_self_and(&server, enc).await;
    alice.join(conv).await;
    alice.join(conv).await;
    alice.say(conv, "once").await;
    assert_eq!(alice.expect_message().await.2, "once");
    alice.expect_silence().await;
});

in_every_encoding!(list_conversations_shows_members_sorted, |enc| {
    let server = start().await;
    let mut zed = TestClient::registered(server.local_addr(), enc, "zed").await;
    let mut amy = TestClient::registered(server.local_addr(), enc, "amy").await;
    let conv = conversation(&mut [&mut zed, &mut amy]).await;
    let convs = zed.conversations().await;
    assert_eq!(
        convs,
        vec![(conv, vec!["amy".to_string(), "zed".to_string()])]
    );
});

in_every_encoding!(open_policy_lets_anyone_join, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    let mut eve = TestClient::registered(server.local_addr(), enc, "eve").await;
    let conv = alice.invite(&["bob"]).await;
    alice.join(conv).await;
    eve.join(conv).await; // not invited, but the policy is open
    alice.say(conv, "hi all").await;
    assert_eq!(eve.expect_message().await.2, "hi all");
    bob.expect_invitation().await;
});

in_every_encoding!(invite_only_policy_needs_an_invitation, |enc| {
    let mut config = test_config();
    config.policy = Policy::InviteOnly;
    let server = start_with(config).await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    let mut eve = TestClient::registered(server.local_addr(), enc, "eve").await;
    let conv = alice.invite(&["bob"]).await;
    alice.join(conv).await;
    bob.expect_invitation().await;
    eve.send(Command::Join(conv)).await;
    eve.expect_error().await;
    let listed = eve.conversations().await;
    assert!(listed.is_empty(), "eve sees {listed:?}");
    bob.join(conv).await;
    let listed = bob.conversations().await;
    assert_eq!(listed.len(), 1);
});

in_every_encoding!(empty_conversations_are_removed, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), enc, "bob").await;
    let conv = alice.invite(&["bob"]).await;
    alice.join(conv).await;
    alice.send(Command::Leave(conv)).await;
    alice.sync().await;
    // bob is still invited and online: the conversation stays.
    let convs = alice.conversations().await;
    assert_eq!(convs.len(), 1);
    bob.expect_invitation().await;
    bob.send(Command::Goodbye).await;
    bob.expect_closed().await;
    alice.expect_online_users_where(|u| u.len() == 1).await;
    let convs = alice.conversations().await;
    assert!(convs.is_empty(), "{convs:?}");
});

in_every_encoding!(
    wrong_arguments_get_an_error_and_the_connection_stays,
    |enc| {
        let server = start().await;
        let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
        let bad = [
            RawMessage {
                word: "JOIN".into(),
                args: Some(Value::Str("three".into())),
            },
            RawMessage {
                word: "SEND_MESSAGE".into(),
                args: Some(Value::List(vec![Value::Int(1)])),
            },
            RawMessage {
                word: "STATUS".into(),
                args: Some(Value::List(vec![Value::Int(5)])),
            },
            RawMessage {
                word: "INVITE".into(),
                args: Some(Value::List(vec![])),
            },
            RawMessage {
                word: "JOIN".into(),
                args: None,
            },
        ];
        for raw in bad {
            // Classic mode has no frame: a JOIN without its pickle would read
            // the next command as its argument.
            if enc == Encoding::Classic && raw.args.is_none() {
                continue;
            }
            alice.send_words(raw).await;
            alice.expect_error().await;
        }
        alice.sync().await;
    }
);

in_every_encoding!(a_bare_value_works_for_one_argument_commands, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    alice
        .send_words(RawMessage {
            word: "STATUS".into(),
            args: Some(Value::Str("away".into())),
        })
        .await;
    alice.expect_online_users_where(|u| u[0].1 == "away").await;
});

in_every_encoding!(messages_over_the_limit_are_refused, |enc| {
    let server = start().await;
    let mut alice = TestClient::registered(server.local_addr(), enc, "alice").await;
    let conv = alice.invite_self_and(&server, enc).await;
    alice.join(conv).await;
    alice.say(conv, &"x".repeat(8193)).await;
    assert!(alice.expect_error().await.contains("too long"));
    alice.say(conv, &"x".repeat(8192)).await;
    assert_eq!(alice.expect_message().await.2.len(), 8192);
});

/// Helpers that need a second user to exist.
trait WithFriend {
    /// Creates a conversation with a throwaway second user; returns its id.
    async fn invite_self_and(&mut self, server: &natter_server::ServerHandle, enc: Encoding)
    -> u64;
}

impl WithFriend for TestClient {
    async fn invite_self_and(
        &mut self,
        server: &natter_server::ServerHandle,
        enc: Encoding,
    ) -> u64 {
        let friend = format!("friend_of_{}", self.name);
        let mut other = TestClient::registered(server.local_addr(), enc, &friend).await;
        let conv = self.invite(&[&friend]).await;
        other.expect_invitation().await;
        // Keep the friend online so the conversation lives on.
        std::mem::forget(other);
        conv
    }
}
