//! `natter backup` as an operator runs it: against a data dir that a
//! running store holds locked and keeps writing to, into a new directory;
//! the copy opens as a data dir. Refusals say why and exit non-zero.

use std::process::{Command, Output};
use std::sync::Arc;

use natter_store::{Fact, Store, StoredMessage};

const NATTER: &str = env!("CARGO_BIN_EXE_natter");

fn natter_backup(data_dir: &std::path::Path, out: &std::path::Path) -> Output {
    Command::new(NATTER)
        .arg("backup")
        .arg("--data-dir")
        .arg(data_dir)
        .arg(out)
        .output()
        .expect("natter runs")
}

fn message(seq: u64) -> Fact {
    Fact::MessageAccepted(Arc::new(StoredMessage {
        conv: 1,
        seq,
        ts: 1_000 + seq as i64,
        sender_key: "alice".into(),
        sender: "Alice".into(),
        text: format!("message {seq}"),
        nonce: None,
    }))
}

#[test]
fn backup_copies_a_data_dir_in_use() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("backup-1");
    // The "server": holds the lock and has written history.
    let mut store = Store::open(data.path()).unwrap();
    let mut facts = vec![Fact::ConversationCreated {
        conv: 1,
        ts: 1_000,
        invited: vec![("alice".into(), "Alice".into())],
    }];
    facts.extend((1..=100).map(message));
    store.commit(&facts).unwrap();

    let output = natter_backup(data.path(), &copy);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("written to"), "{stdout}");

    // The server goes on; the copy is what was committed when it was taken.
    store.commit(&[message(101)]).unwrap();
    let restored = Store::open(&copy).expect("the copy opens as a data dir");
    let snapshot = restored.load_snapshot(0).unwrap();
    assert_eq!(snapshot.conversations[0].last_seq, 100);
    let history = restored.reader().unwrap().history(1, 0, 500).unwrap();
    assert_eq!(history.len(), 100);
    assert_eq!(history[99].text, "message 100");
}

#[test]
fn backup_refuses_to_overwrite_and_needs_a_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();

    let output = natter_backup(&data.path().join("nowhere"), out.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no natter database in"), "{stderr}");

    drop(Store::open(data.path()).unwrap());
    assert!(natter_backup(data.path(), out.path()).status.success());
    let output = natter_backup(data.path(), out.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already holds a database"), "{stderr}");
}
