//! A newcomer's path, as README.md's quick start tells it: `natter serve`
//! with no storage flags, chat, stop it (SIGTERM, as Ctrl-C would), start
//! it again the same way, and find the conversation and its history. No
//! extra step: the default data dir, `./natter-data`, is created in the
//! working directory on first start and read back on the next.
//!
//! Only the addresses differ from the quick start (port 0 instead of 6666
//! and 8080), so that tests running side by side do not collide.

mod common;

use std::path::Path;

use common::{Client, Server};
use natter_proto::{Command, Encoding, ServerMessage};

/// `natter serve` as the quick start runs it, in `cwd`.
fn serve(cwd: &Path) -> Server {
    Server::start(&["--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"], cwd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natter_serve_keeps_history_across_a_restart_with_no_extra_step() {
    let cwd = tempfile::tempdir().unwrap();
    let server = serve(cwd.path());
    let mut alice = Client::with_history(server.addr, Encoding::Json, "alice").await;
    let mut bob = Client::course(server.addr, Encoding::Classic, "bob").await;
    let conv = alice.invite(&["bob"]).await;
    alice.join(conv).await;
    assert_eq!(bob.expect_invitation().await, conv);
    bob.join(conv).await;
    bob.say(conv, "hello from before the restart").await;
    assert_eq!(alice.expect_message().await.3, Some(1));
    alice.say(conv, "and me").await;
    // Every member gets every message, the sender too.
    assert_eq!(
        bob.expect_message().await.2,
        "hello from before the restart"
    );
    assert_eq!(bob.expect_message().await.2, "and me");
    common::stop(server, vec![alice, bob]).await;
    assert!(
        cwd.path().join("natter-data").join("natter.db").is_file(),
        "no natter-data/natter.db in the working directory"
    );

    let server = serve(cwd.path());
    // alice comes back: told what she has not read, she fetches it.
    let mut alice = Client::connect(server.addr, Encoding::Json, "alice").await;
    alice.send(Command::Caps(vec!["history".into()])).await;
    alice
        .send(Command::Register {
            name: "alice".into(),
            status: "back".into(),
        })
        .await;
    let unread = alice
        .reader
        .expect(|m| match m {
            ServerMessage::Unread(list) => Some(list.clone()),
            _ => None,
        })
        .await;
    assert_eq!(unread, [(conv, 2, 0)]);
    let history: Vec<_> = alice
        .history_after(conv, 0)
        .await
        .into_iter()
        .map(|e| (e.seq, e.sender, e.text))
        .collect();
    assert_eq!(
        history,
        [
            (1, "bob".into(), "hello from before the restart".into()),
            (2, "alice".into(), "and me".into()),
        ]
    );
    // bob, a course client, rejoins as it always did; the conversation
    // goes on where it was.
    let mut bob = Client::course(server.addr, Encoding::Classic, "bob").await;
    bob.join(conv).await;
    let listed = bob.conversations().await;
    assert!(
        listed.contains(&(conv, vec!["alice".into(), "bob".into()])),
        "{listed:?}"
    );
    alice.say(conv, "after the restart").await;
    assert_eq!(alice.expect_message().await.3, Some(3));
    assert_eq!(bob.expect_message().await.2, "after the restart");
    common::stop(server, vec![alice, bob]).await;
}
