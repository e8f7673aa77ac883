//! The hub: the one task that owns the chat state and every client's
//! outgoing queue.
//!
//! Connection tasks decode bytes into [`HubEvent`]s and send them here over
//! one bounded channel; the hub applies them to [`Chat`] in arrival order
//! (which is what gives every member the same message order), encodes each
//! resulting message once per encoding in use, queues the shared bytes for
//! every recipient, and flushes all touched clients once per batch of
//! events. Nothing here blocks: a client whose socket is full waits in its
//! own small task, and a client whose queue passes the limit is cut off.
//!
//! With a store, the hub never waits for the disk either: the facts of one
//! pass go to the store thread as one batch, and the outputs after them
//! wait in [`Durability`] until the store says they are committed (see
//! `durability.rs`). Meanwhile the hub goes on applying events.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use natter_core::{Chat, ConnId, Output, Outputs, Recipients, StoredAccount, StoredMessage};
use natter_proto::{Command, Encoding, ServerMessage, codec::encode_message};
use natter_store::worker::{Batch, HistoryRequest, Reply, Worker};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{AdminAnswer, AdminRequest};
use crate::admission::AddressBans;
use crate::auth::Auth;
use crate::auth::pool::Pool;
use crate::cluster::entry::Input;
use crate::coalesce::Coalescer;
use crate::config::Config;
use crate::durability::{Durability, accepted_messages};
use crate::metrics::{Disconnect, ErrorKind, Metrics, Pass, Tally, command_index};
use crate::peer::{Flushed, Peer};

/// How many events the hub applies before it flushes what they produced.
/// Bounds the latency a batch adds while letting a busy hub write several
/// messages per system call.
const MAX_BATCH: usize = 256;

/// Capacity of the channel into the hub. When it is full, connection tasks
/// stop reading their sockets until the hub catches up.
pub const HUB_QUEUE: usize = 4096;

/// Most batches sent to the store and not yet committed. Past it the hub
/// stops taking events (so readers stop reading and TCP pushes back) until
/// the disk catches up: what waits for a slow disk stays bounded.
const MAX_UNCOMMITTED_BATCHES: u64 = 64;
/// Most outputs waiting for the store to retry the facts of failed commits
/// (while the disk is failing). Past it the hub stops taking events too.
const MAX_AWAITING_RETRY: usize = 65_536;

/// How long shutdown waits for the store to commit what is in flight.
const STORE_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What connection tasks tell the hub.
pub enum HubEvent {
    /// A client picked its encoding; from now on the hub writes to it.
    /// (Boxed: it happens once per connection, and every other event is
    /// far smaller.)
    Connected { conn: ConnId, peer: Box<Peer> },
    /// A client sent a valid command.
    Command { conn: ConnId, command: Command },
    /// A client sent something that could not be used; `fatal` when its
    /// stream can no longer be trusted and the connection must close.
    /// `kind` says why, for the metrics.
    Rejected {
        conn: ConnId,
        error: String,
        kind: ErrorKind,
        fatal: bool,
    },
    /// The client's stream ended or failed.
    Disconnected { conn: ConnId },
    /// A socket that was full can take bytes again.
    Writable { conn: ConnId },
    /// The wait for a full socket to drain could not even start (its
    /// descriptor could not be duplicated: the process is out of them).
    Unwritable { conn: ConnId },
    /// The hashing pool finished checking a secret for `conn`.
    AuthDone {
        conn: ConnId,
        outcome: crate::auth::Outcome,
    },
    /// The web page signs in, checks or ends a session over HTTP.
    Web(crate::auth::web::WebRequest),
    /// The hashing pool finished the job of a web sign-in.
    WebAuthDone {
        pending: crate::auth::web::Pending,
        outcome: crate::auth::Outcome,
    },
    /// Reloaded settings ([`Config::reloaded`]): the hub takes them
    /// between two events, and says so on `applied`.
    Reload {
        config: Arc<Config>,
        applied: oneshot::Sender<()>,
    },
    /// Asks how much state the hub holds (tests, leak checks, `/healthz`).
    Stats { reply: oneshot::Sender<HubStats> },
    /// An operator's request from the admin socket ([`crate::admin`]).
    Admin {
        request: AdminRequest,
        reply: oneshot::Sender<Result<AdminAnswer, String>>,
    },
    /// Test-only: makes the hub panic, to exercise [`crate::supervise`].
    #[doc(hidden)]
    PanicForTest,
}

/// How much the hub holds at one moment: after every client has gone, all
/// of it is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Connections the chat state knows (registered or not).
    pub connections: usize,
    /// Registered users.
    pub users: usize,
    pub conversations: usize,
    /// Clients the hub writes to.
    pub peers: usize,
    /// How long a client's first queued message may wait now for others to
    /// leave with it (zero unless the hub is loaded).
    pub write_window: std::time::Duration,
}

pub type HubSender = mpsc::Sender<HubEvent>;

/// What woke the hub.
enum Wake {
    Event(HubEvent),
    /// The write-coalescing window of the longest-waiting client ended.
    DeferredWrites,
    PresenceWindow,
    Registration,
    PresenceSnapshot,
    Store(Reply),
    RejoinGraceOver,
    /// Time for this cluster node's heartbeat.
    Heartbeat,
    /// An entry of the cluster log came back.
    Logged(crate::cluster::log::Logged),
}

/// Reused buffers keep at most this many entries' room once drained (more
/// than one input's outputs under load, far less than a flush to everyone).
const KEEP_CAPACITY: usize = 1024;

/// The text every client gets when the server stops.
pub const SHUTDOWN_MESSAGE: &str = "server shutting down";

pub struct Hub {
    chat: Chat,
    /// Boxed: a map keeps up to twice its length in slots, and a peer is
    /// some 200 bytes; a slot holding a pointer costs 16 (the peer arrives
    /// boxed anyway, in [`HubEvent::Connected`]).
    peers: HashMap<ConnId, Box<Peer>>,
    config: Arc<Config>,
    /// Reused for every input, so applying one allocates nothing here.
    outputs: Outputs,
    /// Peers with bytes queued since the last flush.
    dirty: Vec<ConnId>,
    /// Peers to cut off once the current outputs are dispatched, and why.
    doomed: Vec<(ConnId, Disconnect)>,
    /// End of the current presence coalescing window, if changes wait.
    presence_deadline: Option<Instant>,
    /// Connections with the time by which they must have registered,
    /// earliest first ("accepted + the same timeout", so nearly always
    /// arrival order).
    registration_deadlines: VecDeque<(Instant, ConnId)>,
    /// Decides how long a client's first queued message waits for more.
    coalescer: Coalescer,
    /// Clients whose flush waits for the write window, in the order their
    /// wait began (so the front is always due first), and when the front
    /// is due.
    deferred: VecDeque<ConnId>,
    deferred_deadline: Option<Instant>,
    /// Given to writability waiters, so they can report back.
    events: HubSender,
    tracker: TaskTracker,
    /// Facts on their way to the store and the outputs waiting for them.
    durability: Durability,
    /// The store threads (none with `--ephemeral`).
    store: Option<Worker>,
    /// When users from before a restart stop being awaited.
    rejoin_deadline: Option<Instant>,
    /// Accounts, sessions, failed attempts and the hashing pool.
    auth: Auth,
    /// Addresses an operator banned (shared with admission).
    address_bans: Arc<AddressBans>,
    /// Operators' answers waiting for the store to commit what their
    /// request changed (a ban is "done" once it is kept), by ticket.
    admin_waiting: Vec<(u64, AdminReply, AdminResult)>,
    /// With `--nats`: the replicated log inputs go through.
    cluster: Option<Clustered>,
    /// What this pass counted, published to `metrics` at its end.
    tally: Tally,
    metrics: Arc<Metrics>,
}

type AdminResult = Result<AdminAnswer, String>;
type AdminReply = oneshot::Sender<AdminResult>;

mod cluster;
mod identity;
mod moderation;
mod web_identity;

use cluster::{Applied, Clustered};

impl Hub {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chat: Chat,
        config: Arc<Config>,
        events: HubSender,
        tracker: TaskTracker,
        store: Option<Worker>,
        accounts: Vec<StoredAccount>,
        address_bans: Arc<AddressBans>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let write_coalesce = config.write_coalesce;
        let rejoin_deadline = chat
            .awaiting_rejoin()
            .then(|| Instant::now() + config.rejoin_grace);
        let pool = Pool::new(config.auth_threads, events.clone());
        Hub {
            auth: Auth::new(accounts, pool),
            chat,
            peers: HashMap::new(),
            config,
            outputs: Vec::new(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            presence_deadline: None,
            registration_deadlines: VecDeque::new(),
            coalescer: Coalescer::new(write_coalesce, std::time::Instant::now()),
            deferred: VecDeque::new(),
            deferred_deadline: None,
            events,
            tracker,
            durability: Durability::default(),
            store,
            rejoin_deadline,
            address_bans,
            admin_waiting: Vec::new(),
            cluster: None,
            tally: Tally::default(),
            metrics,
        }
    }

    /// Makes this hub a cluster node's: inputs go through the log of
    /// `joined`; `ready` is told once the copy has caught up with the log.
    pub fn clustered(
        mut self,
        joined: crate::cluster::log::Joined,
        config: &crate::cluster::ClusterConfig,
        ready: oneshot::Sender<crate::cluster::CatchUp>,
    ) -> Self {
        let grace = self.config.rejoin_grace.as_millis() as natter_core::UnixMs;
        let limits = self.config.limits.clone();
        // Other nodes deliver to their own clients: this copy need not
        // even build those deliveries.
        let own = crate::cluster::entry::conn_ids_of(joined.incarnation);
        self.chat.deliver_messages_within(own);
        self.cluster = Some(Clustered::new(joined, config, grace, &limits, ready));
        // The rejoin grace of a copy ends by the log's clock, never by this
        // node's timer (a snapshot may bring users awaited).
        self.rejoin_deadline = None;
        self
    }

    /// Runs until `shutdown` fires, then says goodbye to every client.
    /// `replies` come from the store threads, if there is a store.
    pub async fn run(
        mut self,
        mut inbox: mpsc::Receiver<HubEvent>,
        mut replies: Option<mpsc::Receiver<Reply>>,
        shutdown: CancellationToken,
    ) {
        let mut snapshot = presence_timer(&self.config);
        let mut snapshot_period = self.config.presence_interval;
        let mut entries = self.cluster.as_mut().and_then(|c| c.entries.take());
        let mut heartbeat = heartbeat_timer(self.cluster.as_ref().map(|c| c.heartbeat));
        loop {
            let presence = self.presence_deadline;
            let registration = self.registration_deadlines.front().map(|(at, _)| *at);
            let deferred = self.deferred_deadline;
            let rejoin = self.rejoin_deadline;
            let keeping_up = self.durability.backlog() < MAX_UNCOMMITTED_BATCHES
                && self.durability.awaiting_retry() < MAX_AWAITING_RETRY
                && self.cluster.as_ref().is_none_or(Clustered::keeping_up);
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(reply) = recv_opt(&mut replies) => Wake::Store(reply),
                _ = heartbeat.tick() => Wake::Heartbeat,
                Some(logged) = recv_opt(&mut entries), if keeping_up => Wake::Logged(logged),
                Some(event) = inbox.recv(), if keeping_up => Wake::Event(event),
                _ = sleep_until_opt(deferred), if deferred.is_some() => Wake::DeferredWrites,
                _ = sleep_until_opt(presence), if presence.is_some() => Wake::PresenceWindow,
                _ = sleep_until_opt(registration), if registration.is_some() => Wake::Registration,
                _ = snapshot.tick() => Wake::PresenceSnapshot,
                _ = sleep_until_opt(rejoin), if rejoin.is_some() => Wake::RejoinGraceOver,
            };
            let started = std::time::Instant::now();
            self.coalescer.pass_begins(started);
            self.chat.set_time(unix_ms());
            let mut events = None;
            match wake {
                Wake::Event(event) => {
                    self.apply(event);
                    let mut applied = 1;
                    while applied < MAX_BATCH {
                        match inbox.try_recv() {
                            Ok(event) => self.apply(event),
                            Err(_) => break,
                        }
                        applied += 1;
                    }
                    events = Some(applied);
                }
                Wake::DeferredWrites => self.end_write_window(),
                Wake::PresenceWindow => {
                    self.presence_deadline = None;
                    self.chat.flush_presence(&mut self.outputs);
                    self.dispatch();
                }
                Wake::Registration => self.expire_unregistered(),
                Wake::PresenceSnapshot => {
                    self.chat.presence_snapshot(&mut self.outputs);
                    self.dispatch();
                }
                Wake::Store(Reply::WriterStopped) => {
                    // Accepted messages can no longer become durable: stop
                    // (the server exits with an error, for its supervisor
                    // to restart it on the store, which lost nothing
                    // anyone saw) rather than hold every delivery forever.
                    tracing::error!("the store's writer thread stopped; the server stops");
                    break;
                }
                Wake::Store(reply) => self.store_replied(reply),
                Wake::Heartbeat => {
                    if let Some(cluster) = &mut self.cluster {
                        cluster.append_heartbeat();
                    }
                }
                Wake::Logged(logged) => {
                    if let Applied::LostCluster = self.apply_log_batch(logged, &mut entries) {
                        tracing::error!("the cluster declared this node down; it stops serving");
                        break;
                    }
                }
                Wake::RejoinGraceOver => {
                    self.rejoin_deadline = None;
                    self.chat.end_rejoin_grace(&mut self.outputs);
                    self.dispatch();
                }
            }
            if self.config.presence_interval != snapshot_period {
                // A reload changed it: the next snapshot is a new period away.
                snapshot = presence_timer(&self.config);
                snapshot_period = self.config.presence_interval;
            }
            if let Some(cluster) = &mut self.cluster {
                cluster.drain_overflow();
            }
            self.schedule_presence();
            self.submit_batch();
            self.flush_dirty(started);
            let now = std::time::Instant::now();
            if self.coalescer.record_work(started, now) {
                tracing::trace!(
                    demand = self.coalescer.demand(),
                    window_us = self.coalescer.window().as_micros() as u64,
                    "write coalescing"
                );
            }
            self.publish(events, now - started);
        }
        if let Some(cluster) = &mut self.cluster {
            // The appender publishes it (bounded) after the hub is gone.
            cluster.append_leaving();
        }
        self.drain_store(&mut replies).await;
        self.say_goodbye_to_all();
        self.publish(None, std::time::Duration::ZERO);
        if let Some(store) = self.store.take() {
            // Joining the store threads blocks; they have nothing left to do.
            let _ = tokio::task::spawn_blocking(move || store.shutdown()).await;
        }
    }

    /// Hands what this pass counted to the metrics registry.
    fn publish(&mut self, events: Option<usize>, busy: std::time::Duration) {
        let pass = Pass {
            events,
            busy,
            users: self.chat.user_count(),
            conversations: self.chat.conversation_count(),
        };
        self.metrics.publish(&mut self.tally, pass);
    }

    /// Sends the facts of this pass to the store as one batch.
    fn submit_batch(&mut self) {
        let Some((ticket, facts)) = self.durability.take_batch() else {
            return;
        };
        let Some(store) = &self.store else {
            // Facts without a store only come from a misconfigured chat
            // state; nothing would ever commit them.
            let mut released = Vec::new();
            self.durability.committed(ticket, &mut released);
            self.carry_out(released);
            return self.release_web_answers();
        };
        // The channel holds MAX_UNCOMMITTED_BATCHES; the inbox is not read
        // past that, so this cannot be full. If the store thread is gone,
        // fail the batch like a disk error: its messages are lost.
        if let Err(refused) = store.batches.try_send(Batch { ticket, facts }) {
            let reply = Reply::Failed {
                first: ticket,
                last: ticket,
                error: "the store thread stopped".into(),
                lost: accepted_messages(&refused.into_inner().facts),
                // Nothing will retry them: what waited goes now.
                kept: false,
            };
            self.store_replied(reply);
        }
    }

    /// A commit finished (or failed), or a HISTORY answer came back.
    fn store_replied(&mut self, reply: Reply) {
        let mut released = Vec::new();
        match reply {
            Reply::Committed { up_to } => {
                self.durability.committed(up_to, &mut released);
                self.answer_operators(up_to, None);
            }
            Reply::Failed {
                first,
                last,
                error,
                lost,
                // The writer retries those facts itself.
                kept: _,
            } if self.cluster.is_some() => {
                // A node's store is a cache of the log, which holds every
                // message: nothing is lost to the cluster, and this copy
                // must not diverge from the others (forgetting nonces,
                // refusing senders). So it delivers as if committed; only
                // its own HISTORY misses what it could not store, until a
                // restart rebuilds the cache from the log.
                tracing::error!(first, last, %error, missed = lost.len(),
                    "the node's history cache could not store a commit; its HISTORY misses these messages until the node restarts");
                self.answer_operators(last, Some((first, error.as_str())));
                self.durability.committed(last, &mut released);
            }
            Reply::Failed {
                first,
                last,
                error,
                lost,
                kept,
            } => {
                tracing::error!(first, last, %error, lost = lost.len(), "store commit failed");
                self.answer_operators(last, Some((first, error.as_str())));
                // Nothing made from now on can copy a lost message (its
                // nonce is forgotten); copies made before are dropped.
                for message in &lost {
                    self.chat.message_lost(message);
                }
                self.durability
                    .failed(first, last, &lost, kept, &mut released);
                self.tell_senders_not_stored(&lost, &error);
            }
            Reply::History { tag, conv, result } => {
                let message = match result {
                    Ok(stored) => ServerMessage::History {
                        conv,
                        entries: stored
                            .iter()
                            .map(natter_core::state::history_entry)
                            .collect(),
                    },
                    Err(error) => {
                        self.tally.error(ErrorKind::Store);
                        ServerMessage::Error(format!("history of {conv} not available: {error}"))
                    }
                };
                released.push(Output::Send {
                    to: Recipients::One(ConnId(tag)),
                    message: Arc::new(message),
                });
            }
            // The run loop and the drain stop on it before coming here.
            Reply::WriterStopped => {}
        }
        self.carry_out(released);
        self.release_web_answers();
        self.release_snapshot();
    }

    /// Answers the operators whose changes are now committed (tickets up
    /// to `up_to`); those in a failed range (from `first`) learn that the
    /// change holds only until a restart.
    fn answer_operators(&mut self, up_to: u64, failed: Option<(u64, &str)>) {
        if self.admin_waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.admin_waiting);
        for (ticket, reply, answer) in waiting {
            if ticket > up_to {
                self.admin_waiting.push((ticket, reply, answer));
                continue;
            }
            let answer = match failed {
                Some((first, error)) if ticket >= first => Err(format!(
                    "done, but the store could not keep it ({error}): \
                     it lasts only until the server restarts"
                )),
                _ => answer,
            };
            let _ = reply.send(answer);
        }
    }

    fn tell_senders_not_stored(&mut self, lost: &[Arc<StoredMessage>], error: &str) {
        for message in lost {
            if let Some(conn) = self.chat.user_conn(&message.sender_key) {
                self.tally.error(ErrorKind::Store);
                let text = format!(
                    "message not stored in conversation {} (the server could not write it: {error}); \
                     nobody received it, send it again",
                    message.conv
                );
                self.outputs.push(Output::Send {
                    to: Recipients::One(conn),
                    message: Arc::new(ServerMessage::Error(text)),
                });
            }
        }
        self.dispatch();
    }

    /// At shutdown: commits what is gathered and waits (bounded) for the
    /// store, so that what was accepted is delivered before the goodbye.
    async fn drain_store(&mut self, replies: &mut Option<mpsc::Receiver<Reply>>) {
        if self.store.is_none() {
            return;
        }
        self.submit_batch();
        let deadline = Instant::now() + STORE_DRAIN_TIMEOUT;
        while self.durability.backlog() > 0 {
            match tokio::time::timeout_at(deadline, recv_opt(replies)).await {
                Ok(Some(Reply::WriterStopped)) => {
                    tracing::error!("the store's writer thread stopped during the drain");
                    break;
                }
                Ok(Some(reply)) => self.store_replied(reply),
                _ => {
                    tracing::warn!(
                        "store did not finish in time; undelivered messages stay stored"
                    );
                    break;
                }
            }
        }
        self.flush_dirty(std::time::Instant::now());
    }

    /// Applies one event; with no coalescing window, its presence change
    /// (an arrival, a status, a departure) goes out right away.
    fn apply(&mut self, event: HubEvent) {
        self.apply_event(event);
        if self.config.presence_coalesce.is_zero() && self.chat.presence_pending() {
            self.chat.flush_presence(&mut self.outputs);
            self.dispatch();
        }
    }

    fn apply_event(&mut self, event: HubEvent) {
        match event {
            HubEvent::Connected { conn, peer } => {
                tracing::info!(conn = conn.0, peer = %peer.addr, encoding = ?peer.encoding, "connect");
                self.tally.opened(peer.transport(), peer.encoding);
                match &mut self.cluster {
                    Some(cluster) => cluster.append_input(Input::Connect(conn)),
                    None => self.chat.connect(conn),
                }
                let deadline = peer.accepted + self.config.register_timeout;
                self.peers.insert(conn, peer);
                if !self.config.register_timeout.is_zero() {
                    let deadlines = &mut self.registration_deadlines;
                    let at = deadlines.partition_point(|(d, _)| *d <= deadline);
                    deadlines.insert(at, (deadline, conn));
                }
            }
            HubEvent::Command { conn, command } => self.apply_command(conn, command),
            HubEvent::AuthDone { conn, outcome } => self.auth_done(conn, outcome),
            HubEvent::Web(request) => self.web_request(request),
            HubEvent::WebAuthDone { pending, outcome } => self.web_auth_done(pending, outcome),
            HubEvent::Rejected {
                conn,
                error,
                kind,
                fatal,
            } => {
                self.send_error(conn, error, kind);
                if fatal {
                    self.close_after_error(conn, kind.disconnect());
                }
            }
            HubEvent::Disconnected { conn } => {
                self.auth.forget(conn);
                if let Some(peer) = self.remove_peer(conn, Disconnect::Client) {
                    tracing::info!(conn = conn.0, peer = %peer.addr, "disconnect");
                    peer.abort();
                    self.depart(conn);
                }
            }
            HubEvent::Stats { reply } => {
                let _ = reply.send(HubStats {
                    connections: self.chat.connection_count(),
                    users: self.chat.user_count(),
                    conversations: self.chat.conversation_count(),
                    peers: self.peers.len(),
                    write_window: self.coalescer.window(),
                });
            }
            HubEvent::Reload { config, applied } => {
                self.reconfigure(config);
                let _ = applied.send(());
            }
            HubEvent::Admin { request, reply } => {
                let answer = self.admin(request);
                let ticket = self.durability.current_ticket();
                if ticket <= self.durability.finished() {
                    let _ = reply.send(answer);
                } else {
                    self.admin_waiting.push((ticket, reply, answer));
                }
            }
            HubEvent::PanicForTest => panic!("the hub was told to panic (a test hook)"),
            HubEvent::Unwritable { conn } => {
                self.doomed.push((conn, Disconnect::WriteFailed));
                self.dispatch();
            }
            HubEvent::Writable { conn } => {
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.awaiting_writable = false;
                    if !peer.dirty {
                        peer.dirty = true;
                        self.dirty.push(conn);
                    }
                }
            }
        }
    }

    /// Takes reloaded settings. Most are read where they are used (queue
    /// bounds, timeouts, presence timing); the chat state and the write
    /// coalescer keep copies, updated here.
    fn reconfigure(&mut self, config: Arc<Config>) {
        self.chat.reconfigure(config.policy, config.limits.clone());
        self.coalescer.set_max_window(config.write_coalesce);
        self.config = config;
    }

    fn apply_command(&mut self, conn: ConnId, command: Command) {
        let Some(peer) = self.peers.get(&conn) else {
            return; // already cut off; its reader had this in flight
        };
        let addr = peer.addr;
        self.tally.commands[command_index(&command)] += 1;
        if matches!(command, Command::Goodbye) {
            self.tally.disconnect(Disconnect::Goodbye);
        }
        let Some(command) = self.identity_command(conn, command) else {
            return;
        };
        if self.cluster.is_some() {
            return self.command_to_log(conn, command);
        }
        let registering = matches!(command, Command::Register { .. });
        let before = self.outputs.len();
        self.chat.handle(conn, command, &mut self.outputs);
        self.count_refusals(before);
        if registering && let Some(name) = self.chat.user_name(conn) {
            tracing::info!(conn = conn.0, peer = %addr, name, "register");
        }
        self.dispatch();
    }

    /// Counts the ERRORs among the chat state's outputs from `from` on: it
    /// sends them for commands it refuses.
    fn count_refusals(&mut self, from: usize) {
        let refusals = self.outputs[from..]
            .iter()
            .filter(|output| {
                matches!(output, Output::Send { message, .. }
                    if matches!(**message, ServerMessage::Error(_)))
            })
            .count();
        self.tally.errors[ErrorKind::Refused as usize] += refusals as u64;
    }

    /// Takes a peer out of the hub (the caller closes it), counting why.
    fn remove_peer(&mut self, conn: ConnId, why: Disconnect) -> Option<Box<Peer>> {
        let mut peer = self.peers.remove(&conn)?;
        self.tally.disconnect(why);
        self.peer_gone(&mut peer);
        Some(peer)
    }

    /// Counts a peer the hub no longer holds.
    fn peer_gone(&mut self, peer: &mut Peer) {
        let transport = peer.transport();
        self.tally.closed(transport, peer.encoding);
        self.tally.sent(transport, peer.take_written());
    }

    /// Closes connections that did not register in time.
    fn expire_unregistered(&mut self) {
        let now = Instant::now();
        while let Some(&(deadline, conn)) = self.registration_deadlines.front() {
            if deadline > now {
                break;
            }
            self.registration_deadlines.pop_front();
            if self.peers.contains_key(&conn) && self.chat.user_name(conn).is_none() {
                let error = crate::connection::not_registered(self.config.register_timeout);
                self.send_error(conn, error, ErrorKind::Timeout);
                self.close_after_error(conn, Disconnect::Timeout);
            }
        }
        // Thousands connecting at once leave a long queue behind.
        if self.registration_deadlines.is_empty() {
            self.registration_deadlines.shrink_to(KEEP_CAPACITY);
        }
    }

    /// Ends `conn` after the ERROR just sent to it: the close is an output
    /// like any other, so it cannot overtake that ERROR while deliveries
    /// wait for the store.
    fn close_after_error(&mut self, conn: ConnId, why: Disconnect) {
        if self.peers.contains_key(&conn) {
            self.tally.disconnect(why);
        }
        match &mut self.cluster {
            Some(cluster) => cluster.append_input(Input::Disconnect(conn)),
            None => self.chat.disconnect(conn, &mut self.outputs),
        }
        self.outputs.push(Output::Close(conn));
        self.dispatch();
    }

    /// `conn` is gone: from the chat state at once, or (in a cluster) once
    /// its departure comes back from the log.
    fn depart(&mut self, conn: ConnId) {
        match &mut self.cluster {
            Some(cluster) => cluster.append_input(Input::Disconnect(conn)),
            None => self.chat.disconnect(conn, &mut self.outputs),
        }
        self.dispatch();
    }

    /// Delivers the pending outputs, including those that cutting off slow
    /// consumers produces in turn.
    fn dispatch(&mut self) {
        let mut outputs = std::mem::take(&mut self.outputs);
        loop {
            for output in outputs.drain(..) {
                if let Some(output) = self.durability.route(output) {
                    self.carry_out_one(output);
                }
            }
            if self.doomed.is_empty() {
                break;
            }
            for (conn, why) in std::mem::take(&mut self.doomed) {
                self.auth.forget(conn);
                if let Some(peer) = self.remove_peer(conn, why) {
                    tracing::warn!(conn = conn.0, peer = %peer.addr, "disconnect: slow consumer or broken connection");
                    peer.abort();
                    match &mut self.cluster {
                        Some(cluster) => cluster.append_input(Input::Disconnect(conn)),
                        None => self.chat.disconnect(conn, &mut outputs),
                    }
                }
            }
        }
        // Hand the (now empty) buffer back so its capacity is reused, but
        // not what a burst (a presence flush to thousands) made it: that
        // would stay with the server for good.
        outputs.shrink_to(KEEP_CAPACITY);
        self.outputs = outputs;
    }

    /// Carries out outputs that no longer wait for the store, then what
    /// cutting off slow consumers among their recipients produces.
    fn carry_out(&mut self, released: Vec<Output>) {
        for output in released {
            self.carry_out_one(output);
        }
        self.dispatch();
    }

    fn carry_out_one(&mut self, output: Output) {
        match output {
            Output::Send { to, message } => self.deliver(&to, &message),
            Output::Close(conn) => self.close_gracefully(conn),
            Output::FetchHistory {
                conn,
                conv,
                before_seq,
                limit,
            } => self.fetch_history(conn, conv, before_seq, limit),
            Output::Fact(_) => unreachable!("facts are routed to the store"),
        }
    }

    /// Asks the store's reader thread; the answer comes back as a reply.
    fn fetch_history(&mut self, conn: ConnId, conv: u64, before_seq: u64, limit: usize) {
        let request = HistoryRequest {
            tag: conn.0,
            conv,
            before_seq,
            limit,
        };
        let refused = match &self.store {
            Some(store) => store.history.try_send(request).is_err(),
            None => true,
        };
        if refused {
            self.tally.error(ErrorKind::Store);
            let text = format!("history of {conv} is busy; try again in a moment");
            self.deliver(&Recipients::One(conn), &ServerMessage::Error(text));
        }
    }

    /// Queues one message for its recipients, encoding it at most once per
    /// encoding.
    fn deliver(&mut self, to: &Recipients, message: &ServerMessage) {
        let mut encoded: [Option<Bytes>; 3] = [None, None, None];
        let recipients: &[ConnId] = match to {
            Recipients::One(conn) => std::slice::from_ref(conn),
            Recipients::Many(conns) => conns,
        };
        let mut delivered = 0;
        for &conn in recipients {
            let Some(peer) = self.peers.get_mut(&conn) else {
                continue;
            };
            let slot = &mut encoded[encoding_index(peer.encoding)];
            let bytes = slot
                .get_or_insert_with(|| encode_message(message, peer.encoding))
                .clone();
            let was_dirty = peer.dirty;
            if peer.enqueue(bytes, self.config.send_queue).is_err() {
                self.doomed.push((conn, Disconnect::SlowConsumer));
            } else {
                delivered += 1;
                if !was_dirty && peer.dirty {
                    self.dirty.push(conn);
                }
            }
        }
        self.tally.deliveries += delivered;
    }

    fn send_error(&mut self, conn: ConnId, text: String, kind: ErrorKind) {
        self.tally.error(kind);
        if let Some(peer) = self.peers.get_mut(&conn)
            && let Some(unlogged) = peer.bad_input_log.allow(std::time::Instant::now())
        {
            tracing::info!(conn = conn.0, peer = %peer.addr, error = %text, unlogged, "rejected input");
        }
        self.outputs.push(Output::Send {
            to: Recipients::One(conn),
            message: Arc::new(ServerMessage::Error(text)),
        });
        self.dispatch();
    }

    /// Writes what every touched client has waiting, once; under load, a
    /// client's bytes (queued during the pass that began at `pass_started`)
    /// wait for the coalescer's window instead. Then writes the waiting
    /// clients that are due.
    fn flush_dirty(&mut self, pass_started: std::time::Instant) {
        let flush_started = std::time::Instant::now();
        let mut flushes = Flushes::default();
        while !self.dirty.is_empty() {
            let window_open = !self.coalescer.window().is_zero();
            for conn in std::mem::take(&mut self.dirty) {
                if window_open && let Some(peer) = self.peers.get_mut(&conn) {
                    // Stays dirty, so it is not listed twice.
                    peer.queued = pass_started;
                    self.deferred.push_back(conn);
                    continue;
                }
                flushes.add(self.flush_peer(conn));
            }
            // Cutting off broken clients may queue presence for others.
            self.dispatch();
        }
        self.flush_due(flush_started, &mut flushes);
        let spent = flush_started.elapsed();
        self.coalescer
            .record_flushes(spent, flushes.writes, flushes.merged);
    }

    /// Writes the waiting clients whose window has ended (all of them once
    /// the window closed), and sets the timer for the next.
    fn flush_due(&mut self, now: std::time::Instant, flushes: &mut Flushes) {
        while let Some(&conn) = self.deferred.front() {
            let due = match self.peers.get(&conn) {
                Some(peer) if peer.dirty => !self.coalescer.should_wait(peer.queued, now),
                // Gone, or written meanwhile (a queue at its limit is
                // offered to the kernel at once).
                _ => true,
            };
            if !due {
                break;
            }
            self.deferred.pop_front();
            flushes.add(self.flush_peer(conn));
        }
        self.dispatch();
        self.deferred_deadline = self
            .deferred
            .front()
            .and_then(|conn| self.peers.get(conn))
            .map(|peer| Instant::from_std(self.coalescer.due(peer.queued)));
    }

    /// The window of the longest-waiting client ended.
    fn end_write_window(&mut self) {
        let now = std::time::Instant::now();
        let mut flushes = Flushes::default();
        self.flush_due(now, &mut flushes);
        self.coalescer
            .record_flushes(now.elapsed(), flushes.writes, flushes.merged);
    }

    /// Writes what the kernel takes of one client's queue now. Returns how
    /// many messages left (whole or in part) in this one flush.
    fn flush_peer(&mut self, conn: ConnId) -> usize {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return 0;
        };
        if peer.awaiting_writable {
            peer.dirty = false;
            return 0;
        }
        let queued = peer.queued_messages();
        let flushed = peer.flush();
        let left = queued - peer.queued_messages();
        let written = peer.take_written();
        self.tally.sent(peer.transport(), written);
        match flushed {
            Flushed::All => {}
            Flushed::Blocked => self.wait_until_writable(conn),
            Flushed::Failed(error) => {
                tracing::debug!(conn = conn.0, %error, "write failed");
                self.doomed.push((conn, Disconnect::WriteFailed));
            }
        }
        left
    }

    fn wait_until_writable(&mut self, conn: ConnId) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let Some(stream) = peer.tcp_stream().cloned() else {
            return;
        };
        peer.awaiting_writable = true;
        let cancel = peer.cancel.clone();
        let events = self.events.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                ready = stream.writable() => {
                    let event = match ready {
                        Ok(()) => HubEvent::Writable { conn },
                        Err(error) => {
                            // Nothing else would ever write to it again.
                            tracing::warn!(conn = conn.0, %error,
                                "cannot wait for a full socket to drain; the client is cut off");
                            HubEvent::Unwritable { conn }
                        }
                    };
                    let _ = events.send(event).await;
                }
            }
        });
    }

    /// Ends a connection after what is queued for it is written.
    fn close_gracefully(&mut self, conn: ConnId) {
        self.auth.forget(conn);
        if let Some(mut peer) = self.peers.remove(&conn) {
            // Counted as a disconnect where the close was decided.
            self.peer_gone(&mut peer);
            tracing::info!(conn = conn.0, peer = %peer.addr, "disconnect");
            self.tracker
                .spawn(peer.close_gracefully(self.config.close_linger));
        }
    }

    fn schedule_presence(&mut self) {
        if self.presence_deadline.is_none() && self.chat.presence_pending() {
            if self.config.presence_coalesce.is_zero() {
                // Changes made by timers (registration expiry); events
                // flush their own in `apply`.
                self.chat.flush_presence(&mut self.outputs);
                self.dispatch();
            } else {
                self.presence_deadline = Some(Instant::now() + self.config.presence_coalesce);
            }
        }
    }

    /// Every client gets the shutdown ERROR, then a clean close.
    fn say_goodbye_to_all(&mut self) {
        let goodbye = Arc::new(ServerMessage::Error(SHUTDOWN_MESSAGE.to_string()));
        let everyone: Vec<ConnId> = self.peers.keys().copied().collect();
        self.deliver(&Recipients::Many(everyone), &goodbye);
        let count = self.peers.len() as u64;
        self.tally.errors[ErrorKind::Shutdown as usize] += count;
        self.tally.disconnects[Disconnect::Shutdown as usize] += count;
        for (_, mut peer) in std::mem::take(&mut self.peers) {
            self.peer_gone(&mut peer);
            self.tracker
                .spawn(peer.close_gracefully(self.config.close_linger));
        }
    }
}

/// What one round of flushes did, for the coalescer's estimate of the
/// writes it saved.
#[derive(Default)]
struct Flushes {
    /// Flushes that wrote at least one message.
    writes: u64,
    /// Messages that left in a write with an earlier one.
    merged: u64,
}

impl Flushes {
    fn add(&mut self, messages: usize) {
        if messages > 0 {
            self.writes += 1;
            self.merged += messages as u64 - 1;
        }
    }
}

fn encoding_index(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Framed => 0,
        Encoding::Classic => 1,
        Encoding::Json => 2,
    }
}

/// Ticks every `period`, or (no cluster) never.
fn heartbeat_timer(period: Option<std::time::Duration>) -> tokio::time::Interval {
    let period = period.unwrap_or(std::time::Duration::from_secs(365 * 24 * 3600));
    let mut timer = tokio::time::interval_at(Instant::now() + period, period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

fn presence_timer(config: &Config) -> tokio::time::Interval {
    // A zero interval means "off": tick so rarely it never matters.
    let period = if config.presence_interval.is_zero() {
        std::time::Duration::from_secs(365 * 24 * 3600)
    } else {
        config.presence_interval
    };
    let mut timer = tokio::time::interval_at(Instant::now() + period, period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

/// The wall clock in Unix milliseconds: message timestamps.
pub(crate) fn unix_ms() -> natter_core::UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as natter_core::UnixMs)
}

async fn recv_opt<T>(receiver: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}
