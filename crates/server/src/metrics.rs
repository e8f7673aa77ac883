//! What the server counts, for operators: the Prometheus text format at
//! `GET /metrics` (on the web listener, or on its own `--metrics` address).
//!
//! Counting must not slow the hot path, so each number is kept where it is
//! cheapest:
//! - The hub (one task, one thread) counts in plain integers ([`Tally`]):
//!   commands, deliveries, errors, disconnects, logins, its busy time. Once
//!   per pass (a batch of events, a timer) it adds what changed to the
//!   registry's atomics ([`Metrics::publish`]), so a message fanned out to
//!   a thousand members costs a thousand plain increments and a handful of
//!   atomic adds, not a thousand atomic adds.
//! - Connection tasks add what they read to a per-transport counter, once
//!   per read system call (an uncontended atomic add beside a syscall).
//! - TLS handshakes and store commits are rare: counted where they happen.
//!
//! - The process's CPU time, memory and descriptors are read from
//!   `/proc` when scraped ([`process`]).
//!
//! Every label value exists from the start (at zero), so a dashboard's
//! queries find every series before the first event of its kind.

mod process;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use natter_proto::{Command, Encoding};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A counter of seconds (fractional).
type Seconds = Counter<f64, AtomicU64>;

/// One label pair; every label value is a fixed word.
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    WebSocket,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Tcp, Transport::Tls, Transport::WebSocket];

    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::WebSocket => "websocket",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn encoding_label(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Framed => "framed",
        Encoding::Classic => "classic",
        Encoding::Json => "json",
    }
}

fn encoding_index(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Framed => 0,
        Encoding::Classic => 1,
        Encoding::Json => 2,
    }
}

/// Why the server sent an `ERROR` (the `kind` label of
/// `natter_errors_sent_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A frame that did not decode, or a command that is not valid; the
    /// connection stays.
    Invalid,
    /// Input after which the stream cannot be trusted (an unknown encoding,
    /// a frame over the limit, broken framing): the connection closes.
    Protocol,
    /// Over the rate limit for too long: the connection closes.
    RateLimit,
    /// Not registered in time, or idle too long: the connection closes.
    Timeout,
    /// Plaintext from a non-loopback address under `--require-tls`.
    TlsRequired,
    /// A valid command the chat state refused (not a member, name taken…).
    Refused,
    /// Accounts: a wrong password, too many attempts, sign-up closed, a
    /// device signed out by a password change.
    Auth,
    /// The store could not keep a message, or history is not available.
    Store,
    /// The server is shutting down.
    Shutdown,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Invalid,
        ErrorKind::Protocol,
        ErrorKind::RateLimit,
        ErrorKind::Timeout,
        ErrorKind::TlsRequired,
        ErrorKind::Refused,
        ErrorKind::Auth,
        ErrorKind::Store,
        ErrorKind::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::Protocol => "protocol",
            ErrorKind::RateLimit => "rate_limit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::TlsRequired => "tls_required",
            ErrorKind::Refused => "refused",
            ErrorKind::Auth => "auth",
            ErrorKind::Store => "store",
            ErrorKind::Shutdown => "shutdown",
        }
    }

    /// Why a connection closed after an `ERROR` of this kind.
    pub fn disconnect(self) -> Disconnect {
        match self {
            ErrorKind::RateLimit => Disconnect::RateLimit,
            ErrorKind::Timeout => Disconnect::Timeout,
            ErrorKind::Shutdown => Disconnect::Shutdown,
            _ => Disconnect::Protocol,
        }
    }
}

/// Why a connection ended (the `reason` label of `natter_disconnects_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed its connection, or it broke while being read.
    Client,
    /// The client said GOODBYE.
    Goodbye,
    /// More than `--send-queue` bytes waited for a client that did not read.
    SlowConsumer,
    /// Writing to the client failed.
    WriteFailed,
    /// Over the rate limit for too long (or too many commands while its
    /// password was checked).
    RateLimit,
    /// Input that cannot be trusted, or plaintext where TLS is required.
    Protocol,
    /// Not registered in time, or idle too long.
    Timeout,
    /// The account's password changed on another device.
    SignedOut,
    /// The server shut down.
    Shutdown,
}

impl Disconnect {
    pub const ALL: [Disconnect; 9] = [
        Disconnect::Client,
        Disconnect::Goodbye,
        Disconnect::SlowConsumer,
        Disconnect::WriteFailed,
        Disconnect::RateLimit,
        Disconnect::Protocol,
        Disconnect::Timeout,
        Disconnect::SignedOut,
        Disconnect::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Disconnect::Client => "client",
            Disconnect::Goodbye => "goodbye",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::WriteFailed => "write_failed",
            Disconnect::RateLimit => "rate_limit",
            Disconnect::Protocol => "protocol",
            Disconnect::Timeout => "timeout",
            Disconnect::SignedOut => "signed_out",
            Disconnect::Shutdown => "shutdown",
        }
    }
}

/// Why a login failed (`natter_login_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// A wrong password or token, or an unknown name (one answer for all).
    BadCredentials,
    /// Refused without checking: too many failed attempts recently.
    TooManyAttempts,
}

impl LoginFailure {
    pub const ALL: [LoginFailure; 2] =
        [LoginFailure::BadCredentials, LoginFailure::TooManyAttempts];

    fn label(self) -> &'static str {
        match self {
            LoginFailure::BadCredentials => "bad_credentials",
            LoginFailure::TooManyAttempts => "too_many_attempts",
        }
    }
}

/// Every command word, in the order of [`command_index`].
pub const COMMANDS: [&str; 18] = [
    "CAPS",
    "REGISTER",
    "SIGNUP",
    "LOGOUT",
    "PASSWORD",
    "STATUS",
    "GOODBYE",
    "INVITE",
    "LIST_CONVERSATIONS",
    "JOIN",
    "SEND_MESSAGE",
    "LEAVE",
    "HISTORY",
    "READ",
    "TOPIC",
    "WATCH",
    "UNWATCH",
    "LIST_USERS",
];

/// SEND_MESSAGE's place in [`COMMANDS`].
const SEND_MESSAGE: usize = 10;

/// Where a command is counted in [`Tally::commands`].
pub fn command_index(command: &Command) -> usize {
    match command {
        Command::Caps(_) => 0,
        Command::Register { .. } | Command::Login { .. } => 1,
        Command::Signup { .. } => 2,
        Command::Logout => 3,
        Command::Password { .. } => 4,
        Command::Status(_) => 5,
        Command::Goodbye => 6,
        Command::Invite(_) => 7,
        Command::ListConversations => 8,
        Command::Join(_) => 9,
        Command::SendMessage { .. } => SEND_MESSAGE,
        Command::Leave(_) => 11,
        Command::History { .. } => 12,
        Command::Read { .. } => 13,
        Command::Topic { .. } => 14,
        Command::Watch(_) => 15,
        Command::Unwatch(_) => 16,
        Command::ListUsers { .. } => 17,
    }
}

/// Which listener a TLS handshake was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Chat,
    Web,
}

/// How a TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Ok,
    Failed,
    TimedOut,
}

/// What the hub counted since it last published: plain integers, owned by
/// the hub alone.
#[derive(Debug, Default)]
pub struct Tally {
    pub commands: [u64; COMMANDS.len()],
    pub deliveries: u64,
    pub errors: [u64; ErrorKind::ALL.len()],
    pub disconnects: [u64; Disconnect::ALL.len()],
    /// Connections the hub took on, by transport and encoding.
    pub opened: [[u64; 3]; 3],
    /// Connections the hub holds now, by transport and encoding (not reset
    /// by publishing).
    pub open: [[i64; 3]; 3],
    open_changed: bool,
    /// Bytes handed to each transport.
    pub bytes_out: [u64; 3],
    pub login_attempts: u64,
    pub login_failures: [u64; LoginFailure::ALL.len()],
}

impl Tally {
    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }

    pub fn disconnect(&mut self, reason: Disconnect) {
        self.disconnects[reason as usize] += 1;
    }

    pub fn login_failed(&mut self, why: LoginFailure) {
        self.login_failures[why as usize] += 1;
    }

    /// A connection the hub took on.
    pub fn opened(&mut self, transport: Transport, encoding: Encoding) {
        self.opened[transport.index()][encoding_index(encoding)] += 1;
        self.open[transport.index()][encoding_index(encoding)] += 1;
        self.open_changed = true;
    }

    /// A connection the hub let go of (for whatever reason).
    pub fn closed(&mut self, transport: Transport, encoding: Encoding) {
        self.open[transport.index()][encoding_index(encoding)] -= 1;
        self.open_changed = true;
    }

    pub fn sent(&mut self, transport: Transport, bytes: u64) {
        self.bytes_out[transport.index()] += bytes;
    }
}

/// What one pass of the hub did, for [`Metrics::publish`].
pub struct Pass {
    /// Events applied in this pass (`None`: a timer or a store reply woke it).
    pub events: Option<usize>,
    /// How long the pass took.
    pub busy: Duration,
    pub users: usize,
    pub conversations: usize,
}

/// The registry and a handle on every series in it.
pub struct Metrics {
    registry: Registry,
    connections_opened: [[Counter; 3]; 3],
    connections: [[Gauge; 3]; 3],
    users: Gauge,
    conversations: Gauge,
    commands: Vec<Counter>,
    messages: Counter,
    deliveries: Counter,
    bytes_in: [Counter; 3],
    bytes_out: [Counter; 3],
    errors: Vec<Counter>,
    disconnects: Vec<Counter>,
    batch_size: Histogram,
    busy: Seconds,
    login_attempts: Counter,
    login_failures: Vec<Counter>,
    tls_handshakes: [[Counter; 3]; 2],
    store_commit: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let opened = Family::<Labels<2>, Counter>::default();
        let open = Family::<Labels<2>, Gauge>::default();
        let by_conn = |transport: Transport, encoding: Encoding| {
            [
                ("transport", transport.label()),
                ("encoding", encoding_label(encoding)),
            ]
        };
        let connections_opened = Transport::ALL
            .map(|t| Encoding::ALL.map(|e| opened.get_or_create_owned(&by_conn(t, e))));
        let connections =
            Transport::ALL.map(|t| Encoding::ALL.map(|e| open.get_or_create_owned(&by_conn(t, e))));
        registry.register(
            "natter_connections_opened",
            "Connections that joined the hub (picked an encoding), by transport and encoding",
            opened,
        );
        registry.register(
            "natter_connections",
            "Connections open now, by transport and encoding",
            open,
        );
        let users = Gauge::default();
        registry.register("natter_users", "Registered users online now", users.clone());
        let conversations = Gauge::default();
        registry.register(
            "natter_conversations",
            "Conversations that exist now",
            conversations.clone(),
        );
        let commands_family = Family::<Labels<1>, Counter>::default();
        let commands = COMMANDS
            .iter()
            .map(|word| commands_family.get_or_create_owned(&[("command", *word)]))
            .collect();
        registry.register(
            "natter_commands_received",
            "Valid commands the hub received, by command word",
            commands_family,
        );
        let messages = Counter::default();
        registry.register(
            "natter_messages_received",
            "Chat messages (SEND_MESSAGE) the hub received",
            messages.clone(),
        );
        let deliveries = Counter::default();
        registry.register(
            "natter_deliveries",
            "Messages queued for a recipient (one per recipient of each message sent out)",
            deliveries.clone(),
        );
        let bytes_in_family = Family::<Labels<1>, Counter>::default();
        let bytes_out_family = Family::<Labels<1>, Counter>::default();
        let bytes_in = Transport::ALL
            .map(|t| bytes_in_family.get_or_create_owned(&[("transport", t.label())]));
        let bytes_out = Transport::ALL
            .map(|t| bytes_out_family.get_or_create_owned(&[("transport", t.label())]));
        registry.register_with_unit(
            "natter_received",
            "Protocol bytes read from clients (after TLS, inside WebSocket frames)",
            Unit::Bytes,
            bytes_in_family,
        );
        registry.register_with_unit(
            "natter_sent",
            "Protocol bytes written to clients (before TLS; handed to the WebSocket writer)",
            Unit::Bytes,
            bytes_out_family,
        );
        let errors_family = Family::<Labels<1>, Counter>::default();
        let errors = ErrorKind::ALL
            .iter()
            .map(|k| errors_family.get_or_create_owned(&[("kind", k.label())]))
            .collect();
        registry.register(
            "natter_errors_sent",
            "ERROR messages sent to clients, by kind",
            errors_family,
        );
        let disconnects_family = Family::<Labels<1>, Counter>::default();
        let disconnects = Disconnect::ALL
            .iter()
            .map(|r| disconnects_family.get_or_create_owned(&[("reason", r.label())]))
            .collect();
        registry.register(
            "natter_disconnects",
            "Connections that ended, by why",
            disconnects_family,
        );
        // 1, 2, 4 … 256 events (the hub's batch limit is 256).
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "natter_hub_batch_size",
            "Events the hub applied in one pass",
            batch_size.clone(),
        );
        let busy = Seconds::default();
        registry.register_with_unit(
            "natter_hub_busy",
            "Time the hub spent working (its rate is the hub's busy fraction, 1 = saturated)",
            Unit::Seconds,
            busy.clone(),
        );
        let login_attempts = Counter::default();
        registry.register(
            "natter_login_attempts",
            "Logins to an account (REGISTER with a password or a session token, the web page's sign-in)",
            login_attempts.clone(),
        );
        let failures_family = Family::<Labels<1>, Counter>::default();
        let login_failures = LoginFailure::ALL
            .iter()
            .map(|f| failures_family.get_or_create_owned(&[("reason", f.label())]))
            .collect();
        registry.register(
            "natter_login_failures",
            "Logins refused, by reason",
            failures_family,
        );
        let handshakes = Family::<Labels<2>, Counter>::default();
        let tls_handshakes = [("listener", "chat"), ("listener", "web")].map(|listener| {
            ["ok", "failed", "timeout"]
                .map(|result| handshakes.get_or_create_owned(&[listener, ("result", result)]))
        });
        registry.register(
            "natter_tls_handshakes",
            "TLS handshakes on the chat port and the web listener, by result",
            handshakes,
        );
        // 100 µs … about 3.3 s.
        let store_commit = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "natter_store_commit",
            "How long one group commit (transaction and fsync) took",
            Unit::Seconds,
            store_commit.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            registry,
            connections_opened,
            connections,
            users,
            conversations,
            commands,
            messages,
            deliveries,
            bytes_in,
            bytes_out,
            errors,
            disconnects,
            batch_size,
            busy,
            login_attempts,
            login_failures,
            tls_handshakes,
            store_commit,
        }
    }

    /// Everything, in the OpenMetrics text format (which Prometheus reads).
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// The counter of bytes read from clients of `transport`.
    pub fn bytes_in(&self, transport: Transport) -> &Counter {
        &self.bytes_in[transport.index()]
    }

    /// The counter of bytes written to clients of `transport` (the hub
    /// counts TCP and TLS itself; a WebSocket's writer adds its own).
    pub fn bytes_out(&self, transport: Transport) -> &Counter {
        &self.bytes_out[transport.index()]
    }

    pub fn tls_handshake(&self, listener: Listener, result: Handshake) {
        self.tls_handshakes[listener as usize][result as usize].inc();
    }

    /// Records one store commit's duration (called by the store's writer
    /// thread).
    pub fn store_commit(&self, took: Duration) {
        self.store_commit.observe(took.as_secs_f64());
    }

    /// Adds what the hub tallied to the registry and zeroes the tally; sets
    /// the gauges. Called once per pass of the hub: only what changed costs
    /// an atomic operation.
    pub fn publish(&self, tally: &mut Tally, pass: Pass) {
        // The chat messages received are the SEND_MESSAGE commands.
        let messages = tally.commands[SEND_MESSAGE];
        if messages > 0 {
            self.messages.inc_by(messages);
        }
        add_all(&self.commands, &mut tally.commands);
        add(&self.deliveries, &mut tally.deliveries);
        add_all(&self.errors, &mut tally.errors);
        add_all(&self.disconnects, &mut tally.disconnects);
        add_all(&self.bytes_out, &mut tally.bytes_out);
        add(&self.login_attempts, &mut tally.login_attempts);
        add_all(&self.login_failures, &mut tally.login_failures);
        for (counters, counts) in self.connections_opened.iter().zip(&mut tally.opened) {
            add_all(counters, counts);
        }
        if std::mem::take(&mut tally.open_changed) {
            for (gauges, counts) in self.connections.iter().zip(&tally.open) {
                for (gauge, count) in gauges.iter().zip(counts) {
                    gauge.set(*count);
                }
            }
        }
        self.users.set(pass.users as i64);
        self.conversations.set(pass.conversations as i64);
        if let Some(events) = pass.events {
            self.batch_size.observe(events as f64);
        }
        self.busy.inc_by(pass.busy.as_secs_f64());
    }
}

fn add(counter: &Counter, count: &mut u64) {
    if *count > 0 {
        counter.inc_by(std::mem::take(count));
    }
}

fn add_all(counters: &[Counter], counts: &mut [u64]) {
    for (counter, count) in counters.iter().zip(counts) {
        add(counter, count);
    }
}

/// Shared by the hub, the connection tasks and the listeners.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use natter_proto::Secret;

    use super::*;

    /// Each command is counted under its own word on the wire.
    #[test]
    fn every_command_is_counted_under_its_word() {
        let s = String::new;
        let commands = [
            Command::Caps(vec![]),
            Command::Register {
                name: s(),
                status: s(),
            },
            Command::Login {
                name: s(),
                status: s(),
                secret: Secret::new(""),
            },
            Command::Signup {
                name: s(),
                password: Secret::new(""),
            },
            Command::Logout,
            Command::Password {
                old: Secret::new(""),
                new: Secret::new(""),
            },
            Command::Status(s()),
            Command::Goodbye,
            Command::Invite(vec![]),
            Command::ListConversations,
            Command::Join(1),
            Command::SendMessage {
                conv: 1,
                text: s(),
                nonce: None,
            },
            Command::Leave(1),
            Command::History {
                conv: 1,
                before_seq: 0,
                limit: 1,
            },
            Command::Read { conv: 1, seq: 1 },
            Command::Topic { conv: 1, text: s() },
            Command::Watch(vec![]),
            Command::Unwatch(vec![]),
            Command::ListUsers {
                prefix: s(),
                limit: 1,
            },
        ];
        let mut seen = [false; COMMANDS.len()];
        for command in &commands {
            let index = command_index(command);
            assert_eq!(COMMANDS[index], command.word(), "{command:?}");
            seen[index] = true;
        }
        assert!(seen.iter().all(|s| *s), "a word no command uses");
    }

    /// What the hub tallied reaches the text once, and publishing again
    /// adds nothing.
    #[test]
    fn publishing_adds_the_tally_once() {
        let metrics = Metrics::new();
        let mut tally = Tally::default();
        tally.commands[SEND_MESSAGE] += 3;
        tally.deliveries += 30;
        tally.opened(Transport::Tls, Encoding::Classic);
        tally.error(ErrorKind::Refused);
        let pass = || Pass {
            events: Some(3),
            busy: Duration::from_millis(2),
            users: 7,
            conversations: 2,
        };
        metrics.publish(&mut tally, pass());
        metrics.publish(&mut tally, pass());
        let text = metrics.render();
        for line in [
            "natter_deliveries_total 30",
            "natter_messages_received_total 3",
            "natter_commands_received_total{command=\"SEND_MESSAGE\"} 3",
            "natter_connections{transport=\"tls\",encoding=\"classic\"} 1",
            "natter_connections_opened_total{transport=\"tls\",encoding=\"classic\"} 1",
            "natter_errors_sent_total{kind=\"refused\"} 1",
            "natter_users 7",
            "natter_hub_batch_size_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
