//! Snapshots of the replicated state: a node that starts (or restarts
//! after falling behind) loads the newest one and replays only the log
//! after it, and the log is trimmed below what a snapshot covers.
//!
//! - **What.** The chat state after log entry `seq` (every connection,
//!   through whichever node, as [`natter_core::state::LiveState`]), the
//!   liveness bookkeeping of [`super::replica`], and the history of the
//!   live conversations up to that entry (each node keeps history in a
//!   store of its own, which a start seeds from here), and every account
//!   with its password hash and live session hashes.
//! - **Where.** One object, [`OBJECT`], in the JetStream object store
//!   [`BUCKET`], kept on as many NATS servers as the log; its description
//!   is `seq`. An object store, not a KV entry, because history can be
//!   larger than a NATS message.
//! - **Who and when.** The oldest live node (every copy names the same
//!   one, see [`super::replica::Replica::snapshot_writer`]) after applying
//!   an entry whose sequence is a multiple of `snapshot_every`. Every copy
//!   could; one is enough.
//! - **Trimming.** Once a snapshot at `seq` is stored, the writer purges
//!   the log up to its *previous* snapshot, not this one: a node reading
//!   the log has one whole interval of slack before entries it still needs
//!   are gone. A node that falls further behind finds a gap in what it
//!   reads, stops, and its restart loads the snapshot.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::context::Context;
use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream::StorageType;
use natter_core::state::LiveState;
use natter_core::{StoredAccount, StoredMessage, TokenHash};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::log::{LogError, STREAM};
use super::replica::ReplicaState;

/// The object store of snapshots.
pub const BUCKET: &str = "natter-snapshots";
/// The one object in it: the newest snapshot.
pub const OBJECT: &str = "latest";
/// Entries between snapshots, unless `--snapshot-every` says otherwise.
pub const DEFAULT_EVERY: u64 = 10_000;

/// How long the writer waits for the node's store to commit the history a
/// snapshot covers (it commits apart from the hub, in its own thread).
const HISTORY_PATIENCE: Duration = Duration::from_secs(10);
/// How long one request to the object store or the stream may take (an
/// unanswered one, while JetStream elects a leader, would hang).
const REQUEST_PATIENCE: Duration = Duration::from_secs(5);
/// How long storing one snapshot may take.
const PUT_PATIENCE: Duration = Duration::from_secs(60);

/// Everything a node needs to go on from log entry `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last log entry applied.
    pub seq: u64,
    pub replica: ReplicaState,
    pub chat: LiveState,
    /// Every stored message of the live conversations, in order.
    pub messages: Vec<StoredMessage>,
    /// Every account (none in snapshots from before accounts were
    /// replicated, which had none).
    #[serde(default)]
    pub accounts: Vec<SnapshotAccount>,
}

/// An account as a snapshot carries it: hashes, never a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotAccount {
    pub key: String,
    pub display: String,
    pub phc: String,
    pub sessions: Vec<TokenHash>,
}

impl std::fmt::Debug for SnapshotAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotAccount")
            .field("key", &self.key)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl From<SnapshotAccount> for StoredAccount {
    fn from(a: SnapshotAccount) -> Self {
        StoredAccount {
            key: a.key,
            display: a.display,
            phc: a.phc,
            sessions: a.sessions,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot store {BUCKET}: {0}")]
    Store(String),
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("reading history for the snapshot: {0}")]
    History(String),
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        serde_json::from_slice(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))
    }
}

/// The object store, made if it is missing.
pub(super) async fn bucket(js: &Context, replicas: usize) -> Result<ObjectStore, LogError> {
    if let Ok(store) = js.get_object_store(BUCKET).await {
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: BUCKET.into(),
        description: Some(format!("snapshots of the {STREAM} log (natter)")),
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| LogError::Stream(format!("snapshot store {BUCKET}: {e}")))
}

/// The newest snapshot, if one was ever written.
pub(super) async fn load(store: &ObjectStore) -> Result<Option<Snapshot>, SnapshotError> {
    let mut object = match store.get(OBJECT).await {
        Ok(object) => object,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::Store(e.to_string())),
    };
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| SnapshotError::Store(e.to_string()))?;
    Snapshot::decode(&bytes).map(Some)
}

/// The sequence the stored snapshot covers (0: none).
async fn stored_seq(store: &ObjectStore) -> u64 {
    match tokio::time::timeout(REQUEST_PATIENCE, store.info(OBJECT)).await {
        Ok(Ok(info)) => info
            .description
            .and_then(|d| d.parse().ok())
            .unwrap_or_default(),
        _ => 0,
    }
}

/// A snapshot the hub took, waiting for the history its store has.
pub struct Taken {
    pub seq: u64,
    pub replica: ReplicaState,
    pub chat: LiveState,
    pub accounts: Vec<SnapshotAccount>,
}

/// Writes what the hub hands it, one at a time: reads the history the
/// snapshot covers from the node's store (`history`, none without one),
/// stores the object, then trims the log up to the previous snapshot.
pub(super) async fn write_loop(
    js: Context,
    store: ObjectStore,
    history: Option<PathBuf>,
    mut taken: mpsc::Receiver<Taken>,
) {
    let mut previous = stored_seq(&store).await;
    while let Some(taken) = taken.recv().await {
        if taken.seq <= previous {
            continue;
        }
        let seq = taken.seq;
        let history = history.clone();
        let built = tokio::task::spawn_blocking(move || with_history(taken, history)).await;
        let snapshot = match built {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(error)) => {
                tracing::warn!(seq, %error, "snapshot not written");
                continue;
            }
            Err(error) => {
                tracing::warn!(seq, %error, "snapshot not written");
                continue;
            }
        };
        let bytes = snapshot.encode();
        let meta = ObjectMetadata {
            name: OBJECT.into(),
            description: Some(seq.to_string()),
            ..Default::default()
        };
        let put = tokio::time::timeout(PUT_PATIENCE, store.put(meta, &mut bytes.as_slice())).await;
        match put {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(seq, %error, "snapshot not stored");
                continue;
            }
            Err(_) => {
                tracing::warn!(seq, "snapshot not stored in {PUT_PATIENCE:?}");
                continue;
            }
        }
        tracing::info!(seq, bytes = bytes.len(), "snapshot stored");
        if previous > 0 {
            trim(&js, previous).await;
        }
        previous = seq;
    }
}

/// Purges the log up to and including `seq`.
async fn trim(js: &Context, seq: u64) {
    let purge = async {
        let stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
        let purged = stream.purge().sequence(seq + 1).await;
        purged.map(|r| r.purged).map_err(|e| e.to_string())
    };
    match tokio::time::timeout(REQUEST_PATIENCE, purge).await {
        Ok(Ok(purged)) => tracing::info!(up_to = seq, purged, "log trimmed below a snapshot"),
        Ok(Err(error)) => tracing::warn!(%error, "log not trimmed"),
        Err(_) => tracing::warn!("log not trimmed: no answer in {REQUEST_PATIENCE:?}"),
    }
}

/// Adds the stored history of every live conversation, up to the seq it
/// had at the snapshot, waiting (bounded) for the store to commit it.
fn with_history(taken: Taken, dir: Option<PathBuf>) -> Result<Snapshot, SnapshotError> {
    let mut messages = Vec::new();
    if let Some(dir) = dir {
        let reader = natter_store::Reader::open_dir(&dir)
            .map_err(|e| SnapshotError::History(e.to_string()))?;
        let give_up = std::time::Instant::now() + HISTORY_PATIENCE;
        for conv in &taken.chat.conversations {
            if conv.last_seq == 0 {
                continue;
            }
            loop {
                let page = reader
                    .history(conv.id, conv.last_seq + 1, usize::MAX)
                    .map_err(|e| SnapshotError::History(e.to_string()))?;
                let complete = page.last().is_some_and(|m| m.seq == conv.last_seq);
                if complete || std::time::Instant::now() >= give_up {
                    messages.extend(page);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Ok(Snapshot {
        seq: taken.seq,
        replica: taken.replica,
        chat: taken.chat,
        messages,
        accounts: taken.accounts,
    })
}

/// The facts that put a snapshot's history into a node's empty store.
pub fn history_facts(snapshot: &Snapshot) -> Vec<natter_core::Fact> {
    use natter_core::Fact;
    let mut facts = Vec::new();
    for conv in &snapshot.chat.conversations {
        facts.push(Fact::ConversationCreated {
            conv: conv.id,
            ts: snapshot.chat.now,
            invited: Vec::new(),
        });
        for member in &conv.members {
            facts.push(Fact::Joined {
                conv: conv.id,
                key: member.key.clone(),
                display: member.display.clone(),
            });
        }
    }
    for message in &snapshot.messages {
        facts.push(Fact::MessageAccepted(std::sync::Arc::new(message.clone())));
    }
    for account in &snapshot.accounts {
        facts.push(Fact::AccountCreated {
            key: account.key.clone(),
            display: account.display.clone(),
            phc: account.phc.clone(),
            ts: snapshot.chat.now,
        });
        for token in &account.sessions {
            facts.push(Fact::SessionStarted {
                key: account.key.clone(),
                token: *token,
                ts: snapshot.chat.now,
            });
        }
    }
    facts
}
