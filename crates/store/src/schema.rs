//! The schema, as a list of migrations that only ever grows.
//!
//! A data dir written by any released natter must open with every later
//! one, so a migration that has shipped is never edited: a change is a new
//! migration at the end. `rusqlite_migration` records the version in
//! SQLite's `user_version` and runs what is missing, each migration in its
//! own transaction, so a crash half-way through a migration leaves the
//! previous version intact.
//!
//! Identity is the user *key* everywhere (members, invitations, read
//! markers, senders), never a row id of a users table: guests have no row,
//! and accounts (the next schema version) will be keyed by the same key, so
//! membership needs no change when accounts arrive.

use rusqlite_migration::{M, Migrations};

/// Version 1: conversations, who is in them, and their messages.
///
/// - `conversations`: one row per id ever handed out, ended ones included,
///   so `max(id) + 1` is the next id and an id is never reused. `last_seq`
///   is kept here (updated with each commit) so start-up never has to scan
///   messages.
/// - `members`: who joined and has not left.
/// - `invitations`: everyone ever invited (they are *allowed* to join an
///   invite-only conversation); `pending` while the invitation stands.
/// - `messages`: a rowid table, so rows are in insertion order (retention
///   deletes a prefix of it cheaply), with `UNIQUE(conv, seq)` for history
///   paging and for making a retried insert a no-op.
const V1: &str = "
CREATE TABLE conversations (
    id          INTEGER PRIMARY KEY,
    created_ms  INTEGER NOT NULL,
    ended_ms    INTEGER,
    last_seq    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE members (
    conv        INTEGER NOT NULL,
    user_key    TEXT NOT NULL,
    display     TEXT NOT NULL,
    PRIMARY KEY (conv, user_key)
) WITHOUT ROWID;
CREATE TABLE invitations (
    conv        INTEGER NOT NULL,
    user_key    TEXT NOT NULL,
    display     TEXT NOT NULL,
    pending     INTEGER NOT NULL,
    PRIMARY KEY (conv, user_key)
) WITHOUT ROWID;
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    conv        INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    ts_ms       INTEGER NOT NULL,
    sender_key  TEXT NOT NULL,
    sender      TEXT NOT NULL,
    body        TEXT NOT NULL,
    UNIQUE (conv, seq)
);
";

/// Version 2: what the `history` and `topics` capabilities add.
///
/// - `messages.nonce`, with a partial index on the time of the messages
///   that have one: start-up reads the last 24 hours of nonces through it
///   without touching the messages that carry none.
/// - `conversations.topic` and who set it.
/// - `reads`: how far each user has read each conversation (one marker for
///   all of a user's devices), keyed by conversation first so that ending
///   a conversation deletes its markers without a scan.
const V2: &str = "
ALTER TABLE messages ADD COLUMN nonce TEXT;
CREATE INDEX messages_nonce_ts ON messages (ts_ms) WHERE nonce IS NOT NULL;
ALTER TABLE conversations ADD COLUMN topic TEXT;
ALTER TABLE conversations ADD COLUMN topic_setter TEXT;
CREATE TABLE reads (
    conv        INTEGER NOT NULL,
    user_key    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (conv, user_key)
) WITHOUT ROWID;
";

/// Version 3: identity (accounts and their sessions).
///
/// - `accounts`: keyed by the same user key as membership, so an account's
///   conversations need no change when it signs up. `phc` is the argon2id
///   hash as a PHC string (algorithm, parameters, salt and hash in one
///   field, so parameters can be raised later without a migration).
/// - `sessions`: only the SHA-256 of each token, never the token; indexed
///   by user so a password change ends an account's sessions without a
///   scan.
const V3: &str = "
CREATE TABLE accounts (
    user_key    TEXT PRIMARY KEY,
    display     TEXT NOT NULL,
    phc         TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE sessions (
    token_hash  BLOB PRIMARY KEY,
    user_key    TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions (user_key);
";

/// Version 4: bans an operator set with `natter admin ban`.
///
/// - `bans`: one row per target, `user:KEY` or `ip:ADDR` (an IPv6 /64 as
///   its first address), as `BanTarget::stored` writes it; `until_ms` NULL
///   for a permanent ban. A lapsed ban is simply ignored when loaded (and
///   deleted then), so nothing has to run when it ends.
const V4: &str = "
CREATE TABLE bans (
    target      TEXT PRIMARY KEY,
    until_ms    INTEGER,
    reason      TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 5: messages keyed in bulk, not one index entry per commit.
///
/// A commit used to dirty one leaf of the `UNIQUE (conv, seq)` index for
/// every conversation it held a message of, and every dirty page costs
/// the commit a WAL frame (two `pwrite`s and a checksum). Now a commit
/// only appends to `messages` (a few pages at its end), and the writer
/// files the new rows into `message_keys` every
/// [`KEY_BATCH`](crate::store::KEY_BATCH) messages, when each leaf takes
/// many keys at once.
///
/// - `messages` loses its unique index (SQLite can drop a table constraint
///   only by rebuilding the table, so it is rebuilt, ids kept).
/// - `message_keys`: `(conv, seq) -> id` for every message up to
///   `message_keys_through.id`; the rows after it (at most one batch) are
///   found by a scan of the table's end. History reads both.
/// - Duplicates are kept out by the writer, which knows the highest seq it
///   stored per conversation. From this version on, commits no longer
///   write `conversations.last_seq` (the messages say it); retention sets
///   it before deleting a conversation's newest messages.
const V5: &str = "
CREATE TABLE messages_v5 (
    id          INTEGER PRIMARY KEY,
    conv        INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    ts_ms       INTEGER NOT NULL,
    sender_key  TEXT NOT NULL,
    sender      TEXT NOT NULL,
    body        TEXT NOT NULL,
    nonce       TEXT
);
INSERT INTO messages_v5 (id, conv, seq, ts_ms, sender_key, sender, body, nonce)
    SELECT id, conv, seq, ts_ms, sender_key, sender, body, nonce FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v5 RENAME TO messages;
CREATE INDEX messages_nonce_ts ON messages (ts_ms) WHERE nonce IS NOT NULL;
CREATE TABLE message_keys (
    conv        INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    id          INTEGER NOT NULL,
    PRIMARY KEY (conv, seq)
) WITHOUT ROWID;
INSERT INTO message_keys (conv, seq, id) SELECT conv, seq, id FROM messages ORDER BY conv, seq;
CREATE TABLE message_keys_through (id INTEGER NOT NULL);
INSERT INTO message_keys_through (id) SELECT coalesce(max(id), 0) FROM messages;
";

const MIGRATIONS: &[M<'static>] = &[M::up(V1), M::up(V2), M::up(V3), M::up(V4), M::up(V5)];

/// The schema version this build writes.
pub const VERSION: usize = MIGRATIONS.len();

pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::from_slice(MIGRATIONS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fact, Store, StoredMessage};
    use rusqlite::Connection;
    use std::sync::Arc;

    /// Migration 1 exactly as it shipped. A data dir written by it is out
    /// there; if this test fails, the edit belongs in a new migration.
    const V1_AS_SHIPPED: &str = "
CREATE TABLE conversations (
    id          INTEGER PRIMARY KEY,
    created_ms  INTEGER NOT NULL,
    ended_ms    INTEGER,
    last_seq    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE members (
    conv        INTEGER NOT NULL,
    user_key    TEXT NOT NULL,
    display     TEXT NOT NULL,
    PRIMARY KEY (conv, user_key)
) WITHOUT ROWID;
CREATE TABLE invitations (
    conv        INTEGER NOT NULL,
    user_key    TEXT NOT NULL,
    display     TEXT NOT NULL,
    pending     INTEGER NOT NULL,
    PRIMARY KEY (conv, user_key)
) WITHOUT ROWID;
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    conv        INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    ts_ms       INTEGER NOT NULL,
    sender_key  TEXT NOT NULL,
    sender      TEXT NOT NULL,
    body        TEXT NOT NULL,
    UNIQUE (conv, seq)
);
";

    #[test]
    fn shipped_migrations_are_frozen() {
        assert_eq!(V1, V1_AS_SHIPPED);
        migrations().validate().expect("migrations are valid");
    }

    /// A data dir as natter with schema version 1 left it (written with
    /// that version's SQL, not with today's code) opens, is migrated, and
    /// keeps its data; new facts then work on it.
    #[test]
    fn a_version_1_data_dir_opens_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(crate::DB_FILE)).unwrap();
            conn.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
            conn.execute_batch(V1_AS_SHIPPED).unwrap();
            conn.execute_batch(
                "INSERT INTO conversations (id, created_ms, ended_ms, last_seq)
                     VALUES (1, 100, NULL, 2), (2, 100, 200, 0);
                 INSERT INTO members VALUES (1, 'alice', 'Alice');
                 INSERT INTO invitations VALUES (1, 'alice', 'Alice', 0), (1, 'bob', 'Bob', 1);
                 INSERT INTO messages (conv, seq, ts_ms, sender_key, sender, body)
                     VALUES (1, 1, 110, 'alice', 'Alice', 'hello'),
                            (1, 2, 120, 'alice', 'Alice', 'anyone?');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }

        let mut store = Store::open(dir.path()).expect("a version 1 data dir opens");
        let snapshot = store.load_snapshot(1_000).unwrap();
        assert_eq!(
            snapshot.next_conv_id, 3,
            "ended conversation 2 keeps its id"
        );
        assert_eq!(snapshot.conversations.len(), 1);
        let conv = &snapshot.conversations[0];
        assert_eq!((conv.id, conv.last_seq, conv.topic.clone()), (1, 2, None));
        assert_eq!(conv.members.len(), 1);
        assert_eq!(conv.members[0].read_seq, 0);
        assert_eq!(conv.pending, vec![("bob".to_string(), "Bob".to_string())]);
        assert_eq!(conv.allowed, vec!["alice".to_string(), "bob".to_string()]);

        let history = store.reader().unwrap().history(1, 0, 10).unwrap();
        let texts: Vec<_> = history.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["hello", "anyone?"]);
        assert!(history.iter().all(|m| m.nonce.is_none()));

        // Version 2's additions work on the migrated data.
        let message = StoredMessage {
            conv: 1,
            seq: 3,
            ts: 900,
            sender_key: "alice".into(),
            sender: "Alice".into(),
            text: "again".into(),
            nonce: Some("n-1".into()),
        };
        store
            .commit(&[
                Fact::MessageAccepted(Arc::new(message.clone())),
                Fact::TopicSet {
                    conv: 1,
                    text: "plans".into(),
                    setter: "Alice".into(),
                },
                Fact::ReadUpTo {
                    key: "alice".into(),
                    conv: 1,
                    seq: 3,
                },
            ])
            .unwrap();
        let snapshot = store.load_snapshot(1_000).unwrap();
        let conv = &snapshot.conversations[0];
        assert_eq!(conv.last_seq, 3);
        assert_eq!(conv.topic, Some(("plans".into(), "Alice".into())));
        assert_eq!(conv.members[0].read_seq, 3);
        assert_eq!(snapshot.recent_nonces, vec![message]);

        let version: usize = store
            .connection()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
    }
}
