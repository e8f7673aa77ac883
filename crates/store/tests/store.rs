//! `Store` and `Reader` on real files: every fact kind survives a reopen,
//! history pages, ids are never reused, the lock keeps a second natter out,
//! retention deletes only what is old, and a failed commit stores nothing.

use std::sync::Arc;

use natter_store::{
    Fact, RestoredConversation, RestoredMember, Snapshot, Store, StoreError, StoredMessage,
};
use rusqlite::Connection;

fn message(conv: u64, seq: u64, ts: i64, text: &str, nonce: Option<&str>) -> StoredMessage {
    StoredMessage {
        conv,
        seq,
        ts,
        sender_key: "alice".into(),
        sender: "Alice".into(),
        text: text.into(),
        nonce: nonce.map(Into::into),
    }
}

fn accepted(m: &StoredMessage) -> Fact {
    Fact::MessageAccepted(Arc::new(m.clone()))
}

fn created(conv: u64, invited: &[(&str, &str)]) -> Fact {
    Fact::ConversationCreated {
        conv,
        ts: 1_000,
        invited: invited
            .iter()
            .map(|(k, d)| (k.to_string(), d.to_string()))
            .collect(),
    }
}

fn joined(conv: u64, key: &str, display: &str) -> Fact {
    Fact::Joined {
        conv,
        key: key.into(),
        display: display.into(),
    }
}

fn member(key: &str, display: &str, read_seq: u64) -> RestoredMember {
    RestoredMember {
        key: key.into(),
        display: display.into(),
        read_seq,
    }
}

fn pair(key: &str, display: &str) -> (String, String) {
    (key.into(), display.into())
}

fn keys(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// Every kind of fact, committed, then read back after a reopen.
#[test]
fn every_fact_kind_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let now = 10_000_000;
    let hello = message(1, 1, now - 5, "hello", Some("n1"));
    let plain = message(1, 2, now - 4, "no nonce", None);
    let old = message(
        2,
        1,
        now - natter_store::NONCE_WINDOW_MS - 1,
        "old",
        Some("n0"),
    );
    {
        let mut store = Store::open(dir.path()).unwrap();
        store
            .commit(&[
                created(1, &[("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")]),
                joined(1, "alice", "Alice"),
                joined(1, "bob", "Bob"),
                joined(1, "dave", "Dave"), // an open conversation: not invited
                Fact::Left {
                    conv: 1,
                    key: "dave".into(),
                },
                created(2, &[("alice", "Alice"), ("erin", "Erin")]),
                joined(2, "alice", "Alice"),
                Fact::InvitationLapsed {
                    conv: 2,
                    key: "erin".into(),
                },
                created(3, &[("alice", "Alice")]),
                joined(3, "alice", "Alice"),
                accepted(&old),
            ])
            .unwrap();
        store
            .commit(&[
                accepted(&hello),
                accepted(&plain),
                Fact::TopicSet {
                    conv: 1,
                    text: "lunch".into(),
                    setter: "Bob".into(),
                },
                Fact::ReadUpTo {
                    key: "bob".into(),
                    conv: 1,
                    seq: 2,
                },
                Fact::ReadUpTo {
                    key: "bob".into(),
                    conv: 1,
                    seq: 1, // never goes back
                },
                Fact::ConversationEnded { conv: 3, ts: now },
            ])
            .unwrap();
    }

    let store = Store::open(dir.path()).unwrap();
    let snapshot = store.load_snapshot(now).unwrap();
    let expected = Snapshot {
        next_conv_id: 4,
        conversations: vec![
            RestoredConversation {
                id: 1,
                last_seq: 2,
                topic: Some(pair("lunch", "Bob")),
                members: vec![member("alice", "Alice", 0), member("bob", "Bob", 2)],
                pending: vec![pair("carol", "Carol")],
                allowed: keys(&["alice", "bob", "carol"]),
            },
            RestoredConversation {
                id: 2,
                last_seq: 1,
                topic: None,
                members: vec![member("alice", "Alice", 0)],
                pending: vec![],
                allowed: keys(&["alice", "erin"]),
            },
        ],
        recent_nonces: vec![hello],
    };
    assert_eq!(snapshot, expected);
}

/// The same facts committed twice (a retry after a failure that did land)
/// change nothing and fail on no key.
#[test]
fn a_retried_commit_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let facts = [
        created(1, &[("alice", "Alice"), ("bob", "Bob")]),
        joined(1, "alice", "Alice"),
        accepted(&message(1, 1, 5, "once", Some("n"))),
        Fact::ReadUpTo {
            key: "alice".into(),
            conv: 1,
            seq: 1,
        },
    ];
    store.commit(&facts).unwrap();
    let before = store.load_snapshot(10).unwrap();
    store.commit(&facts).unwrap();
    assert_eq!(store.load_snapshot(10).unwrap(), before);
    assert_eq!(store.reader().unwrap().history(1, 0, 10).unwrap().len(), 1);
}

#[test]
fn history_pages_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut facts = vec![created(1, &[("alice", "Alice")]), created(2, &[])];
    for seq in 1..=250 {
        facts.push(accepted(&message(
            1,
            seq,
            seq as i64,
            &format!("m{seq}"),
            None,
        )));
        facts.push(accepted(&message(2, seq, seq as i64, "other", None)));
    }
    store.commit(&facts).unwrap();
    let reader = store.reader().unwrap();
    let seqs = |before, limit| -> Vec<u64> {
        let page = reader.history(1, before, limit).unwrap();
        assert!(page.iter().all(|m| m.conv == 1));
        page.iter().map(|m| m.seq).collect()
    };

    assert_eq!(seqs(0, 3), [248, 249, 250], "before 0: the newest");
    assert_eq!(seqs(248, 3), [245, 246, 247]);
    assert_eq!(seqs(3, 100), [1, 2], "the start of the conversation");
    assert!(seqs(1, 100).is_empty());
    assert_eq!(seqs(0, 500).len(), 250);
    assert!(seqs(0, 0).is_empty());
    // Walking back page by page visits every message once, in order.
    let mut all = Vec::new();
    let mut before = 0;
    loop {
        let page = seqs(before, 64);
        let Some(&first) = page.first() else { break };
        all.splice(0..0, page);
        before = first;
    }
    assert_eq!(all, (1..=250).collect::<Vec<_>>());

    let page = reader.history(1, 0, 1).unwrap();
    assert_eq!(page, [message(1, 250, 250, "m250", None)]);
    assert!(reader.history(99, 0, 10).unwrap().is_empty());
}

/// Messages reach history whether or not the writer has filed their keys
/// yet (it files them a batch at a time), across a reopen, and a replay of
/// every fact (as a restarted cluster node makes) stores none twice.
#[test]
fn history_spans_filed_and_unfiled_messages_and_replays_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let batch = natter_store::KEY_BATCH as u64;
    let total = 2 * batch + batch / 2;
    let mut commits = vec![vec![created(1, &[("alice", "Alice")]), created(2, &[])]];
    // Small commits alternating between two conversations, as chat makes.
    for seq in 1..=total {
        if seq % 7 == 1 {
            commits.push(Vec::new());
        }
        let commit = commits.last_mut().unwrap();
        commit.push(accepted(&message(
            1,
            seq,
            seq as i64,
            &format!("m{seq}"),
            None,
        )));
        commit.push(accepted(&message(2, seq, seq as i64, "other", None)));
    }
    let walk = |store: &Store| -> Vec<u64> {
        let reader = store.reader().unwrap();
        let mut all = Vec::new();
        let mut before = 0;
        loop {
            let page = reader.history(1, before, 100).unwrap();
            assert!(
                page.iter()
                    .all(|m| m.conv == 1 && m.text == format!("m{}", m.seq))
            );
            let Some(first) = page.first() else { break };
            before = first.seq;
            all.splice(0..0, page.iter().map(|m| m.seq));
        }
        all
    };
    let count = |store: &Store| -> i64 {
        let db = rusqlite::Connection::open(store.path()).unwrap();
        db.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap()
    };

    let mut store = Store::open(dir.path()).unwrap();
    for (i, facts) in commits.iter().enumerate() {
        store.commit(facts).unwrap();
        if i % 97 == 0 {
            let seen = walk(&store);
            assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());
        }
    }
    assert_eq!(walk(&store), (1..=total).collect::<Vec<_>>());
    drop(store);

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(walk(&store), (1..=total).collect::<Vec<_>>());
    for facts in &commits {
        store.commit(facts).unwrap();
    }
    let more = message(1, total + 1, 0, &format!("m{}", total + 1), None);
    store.commit(&[accepted(&more), accepted(&more)]).unwrap();
    assert_eq!(count(&store), 2 * total as i64 + 1, "nothing stored twice");
    assert_eq!(walk(&store), (1..=total + 1).collect::<Vec<_>>());
}

#[test]
fn the_reader_sees_each_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let reader = store.reader().unwrap();
    store.commit(&[created(1, &[])]).unwrap();
    assert!(reader.history(1, 0, 10).unwrap().is_empty());
    store
        .commit(&[accepted(&message(1, 1, 1, "now", None))])
        .unwrap();
    assert_eq!(reader.history(1, 0, 10).unwrap().len(), 1);
}

/// Ended conversations keep their ids: after a reopen the next id is above
/// every id ever used, not above the live ones.
#[test]
fn conversation_ids_are_never_reused_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        Store::open(dir.path())
            .unwrap()
            .load_snapshot(0)
            .unwrap()
            .next_conv_id,
        1,
        "an empty store starts at 1"
    );
    {
        let mut store = Store::open(dir.path()).unwrap();
        store
            .commit(&[
                created(1, &[("alice", "Alice")]),
                created(2, &[("alice", "Alice")]),
                created(3, &[("alice", "Alice")]),
                Fact::ConversationEnded { conv: 2, ts: 1 },
                Fact::ConversationEnded { conv: 3, ts: 1 },
            ])
            .unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    let snapshot = store.load_snapshot(0).unwrap();
    assert_eq!(snapshot.next_conv_id, 4);
    let live: Vec<_> = snapshot.conversations.iter().map(|c| c.id).collect();
    assert_eq!(live, [1]);

    store
        .commit(&[Fact::ConversationEnded { conv: 1, ts: 2 }])
        .unwrap();
    drop(store);
    let snapshot = Store::open(dir.path()).unwrap().load_snapshot(0).unwrap();
    assert_eq!(snapshot.next_conv_id, 4, "even with nothing live");
    assert!(snapshot.conversations.is_empty());
}

#[test]
fn a_second_opener_is_refused_and_the_first_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Store::open(dir.path()).unwrap();
    first.commit(&[created(1, &[])]).unwrap();

    let err = Store::open(dir.path())
        .err()
        .expect("second open is refused");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let text = err.to_string();
    let lock = dir.path().join("LOCK");
    assert!(text.contains("in use by another natter"), "{text}");
    assert!(text.contains(&lock.display().to_string()), "{text}");

    first
        .commit(&[accepted(&message(1, 1, 1, "still here", None))])
        .unwrap();
    assert_eq!(first.load_snapshot(0).unwrap().conversations[0].last_seq, 1);

    drop(first);
    let reopened = Store::open(dir.path()).expect("the lock dies with its store");
    assert_eq!(reopened.load_snapshot(0).unwrap().next_conv_id, 2);
}

#[test]
fn open_creates_missing_parents_and_says_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/natter-data");
    Store::open(&nested).unwrap();
    assert!(nested.join("natter.db").is_file());

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file.join("data")).err().unwrap();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("cannot create data dir"),
        "{err}"
    );
}

/// A data dir written by a newer natter is refused, not half-understood.
#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let conn = Connection::open(dir.path().join("natter.db")).unwrap();
    let newer = natter_store::schema::VERSION + 1;
    conn.pragma_update(None, "user_version", newer).unwrap();
    drop(conn);
    let err = Store::open(dir.path()).err().unwrap();
    assert!(
        matches!(err, StoreError::TooNew { found, .. } if found == newer),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade natter"), "{err}");
}

#[test]
fn retention_deletes_old_messages_in_bounded_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let chunk = natter_store::PRUNE_CHUNK as u64;
    let old = chunk + 10;
    let mut facts = vec![created(1, &[])];
    for seq in 1..=old + 5 {
        let ts = if seq <= old { 100 } else { 10_000 };
        facts.push(accepted(&message(1, seq, ts, "x", None)));
    }
    store.commit(&facts).unwrap();

    assert_eq!(
        store.prune_before(5_000).unwrap(),
        chunk,
        "one chunk at most"
    );
    assert_eq!(store.prune_before(5_000).unwrap(), 10);
    assert_eq!(store.prune_before(5_000).unwrap(), 0);
    let left = store.reader().unwrap().history(1, 0, 1000).unwrap();
    let seqs: Vec<_> = left.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (old + 1..=old + 5).collect::<Vec<_>>());
    // The conversation keeps its last seq: seqs are never reused.
    assert_eq!(
        store.load_snapshot(0).unwrap().conversations[0].last_seq,
        old + 5
    );
    assert_eq!(store.prune_before(10_001).unwrap(), 5);
    drop(store);
    // With every message gone, a reopened store still knows the last seq.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.load_snapshot(0).unwrap().conversations[0].last_seq,
        old + 5
    );
}

/// A commit that fails half-way stores none of its facts.
#[test]
fn a_failed_commit_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[created(1, &[("alice", "Alice")])]).unwrap();
    let before = store.load_snapshot(0).unwrap();

    // Another connection makes every message insert fail, as a full disk would.
    let saboteur = Connection::open(dir.path().join("natter.db")).unwrap();
    saboteur
        .execute_batch(
            "CREATE TRIGGER no_messages BEFORE INSERT ON messages
             BEGIN SELECT RAISE(ABORT, 'simulated I/O failure'); END;",
        )
        .unwrap();
    let err = store
        .commit(&[
            joined(1, "alice", "Alice"),
            created(2, &[("bob", "Bob")]),
            accepted(&message(1, 1, 1, "lost", None)),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("simulated I/O failure"), "{err}");
    assert_eq!(store.load_snapshot(0).unwrap(), before);

    saboteur.execute_batch("DROP TRIGGER no_messages").unwrap();
    store.commit(&[joined(1, "alice", "Alice")]).unwrap();
    assert_eq!(
        store.load_snapshot(0).unwrap().conversations[0]
            .members
            .len(),
        1
    );
}

/// Bans of names and addresses (an IPv6 one as its /64) survive a reopen;
/// a lifted one and a lapsed one do not come back.
#[test]
fn bans_survive_a_reopen_until_lifted_or_lapsed() {
    use natter_core::bans::{Ban, BanTarget};
    let dir = tempfile::tempdir().unwrap();
    let ban = |target: &str, until: Option<i64>, reason: &str| Ban {
        target: BanTarget::parse(target).unwrap(),
        until,
        reason: reason.into(),
        created: 1_000,
    };
    let kept = [
        ban("2001:db8:1:2::77", None, "flood"),
        ban("10.0.0.9", Some(90_000), ""),
        ban("Bob", Some(50_000), "spam"),
    ];
    {
        let mut store = Store::open(dir.path()).unwrap();
        let mut facts: Vec<Fact> = kept.iter().cloned().map(Fact::Banned).collect();
        facts.push(Fact::Banned(ban("carol", None, "lifted below")));
        facts.push(Fact::Banned(ban("lapsed", Some(2_000), "")));
        facts.push(Fact::Unbanned(BanTarget::parse("CAROL").unwrap()));
        store.commit(&facts).unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    let mut loaded = store.load_bans(10_000).unwrap();
    loaded.sort_by(|a, b| a.target.cmp(&b.target));
    let mut expected = kept.to_vec();
    expected.sort_by(|a, b| a.target.cmp(&b.target));
    assert_eq!(loaded, expected);
    assert_eq!(
        expected[0].target,
        BanTarget::User("bob".into()),
        "names by key"
    );
    assert!(
        loaded
            .iter()
            .any(|b| b.target.to_string() == "ip:2001:db8:1:2::/64")
    );
}
