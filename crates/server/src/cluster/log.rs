//! The replicated log itself: a JetStream stream on a NATS cluster, and
//! the two tasks that talk to it.
//!
//! The *appender* publishes what the hub hands it, in order, whatever is
//! queued at once as one entry (a batch), keeping many publishes in flight; when an acknowledgment fails (a NATS server died,
//! the stream is electing a leader) it publishes everything not yet
//! acknowledged again, with the same message ids, so the stream drops the
//! copies it already has and [`super::replica`] drops any that slip
//! through. The *reader* follows the stream from its first entry with an
//! ordered consumer (which re-creates itself after a gap or a failover) and
//! hands every entry, decoded, to the hub.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::time::Duration;

use async_nats::ServerAddr;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};

use async_nats::jetstream::context::{Context, PublishError};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{self, StorageType};
use futures::StreamExt;
use natter_core::UnixMs;
use natter_proto::Limits;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::entry::{Entry, EntryError};
use super::snapshot::{self, Snapshot, Taken};

/// The stream every node appends to and reads.
pub const STREAM: &str = "NATTER_LOG";
/// Its one subject.
pub const SUBJECT: &str = "natter.log";

/// Publishes in flight at once, unacknowledged.
const WINDOW: usize = 512;
/// Most entries of the hub in one log entry.
const MAX_BATCH: usize = 256;
/// Entries from the hub waiting for the appender.
pub const APPEND_QUEUE: usize = 8192;
/// Entries read and waiting for the hub.
const READ_QUEUE: usize = 4096;
/// How long to keep trying while JetStream elects its leaders at start.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// Pause before publishing again after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long the appender may go on publishing once the hub has stopped
/// (its last entry says the node is stopping).
const CLOSING_PATIENCE: Duration = Duration::from_secs(2);
/// The reader re-creates its consumer after this long without an entry:
/// every node appends a heartbeat each second, so silence means the
/// consumer was lost with its NATS server (the client's own check of an
/// ordered consumer takes several times longer).
const READ_SILENCE: Duration = Duration::from_secs(3);
/// How long one attempt to load the newest snapshot may take.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(5);
/// How long a publish waits for the stream's acknowledgment.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the log is and who this node is (`natter serve --nats --node`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs (any of them; the client learns the rest).
    pub nats: Vec<String>,
    /// This node's name (for logs and people; ids come from the log).
    pub node: String,
    /// Copies JetStream keeps of each entry (3 survives one server lost).
    pub replicas: usize,
    /// How often the node appends a heartbeat.
    pub heartbeat: Duration,
    /// A node with no entry this long (by the log's clock) is down.
    pub node_timeout: Duration,
    /// A snapshot is taken after every entry whose sequence is a multiple
    /// of this.
    pub snapshot_every: u64,
}

impl ClusterConfig {
    pub fn new(nats: Vec<String>, node: String) -> Self {
        ClusterConfig {
            nats,
            node,
            replicas: 3,
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(4),
            snapshot_every: snapshot::DEFAULT_EVERY,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("bad NATS URL {url:?}: {error}")]
    BadUrl { url: String, error: String },
    #[error("cannot connect to NATS at {urls}: {error}")]
    Connect { urls: String, error: String },
    #[error("JetStream stream {STREAM} not available: {0}")]
    Stream(String),
    #[error("cannot join the cluster (publishing to {STREAM}): {0}")]
    Join(String),
    #[error("cannot load the cluster's snapshot: {0}")]
    Snapshot(#[from] snapshot::SnapshotError),
}

/// An entry as read back: its place and time in the stream.
#[derive(Debug)]
pub struct Logged {
    pub seq: u64,
    /// When the stream stored it: the same on every node.
    pub time: UnixMs,
    pub entry: Result<Entry, EntryError>,
}

/// A node that has joined: its incarnation, where to append, what to read.
pub struct Joined {
    pub incarnation: u64,
    pub appender: mpsc::Sender<Entry>,
    pub entries: mpsc::Receiver<Logged>,
    /// The newest snapshot, which `entries` go on from (none: they start
    /// at the log's first entry).
    pub snapshot: Option<Snapshot>,
    /// Where the hub hands the snapshots it takes, to be written.
    pub snapshots: mpsc::Sender<Taken>,
}

/// Connects, makes sure the stream exists, announces this node and starts
/// the appender (which stops once the hub dropped its sender and what it
/// left is published, or after [`CLOSING_PATIENCE`]) and the reader (which
/// stops with `shutdown`), from the newest snapshot on; and the snapshot
/// writer, which reads history from the node's store in `history`.
pub async fn join(
    config: &ClusterConfig,
    limits: Limits,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
    history: Option<std::path::PathBuf>,
) -> Result<Joined, LogError> {
    let js = connect(config).await?;
    ensure_stream(&js, config.replicas).await?;
    let bucket = snapshot_bucket(&js, config.replicas).await?;
    let incarnation = announce(&js, &config.node).await?;
    // Loaded after the announcement: the log is then kept from at most one
    // snapshot before this one (see `snapshot`'s trimming).
    let snapshot = load_snapshot(&bucket).await?;
    let start = snapshot.as_ref().map_or(1, |s| s.seq + 1);
    tracing::info!(
        incarnation,
        node = config.node,
        from = start,
        "joined the cluster"
    );
    let (appender, to_append) = mpsc::channel(APPEND_QUEUE);
    let (read_tx, entries) = mpsc::channel(READ_QUEUE);
    // One snapshot waits at most: the hub skips one while another is written.
    let (snapshots, taken) = mpsc::channel(1);
    tracker.spawn(append_loop(js.clone(), incarnation, to_append));
    tracker.spawn(read_loop(js.clone(), start, limits, read_tx, shutdown));
    tracker.spawn(snapshot::write_loop(js, bucket, history, taken));
    Ok(Joined {
        incarnation,
        appender,
        entries,
        snapshot,
        snapshots,
    })
}

/// The newest snapshot, patiently: while a new stream elects its leader
/// a request for it may go unanswered, so each attempt is bounded.
async fn load_snapshot(
    bucket: &async_nats::jetstream::object_store::ObjectStore,
) -> Result<Option<Snapshot>, LogError> {
    let give_up = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        let error = match tokio::time::timeout(SNAPSHOT_PATIENCE, snapshot::load(bucket)).await {
            Ok(Ok(loaded)) => return Ok(loaded),
            // Bytes that do not decode will not decode the next time.
            Ok(Err(error @ snapshot::SnapshotError::Decode(_))) => return Err(error.into()),
            Ok(Err(error)) => error,
            Err(_) => snapshot::SnapshotError::Store(format!("no answer in {SNAPSHOT_PATIENCE:?}")),
        };
        if tokio::time::Instant::now() >= give_up {
            return Err(error.into());
        }
        tracing::debug!(%error, "snapshot not loaded yet");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The snapshot store, patiently (JetStream may be electing leaders).
async fn snapshot_bucket(
    js: &Context,
    replicas: usize,
) -> Result<async_nats::jetstream::object_store::ObjectStore, LogError> {
    let give_up = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        let made = tokio::time::timeout(SNAPSHOT_PATIENCE, snapshot::bucket(js, replicas)).await;
        let made = made.unwrap_or_else(|_| {
            Err(LogError::Stream(format!(
                "snapshot store: no answer in {SNAPSHOT_PATIENCE:?}"
            )))
        });
        match made {
            Ok(bucket) => return Ok(bucket),
            Err(error) if tokio::time::Instant::now() < give_up => {
                tracing::debug!(%error, "snapshot store not ready yet");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn connect(config: &ClusterConfig) -> Result<Context, LogError> {
    let addrs = config
        .nats
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>().map_err(|e| LogError::BadUrl {
                url: url.clone(),
                error: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The NATS servers may be starting too (a whole cluster brought up at
    // once): keep trying for a while.
    let give_up = tokio::time::Instant::now() + START_PATIENCE;
    let client = loop {
        let connected = async_nats::ConnectOptions::new()
            .name(format!("natter node {}", config.node))
            .connect(addrs.clone())
            .await;
        match connected {
            Ok(client) => break client,
            Err(error) if tokio::time::Instant::now() < give_up => {
                tracing::debug!(%error, "NATS not reachable yet");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => {
                return Err(LogError::Connect {
                    urls: config.nats.join(","),
                    error: error.to_string(),
                });
            }
        }
    };
    Ok(async_nats::jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .ack_timeout(ACK_TIMEOUT)
        .max_ack_inflight(WINDOW * 2)
        .build(client))
}

async fn ensure_stream(js: &Context, replicas: usize) -> Result<(), LogError> {
    let config = stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        num_replicas: replicas,
        storage: StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let give_up = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        // A request sent before JetStream has its meta leader can go
        // unanswered for the client's whole request timeout (10 s seen),
        // so each attempt is bounded, and retried soon.
        let made = match tokio::time::timeout(ACK_TIMEOUT, js.get_or_create_stream(config.clone()))
            .await
        {
            Ok(made) => made.map(|_| ()).map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer in {ACK_TIMEOUT:?}")),
        };
        match made {
            Ok(()) => return Ok(()),
            Err(error) if tokio::time::Instant::now() < give_up => {
                tracing::debug!(%error, "stream not ready yet");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => return Err(LogError::Stream(error.to_string())),
        }
    }
}

/// Appends this node's NodeUp: its stream sequence is the incarnation.
async fn announce(js: &Context, node: &str) -> Result<u64, LogError> {
    let id = format!("up-{node}-{:016x}", rand::random::<u64>());
    let message = PublishMessage::build()
        .payload(Entry::NodeUp { name: node.into() }.encode())
        .message_id(&id);
    let give_up = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        let acked = match js.send_publish(SUBJECT, message.clone()).await {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match acked {
            Ok(ack) => return Ok(ack.sequence),
            Err(error) if tokio::time::Instant::now() < give_up => {
                tracing::debug!(%error, "announcing the node");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => return Err(LogError::Join(error)),
        }
    }
}

/// An acknowledgment to wait for.
type AckFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// One publish not yet acknowledged.
struct Pending {
    message: PublishMessage,
    /// `None`: not sent (yet, or again after a failure).
    ack: Option<AckFuture>,
}

/// What woke the appender.
enum Woke {
    Acked(Result<PublishAck, PublishError>),
    Entries(usize),
    OutOfTime,
}

/// Publishes what the hub hands it. Whatever is queued when the appender
/// wakes goes as one log entry (a batch, up to [`MAX_BATCH`]), and it never
/// waits for an acknowledgment before publishing the next: up to
/// [`WINDOW`] publishes are in flight, acknowledged in order.
async fn append_loop(js: Context, incarnation: u64, mut entries: mpsc::Receiver<Entry>) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Set once the hub is gone (its sender dropped): what is left gets
    // this long to be published, then the appender stops.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        if closing.is_some() && pending.is_empty() {
            return;
        }
        if !send_unsent(&js, &mut pending).await {
            if closing.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
                return;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        }
        let woke = {
            let room = closing.is_none() && pending.len() < WINDOW;
            let front = pending.front_mut().and_then(|p| p.ack.as_mut());
            let acked = async {
                match front {
                    Some(ack) => ack.await,
                    None => std::future::pending().await,
                }
            };
            let out_of_time = async {
                match closing {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                acked = acked => Woke::Acked(acked),
                got = entries.recv_many(&mut batch, MAX_BATCH), if room => Woke::Entries(got),
                _ = out_of_time => Woke::OutOfTime,
            }
        };
        match woke {
            Woke::Acked(Ok(_)) => {
                pending.pop_front();
            }
            Woke::Acked(Err(error)) => {
                if closing.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
                    tracing::warn!(%error, left = pending.len(), "stopping with entries unpublished");
                    return;
                }
                tracing::warn!(%error, "cluster log did not acknowledge; publishing again");
                // Everything after the failure goes again, in order: the
                // stream and the replicas drop what they already have.
                for item in &mut pending {
                    item.ack = None;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Woke::Entries(0) => {
                closing = Some(tokio::time::Instant::now() + CLOSING_PATIENCE);
            }
            Woke::Entries(_) => {
                pending.push_back(to_publish(incarnation, &batch));
                batch.clear();
            }
            Woke::OutOfTime => {
                tracing::warn!(left = pending.len(), "stopping with entries unpublished");
                return;
            }
        }
    }
}

/// Publishes every pending entry not sent yet, in order; false if one
/// could not be.
async fn send_unsent(js: &Context, pending: &mut VecDeque<Pending>) -> bool {
    for item in pending.iter_mut().filter(|p| p.ack.is_none()) {
        match js.send_publish(SUBJECT, item.message.clone()).await {
            Ok(ack) => item.ack = Some(ack.into_future()),
            Err(error) => {
                tracing::warn!(%error, "publishing to the cluster log");
                return false;
            }
        }
    }
    true
}

/// `entries` as one publish. Its message id is the node's first input in
/// it, so that a retried publish is dropped by the stream's duplicate
/// window (entries without an input, heartbeats, need none).
fn to_publish(incarnation: u64, entries: &[Entry]) -> Pending {
    let mut message = PublishMessage::build().payload(Entry::encode_all(entries));
    let first_input = entries.iter().find_map(|entry| match entry {
        Entry::Input { seq, .. } => Some(*seq),
        _ => None,
    });
    if let Some(seq) = first_input {
        message = message.message_id(format!("{incarnation}-{seq}"));
    }
    Pending { message, ack: None }
}

async fn read_loop(
    js: Context,
    start: u64,
    limits: Limits,
    to_hub: mpsc::Sender<Logged>,
    shutdown: CancellationToken,
) {
    let mut next = start;
    loop {
        let read = read_from(&js, next, &limits, &to_hub, &shutdown).await;
        match read {
            Ok(Some(after)) => next = after,
            Ok(None) => return,
            Err((after, error)) => {
                next = after;
                tracing::warn!(%error, next, "reading the cluster log; starting again");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

/// Reads from stream sequence `start` on: `Ok(None)` when told to stop,
/// otherwise the sequence to go on from (and the error, if one ended it).
async fn read_from(
    js: &Context,
    start: u64,
    limits: &Limits,
    to_hub: &mpsc::Sender<Logged>,
    shutdown: &CancellationToken,
) -> Result<Option<u64>, (u64, String)> {
    let fail = |e: &dyn std::fmt::Display| (start, e.to_string());
    let follow = async {
        let stream = js.get_stream(STREAM).await.map_err(|e| fail(&e))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| fail(&e))?;
        consumer.messages().await.map_err(|e| fail(&e))
    };
    // While the stream elects a leader, these requests may hang: bounded.
    let mut messages = match tokio::time::timeout(READ_SILENCE, follow).await {
        Ok(messages) => messages?,
        Err(_) => return Err(fail(&format!("no consumer after {READ_SILENCE:?}"))),
    };
    let mut next = start;
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            message = tokio::time::timeout(READ_SILENCE, messages.next()) => message,
        };
        let message = match message {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => return Err((next, error.to_string())),
            Ok(None) => return Ok(Some(next)),
            Err(_) => {
                let error = format!("no entry for {READ_SILENCE:?}, though every node heartbeats");
                return Err((next, error));
            }
        };
        let Ok(info) = message.info() else {
            continue;
        };
        let seq = info.stream_sequence;
        if seq < next {
            continue;
        }
        let time = (info.published.unix_timestamp_nanos() / 1_000_000).max(0) as UnixMs;
        if seq > next {
            // Trimmed away under this node: it cannot go on, only start
            // again from the snapshot.
            let gap = EntryError::Gap {
                expected: next,
                got: seq,
            };
            let _ = to_hub
                .send(Logged {
                    seq,
                    time,
                    entry: Err(gap),
                })
                .await;
            return Ok(None);
        }
        let entry = Entry::decode(&message.payload, limits);
        next = seq + 1;
        if to_hub.send(Logged { seq, time, entry }).await.is_err() {
            return Ok(None);
        }
    }
}
