//! The store threads: group commit, history on the reader thread, failures
//! that lose only messages (and say which), retention.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use natter_store::worker::{self, Batch, CommitObserver, HistoryRequest, Reply, WorkerOptions};
use natter_store::{Fact, Store, StoredMessage};
use rusqlite::Connection;
use tokio::sync::mpsc;

#[path = "support/tmpfs.rs"]
mod tmpfs;
use tmpfs::fill;

const WAIT: Duration = Duration::from_secs(10);

fn message(conv: u64, seq: u64, ts: i64) -> Arc<StoredMessage> {
    Arc::new(StoredMessage {
        conv,
        seq,
        ts,
        sender_key: "alice".into(),
        sender: "Alice".into(),
        text: format!("message {seq}"),
        nonce: None,
    })
}

fn created(conv: u64) -> Fact {
    Fact::ConversationCreated {
        conv,
        ts: 1,
        invited: vec![
            ("alice".into(), "Alice".into()),
            ("bob".into(), "Bob".into()),
        ],
    }
}

fn joined(conv: u64, key: &str) -> Fact {
    Fact::Joined {
        conv,
        key: key.into(),
        display: key.into(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The next reply, within [`WAIT`].
fn next(replies: &mut mpsc::Receiver<Reply>) -> Reply {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match replies.try_recv() {
            Ok(reply) => return reply,
            Err(mpsc::error::TryRecvError::Empty) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("no reply from the store threads: {e:?}"),
        }
    }
}

/// Another connection to the store in `dir` whose trigger makes every
/// insert into `table` fail, as an I/O error would, until it is dropped
/// (`DROP TRIGGER no_<table>`).
fn sabotage(dir: &std::path::Path, table: &str) -> Connection {
    let saboteur = Connection::open(dir.join("natter.db")).unwrap();
    saboteur
        .execute_batch(&format!(
            "CREATE TRIGGER no_{table} BEFORE INSERT ON {table}
             BEGIN SELECT RAISE(ABORT, 'simulated I/O failure'); END;"
        ))
        .unwrap();
    saboteur
}

/// The seqs of conversation 1's stored messages, oldest first.
fn stored_seqs(store: &Store) -> Vec<u64> {
    let history = store.reader().unwrap().history(1, 0, 500).unwrap();
    history.iter().map(|m| m.seq).collect()
}

fn send(worker: &worker::Worker, ticket: u64, facts: Vec<Fact>) {
    worker
        .batches
        .blocking_send(Batch { ticket, facts })
        .expect("writer is running");
}

/// While another connection holds the write lock, batches pile up behind
/// the first; once it is released they are committed together: at most
/// two commits for a hundred batches, the last reporting the last ticket.
#[test]
fn queued_batches_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blocker = Connection::open(dir.path().join("natter.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let (tx, mut replies) = mpsc::channel(1024);
    let worker = worker::spawn(store, WorkerOptions::default(), tx).unwrap();
    send(&worker, 1, vec![created(1)]);
    for ticket in 2..=100 {
        send(
            &worker,
            ticket,
            vec![Fact::MessageAccepted(message(1, ticket - 1, 5))],
        );
    }
    blocker.execute_batch("COMMIT").unwrap();

    let mut commits = Vec::new();
    while commits.last() != Some(&100) {
        match next(&mut replies) {
            Reply::Committed { up_to } => commits.push(up_to),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(commits.len() <= 2, "one commit per group, got {commits:?}");
    assert!(commits.is_sorted());

    worker.shutdown();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.load_snapshot(0).unwrap().conversations[0].last_seq,
        99
    );
    assert_eq!(
        store.reader().unwrap().history(1, 0, 500).unwrap().len(),
        99
    );
}

/// Many small batches sent as fast as possible: every ticket is confirmed,
/// in order, and everything is stored.
#[test]
fn a_stream_of_batches_is_confirmed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (tx, mut replies) = mpsc::channel(8192);
    let worker = worker::spawn(store, WorkerOptions::default(), tx).unwrap();
    send(&worker, 1, vec![created(1)]);
    let last = 2_000;
    for ticket in 2..=last {
        send(
            &worker,
            ticket,
            vec![Fact::MessageAccepted(message(1, ticket - 1, 5))],
        );
    }
    let mut up_to = 0;
    let mut commits = 0;
    while up_to < last {
        match next(&mut replies) {
            Reply::Committed { up_to: n } => {
                assert!(n > up_to, "confirmations only move forward");
                up_to = n;
                commits += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(up_to, last);
    println!("{last} batches in {commits} commits");
    worker.shutdown();
    let reader = Store::open(dir.path()).unwrap().reader().unwrap();
    let all = reader.history(1, 0, 5_000).unwrap();
    assert_eq!(all.len() as u64, last - 1);
}

#[test]
fn history_is_answered_on_the_reader_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut facts = vec![created(7)];
    facts.extend((1..=30).map(|seq| Fact::MessageAccepted(message(7, seq, 5))));
    store.commit(&facts).unwrap();
    let (tx, mut replies) = mpsc::channel(16);
    let worker = worker::spawn(store, WorkerOptions::default(), tx).unwrap();

    for (tag, before_seq) in [(1, 0), (2, 11)] {
        let request = HistoryRequest {
            tag,
            conv: 7,
            before_seq,
            limit: 10,
        };
        worker.history.blocking_send(request).unwrap();
    }
    let seqs = |reply| match reply {
        Reply::History {
            tag,
            conv: 7,
            result,
        } => (
            tag,
            result.unwrap().iter().map(|m| m.seq).collect::<Vec<_>>(),
        ),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(seqs(next(&mut replies)), (1, (21..=30).collect()));
    assert_eq!(seqs(next(&mut replies)), (2, (1..=10).collect()));
    worker.shutdown();
}

/// A transaction that fails loses its messages, reported as such, but
/// none of its other facts: they go first in the next transaction. Later
/// commits succeed once the fault is gone.
#[test]
fn a_failed_commit_reports_its_messages_and_retries_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[created(1), joined(1, "alice")]).unwrap();
    let (tx, mut replies) = mpsc::channel(64);
    let worker = worker::spawn(store, WorkerOptions::default(), tx).unwrap();

    let saboteur = sabotage(dir.path(), "messages");
    let lost = message(1, 1, 5);
    send(
        &worker,
        1,
        vec![
            joined(1, "bob"),
            Fact::MessageAccepted(lost.clone()),
            created(2),
        ],
    );
    match next(&mut replies) {
        Reply::Failed {
            first: 1,
            last: 1,
            error,
            lost: reported,
            kept: true,
        } => {
            assert!(error.contains("simulated I/O failure"), "{error}");
            assert_eq!(reported, vec![lost]);
        }
        other => panic!("expected a failure, got {other:?}"),
    }

    saboteur.execute_batch("DROP TRIGGER no_messages").unwrap();
    let kept = message(1, 2, 6);
    send(&worker, 2, vec![Fact::MessageAccepted(kept.clone())]);
    // The retry may have gone alone first (a second after the failure).
    let mut reply = next(&mut replies);
    if reply == (Reply::Committed { up_to: 1 }) {
        reply = next(&mut replies);
    }
    assert_eq!(reply, Reply::Committed { up_to: 2 });
    worker.shutdown();

    let store = Store::open(dir.path()).unwrap();
    let snapshot = store.load_snapshot(0).unwrap();
    let ids: Vec<_> = snapshot.conversations.iter().map(|c| c.id).collect();
    assert_eq!(ids, [1, 2], "the failed ticket's conversation was retried");
    let members: Vec<_> = snapshot.conversations[0]
        .members
        .iter()
        .map(|m| m.key.as_str())
        .collect();
    assert_eq!(members, ["alice", "bob"], "and so was its join");
    let history = store.reader().unwrap().history(1, 0, 10).unwrap();
    assert_eq!(history, [(*kept).clone()], "the lost message is not stored");
}

/// Facts kept from a failed transaction are retried on their own when no
/// batch comes to take them along: nothing is confirmed while the fault
/// lasts, and once it is gone the retry confirms every ticket received, so
/// the hub releases what revealed them.
#[test]
fn kept_facts_are_retried_alone_until_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[created(1)]).unwrap();
    let (tx, mut replies) = mpsc::channel(64);
    let worker = worker::spawn(store, WorkerOptions::default(), tx).unwrap();
    let saboteur = sabotage(dir.path(), "members");
    send(&worker, 1, vec![joined(1, "bob")]);
    assert!(matches!(
        next(&mut replies),
        Reply::Failed {
            kept: true,
            ref lost,
            ..
        } if lost.is_empty()
    ));
    // Two retry intervals with the fault still there: no confirmation.
    std::thread::sleep(worker::RETRY_INTERVAL * 2 + Duration::from_millis(200));
    assert!(
        replies.try_recv().is_err(),
        "nothing stored, nothing confirmed"
    );
    saboteur.execute_batch("DROP TRIGGER no_members").unwrap();
    assert_eq!(next(&mut replies), Reply::Committed { up_to: 1 });
    worker.shutdown();
    let snapshot = Store::open(dir.path()).unwrap().load_snapshot(0).unwrap();
    let members: Vec<_> = snapshot.conversations[0]
        .members
        .iter()
        .map(|m| m.key.as_str())
        .collect();
    assert_eq!(members, ["bob"]);
}

/// Facts kept from a failed transaction are written at shutdown if no
/// later batch took them along.
#[test]
fn kept_facts_are_written_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[created(1)]).unwrap();
    let (tx, mut replies) = mpsc::channel(64);
    let worker = worker::spawn(store, WorkerOptions::default(), tx).unwrap();
    let saboteur = sabotage(dir.path(), "messages");
    send(
        &worker,
        1,
        vec![joined(1, "bob"), Fact::MessageAccepted(message(1, 1, 5))],
    );
    assert!(matches!(next(&mut replies), Reply::Failed { .. }));
    saboteur.execute_batch("DROP TRIGGER no_messages").unwrap();
    worker.shutdown();

    let snapshot = Store::open(dir.path()).unwrap().load_snapshot(0).unwrap();
    let members: Vec<_> = snapshot.conversations[0]
        .members
        .iter()
        .map(|m| m.key.as_str())
        .collect();
    assert_eq!(members, ["bob"]);
    assert_eq!(
        snapshot.conversations[0].last_seq, 0,
        "the message stays lost"
    );
}

/// A real full disk: the data dir on a 2 MiB tmpfs, filled up by another
/// file. Commits fail with the messages reported lost and the server's
/// earlier data intact; once space returns, commits succeed and the kept
/// facts land. Needs root (to mount); CI runs as root, so there it must run.
#[test]
fn a_full_disk_fails_commits_until_space_returns() {
    let Some(mount) = tmpfs::mount_or_skip("2m") else {
        return;
    };
    let data = mount.path().join("natter-data");
    let mut store = Store::open(&data).unwrap();
    store.commit(&[created(1), joined(1, "alice")]).unwrap();
    let (tx, mut replies) = mpsc::channel(64);
    let worker = worker::spawn(store, WorkerOptions::default(), tx).unwrap();

    let filler = mount.path().join("filler");
    fill(&filler);
    let big = |seq| {
        let mut m = (*message(1, seq, 5)).clone();
        m.text = "x".repeat(4096);
        Fact::MessageAccepted(Arc::new(m))
    };
    // More than the zeroed room the writer may have made ahead of its log
    // (which takes writes on a full disk), so that the commit must fail.
    let mut facts = vec![joined(1, "bob")];
    facts.extend((1..=400).map(big));
    send(&worker, 1, facts);
    match next(&mut replies) {
        Reply::Failed {
            first: 1,
            last: 1,
            error,
            lost,
            kept: true,
        } => {
            assert!(error.contains("full"), "{error}");
            assert_eq!(lost.len(), 400);
        }
        other => panic!("expected a failure, got {other:?}"),
    }

    std::fs::remove_file(&filler).unwrap();
    send(&worker, 2, vec![big(401)]);
    // The kept join's own retry may have gone first, once space returned.
    let mut reply = next(&mut replies);
    if reply == (Reply::Committed { up_to: 1 }) {
        reply = next(&mut replies);
    }
    assert_eq!(reply, Reply::Committed { up_to: 2 });
    worker.shutdown();

    let store = Store::open(&data).unwrap();
    let snapshot = store.load_snapshot(0).unwrap();
    assert_eq!(
        snapshot.conversations[0].members.len(),
        2,
        "bob's join was kept"
    );
    assert_eq!(snapshot.conversations[0].last_seq, 401);
    assert_eq!(stored_seqs(&store), [401]);
}

/// Deletes messages older than `history_days` at start, in chunks, and
/// keeps the rest.
#[test]
fn retention_runs_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let old = now_ms() - 3 * 86_400_000;
    let recent = now_ms() - 3_600_000;
    let count = natter_store::PRUNE_CHUNK as u64 * 2 + 7;
    let mut facts = vec![created(1)];
    facts.extend((1..=count).map(|seq| Fact::MessageAccepted(message(1, seq, old))));
    facts.extend((count + 1..=count + 3).map(|seq| Fact::MessageAccepted(message(1, seq, recent))));
    store.commit(&facts).unwrap();
    let reader = store.reader().unwrap();

    let (tx, mut replies) = mpsc::channel(16);
    let worker = worker::spawn(
        store,
        WorkerOptions {
            history_days: 2,
            ..Default::default()
        },
        tx,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let left = loop {
        let left = reader.history(1, 0, 100_000).unwrap();
        if left.len() == 3 || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seqs: Vec<_> = left.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (count + 1..=count + 3).collect::<Vec<_>>());
    // After the pass the writer waits for batches until the next one is
    // due, and still commits them (its timed wait once panicked).
    std::thread::sleep(Duration::from_millis(100));
    send(
        &worker,
        1,
        vec![Fact::MessageAccepted(message(1, count + 4, now_ms()))],
    );
    assert_eq!(next(&mut replies), Reply::Committed { up_to: 1 });
    worker.shutdown();
}

/// A writer thread that dies (here: the commit observer, the server's
/// metrics hook, panics) says so, instead of leaving the hub waiting for a
/// commit that never comes; what it had committed stays stored.
#[test]
fn a_writer_that_panics_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (tx, mut replies) = mpsc::channel(1024);
    let commits = std::sync::atomic::AtomicUsize::new(0);
    let options = WorkerOptions {
        on_commit: CommitObserver::new(move |_| {
            if commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                panic!("a broken commit observer (test)");
            }
        }),
        ..WorkerOptions::default()
    };
    let worker = worker::spawn(store, options, tx).unwrap();
    send(&worker, 1, vec![created(1)]);
    assert_eq!(next(&mut replies), Reply::Committed { up_to: 1 });
    send(&worker, 2, vec![Fact::MessageAccepted(message(1, 1, 5))]);
    assert_eq!(next(&mut replies), Reply::WriterStopped);
    assert!(
        worker
            .batches
            .try_send(Batch {
                ticket: 3,
                facts: vec![]
            })
            .is_err(),
        "a dead writer takes no more batches"
    );
    worker.shutdown();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load_snapshot(0).unwrap().conversations.len(), 1);
}

/// While idle, the writer writes zeros ahead of the WAL's end, so that the
/// commits after it overwrite the log instead of making it longer (which
/// costs each sync a second write). The zeros are harmless after a crash:
/// the files copied while the writer runs, as a `kill -9` would leave
/// them, open with every commit and nothing else.
#[test]
fn the_writer_makes_room_ahead_of_its_log_and_a_crash_keeps_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (tx, mut replies) = mpsc::channel(64);
    let worker = worker::spawn(store, WorkerOptions::default(), tx).unwrap();
    send(&worker, 1, vec![created(1)]);
    assert_eq!(next(&mut replies), Reply::Committed { up_to: 1 });

    let wal = dir.path().join("natter.db-wal");
    let wal_len = || std::fs::metadata(&wal).unwrap().len();
    let deadline = std::time::Instant::now() + WAIT;
    while wal_len() < 1 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "no room made ahead of the log: {} bytes",
            wal_len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let with_room = wal_len();
    for ticket in 2..=31 {
        let message = Fact::MessageAccepted(message(1, ticket - 1, 5));
        send(&worker, ticket, vec![message]);
        assert_eq!(next(&mut replies), Reply::Committed { up_to: ticket });
    }
    assert_eq!(wal_len(), with_room, "30 small commits went past the room");

    let crashed = tempfile::tempdir().unwrap();
    for file in ["natter.db", "natter.db-wal"] {
        std::fs::copy(dir.path().join(file), crashed.path().join(file)).unwrap();
    }
    worker.shutdown();
    let store = Store::open(crashed.path()).unwrap();
    assert_eq!(
        store.load_snapshot(0).unwrap().conversations[0].last_seq,
        30
    );
    assert_eq!(stored_seqs(&store), (1..=30).collect::<Vec<_>>());
}
