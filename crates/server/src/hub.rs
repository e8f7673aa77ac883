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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use natter_core::{Chat, ConnId, Output, Outputs, Recipients};
use natter_proto::{Command, Encoding, ServerMessage, codec::encode_message};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::coalesce::Coalescer;
use crate::config::Config;
use crate::peer::{Flushed, Peer};

/// How many events the hub applies before it flushes what they produced.
/// Bounds the latency a batch adds while letting a busy hub write several
/// messages per system call.
const MAX_BATCH: usize = 256;

/// Capacity of the channel into the hub. When it is full, connection tasks
/// stop reading their sockets until the hub catches up.
pub const HUB_QUEUE: usize = 4096;

/// What connection tasks tell the hub.
pub enum HubEvent {
    /// A client picked its encoding; from now on the hub writes to it.
    Connected { conn: ConnId, peer: Peer },
    /// A client sent a valid command.
    Command { conn: ConnId, command: Command },
    /// A client sent something that could not be used; `fatal` when its
    /// stream can no longer be trusted and the connection must close.
    Rejected {
        conn: ConnId,
        error: String,
        fatal: bool,
    },
    /// The client's stream ended or failed.
    Disconnected { conn: ConnId },
    /// A socket that was full can take bytes again.
    Writable { conn: ConnId },
    /// Asks how much state the hub holds (tests, leak checks).
    Stats { reply: oneshot::Sender<HubStats> },
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
}

pub type HubSender = mpsc::Sender<HubEvent>;

/// What woke the hub.
enum Wake {
    Event(HubEvent),
    /// The write-coalescing window of waiting clients ended.
    DeferredWrites,
    PresenceWindow,
    Registration,
    PresenceSnapshot,
}

/// The text every client gets when the server stops.
pub const SHUTDOWN_MESSAGE: &str = "server shutting down";

pub struct Hub {
    chat: Chat,
    peers: HashMap<ConnId, Peer>,
    config: Arc<Config>,
    /// Reused for every input, so applying one allocates nothing here.
    outputs: Outputs,
    /// Peers with bytes queued since the last flush.
    dirty: Vec<ConnId>,
    /// Peers to cut off once the current outputs are dispatched.
    doomed: Vec<ConnId>,
    /// End of the current presence coalescing window, if changes wait.
    presence_deadline: Option<Instant>,
    /// Connections with the time by which they must have registered,
    /// earliest first ("accepted + the same timeout", so nearly always
    /// arrival order).
    registration_deadlines: VecDeque<(Instant, ConnId)>,
    /// Decides whether a recently written client waits to gather more.
    coalescer: Coalescer,
    /// Clients waiting for the current write window to end, and its end.
    deferred: Vec<ConnId>,
    deferred_deadline: Option<Instant>,
    /// Given to writability waiters, so they can report back.
    events: HubSender,
    tracker: TaskTracker,
}

impl Hub {
    pub fn new(chat: Chat, config: Arc<Config>, events: HubSender, tracker: TaskTracker) -> Self {
        let write_coalesce = config.write_coalesce;
        Hub {
            chat,
            peers: HashMap::new(),
            config,
            outputs: Vec::new(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            presence_deadline: None,
            registration_deadlines: VecDeque::new(),
            coalescer: Coalescer::new(write_coalesce, std::time::Instant::now()),
            deferred: Vec::new(),
            deferred_deadline: None,
            events,
            tracker,
        }
    }

    /// Runs until `shutdown` fires, then says goodbye to every client.
    pub async fn run(mut self, mut inbox: mpsc::Receiver<HubEvent>, shutdown: CancellationToken) {
        let mut snapshot = presence_timer(&self.config);
        loop {
            let presence = self.presence_deadline;
            let registration = self.registration_deadlines.front().map(|(at, _)| *at);
            let deferred = self.deferred_deadline;
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(event) = inbox.recv() => Wake::Event(event),
                _ = sleep_until_opt(deferred), if deferred.is_some() => Wake::DeferredWrites,
                _ = sleep_until_opt(presence), if presence.is_some() => Wake::PresenceWindow,
                _ = sleep_until_opt(registration), if registration.is_some() => Wake::Registration,
                _ = snapshot.tick() => Wake::PresenceSnapshot,
            };
            let started = std::time::Instant::now();
            match wake {
                Wake::Event(event) => {
                    self.apply(event);
                    for _ in 1..MAX_BATCH {
                        match inbox.try_recv() {
                            Ok(event) => self.apply(event),
                            Err(_) => break,
                        }
                    }
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
            }
            self.schedule_presence();
            self.flush_dirty();
            self.coalescer
                .record_work(started, std::time::Instant::now());
        }
        self.say_goodbye_to_all();
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
                self.chat.connect(conn);
                let deadline = peer.accepted + self.config.register_timeout;
                self.peers.insert(conn, peer);
                if !self.config.register_timeout.is_zero() {
                    let deadlines = &mut self.registration_deadlines;
                    let at = deadlines.partition_point(|(d, _)| *d <= deadline);
                    deadlines.insert(at, (deadline, conn));
                }
            }
            HubEvent::Command { conn, command } => self.apply_command(conn, command),
            HubEvent::Rejected { conn, error, fatal } => {
                self.send_error(conn, error);
                if fatal {
                    self.chat.disconnect(conn, &mut self.outputs);
                    self.close_gracefully(conn);
                    self.dispatch();
                }
            }
            HubEvent::Disconnected { conn } => {
                if let Some(peer) = self.peers.remove(&conn) {
                    tracing::info!(conn = conn.0, peer = %peer.addr, "disconnect");
                    peer.abort();
                    self.chat.disconnect(conn, &mut self.outputs);
                    self.dispatch();
                }
            }
            HubEvent::Stats { reply } => {
                let _ = reply.send(HubStats {
                    connections: self.chat.connection_count(),
                    users: self.chat.user_count(),
                    conversations: self.chat.conversation_count(),
                    peers: self.peers.len(),
                });
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

    fn apply_command(&mut self, conn: ConnId, command: Command) {
        let Some(peer) = self.peers.get(&conn) else {
            return; // already cut off; its reader had this in flight
        };
        let registering = matches!(command, Command::Register { .. });
        let addr = peer.addr;
        self.chat.handle(conn, command, &mut self.outputs);
        if registering && let Some(name) = self.chat.user_name(conn) {
            tracing::info!(conn = conn.0, peer = %addr, name, "register");
        }
        self.dispatch();
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
                self.send_error(conn, error);
                self.chat.disconnect(conn, &mut self.outputs);
                self.close_gracefully(conn);
                self.dispatch();
            }
        }
    }

    /// Delivers the pending outputs, including those that cutting off slow
    /// consumers produces in turn.
    fn dispatch(&mut self) {
        let mut outputs = std::mem::take(&mut self.outputs);
        loop {
            for output in outputs.drain(..) {
                match output {
                    Output::Send { to, message } => self.deliver(&to, &message),
                    Output::Close(conn) => self.close_gracefully(conn),
                }
            }
            if self.doomed.is_empty() {
                break;
            }
            for conn in std::mem::take(&mut self.doomed) {
                if let Some(peer) = self.peers.remove(&conn) {
                    tracing::warn!(conn = conn.0, peer = %peer.addr, "disconnect: slow consumer or broken connection");
                    peer.abort();
                    self.chat.disconnect(conn, &mut outputs);
                }
            }
        }
        // Hand the (now empty) buffer back so its capacity is reused.
        self.outputs = outputs;
    }

    /// Queues one message for its recipients, encoding it at most once per
    /// encoding.
    fn deliver(&mut self, to: &Recipients, message: &ServerMessage) {
        let mut encoded: [Option<Bytes>; 3] = [None, None, None];
        let recipients: &[ConnId] = match to {
            Recipients::One(conn) => std::slice::from_ref(conn),
            Recipients::Many(conns) => conns,
        };
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
                self.doomed.push(conn);
            } else if !was_dirty && peer.dirty {
                self.dirty.push(conn);
            }
        }
    }

    fn send_error(&mut self, conn: ConnId, text: String) {
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
    /// client written to moments ago waits for the window to end instead.
    fn flush_dirty(&mut self) {
        let now = std::time::Instant::now();
        while !self.dirty.is_empty() {
            for conn in std::mem::take(&mut self.dirty) {
                let Some(peer) = self.peers.get(&conn) else {
                    continue;
                };
                if self.coalescer.should_wait(peer.last_write, now) {
                    // Stays dirty, so it is not listed twice.
                    self.deferred.push(conn);
                    continue;
                }
                self.flush_peer(conn, now);
            }
            // Cutting off broken clients may queue presence for others.
            self.dispatch();
        }
        if !self.deferred.is_empty() && self.deferred_deadline.is_none() {
            self.deferred_deadline = Some(Instant::from_std(now + self.coalescer.window()));
        }
    }

    /// The write window ended: every waiting client is written now.
    fn end_write_window(&mut self) {
        self.deferred_deadline = None;
        let now = std::time::Instant::now();
        for conn in std::mem::take(&mut self.deferred) {
            self.flush_peer(conn, now);
        }
        self.dispatch();
    }

    fn flush_peer(&mut self, conn: ConnId, now: std::time::Instant) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.awaiting_writable {
            peer.dirty = false;
            return;
        }
        peer.last_write = now;
        match peer.flush() {
            Flushed::All => {}
            Flushed::Blocked => self.wait_until_writable(conn),
            Flushed::Failed(error) => {
                tracing::debug!(conn = conn.0, %error, "write failed");
                self.doomed.push(conn);
            }
        }
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
                    if ready.is_ok() {
                        let _ = events.send(HubEvent::Writable { conn }).await;
                    }
                }
            }
        });
    }

    /// Ends a connection after what is queued for it is written.
    fn close_gracefully(&mut self, conn: ConnId) {
        if let Some(peer) = self.peers.remove(&conn) {
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
        for (_, peer) in self.peers.drain() {
            self.tracker
                .spawn(peer.close_gracefully(self.config.close_linger));
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

async fn sleep_until_opt(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}
