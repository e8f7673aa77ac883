//! The server's settings, with the contract's defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use natter_core::{AccountsMode, Policy};
use natter_proto::Limits;

use crate::tls::Plaintext;

/// Everything `natter serve` can be told. `Default` gives the contract's
/// defaults, except that tests usually set `listen` to port 0.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to accept TCP clients.
    pub listen: SocketAddr,
    /// Where to serve the web page and its WebSocket gateway (`None`: no
    /// web listener; the default, so that tests opt in).
    pub web: Option<SocketAddr>,
    /// Where to serve `GET /metrics` alone (`None`: on the web listener, if
    /// there is one). When set, the web listener does not serve it, so a
    /// public web page does not show the server's numbers.
    pub metrics: Option<SocketAddr>,
    /// How often every classic client gets a full `ONLINE_USERS`; zero turns
    /// the periodic snapshot off.
    pub presence_interval: Duration,
    /// The presence coalescing window; zero sends every change at once.
    pub presence_coalesce: Duration,
    /// Open or invite-only conversations.
    pub policy: Policy,
    /// Decoding and validation bounds (frame and message size among them).
    pub limits: Limits,
    /// Bytes that may wait for one client before it counts as a slow
    /// consumer and is disconnected.
    pub send_queue: usize,
    /// The longest write-coalescing window: under load a client's first
    /// queued message waits up to this long for others to leave with it in
    /// one write; the window grows with the hub's load from zero
    /// ([`crate::coalesce`]; zero: always write at once).
    pub write_coalesce: Duration,
    /// How long a closing connection may take to flush and see the peer's
    /// end of stream before it is dropped.
    pub close_linger: Duration,
    /// A connection that has not registered this long after connecting gets
    /// an ERROR and is closed.
    pub register_timeout: Duration,
    /// Idle time before TCP keepalive probes start (zero: no keepalive). A
    /// peer that answers none of them is declared dead by the kernel.
    pub tcp_keepalive: Duration,
    /// A connection silent this long gets an ERROR and is closed (zero: off,
    /// since a course client may sit quietly for hours).
    pub idle_timeout: Duration,
    /// Commands per second one connection may send, on average (zero: no
    /// limit), and how many it may send in a burst.
    pub rate_limit: u32,
    pub rate_burst: u32,
    /// How many connections the kernel may hold for the accept loop (the
    /// listen backlog; Linux caps it at `net.core.somaxconn`). A burst of
    /// connects beyond it waits for the client's SYN to be retried.
    pub listen_backlog: u32,
    /// Most connections at once, and from one IP address (zero: no limit).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Most HTTP connections to the web listener at once (page loads and
    /// WebSocket handshakes; an upgraded WebSocket counts as a client
    /// above instead), and at most `max_connections_per_ip` from one
    /// address.
    pub max_web_connections: usize,
    /// An HTTP client must send a request's headers within this long, or
    /// its connection is closed (slow-loris; idle keep-alive too).
    pub web_header_timeout: Duration,
    /// Where the store keeps conversations and history (`None`: nothing is
    /// kept, as with `--ephemeral`; the library's default, so that tests
    /// opt in).
    pub data_dir: Option<PathBuf>,
    /// Days of history to keep (zero: forever).
    pub history_days: u32,
    /// After a restart, how long users from before it have to register
    /// again before they leave their conversations.
    pub rejoin_grace: Duration,
    /// Guests, accounts or both (`--accounts`).
    pub accounts: AccountsMode,
    /// Whether clients may create accounts with SIGNUP (`--signup open`).
    pub signup_open: bool,
    /// Passwords hashed or verified at once, off the hub (each takes
    /// 19 MiB while it runs): the bound on what a login storm costs.
    pub auth_threads: usize,
    /// TLS on the chat port (and HTTPS on the web listener): `None` for
    /// plaintext only (`--tls-cert`, `--tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a TLS handshake may take before its connection is dropped.
    pub tls_handshake_timeout: Duration,
    /// Who may speak plaintext (`--require-tls`: loopback only).
    pub plaintext: Plaintext,
    /// Where the operator's admin socket is made ([`crate::admin`];
    /// `None`: no admin socket, the library's default, so that tests opt
    /// in; `natter serve` puts it in the data dir).
    pub admin_socket: Option<PathBuf>,
    /// With `--nats`: this server is one node of a cluster whose chat state
    /// is replicated through NATS JetStream (`None`: a single server).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 6666)),
            web: None,
            metrics: None,
            presence_interval: Duration::from_secs(10),
            presence_coalesce: Duration::from_millis(100),
            policy: Policy::Open,
            limits: Limits::server_default(),
            send_queue: 1024 * 1024,
            write_coalesce: Duration::from_millis(5),
            close_linger: Duration::from_secs(2),
            register_timeout: Duration::from_secs(30),
            tcp_keepalive: Duration::from_secs(60),
            idle_timeout: Duration::ZERO,
            rate_limit: 10,
            rate_burst: 20,
            listen_backlog: 4096,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            max_web_connections: 1_000,
            web_header_timeout: Duration::from_secs(10),
            data_dir: None,
            history_days: 0,
            rejoin_grace: Duration::from_secs(600),
            accounts: AccountsMode::Optional,
            signup_open: true,
            auth_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            plaintext: Plaintext::Anywhere,
            admin_socket: None,
            cluster: None,
        }
    }
}

impl Config {
    /// What the server runs with after a reload asked for `new`: the
    /// settings that can change live come from `new`, the rest (addresses,
    /// the data dir and what the store and chat state were built around)
    /// stay as the server started, since only a restart changes them.
    ///
    /// Live: presence timing, the policy, the limits, queue bounds, write
    /// coalescing, timeouts, rate limits, connection limits, signup, and
    /// the TLS certificate (a new one for new handshakes; turning TLS on or
    /// off takes a restart, since the web listener's scheme follows it).
    pub fn reloaded(&self, new: &Config) -> Config {
        let tls = if self.tls.is_some() == new.tls.is_some() {
            new.tls.clone()
        } else {
            self.tls.clone()
        };
        // --require-tls means nothing without a certificate.
        let plaintext = if tls.is_some() {
            new.plaintext
        } else {
            self.plaintext
        };
        Config {
            presence_interval: new.presence_interval,
            presence_coalesce: new.presence_coalesce,
            policy: new.policy,
            limits: new.limits.clone(),
            send_queue: new.send_queue,
            write_coalesce: new.write_coalesce,
            close_linger: new.close_linger,
            register_timeout: new.register_timeout,
            tcp_keepalive: new.tcp_keepalive,
            idle_timeout: new.idle_timeout,
            rate_limit: new.rate_limit,
            rate_burst: new.rate_burst,
            max_connections: new.max_connections,
            max_connections_per_ip: new.max_connections_per_ip,
            max_web_connections: new.max_web_connections,
            web_header_timeout: new.web_header_timeout,
            signup_open: new.signup_open,
            tls,
            tls_handshake_timeout: new.tls_handshake_timeout,
            plaintext,
            ..self.clone()
        }
    }
}
