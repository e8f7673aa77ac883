//! The hub's side of a cluster: inputs go to the log instead of the chat
//! state, and entries read back from the log are applied to it.
//!
//! A local client's commands take a round trip through the stream before
//! they change anything, here or on any other node. Its queries (LIST,
//! LIST_USERS, HISTORY) change nothing and are answered here, but only once
//! its earlier inputs have come back, so it still sees its own effects in
//! the order it sent them.

use std::collections::{HashMap, VecDeque};

use natter_core::ConnId;
use natter_proto::Command;
use tokio::sync::{mpsc, oneshot};

use super::Hub;
use crate::cluster::CatchUp;
use crate::cluster::entry::{Entry, EntryError, Input, incarnation_of};
use crate::cluster::log::{ClusterConfig, Joined, Logged};
use crate::cluster::replica::Replica;
use crate::cluster::snapshot::Taken;
use crate::metrics::Disconnect;
use accounts::AccountsInLog;

mod accounts;

/// Entries the appender's queue had no room for may wait here up to this
/// many; past it the hub stops reading its clients until the log catches
/// up.
pub(super) const MAX_OVERFLOW: usize = 1024;

/// Queries one connection may have waiting for its earlier inputs; past it
/// the connection is cut off like a slow consumer.
const MAX_HELD_QUERIES: usize = 64;

pub(super) struct Clustered {
    incarnation: u64,
    appender: mpsc::Sender<Entry>,
    /// Entries waiting for room in the appender's queue, in order.
    overflow: VecDeque<Entry>,
    /// The seq of this node's next input.
    next_seq: u64,
    replica: Replica,
    /// Local connections with inputs not yet back from the log, and the
    /// queries waiting for them.
    in_flight: HashMap<ConnId, InFlight>,
    /// Told once the hub has applied the log up to this node's NodeUp:
    /// from then on its copy is current, and clients may come in.
    ready: Option<oneshot::Sender<CatchUp>>,
    /// How this node is catching up (until `ready` is told).
    catch_up: CatchUp,
    /// Entries between snapshots, and where taken ones go.
    snapshot_every: u64,
    snapshots: mpsc::Sender<Taken>,
    /// A snapshot waiting for the store to commit what it covers (the
    /// ticket of the last facts before it).
    snapshot_waiting: Option<(u64, Taken)>,
    /// This node's account changes on their way through the log.
    accounts: AccountsInLog,
    pub(super) heartbeat: std::time::Duration,
    pub(super) entries: Option<mpsc::Receiver<Logged>>,
}

#[derive(Default)]
struct InFlight {
    inputs: u32,
    queries: VecDeque<Command>,
}

impl Clustered {
    /// The replica goes on from the snapshot `joined` loaded, if any (the
    /// chat state was seeded from it already).
    pub(super) fn new(
        joined: Joined,
        config: &ClusterConfig,
        rejoin_grace: natter_core::UnixMs,
        limits: &natter_proto::Limits,
        ready: oneshot::Sender<CatchUp>,
    ) -> Self {
        let timeout = config.node_timeout.as_millis() as natter_core::UnixMs;
        let (replica, catch_up) = match joined.snapshot {
            Some(snapshot) => (
                Replica::import(timeout, rejoin_grace, snapshot.replica, limits),
                CatchUp {
                    snapshot: Some(snapshot.seq),
                    replayed: 0,
                },
            ),
            None => (
                Replica::new(timeout, rejoin_grace),
                CatchUp {
                    snapshot: None,
                    replayed: 0,
                },
            ),
        };
        Clustered {
            incarnation: joined.incarnation,
            appender: joined.appender,
            overflow: VecDeque::new(),
            next_seq: 1,
            replica,
            in_flight: HashMap::new(),
            ready: Some(ready),
            catch_up,
            snapshot_every: config.snapshot_every.max(1),
            snapshots: joined.snapshots,
            snapshot_waiting: None,
            accounts: AccountsInLog::default(),
            heartbeat: config.heartbeat,
            entries: Some(joined.entries),
        }
    }

    /// Whether the hub may read more from its clients.
    pub(super) fn keeping_up(&self) -> bool {
        self.overflow.len() < MAX_OVERFLOW
    }

    /// Hands `input` of a local connection to the appender.
    pub(super) fn append_input(&mut self, input: Input) {
        self.in_flight.entry(input.conn()).or_default().inputs += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.append(Entry::Input { seq, input });
    }

    /// At shutdown: tells the others this node stops, so that its users
    /// are offline everywhere at once rather than after the timeout.
    pub(super) fn append_leaving(&mut self) {
        let incarnation = self.incarnation;
        self.append(Entry::NodeDown { incarnation });
    }

    pub(super) fn append_heartbeat(&mut self) {
        let incarnation = self.incarnation;
        self.append(Entry::Heartbeat { incarnation });
    }

    fn append(&mut self, entry: Entry) {
        self.overflow.push_back(entry);
        self.drain_overflow();
    }

    /// Moves waiting entries into the appender's queue while it has room.
    pub(super) fn drain_overflow(&mut self) {
        while let Some(entry) = self.overflow.pop_front() {
            match self.appender.try_send(entry) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(entry)) => {
                    self.overflow.push_front(entry);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // Stopping: nothing will be appended any more.
                    self.overflow.clear();
                    break;
                }
            }
        }
    }

    fn is_local(&self, conn: ConnId) -> bool {
        incarnation_of(conn) == self.incarnation
    }
}

/// Whether a command only reads the chat state.
fn is_query(command: &Command) -> bool {
    matches!(
        command,
        Command::ListConversations | Command::ListUsers { .. } | Command::History { .. }
    )
}

/// What applying the log decided about this node.
pub(super) enum Applied {
    Fine,
    /// The others declared this node down: its clients are gone from every
    /// copy, so it must stop serving them.
    LostCluster,
}

impl Hub {
    /// A local client's command: to the log, or (a query) answered here
    /// once its earlier inputs are applied.
    pub(super) fn command_to_log(&mut self, conn: ConnId, command: Command) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if !is_query(&command) {
            return cluster.append_input(Input::Command(conn, command));
        }
        match cluster.in_flight.get_mut(&conn) {
            None => {
                self.chat.handle(conn, command, &mut self.outputs);
                self.dispatch();
            }
            Some(waiting) if waiting.queries.len() < MAX_HELD_QUERIES => {
                waiting.queries.push_back(command)
            }
            Some(_) => {
                self.doomed.push((conn, Disconnect::RateLimit));
                self.dispatch();
            }
        }
    }

    /// Applies `first` and what else the reader has ready, up to a batch.
    pub(super) fn apply_log_batch(
        &mut self,
        first: Logged,
        entries: &mut Option<mpsc::Receiver<Logged>>,
    ) -> Applied {
        if let Applied::LostCluster = self.apply_logged(first) {
            return Applied::LostCluster;
        }
        for _ in 1..super::MAX_BATCH {
            let Some(logged) = entries.as_mut().and_then(|e| e.try_recv().ok()) else {
                break;
            };
            if let Applied::LostCluster = self.apply_logged(logged) {
                return Applied::LostCluster;
            }
        }
        Applied::Fine
    }

    /// Applies one entry read back from the log.
    fn apply_logged(&mut self, logged: Logged) -> Applied {
        let Some(cluster) = &mut self.cluster else {
            return Applied::Fine;
        };
        if cluster.ready.is_some() {
            cluster.catch_up.replayed += 1;
        }
        let entry = match logged.entry {
            Ok(entry) => entry,
            Err(error @ EntryError::Gap { .. }) => {
                tracing::error!(%error, "this node fell behind the cluster log");
                return Applied::LostCluster;
            }
            Err(error) => {
                tracing::warn!(seq = logged.seq, %error, "skipping a cluster log entry");
                return Applied::Fine;
            }
        };
        let down = cluster.replica.advance(logged.time);
        if down.contains(&cluster.incarnation) {
            return Applied::LostCluster;
        }
        self.chat.set_time(cluster.replica.clock());
        self.drop_nodes(&down);
        match entry {
            Entry::Batch(entries) => {
                for entry in entries {
                    self.apply_entry(logged.seq, entry);
                }
            }
            entry => self.apply_entry(logged.seq, entry),
        }
        let Some(cluster) = &mut self.cluster else {
            return Applied::Fine;
        };
        // After the entry: a node that left in it starts its users' grace.
        if cluster.replica.grace_over() {
            self.chat.end_rejoin_grace(&mut self.outputs);
        }
        if logged.seq >= cluster.incarnation
            && let Some(ready) = cluster.ready.take()
        {
            tracing::info!(
                snapshot = cluster.catch_up.snapshot,
                replayed = cluster.catch_up.replayed,
                "caught up with the cluster log"
            );
            let _ = ready.send(cluster.catch_up);
        }
        self.dispatch();
        self.take_snapshot(logged.seq);
        Applied::Fine
    }

    /// One entry (of a batch, perhaps) of log entry `log_seq`.
    fn apply_entry(&mut self, log_seq: u64, entry: Entry) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let mut ready = Vec::new();
        match entry {
            Entry::NodeUp { name } => cluster.replica.node_up(log_seq, name),
            Entry::Heartbeat { incarnation } => cluster.replica.heartbeat(incarnation),
            Entry::NodeDown { incarnation } => {
                if incarnation != cluster.incarnation && cluster.replica.leave(incarnation) {
                    self.drop_nodes(&[incarnation]);
                }
            }
            Entry::Input { seq, input } => {
                let incarnation = incarnation_of(input.conn());
                cluster.replica.input(incarnation, seq, input, &mut ready);
            }
            Entry::Batch(_) => {} // never nested (the decoder refuses it)
        }
        for input in ready {
            self.apply_input(input);
        }
    }

    /// The nodes of these incarnations are down: their connections are
    /// lost, in every copy at the same entry.
    fn drop_nodes(&mut self, down: &[u64]) {
        if down.is_empty() {
            return;
        }
        for conn in self.chat.connection_ids() {
            if down.contains(&incarnation_of(conn)) {
                self.chat.connection_lost(conn, &mut self.outputs);
            }
        }
    }

    /// After entry `seq`: the oldest live node takes a snapshot every
    /// `snapshot_every` entries, once it is caught up (see
    /// `cluster/snapshot.rs`). It is written once the store has committed
    /// the history it covers.
    fn take_snapshot(&mut self, seq: u64) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.ready.is_some()
            || !seq.is_multiple_of(cluster.snapshot_every)
            || cluster.replica.snapshot_writer() != Some(cluster.incarnation)
        {
            return;
        }
        let taken = Taken {
            seq,
            replica: cluster.replica.export(),
            chat: self.chat.export_live(),
            accounts: self.auth.export(),
        };
        // A newer snapshot replaces one still waiting for the store.
        cluster.snapshot_waiting = Some((self.durability.current_ticket(), taken));
        self.release_snapshot();
    }

    /// Hands a waiting snapshot to the writer once the store has finished
    /// the facts before it.
    pub(super) fn release_snapshot(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let finished = self.durability.finished();
        if cluster
            .snapshot_waiting
            .as_ref()
            .is_none_or(|(ticket, _)| *ticket > finished)
        {
            return;
        }
        let (_, taken) = cluster.snapshot_waiting.take().expect("checked above");
        if cluster.snapshots.try_send(taken).is_err() {
            tracing::debug!("skipping a snapshot: the previous one is still being written");
        }
    }

    fn apply_input(&mut self, input: Input) {
        let conn = input.conn();
        let account = matches!(input, Input::Account(..));
        match input {
            Input::Connect(conn) => self.chat.connect(conn),
            Input::Command(conn, command) => {
                let registering = matches!(command, Command::Register { .. });
                self.chat.handle(conn, command, &mut self.outputs);
                if registering
                    && let Some(peer) = self.peers.get(&conn)
                    && let Some(name) = self.chat.user_name(conn)
                {
                    tracing::info!(conn = conn.0, peer = %peer.addr, name, "register");
                }
            }
            Input::Disconnect(conn) => self.chat.disconnect(conn, &mut self.outputs),
            Input::Account(conn, change) => self.apply_account(conn, change),
        }
        self.input_applied(conn);
        if account {
            self.account_applied(conn);
        }
    }

    /// One of `conn`'s inputs is applied: its waiting queries go once none
    /// is left in flight.
    fn input_applied(&mut self, conn: ConnId) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if !cluster.is_local(conn) {
            return;
        }
        let Some(waiting) = cluster.in_flight.get_mut(&conn) else {
            return;
        };
        waiting.inputs = waiting.inputs.saturating_sub(1);
        if waiting.inputs > 0 {
            return;
        }
        let queries = cluster
            .in_flight
            .remove(&conn)
            .map(|w| w.queries)
            .unwrap_or_default();
        for query in queries {
            if self.peers.contains_key(&conn) {
                self.chat.handle(conn, query, &mut self.outputs);
            }
        }
    }
}
