//! A full disk under a running server: its data dir on a 2 MiB tmpfs that
//! the test fills up. Senders must be told their messages were not
//! stored, nobody else may see those messages, what was stored before
//! stays readable, the server keeps serving, and once space returns chat
//! is stored and delivered again, with exactly the delivered messages in
//! history after a restart.
//!
//! Needs root (or CAP_SYS_ADMIN) to mount the tmpfs. Without it the test
//! is skipped, saying so, except under CI (`CI` set, as `.ci/run` does),
//! where it fails: a skipped fault test proves nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use natter_proto::command::MAX_HISTORY;
use natter_proto::{Command, Encoding, HistoryEntry, ServerMessage};
use natter_server::{Config, ServerHandle};

/// Messages sent while the disk is full. SQLite's WAL may have room left
/// over from before; this many 6 KiB messages (about 1 MiB) cannot fit.
const SENT_WHILE_FULL: usize = 150;
/// Big enough that each needs new pages in the WAL.
const BIG: usize = 6 * 1024;

#[path = "../../store/tests/support/tmpfs.rs"]
mod tmpfs;
use tmpfs::fill;

async fn start_on(dir: &Path) -> ServerHandle {
    start_with(Config {
        data_dir: Some(dir.to_path_buf()),
        ..test_config()
    })
    .await
}

async fn history_client(server: &ServerHandle, encoding: Encoding, name: &str) -> TestClient {
    let mut client = TestClient::connect(server.local_addr(), encoding).await;
    client.send(Command::Caps(vec!["history".into()])).await;
    client
        .expect(|m| matches!(m, ServerMessage::Caps(_)).then_some(()))
        .await;
    client.register(name, "online").await;
    client
}

/// What became of one message, as its sender saw it.
#[derive(Debug)]
enum Outcome {
    /// Stored and delivered, with this seq.
    Delivered(u64),
    /// The sender got this ERROR.
    Refused(String),
}

/// `sender` (a history client) says `text` and waits for its own copy or
/// the ERROR that says it was not stored.
async fn say_and_see(sender: &mut TestClient, conv: u64, text: &str) -> Outcome {
    sender.say(conv, text).await;
    sender
        .expect(|m| match m {
            ServerMessage::Message {
                text: t,
                meta: Some(meta),
                ..
            } if t == text => Some(Outcome::Delivered(meta.seq)),
            ServerMessage::Error(error) => Some(Outcome::Refused(error.clone())),
            _ => None,
        })
        .await
}

/// Every MESSAGE text `client` receives before the answer to a
/// LIST_CONVERSATIONS sent now. Deliveries leave in order, so this is
/// everything that was going to reach it from what the hub did before.
async fn messages_until_sync(client: &mut TestClient) -> Vec<String> {
    client.send(Command::ListConversations).await;
    let mut texts = Vec::new();
    loop {
        match client.recv_msg().await {
            ServerMessage::Message { text, .. } => texts.push(short(&text)),
            ServerMessage::Conversations(_) => return texts,
            ServerMessage::Error(error) => panic!("{}: ERROR {error:?}", client.name),
            _ => {}
        }
    }
}

/// The whole history of `conv`, oldest first, paged back with before_seq.
async fn whole_history(client: &mut TestClient, conv: u64) -> Vec<HistoryEntry> {
    let mut pages = Vec::new();
    let mut before = 0;
    loop {
        client
            .send(Command::History {
                conv,
                before_seq: before,
                limit: MAX_HISTORY,
            })
            .await;
        let page = client
            .expect(|m| match m {
                ServerMessage::History { conv: c, entries } if *c == conv => Some(entries.clone()),
                ServerMessage::Error(error) => panic!("HISTORY refused: {error}"),
                _ => None,
            })
            .await;
        let Some(oldest) = page.first().map(|e| e.seq) else {
            break;
        };
        let full = page.len() == MAX_HISTORY;
        pages.push(page);
        if !full {
            break;
        }
        before = oldest;
    }
    pages.into_iter().rev().flatten().collect()
}

/// `(seq, short text)` of history entries, to compare with [`shorts`] of
/// what was delivered.
fn seqs_and_texts(entries: &[HistoryEntry]) -> Vec<(u64, String)> {
    entries.iter().map(|e| (e.seq, short(&e.text))).collect()
}

/// A text as the assertions show it: a big one by its label and size, so
/// that a failure prints lines, not megabytes.
fn short(text: &str) -> String {
    match text.find(" xxx") {
        Some(end) => format!("{} ({} bytes)", &text[..end], text.len()),
        None => text.to_string(),
    }
}

fn shorts(messages: &[(u64, String)]) -> Vec<(u64, String)> {
    messages.iter().map(|(seq, t)| (*seq, short(t))).collect()
}

fn short_texts(messages: &[(u64, String)]) -> Vec<String> {
    messages.iter().map(|(_, t)| short(t)).collect()
}

fn big(label: &str, i: usize) -> String {
    let mut text = format!("{label} {i} ");
    text.extend(std::iter::repeat_n('x', BIG));
    text
}

#[tokio::test]
async fn a_full_disk_refuses_messages_and_the_server_recovers_when_space_returns() {
    let Some(mount) = tmpfs::mount_or_skip("2m") else {
        return;
    };
    let data = mount.path().join("natter-data");
    let server = start_on(&data).await;
    let mut alice = history_client(&server, Encoding::Framed, "alice").await;
    let mut bob = history_client(&server, Encoding::Json, "bob").await;
    let mut carol = TestClient::registered(server.local_addr(), Encoding::Classic, "carol").await;
    let conv = conversation(&mut [&mut alice, &mut bob, &mut carol]).await;

    // Before: everything is stored and delivered.
    let mut delivered: Vec<(u64, String)> = Vec::new();
    for i in 0..20 {
        let text = format!("before {i}");
        match say_and_see(&mut alice, conv, &text).await {
            Outcome::Delivered(seq) => delivered.push((seq, text)),
            Outcome::Refused(error) => panic!("refused with room on the disk: {error}"),
        }
    }
    let filler = mount.path().join("filler");
    fill(&filler);

    // Full: each message is either refused (to its sender alone) or, while
    // the WAL still has room, stored and delivered.
    let mut refused = 0;
    for i in 0..SENT_WHILE_FULL {
        let text = big("while full", i);
        match say_and_see(&mut alice, conv, &text).await {
            Outcome::Delivered(seq) => delivered.push((seq, text)),
            Outcome::Refused(error) => {
                let expected = format!("message not stored in conversation {conv}");
                assert!(error.starts_with(&expected), "{error}");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0,
        "{SENT_WHILE_FULL} messages of {BIG} bytes on a full disk, none refused"
    );
    let texts = short_texts(&delivered);
    assert_eq!(messages_until_sync(&mut bob).await, texts);
    assert_eq!(messages_until_sync(&mut carol).await, texts);

    // Still serving: history of what was stored, presence. A new
    // conversation is made, but nobody learns its id before it is stored
    // (after a crash, an id nobody stored could name another one).
    let history = whole_history(&mut bob, conv).await;
    assert_eq!(seqs_and_texts(&history), shorts(&delivered));
    let mut dave = history_client(&server, Encoding::Json, "dave").await;
    carol
        .expect_online_users_where(|users| users.iter().any(|(n, _)| n == "dave"))
        .await;
    dave.send(Command::Invite(vec!["carol".into()])).await;
    let shown = tokio::time::timeout(Duration::from_millis(2500), dave.expect_invitation()).await;
    assert!(shown.is_err(), "an invitation to a conversation not stored");
    // Nor does a listing name it: carol's answer waits with her invitation.
    let listed = tokio::time::timeout(Duration::from_millis(1000), carol.conversations()).await;
    assert!(
        listed.is_err(),
        "a listing while the conversation is not stored: {listed:?}"
    );

    // Space returns: the store's retry stores the conversation, and the
    // invitations go out; messages are stored and delivered again.
    std::fs::remove_file(&filler).unwrap();
    let made_while_full = dave.expect_invitation().await;
    assert_eq!(carol.expect_invitation().await, made_while_full);
    let listed = carol
        .expect(|m| match m {
            ServerMessage::Conversations(listed) => Some(listed.clone()),
            _ => None,
        })
        .await;
    assert!(
        listed.iter().any(|(id, _)| *id == made_while_full),
        "{listed:?}"
    );
    dave.join(made_while_full).await;
    let mut after = Vec::new();
    for i in 0..10 {
        let text = big("after", i);
        match say_and_see(&mut alice, conv, &text).await {
            Outcome::Delivered(seq) => after.push((seq, text)),
            Outcome::Refused(error) => panic!("refused after space returned: {error}"),
        }
    }
    let texts = short_texts(&after);
    assert_eq!(messages_until_sync(&mut bob).await, texts);
    assert_eq!(messages_until_sync(&mut carol).await, texts);
    delivered.extend(after);
    println!(
        "{} of {SENT_WHILE_FULL} refused while full; {} stored in all",
        refused,
        delivered.len()
    );
    server.shutdown().await;

    // A restart: history holds exactly what was delivered, seqs and all,
    // and the conversation made while the disk was full is there too.
    let server = start_on(&data).await;
    let mut bob = history_client(&server, Encoding::Framed, "bob").await;
    let history = whole_history(&mut bob, conv).await;
    assert_eq!(seqs_and_texts(&history), shorts(&delivered));
    assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut dave = history_client(&server, Encoding::Classic, "dave").await;
    let listed = dave.conversations().await;
    assert!(
        listed
            .iter()
            .any(|(id, members)| *id == made_while_full && members.contains(&"dave".to_string())),
        "conversation {made_while_full} or dave's membership was lost: {listed:?}"
    );
    server.shutdown().await;
}

/// A resend of a nonce whose message was stored before the disk filled
/// gets the original back, even when it shares a commit with messages
/// the full disk refuses: the refusal is about those, not about it.
#[tokio::test]
async fn a_resend_while_the_disk_is_full_still_gets_its_original_back() {
    let Some(mount) = tmpfs::mount_or_skip("2m") else {
        return;
    };
    let server = start_on(&mount.path().join("natter-data")).await;
    let mut alice = history_client(&server, Encoding::Json, "alice").await;
    let mut bob = history_client(&server, Encoding::Framed, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    let kept = |text: &str, nonce: Option<&str>| Command::SendMessage {
        conv,
        text: text.into(),
        nonce: nonce.map(String::from),
    };
    alice.send(kept("kept", Some("n-1"))).await;
    let (seq, _) = echo(&mut alice, "kept").await;
    assert_eq!(bob.expect_message().await.2, "kept");
    fill(&mount.path().join("filler"));
    // The store keeps zeroed room ahead of its log, which takes messages
    // until it is used up: up to the first refusal.
    let mut refused = false;
    for i in 0..SENT_WHILE_FULL {
        if let Outcome::Refused(_) = say_and_see(&mut alice, conv, &big("filling", i)).await {
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "{SENT_WHILE_FULL} big messages on a full disk, none refused"
    );
    messages_until_sync(&mut bob).await;

    // One write, so that both land in one pass of the hub and one commit.
    let mut bytes = bytes::BytesMut::new();
    for command in [kept(&big("lost", 0), None), kept("kept", Some("n-1"))] {
        natter_proto::codec::encode_command(&command, Encoding::Json, &mut bytes);
    }
    alice.send_raw(&bytes).await;
    let error = alice.expect_error().await;
    assert!(error.starts_with("message not stored"), "{error}");
    assert_eq!(echo(&mut alice, "kept").await, (seq, Some("n-1".into())));
    bob.expect_silence().await;
    server.shutdown().await;
}

/// The sender's own copy of `text`: its seq and nonce.
async fn echo(client: &mut TestClient, text: &str) -> (u64, Option<String>) {
    client
        .expect(|m| match m {
            ServerMessage::Message {
                text: t,
                meta: Some(meta),
                ..
            } if t == text => Some((meta.seq, meta.nonce.clone())),
            _ => None,
        })
        .await
}
