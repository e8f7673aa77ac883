//! The threads that keep the hub off the disk.
//!
//! The hub never waits for a commit: it sends each batch of facts to the
//! writer thread with a ticket and goes on; it holds the deliveries that
//! reveal those facts until [`Reply::Committed`] says the ticket is
//! durable. So the disk's latency delays only the messages that need it.
//!
//! **Group commit.** The writer blocks for one batch, then takes every
//! batch already queued behind it and commits them all in one transaction
//! with one fsync. Under light load a batch is committed alone, at once;
//! under heavy load the batches that piled up during one fsync share the
//! next, so throughput grows with load instead of being capped at one
//! fsync per batch.
//!
//! **Failures.** If a transaction fails (disk full, read-only, I/O error)
//! nothing of it is stored. Its messages are reported lost in
//! [`Reply::Failed`] (their senders are told; they are never delivered);
//! every other fact (a conversation created, a member joined) is kept and
//! retried at the head of the next transaction, because the chat state has
//! already moved on and the store must catch up with it when the disk
//! recovers.
//!
//! **Room in the log.** While nothing is queued, the writer writes zeros
//! ahead of the WAL's end ([`crate::wal_room`]), so that commits overwrite
//! it instead of making it longer, which would cost each fsync a second
//! write (the file's size).
//!
//! **Retention.** With `history_days > 0` the writer deletes old messages
//! at start and about hourly, [`PRUNE_CHUNK`] at a time and only while no
//! batch is waiting, so a commit waits at most for one chunk.
//!
//! A second thread owns a [`Reader`] and answers `HISTORY` in order; in WAL
//! mode it never waits for the writer.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use natter_core::facts::{Fact, StoredMessage, UnixMs};
use natter_proto::ConvId;
use tokio::sync::mpsc::{self, error::TryRecvError};
use tracing::{debug, error, info, warn};

use crate::error::StoreError;
use crate::reader::Reader;
use crate::store::{PRUNE_CHUNK, Store};

/// Batches that may wait for the writer before the hub's `send` waits.
pub const BATCH_QUEUE: usize = 4096;
/// History requests that may wait for the reader.
pub const HISTORY_QUEUE: usize = 1024;
/// A group commit stops taking queued batches once it holds this many
/// facts, so one transaction (and the wait of its first batch) stays short.
pub const MAX_GROUP_FACTS: usize = 32 * 1024;
/// How often retention runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How soon, with nothing else to commit, the writer tries again to store
/// the facts a failed transaction kept (the disk may be back).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Facts to commit, with the hub's ticket for them.
#[derive(Debug)]
pub struct Batch {
    /// Strictly increasing from one batch to the next.
    pub ticket: u64,
    pub facts: Vec<Fact>,
}

/// A `HISTORY` to answer; `tag` comes back in the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRequest {
    pub tag: u64,
    pub conv: ConvId,
    pub before_seq: u64,
    pub limit: usize,
}

/// What the store threads tell the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Every ticket `<= up_to` is durable, except those reported in a
    /// [`Reply::Failed`].
    Committed { up_to: u64 },
    /// Tickets `first..=last` could not be stored. `lost` are their
    /// messages (not stored, never will be); their other facts are kept
    /// and retried at the head of the next transaction (or alone, after
    /// [`RETRY_INTERVAL`], if no batch comes). `kept`: facts wait to be
    /// retried, so what reveals them must wait for the next `Committed`,
    /// which covers the retry.
    Failed {
        first: u64,
        last: u64,
        error: String,
        lost: Vec<Arc<StoredMessage>>,
        kept: bool,
    },
    History {
        tag: u64,
        conv: ConvId,
        result: Result<Vec<StoredMessage>, String>,
    },
    /// The writer thread died (a panic): nothing sent to it since its last
    /// reply will be answered, and nothing more can be stored.
    WriterStopped,
}

#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Delete messages older than this many days (0: keep forever).
    pub history_days: u32,
    /// Told how long each group commit took (the server's metrics).
    pub on_commit: CommitObserver,
}

/// Something told the duration of every group commit, succeeded or failed,
/// on the writer thread: it must be quick.
#[derive(Clone, Default)]
pub struct CommitObserver(Option<Arc<dyn Fn(Duration) + Send + Sync>>);

impl CommitObserver {
    pub fn new(observe: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        CommitObserver(Some(Arc::new(observe)))
    }

    fn observe(&self, took: Duration) {
        if let Some(observe) = &self.0 {
            observe(took);
        }
    }
}

impl std::fmt::Debug for CommitObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "CommitObserver(Some)"
        } else {
            "CommitObserver(None)"
        })
    }
}

/// The running store threads and the queues to them.
pub struct Worker {
    pub batches: mpsc::Sender<Batch>,
    pub history: mpsc::Sender<HistoryRequest>,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
}

/// Spawns the writer thread, which owns `store`, and a reader thread with
/// `store.reader()`. Both answer on `replies`.
pub fn spawn(
    store: Store,
    options: WorkerOptions,
    replies: mpsc::Sender<Reply>,
) -> Result<Worker, StoreError> {
    let reader = store.reader()?;
    let (batches, batch_rx) = mpsc::channel(BATCH_QUEUE);
    let (history, history_rx) = mpsc::channel(HISTORY_QUEUE);
    let writer = Writer::new(store, options, batch_rx, replies.clone())?;
    let obituary = Obituary(replies.clone());
    let writer = start_thread("writer", move || {
        let _obituary = obituary;
        writer.run()
    })?;
    let reader = start_thread("reader", move || serve_history(reader, history_rx, replies))?;
    Ok(Worker {
        batches,
        history,
        writer,
        reader,
    })
}

impl Worker {
    /// Closes the queues, lets the threads finish what is queued, and waits
    /// for them. (Clones of the senders held elsewhere keep the threads
    /// running until they are dropped too.)
    pub fn shutdown(self) {
        let Worker {
            batches,
            history,
            writer,
            reader,
        } = self;
        drop((batches, history));
        for (name, thread) in [("writer", writer), ("reader", reader)] {
            if thread.join().is_err() {
                error!("store {name} thread panicked");
            }
        }
    }
}

/// Tells the hub if the writer thread unwinds: its batches in flight would
/// otherwise wait for a commit forever, silently.
struct Obituary(mpsc::Sender<Reply>);

impl Drop for Obituary {
    fn drop(&mut self) {
        if thread::panicking() {
            error!("the store writer thread panicked");
            let _ = self.0.blocking_send(Reply::WriterStopped);
        }
    }
}

fn start_thread(
    name: &'static str,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, StoreError> {
    thread::Builder::new()
        .name(format!("natter-store-{name}"))
        .spawn(body)
        .map_err(|source| StoreError::Thread { name, source })
}

/// The writer thread's state.
struct Writer {
    store: Store,
    batches: mpsc::Receiver<Batch>,
    replies: mpsc::Sender<Reply>,
    /// Non-message facts of failed transactions, to go first in the next.
    retry: Vec<Fact>,
    /// When to try `retry` alone if no batch comes first.
    retry_at: Option<Instant>,
    /// The highest ticket received: a retry alone that succeeds confirms
    /// up to it.
    last_ticket: u64,
    retention: Option<Retention>,
    on_commit: CommitObserver,
    /// For waiting on the queue with a timeout (the next prune).
    runtime: tokio::runtime::Runtime,
}

/// Retention's schedule.
struct Retention {
    keep: Duration,
    /// When the next pass starts.
    next: Instant,
    /// A pass is under way: more chunks to delete when the queue is idle.
    busy: bool,
}

/// What the writer waits for next.
enum Next {
    Batch(Batch),
    /// Time to prune (nothing queued).
    Idle,
    /// Every sender is gone and the queue is empty.
    Closed,
}

impl Writer {
    fn new(
        store: Store,
        options: WorkerOptions,
        batches: mpsc::Receiver<Batch>,
        replies: mpsc::Sender<Reply>,
    ) -> Result<Writer, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|source| StoreError::Thread {
                name: "writer",
                source,
            })?;
        let retention = (options.history_days > 0).then(|| Retention {
            keep: Duration::from_secs(u64::from(options.history_days) * 86_400),
            next: Instant::now(),
            busy: false,
        });
        Ok(Writer {
            store,
            batches,
            replies,
            retry: Vec::new(),
            retry_at: None,
            last_ticket: 0,
            retention,
            on_commit: options.on_commit,
            runtime,
        })
    }

    fn run(mut self) {
        loop {
            match self.next() {
                Next::Batch(first) => self.group_commit(first),
                Next::Idle => self.idle_work(),
                Next::Closed => break,
            }
        }
        self.flush_retry();
    }

    /// At shutdown: one last try for facts kept from failed transactions.
    fn flush_retry(&mut self) {
        if self.retry.is_empty() {
            return;
        }
        if let Err(e) = self.store.commit(&self.retry) {
            error!(facts = self.retry.len(), error = %e, "store closing with facts it could not write");
        }
    }

    /// The next batch, or `Idle` when a retry or retention is due and
    /// nothing waits.
    fn next(&mut self) -> Next {
        let now = Instant::now();
        let prune_in = self.retention.as_ref().map(|r| {
            if r.busy {
                Duration::ZERO
            } else {
                r.next.saturating_duration_since(now)
            }
        });
        let retry_in = self.retry_at.map(|at| at.saturating_duration_since(now));
        let room_in = self.store.wants_wal_room().then_some(Duration::ZERO);
        let due_in = [prune_in, retry_in, room_in].into_iter().flatten().min();
        let received = match due_in {
            None => self.batches.blocking_recv(),
            Some(Duration::ZERO) => match self.batches.try_recv() {
                Ok(batch) => Some(batch),
                Err(TryRecvError::Empty) => return Next::Idle,
                Err(TryRecvError::Disconnected) => None,
            },
            Some(wait) => {
                // The timer must be made inside the runtime: outside, tokio
                // has no clock to give it, and panics.
                let batches = &mut self.batches;
                let recv = async move { tokio::time::timeout(wait, batches.recv()).await };
                match self.runtime.block_on(recv) {
                    Ok(batch) => batch,
                    Err(_elapsed) => return Next::Idle,
                }
            }
        };
        received.map_or(Next::Closed, Next::Batch)
    }

    /// With nothing queued: the kept facts' retry if due, else room ahead
    /// of the WAL if wanted, else retention.
    fn idle_work(&mut self) {
        if self.retry_at.is_some_and(|at| at <= Instant::now()) {
            self.retry_alone();
        } else if self.store.wants_wal_room() {
            if let Err(e) = self.store.make_wal_room() {
                debug!(error = %e, "no room made ahead of the WAL");
            }
        } else {
            self.prune_chunk();
        }
    }

    /// Stores the kept facts of failed transactions on their own; once they
    /// are, every ticket received so far is finished (committed or failed),
    /// and the hub may release what revealed those facts.
    fn retry_alone(&mut self) {
        let started = Instant::now();
        let committed = self.store.commit(&self.retry);
        self.on_commit.observe(started.elapsed());
        match committed {
            Ok(()) => {
                info!(
                    facts = self.retry.len(),
                    "stored the facts kept from failed commits"
                );
                self.retry.clear();
                self.retry_at = None;
                self.reply(Reply::Committed {
                    up_to: self.last_ticket,
                });
            }
            Err(e) => {
                debug!(facts = self.retry.len(), error = %e, "the kept facts still cannot be stored");
                self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
            }
        }
    }

    /// Commits `first` and every batch queued behind it in one transaction.
    fn group_commit(&mut self, first: Batch) {
        let mut group = vec![first];
        let mut facts = group[0].facts.len();
        while facts < MAX_GROUP_FACTS {
            match self.batches.try_recv() {
                Ok(batch) => {
                    facts += batch.facts.len();
                    group.push(batch);
                }
                Err(_) => break,
            }
        }
        self.last_ticket = group.last().map_or(self.last_ticket, |b| b.ticket);
        let all = self.retry.iter().chain(group.iter().flat_map(|b| &b.facts));
        let started = Instant::now();
        let committed = self.store.commit_all(all);
        self.on_commit.observe(started.elapsed());
        let reply = match committed {
            Ok(()) => {
                self.retry.clear();
                self.retry_at = None;
                Reply::Committed {
                    up_to: group.last().map_or(0, |b| b.ticket),
                }
            }
            Err(e) => self.failed(group, e),
        };
        self.reply(reply);
    }

    /// Keeps what must be retried; reports the messages as lost.
    fn failed(&mut self, group: Vec<Batch>, error: StoreError) -> Reply {
        let first = group.first().map_or(0, |b| b.ticket);
        let last = group.last().map_or(0, |b| b.ticket);
        let mut lost = Vec::new();
        for fact in group.into_iter().flat_map(|b| b.facts) {
            match fact {
                Fact::MessageAccepted(message) => lost.push(message),
                other => self.retry.push(other),
            }
        }
        warn!(first, last, lost = lost.len(), retry = self.retry.len(), %error, "store commit failed");
        let kept = !self.retry.is_empty();
        if kept {
            self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
        }
        Reply::Failed {
            first,
            last,
            error: error.to_string(),
            lost,
            kept,
        }
    }

    /// One chunk of retention; schedules the next pass when done.
    fn prune_chunk(&mut self) {
        let Some(retention) = &mut self.retention else {
            return;
        };
        let cutoff = now_ms() - retention.keep.as_millis() as UnixMs;
        match self.store.prune_before(cutoff) {
            Ok(deleted) => {
                retention.busy = deleted == PRUNE_CHUNK as u64;
                if deleted > 0 {
                    info!(deleted, cutoff, "retention deleted old messages");
                }
            }
            Err(e) => {
                warn!(error = %e, "retention failed; trying again at the next pass");
                retention.busy = false;
            }
        }
        if !retention.busy {
            retention.next = Instant::now() + PRUNE_INTERVAL;
        }
    }

    fn reply(&self, reply: Reply) {
        // A hub that is gone has nobody to tell; the facts are stored anyway.
        let _ = self.replies.blocking_send(reply);
    }
}

/// The reader thread: answers history requests in order until the queue
/// closes.
fn serve_history(
    reader: Reader,
    mut requests: mpsc::Receiver<HistoryRequest>,
    replies: mpsc::Sender<Reply>,
) {
    while let Some(request) = requests.blocking_recv() {
        let result = reader
            .history(request.conv, request.before_seq, request.limit)
            .map_err(|e| e.to_string());
        let reply = Reply::History {
            tag: request.tag,
            conv: request.conv,
            result,
        };
        if replies.blocking_send(reply).is_err() {
            break;
        }
    }
}

fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as UnixMs)
}
