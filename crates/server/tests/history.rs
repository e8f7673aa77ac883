//! A server with a store, over real sockets and real files: restarts keep
//! conversations and ids, history answers, nonces make resends safe, and a
//! second server on the same data dir is refused.

mod common;

use std::path::Path;

use common::*;
use natter_proto::{Command, Encoding, HistoryEntry, ServerMessage};
use natter_server::{Config, ServerHandle};

fn durable_config(dir: &Path) -> Config {
    Config {
        data_dir: Some(dir.to_path_buf()),
        ..test_config()
    }
}

async fn start_durable(dir: &Path) -> ServerHandle {
    start_with(durable_config(dir)).await
}

/// A client that asked for `history` (and `topics`) before registering.
async fn history_client(server: &ServerHandle, encoding: Encoding, name: &str) -> TestClient {
    let mut client = TestClient::connect(server.local_addr(), encoding).await;
    client
        .send(Command::Caps(vec!["history".into(), "topics".into()]))
        .await;
    let caps = client
        .expect(|m| match m {
            ServerMessage::Caps(names) => Some(names.clone()),
            _ => None,
        })
        .await;
    assert_eq!(caps, ["history", "topics"]);
    client.register(name, "online").await;
    client
}

async fn history(
    client: &mut TestClient,
    conv: u64,
    before_seq: u64,
    limit: usize,
) -> Vec<HistoryEntry> {
    client
        .send(Command::History {
            conv,
            before_seq,
            limit,
        })
        .await;
    client
        .expect(|m| match m {
            ServerMessage::History { conv: c, entries } if *c == conv => Some(entries.clone()),
            _ => None,
        })
        .await
}

fn texts(entries: &[HistoryEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.text.as_str()).collect()
}

async fn expect_seq(client: &mut TestClient, text: &str) -> u64 {
    client
        .expect(|m| match m {
            ServerMessage::Message {
                text: t,
                meta: Some(meta),
                ..
            } if t == text => Some(meta.seq),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn a_restart_keeps_conversations_ids_and_history_in_every_encoding() {
    let dir = tempfile::tempdir().unwrap();
    for (round, encoding) in Encoding::ALL.into_iter().enumerate() {
        let server = start_durable(dir.path()).await;
        let mut alice = history_client(&server, encoding, "alice").await;
        let mut bob = TestClient::registered(server.local_addr(), encoding, "bob").await;
        if round == 0 {
            let conv = conversation(&mut [&mut alice, &mut bob]).await;
            assert_eq!(conv, 1);
        } else {
            // Back in conversation 1 with no JOIN for alice (history
            // client); bob, a course client, joins as it always did.
            bob.join(1).await;
        }
        let text = format!("round {round}");
        bob.say(1, &text).await;
        assert_eq!(expect_seq(&mut alice, &text).await, round as u64 + 1);
        let all = history(&mut alice, 1, 0, 100).await;
        let expected: Vec<String> = (0..=round).map(|r| format!("round {r}")).collect();
        assert_eq!(texts(&all), expected);
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=round as u64 + 1).collect::<Vec<_>>()
        );
        // A new conversation never reuses an id from before the restart.
        let fresh = alice.invite(&["bob"]).await;
        assert_eq!(fresh, round as u64 + 2);
        server.shutdown().await;
    }
}

/// With retention on, the store's writer runs a pass at start and then
/// waits for batches with a timer until the next: messages sent after the
/// pass are stored and delivered (the timer once panicked the writer, and
/// every message got "not stored").
#[tokio::test]
async fn a_server_with_retention_stores_and_delivers_after_its_first_pass() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(Config {
        history_days: 30,
        ..durable_config(dir.path())
    })
    .await;
    let mut alice = history_client(&server, Encoding::Json, "alice").await;
    let mut bob = history_client(&server, Encoding::Framed, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    for i in 1..=70 {
        alice.say(conv, &format!("kept {i}")).await;
        assert_eq!(expect_seq(&mut bob, &format!("kept {i}")).await, i);
    }
    assert_eq!(history(&mut bob, conv, 0, 100).await.len(), 70);
    server.shutdown().await;
}

#[tokio::test]
async fn history_pages_backwards_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path()).await;
    let mut alice = history_client(&server, Encoding::Json, "alice").await;
    let mut bob = history_client(&server, Encoding::Framed, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    for i in 1..=25 {
        alice.say(conv, &format!("m{i:02}")).await;
    }
    assert_eq!(expect_seq(&mut bob, "m25").await, 25);
    let newest = history(&mut bob, conv, 0, 10).await;
    assert_eq!(newest.first().unwrap().seq, 16);
    assert_eq!(newest.last().unwrap().seq, 25);
    let older = history(&mut bob, conv, 16, 10).await;
    assert_eq!(
        texts(&older),
        (6..=15).map(|i| format!("m{i:02}")).collect::<Vec<_>>()
    );
    let oldest = history(&mut bob, conv, 6, 10).await;
    assert_eq!(oldest.len(), 5);
    assert!(oldest.iter().all(|e| e.sender == "alice" && e.ts > 0));
    // Not a member: refused.
    let mut carol = history_client(&server, Encoding::Json, "carol").await;
    carol
        .send(Command::History {
            conv,
            before_seq: 0,
            limit: 5,
        })
        .await;
    assert_eq!(
        carol.expect_error().await,
        format!("you are not a member of conversation {conv}")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unread_after_a_restart_says_what_was_missed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path()).await;
    let mut alice = history_client(&server, Encoding::Framed, "alice").await;
    let mut bob = history_client(&server, Encoding::Framed, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    for text in ["one", "two", "three"] {
        bob.say(conv, text).await;
    }
    expect_seq(&mut alice, "three").await;
    alice.send(Command::Read { conv, seq: 2 }).await;
    alice.sync().await;
    server.shutdown().await;

    let server = start_durable(dir.path()).await;
    let mut alice = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    alice.send(Command::Caps(vec!["history".into()])).await;
    alice
        .send(Command::Register {
            name: "alice".into(),
            status: "back".into(),
        })
        .await;
    let unread = alice
        .expect(|m| match m {
            ServerMessage::Unread(list) => Some(list.clone()),
            _ => None,
        })
        .await;
    assert_eq!(unread, [(conv, 3, 2)]);
    let missed = history(&mut alice, conv, 0, 100).await;
    assert_eq!(texts(&missed[2..]), ["three"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_resent_nonce_is_stored_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let once = |text: &str| Command::SendMessage {
        conv: 1,
        text: text.into(),
        nonce: Some("n-42".into()),
    };
    let server = start_durable(dir.path()).await;
    let mut alice = history_client(&server, Encoding::Json, "alice").await;
    let mut bob = history_client(&server, Encoding::Json, "bob").await;
    conversation(&mut [&mut alice, &mut bob]).await;
    alice.send(once("exactly once")).await;
    assert_eq!(expect_seq(&mut bob, "exactly once").await, 1);
    alice.send(once("exactly once")).await;
    let echo = alice
        .expect(|m| match m {
            ServerMessage::Message {
                meta: Some(meta), ..
            } if meta.nonce.is_some() => Some(meta.clone()),
            _ => None,
        })
        .await;
    assert_eq!((echo.seq, echo.nonce.as_deref()), (1, Some("n-42")));
    server.shutdown().await;

    let server = start_durable(dir.path()).await;
    let mut alice = history_client(&server, Encoding::Json, "alice").await;
    alice.send(once("exactly once")).await;
    assert_eq!(expect_seq(&mut alice, "exactly once").await, 1);
    assert_eq!(
        texts(&history(&mut alice, 1, 0, 10).await),
        ["exactly once"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn topics_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path()).await;
    let mut alice = history_client(&server, Encoding::Classic, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), Encoding::Classic, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    alice
        .send(Command::Topic {
            conv,
            text: "friday lunch".into(),
        })
        .await;
    alice
        .expect(|m| matches!(m, ServerMessage::Topic { .. }).then_some(()))
        .await;
    server.shutdown().await;

    let server = start_durable(dir.path()).await;
    let mut alice = TestClient::connect(server.local_addr(), Encoding::Classic).await;
    alice.send(Command::Caps(vec!["topics".into()])).await;
    // The topic comes with REGISTER, before the first ONLINE_USERS.
    alice
        .send(Command::Register {
            name: "alice".into(),
            status: "back".into(),
        })
        .await;
    let topic = alice
        .expect(|m| match m {
            ServerMessage::Topic {
                conv: c,
                text,
                setter,
            } if *c == conv => Some((text.clone(), setter.clone())),
            _ => None,
        })
        .await;
    assert_eq!(topic, ("friday lunch".to_string(), "alice".to_string()));
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_durable(dir.path()).await;
    let error = match natter_server::spawn(durable_config(dir.path())).await {
        Ok(_) => panic!("a second server started on the same data dir"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("in use") && error.contains("LOCK"),
        "{error}"
    );
    let mut alice = history_client(&first, Encoding::Json, "alice").await;
    let mut bob = history_client(&first, Encoding::Json, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    alice.say(conv, "still here").await;
    assert_eq!(expect_seq(&mut bob, "still here").await, 1);
    first.shutdown().await;
}

#[tokio::test]
async fn an_ephemeral_server_offers_no_history_and_says_so() {
    let server = start().await;
    let mut alice = TestClient::connect(server.local_addr(), Encoding::Json).await;
    alice
        .send(Command::Caps(vec!["history".into(), "members".into()]))
        .await;
    let caps = alice
        .expect(|m| match m {
            ServerMessage::Caps(names) => Some(names.clone()),
            _ => None,
        })
        .await;
    assert_eq!(caps, ["members"]);
    alice.register("alice", "online").await;
    alice
        .send(Command::History {
            conv: 1,
            before_seq: 0,
            limit: 5,
        })
        .await;
    assert_eq!(
        alice.expect_error().await,
        "this server keeps no history (it runs with --ephemeral)"
    );
    server.shutdown().await;
}

/// A server message from one JSON line, with every timestamp set to 0 (the
/// example's times are whatever the server's clock said).
fn json_message(line: &str) -> ServerMessage {
    let mut decoder = natter_proto::Decoder::new(
        Encoding::Json,
        natter_proto::wire::Direction::ToClient,
        natter_proto::Limits::client_default(),
    );
    let mut bytes = bytes::BytesMut::from(format!("{line}\n").as_bytes());
    let raw = decoder.decode(&mut bytes).unwrap().expect("one whole line");
    without_times(ServerMessage::from_raw(raw).unwrap())
}

fn without_times(message: ServerMessage) -> ServerMessage {
    match message {
        ServerMessage::Message {
            conv,
            sender,
            text,
            meta,
        } => ServerMessage::Message {
            conv,
            sender,
            text,
            meta: meta.map(|m| natter_proto::MessageMeta { ts: 0, ..m }),
        },
        ServerMessage::History { conv, entries } => ServerMessage::History {
            conv,
            entries: entries
                .into_iter()
                .map(|e| HistoryEntry { ts: 0, ..e })
                .collect(),
        },
        other => other,
    }
}

#[tokio::test]
async fn the_protocol_doc_history_example_is_what_the_server_says() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md"),
    )
    .unwrap();
    let begin = doc.find("<!-- BEGIN HISTORY EXAMPLE -->").unwrap();
    let end = doc.find("<!-- END HISTORY EXAMPLE -->").unwrap();
    let lines: Vec<&str> = doc[begin..end].lines().skip(1).collect();
    assert!(lines.len() >= 8, "the example is there");

    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path()).await;
    let mut amy = history_client(&server, Encoding::Json, "amy").await;
    let mut ben = history_client(&server, Encoding::Json, "ben").await;
    assert_eq!(conversation(&mut [&mut amy, &mut ben]).await, 1);
    for line in lines {
        let line = line.trim();
        let (who, rest) = line.split_once(' ').expect("a speaker");
        let client = match who {
            "amy" => &mut amy,
            "ben" => &mut ben,
            other => panic!("unknown speaker {other}"),
        };
        if let Some(sent) = rest.strip_prefix("→ ") {
            client.send_raw(format!("{sent}\n").as_bytes()).await;
        } else if let Some(expected) = rest.strip_prefix("← ") {
            let expected = json_message(expected);
            let word = expected.word();
            let got = client
                .expect(|m| (m.word() == word).then(|| without_times(m.clone())))
                .await;
            assert_eq!(got, expected, "{line}");
        } else {
            panic!("not an example line: {line}");
        }
    }
    server.shutdown().await;

    // What the text after the example says of a restart.
    let server = start_durable(dir.path()).await;
    let mut ben = TestClient::connect(server.local_addr(), Encoding::Json).await;
    ben.send(Command::Caps(vec!["history".into()])).await;
    ben.send(Command::Register {
        name: "ben".into(),
        status: "back".into(),
    })
    .await;
    let unread = ben
        .expect(|m| match m {
            ServerMessage::Unread(list) => Some(list.clone()),
            _ => None,
        })
        .await;
    assert_eq!(unread, [(1, 2, 2)]);
    server.shutdown().await;
}
