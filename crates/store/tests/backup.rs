//! `backup`: a copy taken while a writer commits without pause opens with
//! `Store::open` and holds a prefix of the commits: whole transactions,
//! never a part of one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use natter_store::{Fact, Store, StoreError, StoredMessage, backup};

fn message(conv: u64, seq: u64) -> Fact {
    Fact::MessageAccepted(Arc::new(StoredMessage {
        conv,
        seq,
        ts: seq as i64,
        sender_key: "alice".into(),
        sender: "Alice".into(),
        text: format!("{conv}/{seq} {}", "x".repeat(48)),
        nonce: Some(format!("n{seq}")),
    }))
}

fn created(conv: u64) -> Fact {
    Fact::ConversationCreated {
        conv,
        ts: 0,
        invited: vec![("alice".into(), "Alice".into())],
    }
}

/// Each transaction adds 50 messages to conversation 1 *and* 50 to
/// conversation 2, so in any consistent copy both have the same count, a
/// multiple of 50, equal to their `last_seq`, with no gap.
#[test]
fn a_backup_during_writes_is_a_consistent_prefix() {
    let data = tempfile::tempdir().unwrap();
    let mut store = Store::open(data.path()).unwrap();
    store.commit(&[created(1), created(2)]).unwrap();
    // Enough history that copying it takes a while.
    let mut seq = 0;
    while seq < 20_000 {
        commit_round(&mut store, &mut seq);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(seq));
    let writer = {
        let (stop, committed) = (stop.clone(), committed.clone());
        std::thread::spawn(move || {
            let mut seq = seq;
            while !stop.load(Ordering::Relaxed) {
                commit_round(&mut store, &mut seq);
                committed.store(seq, Ordering::Relaxed);
            }
            store
        })
    };

    let out = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for n in 0..3 {
        let before = committed.load(Ordering::Relaxed);
        let copy = out.path().join(format!("copy{n}"));
        backup(data.path(), &copy).expect("backup while writing");
        let after = committed.load(Ordering::Relaxed);
        copies.push((copy, before, after));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let store = writer.join().unwrap();
    assert!(
        committed.load(Ordering::Relaxed) > copies[0].1,
        "the writer made progress during the backups"
    );

    for (copy, before, after) in copies {
        let restored = Store::open(&copy).expect("a backup opens as a data dir");
        let snapshot = restored.load_snapshot(i64::MAX / 2).unwrap();
        let [one, two] = &snapshot.conversations[..] else {
            panic!("two conversations, got {:?}", snapshot.conversations);
        };
        assert_eq!(one.last_seq, two.last_seq, "whole transactions only");
        let last = one.last_seq;
        assert_eq!(last % 50, 0);
        assert!(
            before <= last && last <= after,
            "{before} <= {last} <= {after}"
        );
        let reader = restored.reader().unwrap();
        for conv in [1, 2] {
            let mut count = 0;
            let mut before_seq = 0;
            loop {
                let page = reader.history(conv, before_seq, 500).unwrap();
                let Some(first) = page.first() else { break };
                count += page.len() as u64;
                before_seq = first.seq;
            }
            assert_eq!(
                count, last,
                "conversation {conv}: no gap, nothing past last_seq"
            );
        }
    }
    drop(store);
}

fn commit_round(store: &mut Store, seq: &mut u64) {
    let mut facts = Vec::with_capacity(100);
    for s in *seq + 1..=*seq + 50 {
        facts.push(message(1, s));
        facts.push(message(2, s));
    }
    store.commit(&facts).unwrap();
    *seq += 50;
}

/// A stopped server's data dir backs up too, and the copy carries
/// everything.
#[test]
fn a_backup_of_a_stopped_store_is_complete() {
    let data = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(data.path()).unwrap();
        store
            .commit(&[created(1), created(2), message(1, 1), message(1, 2)])
            .unwrap();
        store
            .commit(&[Fact::ConversationEnded { conv: 2, ts: 3 }])
            .unwrap();
    }
    let original = Store::open(data.path()).unwrap().load_snapshot(0).unwrap();

    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("nested/backup");
    let started = Instant::now();
    backup(data.path(), &copy).unwrap();
    println!("backup in {:?}", started.elapsed());
    let restored = Store::open(&copy).unwrap();
    assert_eq!(restored.load_snapshot(0).unwrap(), original);
    assert_eq!(
        restored.reader().unwrap().history(1, 0, 10).unwrap().len(),
        2
    );
    let leftovers: Vec<_> = std::fs::read_dir(&copy)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_backup_never_overwrites_and_needs_a_database() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = backup(data.path(), out.path()).unwrap_err();
    assert!(matches!(err, StoreError::NoDatabase(_)), "{err:?}");

    drop(Store::open(data.path()).unwrap());
    backup(data.path(), out.path()).unwrap();
    let err = backup(data.path(), out.path()).unwrap_err();
    assert!(matches!(err, StoreError::BackupExists(_)), "{err:?}");
    assert!(
        err.to_string().contains("already holds a database"),
        "{err}"
    );
    Store::open(out.path()).expect("the first copy is untouched");
}

/// Backing up a stopped server's dir leaves that dir as it was: no WAL or
/// shared-memory files that the next `Store::open` would have to sort out.
#[test]
fn a_backup_leaves_a_stopped_data_dir_as_it_was() {
    let data = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(data.path()).unwrap();
        store.commit(&[created(1), message(1, 1)]).unwrap();
    }
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let out = tempfile::tempdir().unwrap();
    backup(data.path(), out.path()).unwrap();
    assert_eq!(listing(), before);
}
