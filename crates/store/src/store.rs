//! [`Store`]: the one writer of a data dir.
//!
//! A data dir holds `natter.db` (SQLite in WAL mode, with its `-wal` and
//! `-shm` files) and `LOCK`. Whoever holds an exclusive lock on `LOCK` is
//! the only natter writing there; the lock is released by the kernel when
//! the process dies, so a crash never leaves a stale lock behind.
//!
//! Durability comes from SQLite: `synchronous=FULL` in WAL mode fsyncs the
//! WAL on every commit, and a commit is one transaction however many facts
//! it carries, so the cost of the fsync is shared by all of them (group
//! commit, see [`crate::worker`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use natter_core::facts::{
    Fact, RestoredConversation, RestoredMember, Snapshot, StoredMessage, TokenHash, UnixMs,
};
use natter_proto::ConvId;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use rusqlite_migration::SchemaVersion;
use tracing::info;

use crate::error::{Doing, StoreError};
use crate::reader::Reader;
use crate::schema;
use crate::wal_room::WalRoom;

/// The database file in a data dir.
pub const DB_FILE: &str = "natter.db";
/// The lock file in a data dir.
pub const LOCK_FILE: &str = "LOCK";

/// How many messages one [`Store::prune_before`] call deletes at most, so
/// that retention never holds the write lock for long.
pub const PRUNE_CHUNK: usize = 5_000;

/// How long a connection waits for another one's lock (a backup's read
/// transaction never blocks the writer in WAL mode, but a checkpoint may
/// wait briefly for readers).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's page cache per connection, in KiB (negative: KiB, not pages).
/// Big enough to keep the hot end of the message index in memory.
pub(crate) const CACHE_KIB: i64 = 64 * 1024;

/// The WAL is folded back into the database (a checkpoint, on the writer
/// thread, after a commit) once it holds this many pages (~40 MB), not
/// SQLite's default 1,000. Messages of many conversations dirty one index
/// page per conversation per commit; a page rewritten by many commits is
/// copied once per checkpoint, so rarer checkpoints write less: measured
/// with 1,000 conversations and 16 messages per commit, 5.4 KB written
/// and 19 µs of CPU per message instead of 8.9 KB and 23 µs. Recovery
/// after a crash reads at most this much log.
pub(crate) const WAL_CHECKPOINT_PAGES: i64 = 10_000;

/// After a checkpoint the WAL file is cut back to this size (bytes), in
/// case a long reader (a backup) let it grow far beyond the above.
pub(crate) const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// The writer files new messages into `message_keys` once this many are
/// waiting (schema version 5): each index leaf then takes many keys in one
/// write instead of one per commit. History scans at most this many rows
/// (plus one commit's) at the end of `messages` for the rest, which keeps
/// a page of history well under a millisecond.
pub const KEY_BATCH: usize = 1024;

/// The writer of a data dir: one SQLite connection and the dir's lock.
pub struct Store {
    // Field order is drop order: the connection closes (and checkpoints)
    // before the lock is released, so the next owner finds a quiet file.
    conn: Connection,
    _lock: File,
    path: PathBuf,
    /// Scratch for [`Store::commit`]: the highest seq per conversation in
    /// the transaction.
    last_seq: HashMap<ConvId, u64>,
    /// The highest seq committed per conversation: a message at or below
    /// it is already stored (a replayed fact), so it is not inserted twice.
    stored_seq: HashMap<ConvId, u64>,
    /// Messages committed since [`file_keys`] last ran.
    unkeyed: usize,
    /// Zeros ahead of the WAL's end, for a store whose commits wait for
    /// the disk (none for a cache: its commits do not sync).
    wal_room: Option<WalRoom>,
}

impl Store {
    /// Creates `dir` (and parents) if missing; takes an exclusive lock on
    /// `DIR/LOCK` (a second opener gets [`StoreError::Locked`] and touches
    /// nothing); opens `DIR/natter.db` in WAL mode with `synchronous=FULL`
    /// and migrates it to the latest schema version.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_as(dir, Synchronous::Full)
    }

    /// [`Store::open`] for a copy of what is kept durably elsewhere (a
    /// cluster node's store, a cache of the replicated log that every
    /// start empties and rebuilds): commits do not wait for the disk
    /// (`synchronous=NORMAL` in WAL mode: no fsync per commit, only at
    /// checkpoints). A crash of the process loses nothing committed; a
    /// crash of the machine may lose the last commits, which the source
    /// has.
    pub fn open_cache(dir: &Path) -> Result<Store, StoreError> {
        Store::open_as(dir, Synchronous::Normal)
    }

    fn open_as(dir: &Path, synchronous: Synchronous) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open(&path).doing("opening the database", &path)?;
        configure_writer(&conn, synchronous).doing("configuring the database", &path)?;
        let from = migrate(&mut conn, &path)?;
        info!(path = %path.display(), from, to = schema::VERSION, "store open");
        let (stored_seq, unkeyed) = read_write_state(&conn).doing("reading the database", &path)?;
        let wal_room = matches!(synchronous, Synchronous::Full).then(|| WalRoom::new(&path));
        Ok(Store {
            conn,
            _lock: lock,
            path,
            last_seq: HashMap::new(),
            stored_seq,
            unkeyed,
            wal_room,
        })
    }

    /// Everything the chat state needs back: live conversations with their
    /// members, invitations, topic and last seq; the next conversation id;
    /// the messages that carried a nonce in the [`NONCE_WINDOW_MS`] before
    /// `now`. Reads only small tables and the nonce index, never the bulk
    /// of the messages, so start-up time does not grow with history.
    ///
    /// [`NONCE_WINDOW_MS`]: natter_core::facts::NONCE_WINDOW_MS
    pub fn load_snapshot(&self, now: UnixMs) -> Result<Snapshot, StoreError> {
        // One read transaction: every part of the snapshot is of one moment.
        let tx = self
            .conn
            .unchecked_transaction()
            .doing("reading the snapshot", &self.path)?;
        let snapshot =
            read_snapshot(&tx, now, &self.stored_seq).doing("reading the snapshot", &self.path)?;
        tx.finish().doing("reading the snapshot", &self.path)?;
        Ok(snapshot)
    }

    /// Applies `facts` in order in one transaction and commits it: all or
    /// nothing, durable when this returns `Ok`. Every statement tolerates
    /// being run twice, so facts retried after a failure cannot fail on a
    /// duplicate key.
    pub fn commit(&mut self, facts: &[Fact]) -> Result<(), StoreError> {
        self.commit_all(facts)
    }

    /// [`Store::commit`] over any sequence of facts, so that the writer
    /// thread can commit several batches (and retried facts) without
    /// copying them into one vector.
    pub(crate) fn commit_all<'a>(
        &mut self,
        facts: impl IntoIterator<Item = &'a Fact>,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing("starting a transaction", &self.path)?;
        self.last_seq.clear();
        let mut inserted = 0;
        for fact in facts {
            if let Fact::MessageAccepted(message) = fact {
                if is_stored(&self.stored_seq, &self.last_seq, message) {
                    continue;
                }
                inserted += 1;
            }
            apply(&tx, fact, &mut self.last_seq).doing("storing facts", &self.path)?;
        }
        let file = self.unkeyed + inserted >= KEY_BATCH;
        if file {
            file_keys(&tx).doing("storing facts", &self.path)?;
        }
        tx.commit().doing("committing", &self.path)?;
        self.unkeyed = if file { 0 } else { self.unkeyed + inserted };
        for (&conv, &seq) in &self.last_seq {
            let stored = self.stored_seq.entry(conv).or_default();
            *stored = (*stored).max(seq);
        }
        if let Some(room) = &mut self.wal_room {
            room.note_commit();
        }
        Ok(())
    }

    /// Whether the WAL has outgrown the zeros made ahead of it, so that
    /// [`Store::make_wal_room`] has work for an idle moment.
    pub(crate) fn wants_wal_room(&self) -> bool {
        self.wal_room.as_ref().is_some_and(WalRoom::wanted)
    }

    /// Writes and syncs one chunk of zeros past the WAL's end, so that the
    /// next commits overwrite instead of append (see [`crate::wal_room`]).
    pub(crate) fn make_wal_room(&mut self) -> Result<(), StoreError> {
        let Some(room) = &mut self.wal_room else {
            return Ok(());
        };
        room.grow().map_err(|source| StoreError::WalRoom {
            path: self.path.clone(),
            source,
        })
    }

    /// Deletes messages older than `cutoff` (retention), oldest first and
    /// at most [`PRUNE_CHUNK`] per call; returns how many it deleted, so a
    /// caller repeats while the answer is `PRUNE_CHUNK`.
    ///
    /// Deletion follows insertion order: it stops at the first message that
    /// is not older than `cutoff`. Messages are stored in time order, so
    /// this deletes exactly the old ones, in bounded time, without an index
    /// on time (if the clock stepped back, an old message behind a newer
    /// one waits until that one is old too).
    pub fn prune_before(&mut self, cutoff: UnixMs) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing("deleting old messages", &self.path)?;
        let deleted = prune(&tx, cutoff).doing("deleting old messages", &self.path)?;
        tx.commit().doing("deleting old messages", &self.path)?;
        Ok(deleted)
    }

    /// A read-only connection to the same database, for another thread:
    /// in WAL mode it reads committed data while this one writes.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        Reader::open(&self.path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Takes the exclusive lock on `DIR/LOCK`, or says who has it.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let lock = dir.join(LOCK_FILE);
    let write_err = |source| StoreError::WriteDir {
        dir: dir.to_path_buf(),
        source,
    };
    // Not truncated: the file is only a handle for the lock.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(write_err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: dir.to_path_buf(),
            lock,
        }),
        Err(TryLockError::Error(source)) => Err(write_err(source)),
    }
}

/// When a commit waits for the disk.
#[derive(Debug, Clone, Copy)]
enum Synchronous {
    /// Every commit fsyncs the WAL: durable once committed.
    Full,
    /// Only checkpoints fsync: for a store that is a copy.
    Normal,
}

fn configure_writer(conn: &Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Only an in-memory or otherwise odd database refuses WAL.
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, WAL needed"
        )));
    }
    let synchronous = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Runs the missing migrations; returns the version found.
fn migrate(conn: &mut Connection, path: &Path) -> Result<usize, StoreError> {
    let migrations = schema::migrations();
    let migration_err = |source| StoreError::Migration {
        path: path.to_path_buf(),
        source,
    };
    let found = match migrations.current_version(conn).map_err(migration_err)? {
        SchemaVersion::NoneSet => 0,
        SchemaVersion::Inside(v) => v.get(),
        SchemaVersion::Outside(v) => {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: v.get(),
            });
        }
    };
    migrations.to_latest(conn).map_err(migration_err)?;
    Ok(found)
}

/// One fact as SQL. Every statement is idempotent (upserts, `OR IGNORE`,
/// `max`), so a fact retried after a failed transaction is harmless;
/// a message is the exception, so the caller skips one already stored
/// ([`is_stored`]).
fn apply(
    tx: &Transaction,
    fact: &Fact,
    last_seq: &mut HashMap<ConvId, u64>,
) -> rusqlite::Result<()> {
    match fact {
        Fact::ConversationCreated { conv, ts, invited } => {
            tx.prepare_cached(
                "INSERT INTO conversations (id, created_ms) VALUES (?1, ?2)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![conv, ts])?;
            let mut invite = tx.prepare_cached(
                "INSERT INTO invitations (conv, user_key, display, pending) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT (conv, user_key) DO NOTHING",
            )?;
            for (key, display) in invited {
                invite.execute(params![conv, key, display])?;
            }
        }
        Fact::Joined { conv, key, display } => {
            tx.prepare_cached(
                "INSERT INTO members (conv, user_key, display) VALUES (?1, ?2, ?3)
                 ON CONFLICT (conv, user_key) DO UPDATE SET display = excluded.display",
            )?
            .execute(params![conv, key, display])?;
            clear_pending(tx, *conv, key)?;
        }
        Fact::Left { conv, key } => {
            tx.prepare_cached("DELETE FROM members WHERE conv = ?1 AND user_key = ?2")?
                .execute(params![conv, key])?;
        }
        Fact::InvitationLapsed { conv, key } => clear_pending(tx, *conv, key)?,
        Fact::ConversationEnded { conv, ts } => end_conversation(tx, *conv, *ts)?,
        Fact::MessageAccepted(message) => {
            insert_message(tx, message)?;
            let seq = last_seq.entry(message.conv).or_default();
            *seq = (*seq).max(message.seq);
        }
        Fact::TopicSet { conv, text, setter } => {
            tx.prepare_cached(
                "UPDATE conversations SET topic = ?2, topic_setter = ?3 WHERE id = ?1",
            )?
            .execute(params![conv, text, setter])?;
        }
        Fact::AccountCreated {
            key,
            display,
            phc,
            ts,
        } => {
            tx.prepare_cached(
                "INSERT INTO accounts (user_key, display, phc, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_key) DO NOTHING",
            )?
            .execute(params![key, display, phc, ts])?;
        }
        Fact::PasswordChanged { key, phc, keep } => {
            set_password(tx, key, phc, keep.as_ref())?;
        }
        Fact::SessionStarted { key, token, ts } => {
            tx.prepare_cached(
                "INSERT INTO sessions (token_hash, user_key, created_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (token_hash) DO NOTHING",
            )?
            .execute(params![&token[..], key, ts])?;
        }
        Fact::SessionEnded { token } => {
            tx.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?
                .execute(params![&token[..]])?;
        }
        Fact::Banned(ban) => {
            tx.prepare_cached(
                "INSERT INTO bans (target, until_ms, reason, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (target) DO UPDATE SET until_ms = excluded.until_ms,
                     reason = excluded.reason, created_ms = excluded.created_ms",
            )?
            .execute(params![
                ban.target.stored(),
                ban.until,
                ban.reason,
                ban.created
            ])?;
        }
        Fact::Unbanned(target) => {
            tx.prepare_cached("DELETE FROM bans WHERE target = ?1")?
                .execute(params![target.stored()])?;
        }
        Fact::ReadUpTo { key, conv, seq } => {
            tx.prepare_cached(
                "INSERT INTO reads (conv, user_key, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (conv, user_key) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?
            .execute(params![conv, key, seq])?;
        }
    }
    Ok(())
}

/// A new hash for `key`; every session but `keep` ends. Says whether the
/// account exists.
pub(crate) fn set_password(
    tx: &Transaction,
    key: &str,
    phc: &str,
    keep: Option<&TokenHash>,
) -> rusqlite::Result<bool> {
    let found = tx
        .prepare_cached("UPDATE accounts SET phc = ?2 WHERE user_key = ?1")?
        .execute(params![key, phc])?;
    let keep: &[u8] = keep.map_or(&[], |k| &k[..]);
    tx.prepare_cached("DELETE FROM sessions WHERE user_key = ?1 AND token_hash != ?2")?
        .execute(params![key, keep])?;
    Ok(found > 0)
}

fn clear_pending(tx: &Transaction, conv: ConvId, key: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE invitations SET pending = 0 WHERE conv = ?1 AND user_key = ?2")?
        .execute(params![conv, key])?;
    Ok(())
}

/// The id stays taken (the row is kept); who was in it does not matter any
/// more. Its messages stay until retention removes them.
fn end_conversation(tx: &Transaction, conv: ConvId, ts: UnixMs) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE conversations SET ended_ms = ?2 WHERE id = ?1 AND ended_ms IS NULL")?
        .execute(params![conv, ts])?;
    for sql in [
        "DELETE FROM members WHERE conv = ?1",
        "DELETE FROM invitations WHERE conv = ?1",
        "DELETE FROM reads WHERE conv = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([conv])?;
    }
    Ok(())
}

fn insert_message(tx: &Transaction, m: &StoredMessage) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO messages (conv, seq, ts_ms, sender_key, sender, body, nonce)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        m.conv,
        m.seq,
        m.ts,
        m.sender_key,
        m.sender,
        m.text,
        m.nonce
    ])?;
    Ok(())
}

/// Whether `message` was committed before (`stored`) or already came in
/// this transaction (`this_tx`): seqs only grow, so anything at or below
/// the highest seen for its conversation is a repeat (a replayed fact).
fn is_stored(
    stored: &HashMap<ConvId, u64>,
    this_tx: &HashMap<ConvId, u64>,
    message: &StoredMessage,
) -> bool {
    let seen = |seqs: &HashMap<ConvId, u64>| seqs.get(&message.conv).copied().unwrap_or(0);
    message.seq <= seen(stored).max(seen(this_tx))
}

/// Files every message after `message_keys_through` into `message_keys`
/// (in key order, so each leaf is visited once) and moves the mark.
fn file_keys(tx: &Transaction) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO message_keys (conv, seq, id)
         SELECT conv, seq, id FROM messages
         WHERE id > (SELECT id FROM message_keys_through) ORDER BY conv, seq
         ON CONFLICT (conv, seq) DO NOTHING",
    )?
    .execute([])?;
    tx.prepare_cached(
        "UPDATE message_keys_through SET id = (SELECT coalesce(max(id), 0) FROM messages)",
    )?
    .execute([])?;
    Ok(())
}

/// What the writer keeps in memory about what is stored: the highest seq
/// per conversation, and how many messages wait for their keys.
fn read_write_state(conn: &Connection) -> rusqlite::Result<(HashMap<ConvId, u64>, usize)> {
    let stored = last_seqs(conn)?;
    let unkeyed: i64 = conn.query_row(
        "SELECT count(*) FROM messages WHERE id > (SELECT id FROM message_keys_through)",
        [],
        |r| r.get(0),
    )?;
    Ok((stored, usize::try_from(unkeyed).unwrap_or(usize::MAX)))
}

/// The highest seq stored per conversation, ended ones included.
///
/// A commit does not write it to the conversation's row (that would dirty
/// the `conversations` table's pages in every commit): the messages hold
/// it, through `message_keys` and the unfiled tail, and
/// `conversations.last_seq` keeps it for messages that retention deleted
/// (see [`prune`]). One index seek per conversation and one scan of the
/// tail, so start-up does not grow with history.
fn last_seqs(conn: &Connection) -> rusqlite::Result<HashMap<ConvId, u64>> {
    let mut filed = conn.prepare(
        "SELECT id, max(last_seq, coalesce((SELECT max(seq) FROM message_keys k WHERE k.conv = c.id), 0))
         FROM conversations c",
    )?;
    let mut seqs: HashMap<ConvId, u64> = filed
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut tail = conn.prepare(
        "SELECT conv, max(seq) FROM messages
         WHERE id > (SELECT id FROM message_keys_through) GROUP BY conv",
    )?;
    let rows = tail.query_map([], |r| Ok((r.get::<_, ConvId>(0)?, r.get::<_, u64>(1)?)))?;
    for row in rows {
        let (conv, seq) = row?;
        let highest = seqs.entry(conv).or_default();
        *highest = (*highest).max(seq);
    }
    Ok(seqs)
}

/// `last_seqs` is the writer's own count (its `stored_seq`), which
/// is what [`last_seqs`] would read back.
fn read_snapshot(
    tx: &Transaction,
    now: UnixMs,
    last_seqs: &HashMap<ConvId, u64>,
) -> rusqlite::Result<Snapshot> {
    let next_conv_id = tx.query_row(
        "SELECT coalesce(max(id), 0) + 1 FROM conversations",
        [],
        |r| r.get(0),
    )?;
    let mut conversations = live_conversations(tx)?;
    for conversation in &mut conversations {
        if let Some(&seq) = last_seqs.get(&conversation.id) {
            conversation.last_seq = conversation.last_seq.max(seq);
        }
    }
    add_members(tx, &mut conversations)?;
    add_invitations(tx, &mut conversations)?;
    let recent_nonces = recent_nonces(tx, now - natter_core::facts::NONCE_WINDOW_MS)?;
    Ok(Snapshot {
        next_conv_id,
        conversations,
        recent_nonces,
    })
}

fn live_conversations(tx: &Transaction) -> rusqlite::Result<Vec<RestoredConversation>> {
    let mut stmt = tx.prepare(
        "SELECT id, last_seq, topic, topic_setter FROM conversations
         WHERE ended_ms IS NULL ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let topic: Option<String> = r.get(2)?;
        let setter: Option<String> = r.get(3)?;
        Ok(RestoredConversation {
            id: r.get(0)?,
            last_seq: r.get(1)?,
            topic: topic.map(|text| (text, setter.unwrap_or_default())),
            ..RestoredConversation::default()
        })
    })?;
    rows.collect()
}

/// The conversation `id` in `conversations` (sorted by id), if it is live.
fn live(
    conversations: &mut [RestoredConversation],
    id: ConvId,
) -> Option<&mut RestoredConversation> {
    let at = conversations.binary_search_by_key(&id, |c| c.id).ok()?;
    Some(&mut conversations[at])
}

fn add_members(
    tx: &Transaction,
    conversations: &mut [RestoredConversation],
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare(
        "SELECT m.conv, m.user_key, m.display, coalesce(r.seq, 0) FROM members m
         LEFT JOIN reads r ON r.conv = m.conv AND r.user_key = m.user_key
         ORDER BY m.conv, m.user_key",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        if let Some(conv) = live(conversations, row.get(0)?) {
            conv.members.push(RestoredMember {
                key: row.get(1)?,
                display: row.get(2)?,
                read_seq: row.get(3)?,
            });
        }
    }
    Ok(())
}

fn add_invitations(
    tx: &Transaction,
    conversations: &mut [RestoredConversation],
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare(
        "SELECT conv, user_key, display, pending FROM invitations ORDER BY conv, user_key",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        if let Some(conv) = live(conversations, row.get(0)?) {
            let key: String = row.get(1)?;
            if row.get::<_, bool>(3)? {
                conv.pending.push((key.clone(), row.get(2)?));
            }
            conv.allowed.push(key);
        }
    }
    Ok(())
}

fn recent_nonces(tx: &Transaction, since: UnixMs) -> rusqlite::Result<Vec<StoredMessage>> {
    // `nonce IS NOT NULL` selects the partial index messages_nonce_ts.
    let mut stmt = tx.prepare(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE nonce IS NOT NULL AND ts_ms >= ?1 ORDER BY ts_ms, id"
    ))?;
    let rows = stmt.query_map([since], message_from_row)?;
    rows.collect()
}

/// The columns [`message_from_row`] reads, in its order (a macro, so that
/// `concat!` makes each query a literal for the statement cache).
macro_rules! message_columns {
    () => {
        "conv, seq, ts_ms, sender_key, sender, body, nonce"
    };
}
pub(crate) use message_columns;

pub(crate) fn message_from_row(r: &rusqlite::Row) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        conv: r.get(0)?,
        seq: r.get(1)?,
        ts: r.get(2)?,
        sender_key: r.get(3)?,
        sender: r.get(4)?,
        text: r.get(5)?,
        nonce: r.get(6)?,
    })
}

/// Deletes the longest prefix (in insertion order, at most
/// [`PRUNE_CHUNK`]) of messages older than `cutoff`.
fn prune(tx: &Transaction, cutoff: UnixMs) -> rusqlite::Result<u64> {
    let mut oldest = tx.prepare_cached("SELECT id, ts_ms FROM messages ORDER BY id LIMIT ?1")?;
    let mut rows = oldest.query([PRUNE_CHUNK])?;
    let mut last_old = None;
    while let Some(row) = rows.next()? {
        if row.get::<_, UnixMs>(1)? >= cutoff {
            break;
        }
        last_old = Some(row.get::<_, i64>(0)?);
    }
    drop(rows);
    let Some(last_old) = last_old else {
        return Ok(0);
    };
    // Each conversation keeps its last seq in its row once its newest
    // messages are gone: seqs are never reused.
    let mut highest =
        tx.prepare_cached("SELECT conv, max(seq) FROM messages WHERE id <= ?1 GROUP BY conv")?;
    let deleted_up_to = highest
        .query_map([last_old], |r| {
            Ok((r.get::<_, ConvId>(0)?, r.get::<_, u64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    drop(highest);
    let mut keep =
        tx.prepare_cached("UPDATE conversations SET last_seq = max(last_seq, ?2) WHERE id = ?1")?;
    for (conv, seq) in deleted_up_to {
        keep.execute(params![conv, seq])?;
    }
    drop(keep);
    tx.prepare_cached(
        "DELETE FROM message_keys WHERE (conv, seq) IN
             (SELECT conv, seq FROM messages WHERE id <= ?1)",
    )?
    .execute([last_old])?;
    let deleted = tx
        .prepare_cached("DELETE FROM messages WHERE id <= ?1")?
        .execute([last_old])?;
    Ok(deleted as u64)
}
