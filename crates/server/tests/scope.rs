//! `presence-scope` over real sockets, in every encoding: a scoped client
//! sees only itself, its contacts and whom it watches, and can search with
//! LIST_USERS.

mod common;

use common::*;
use natter_proto::{Command, Encoding, ServerMessage};

const ENCODINGS: [Encoding; 3] = [Encoding::Classic, Encoding::Framed, Encoding::Json];

/// A client with `presence-scope`, registered; returns it with its first
/// ONLINE_USERS.
async fn scoped(
    addr: std::net::SocketAddr,
    encoding: Encoding,
    name: &str,
) -> (TestClient, Vec<(String, String)>) {
    let mut client = TestClient::connect(addr, encoding).await;
    client
        .send(Command::Caps(vec!["presence-scope".into()]))
        .await;
    assert_eq!(
        client.recv_msg().await,
        ServerMessage::Caps(vec!["presence-scope".into()])
    );
    client
        .send(Command::Register {
            name: name.into(),
            status: "on".into(),
        })
        .await;
    client.name = name.to_string();
    let first = client.expect_online_users().await;
    (client, first)
}

async fn expect_presence(client: &mut TestClient) -> Vec<(String, Option<String>)> {
    client
        .expect(|m| match m {
            ServerMessage::Presence(p) => Some(p.clone()),
            ServerMessage::OnlineUsers(u) => panic!("a second full snapshot: {u:?}"),
            _ => None,
        })
        .await
}

fn change(name: &str, status: Option<&str>) -> Vec<(String, Option<String>)> {
    vec![(name.to_string(), status.map(str::to_string))]
}

#[tokio::test]
async fn a_scoped_client_sees_only_itself_then_whom_it_watches() {
    let server = start().await;
    let addr = server.local_addr();
    for encoding in ENCODINGS {
        let other = format!("other{}", encoding as u8);
        let me = format!("me{}", encoding as u8);
        let mut someone = TestClient::registered(addr, Encoding::Framed, &other).await;
        let (mut client, first) = scoped(addr, encoding, &me).await;
        assert_eq!(first, vec![(me.clone(), "on".to_string())], "{encoding:?}");
        client
            .send(Command::Watch(vec![other.to_uppercase()]))
            .await;
        assert_eq!(
            expect_presence(&mut client).await,
            change(&other, Some("online"))
        );
        someone.send(Command::Status("away".into())).await;
        assert_eq!(
            expect_presence(&mut client).await,
            change(&other, Some("away"))
        );
        client.send(Command::Unwatch(vec![other.clone()])).await;
        assert_eq!(expect_presence(&mut client).await, change(&other, None));
        someone.send(Command::Goodbye).await;
        client.send(Command::Goodbye).await;
    }
}

#[tokio::test]
async fn an_invitation_brings_inviter_and_invitee_into_each_others_scope() {
    let server = start().await;
    let addr = server.local_addr();
    for encoding in ENCODINGS {
        let (alice_name, bob_name) = (
            format!("alice{}", encoding as u8),
            format!("bob{}", encoding as u8),
        );
        let (mut alice, _) = scoped(addr, encoding, &alice_name).await;
        let (mut bob, _) = scoped(addr, encoding, &bob_name).await;
        alice.send(Command::Invite(vec![bob_name.clone()])).await;
        assert_eq!(
            expect_presence(&mut alice).await,
            change(&bob_name, Some("on"))
        );
        assert_eq!(
            expect_presence(&mut bob).await,
            change(&alice_name, Some("on"))
        );
        bob.send(Command::Goodbye).await;
        assert_eq!(expect_presence(&mut alice).await, change(&bob_name, None));
        alice.send(Command::Goodbye).await;
    }
}

#[tokio::test]
async fn list_users_answers_users_by_prefix_in_every_encoding() {
    let server = start().await;
    let addr = server.local_addr();
    let _zoe = TestClient::registered(addr, Encoding::Framed, "Zoe").await;
    let _zed = TestClient::registered(addr, Encoding::Framed, "zed").await;
    let _amy = TestClient::registered(addr, Encoding::Framed, "amy").await;
    for encoding in ENCODINGS {
        let (mut client, _) = scoped(addr, encoding, &format!("asker{}", encoding as u8)).await;
        client
            .send(Command::ListUsers {
                prefix: "Z".into(),
                limit: 10,
            })
            .await;
        assert_eq!(
            client.recv_msg().await,
            ServerMessage::Users(vec![
                ("zed".into(), "online".into()),
                ("Zoe".into(), "online".into())
            ]),
            "{encoding:?}"
        );
        client
            .send(Command::ListUsers {
                prefix: "z".into(),
                limit: 1,
            })
            .await;
        assert_eq!(
            client.recv_msg().await,
            ServerMessage::Users(vec![("zed".into(), "online".into())])
        );
    }
}

#[tokio::test]
async fn watch_without_the_capability_is_an_error_and_classic_presence_is_unchanged() {
    let server = start().await;
    let addr = server.local_addr();
    let mut classic = TestClient::registered(addr, Encoding::Classic, "plain").await;
    classic.send(Command::Watch(vec!["x".into()])).await;
    assert!(classic.expect_error().await.contains("presence-scope"));
    let _scoped = scoped(addr, Encoding::Json, "scoped").await;
    // The classic client still gets everyone, the scoped one included.
    classic
        .expect_online_users_where(|u| u.iter().any(|(n, _)| n == "scoped"))
        .await;
}

/// Replays the example in docs/PROTOCOL.md against a fresh server: every
/// line sent is sent by that client, every line received must be the next
/// one that client reads, exactly.
#[tokio::test]
async fn the_protocol_doc_scope_example_is_what_the_server_says() {
    use std::collections::HashMap;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md"),
    )
    .unwrap();
    let begin = doc.find("<!-- BEGIN SCOPE EXAMPLE -->").unwrap();
    let end = doc.find("<!-- END SCOPE EXAMPLE -->").unwrap();
    let lines: Vec<&str> = doc[begin..end].lines().skip(1).collect();
    assert!(lines.len() >= 15, "the example is there");
    let server = start().await;
    let mut clients = HashMap::new();
    for line in lines {
        let (who, rest) = line.trim().split_once(' ').unwrap();
        if !clients.contains_key(who) {
            let stream = tokio::net::TcpStream::connect(server.local_addr())
                .await
                .unwrap();
            let (read, write) = stream.into_split();
            clients.insert(who.to_string(), (BufReader::new(read).lines(), write));
        }
        let (replies, write) = clients.get_mut(who).unwrap();
        if let Some(sent) = rest.strip_prefix("→ ") {
            write
                .write_all(format!("{sent}\n").as_bytes())
                .await
                .unwrap();
        } else if let Some(expected) = rest.strip_prefix("← ") {
            let got = tokio::time::timeout(PATIENCE, replies.next_line())
                .await
                .unwrap_or_else(|_| panic!("{who} expected {expected}"))
                .unwrap()
                .expect("the connection stays open");
            let got: serde_json::Value = serde_json::from_str(&got).unwrap();
            let expected: serde_json::Value = serde_json::from_str(expected).unwrap();
            assert_eq!(got, expected, "{who}");
        }
    }
    server.shutdown().await;
}
