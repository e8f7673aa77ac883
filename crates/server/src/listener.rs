//! The accept loop: one task per TCP client.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natter_core::ConnId;
use natter_proto::Encoding;
use natter_proto::ServerMessage;
use natter_proto::codec::encode_message;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{AddressBans, Admission, Refusal};
use crate::config::Config;
use crate::connection;
use crate::hub::HubSender;
use crate::live::LiveConfig;
use crate::log_limit::LogLimiter;
use crate::metrics::Metrics;
use crate::parking::Parking;

/// Refused connections are told why by at most this many tasks at once;
/// beyond that they are simply closed, so a connection flood costs little.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long a refused client has to send its first byte (which tells the
/// encoding to answer in).
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// The longest pause after a failed accept (e.g. out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Shared by every source of connections (TCP here, WebSocket elsewhere):
/// numbers them and knows where to send their events.
pub struct Shared {
    /// The settings as they are now (a reload changes them).
    pub config: LiveConfig,
    pub hub: HubSender,
    pub shutdown: CancellationToken,
    /// Parent of every connection's own token: cancelled on shutdown, and
    /// when the hub fails ([`crate::supervise`]).
    pub connections: CancellationToken,
    /// Cancelled when the hub ended without being asked to.
    pub hub_failed: CancellationToken,
    pub tracker: TaskTracker,
    pub admission: Arc<Admission>,
    /// The web listener's own limit on HTTP connections.
    pub web_admission: Arc<Admission>,
    /// Addresses an operator banned; `admission` refuses them.
    pub bans: Arc<AddressBans>,
    /// Cancelled when an operator drains the server: no new clients.
    pub draining: CancellationToken,
    /// Cancelled when a drain is over: whoever runs the server should now
    /// shut it down ([`crate::ServerHandle::stop_requested`]).
    pub stop_requested: CancellationToken,
    /// When the server started (for uptime).
    pub started: std::time::Instant,
    /// What the server counts ([`crate::metrics`]).
    pub metrics: Arc<Metrics>,
    /// Where quiet plaintext connections wait without a task, and the
    /// clock every connection keeps time by ([`crate::parking`]).
    pub parking: Parking,
    refusals: Arc<Semaphore>,
    /// A flood of refused connections must not flood the log.
    refusal_log: Mutex<LogLimiter>,
    next_conn: AtomicU64,
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        hub: HubSender,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let bans = Arc::new(AddressBans::default());
        let admission = Admission::with_bans(
            config.max_connections,
            config.max_connections_per_ip,
            bans.clone(),
        );
        // No bans here: a banned browser gets its HTTP 403 with the reason
        // at the upgrade, which a refused TCP connection could not carry.
        let web_admission =
            Admission::new(config.max_web_connections, config.max_connections_per_ip);
        Shared {
            config: LiveConfig::new(config),
            hub,
            connections: shutdown.child_token(),
            hub_failed: CancellationToken::new(),
            shutdown,
            tracker,
            admission,
            web_admission,
            bans,
            draining: CancellationToken::new(),
            stop_requested: CancellationToken::new(),
            started: std::time::Instant::now(),
            metrics: Arc::default(),
            parking: Parking::new(),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            refusal_log: Mutex::new(LogLimiter::new(std::time::Instant::now())),
            next_conn: AtomicU64::new(1),
        }
    }

    /// The same, counting into `metrics` (the hub's registry).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Logs a refused connection, within the log limit.
    pub fn log_refusal(&self, peer: SocketAddr, refusal: &Refusal) {
        let mut log = self.refusal_log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(unlogged) = log.allow(std::time::Instant::now()) {
            tracing::warn!(%peer, %refusal, unlogged, "connection refused");
        }
    }

    /// Publishes reloaded settings to everything but the hub (which
    /// hears of them as a message): new connections and readers use them,
    /// and the connection limits apply from the next admission.
    pub fn publish(&self, config: Arc<Config>) {
        self.admission
            .set_limits(config.max_connections, config.max_connections_per_ip);
        self.web_admission
            .set_limits(config.max_web_connections, config.max_connections_per_ip);
        self.config.set(config);
    }

    /// Numbers connections from `first` on (a cluster node's ids are unique
    /// in the cluster: see `cluster::entry`). Called before any connection.
    pub fn first_conn_id(&self, first: u64) {
        self.next_conn.store(first, Ordering::Relaxed);
    }

    /// A connection id never used before in this server's life.
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }
}

/// Binds the chat port with room for `backlog` connections waiting to be
/// accepted (tokio's `bind` leaves 1,024: a burst of thousands of connects
/// then waits on SYN retries, a second or more each).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As tokio's `bind` does: a restarted server can take its port back
    // while old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts clients until shutdown. A failed accept never stops the loop: it
/// backs off (1 ms doubling to 1 s), as tokio's and hyper's loops do, so that
/// running out of file descriptors slows accepting instead of spinning.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(1);
    loop {
        let accepted = tokio::select! {
            _ = shared.connections.cancelled() => return,
            // Draining: the listening socket closes, so new clients are
            // refused by the kernel (or go to another server on the port).
            _ = shared.draining.cancelled() => {
                tracing::info!("draining: no longer accepting clients");
                return;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff = Duration::from_millis(1);
                let ticket = match shared.admission.admit(addr.ip()) {
                    Ok(ticket) => ticket,
                    Err(refusal) => {
                        shared.log_refusal(addr, &refusal);
                        refuse(&shared, stream, refusal);
                        continue;
                    }
                };
                set_keepalive(&stream, shared.config.get().tcp_keepalive);
                let conn = shared.next_conn_id();
                shared.tracker.spawn(connection::serve(
                    conn,
                    stream,
                    addr,
                    shared.clone(),
                    ticket,
                ));
            }
            Err(error) if is_per_connection(&error) => {
                tracing::debug!(%error, "accept: connection failed before it was accepted");
            }
            Err(error) => {
                tracing::warn!(%error, ?backoff, "accept failed; backing off");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// Errors that concern one would-be client only, not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Turns on TCP keepalive: probes start after `idle`, then every quarter of
/// it; after four unanswered probes the kernel declares the peer dead and
/// the reader sees an error.
fn set_keepalive(stream: &TcpStream, idle: Duration) {
    if idle.is_zero() {
        return;
    }
    let interval = (idle / 4).max(Duration::from_secs(1));
    let keepalive = TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval)
        .with_retries(4);
    if let Err(error) = SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "cannot set TCP keepalive");
    }
}

/// Tells a refused client why, in its own encoding when it says one in
/// time, then closes. Bounded: when too many refusals are in flight the
/// connection is closed without a word.
fn refuse(shared: &Shared, mut stream: TcpStream, refusal: Refusal) {
    let Ok(permit) = shared.refusals.clone().try_acquire_owned() else {
        return;
    };
    shared.tracker.spawn(async move {
        let _permit = permit;
        let mut first = [0u8; 1];
        let encoding = match tokio::time::timeout(REFUSAL_WAIT, stream.read(&mut first)).await {
            Ok(Ok(1)) => Encoding::detect(first[0]).unwrap_or(Encoding::Json),
            _ => Encoding::Json,
        };
        let error = encode_message(&ServerMessage::Error(refusal.to_string()), encoding);
        // Answer, end our side, then drain theirs so that closing does not
        // reset the connection under the answer.
        let _ = tokio::time::timeout(REFUSAL_WAIT, async {
            stream.write_all(&error).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            std::io::Result::Ok(())
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listen backlog is what was asked (as `ss` shows a listening
    /// socket's: its Send-Q column), not tokio's 1,024.
    #[tokio::test]
    async fn the_listener_has_the_backlog_asked_for() {
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .map_or(4096, |s| s.trim().parse().unwrap());
        for asked in [100, 4096] {
            let listener = bind("127.0.0.1:0".parse().unwrap(), asked).unwrap();
            let port = listener.local_addr().unwrap().port();
            let out = std::process::Command::new("ss")
                .args(["-Hltn", &format!("sport = :{port}")])
                .output()
                .expect("ss (iproute2) shows listening sockets");
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            let send_q: u32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
            assert_eq!(send_q, asked.min(somaxconn), "{line}");
        }
    }

    /// After the idle time, a probe every quarter of it (at least 1 s), and
    /// four unanswered ones end the connection, as `--help` says.
    #[tokio::test]
    async fn keepalive_probes_every_quarter_of_the_idle_time_four_times() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server_end, _) = listener.accept().await.unwrap();
        for (idle, interval) in [(60, 15), (2, 1)] {
            set_keepalive(&server_end, Duration::from_secs(idle));
            let socket = SockRef::from(&server_end);
            assert!(socket.keepalive().unwrap());
            assert_eq!(
                socket.tcp_keepalive_time().unwrap(),
                Duration::from_secs(idle)
            );
            assert_eq!(
                socket.tcp_keepalive_interval().unwrap(),
                Duration::from_secs(interval)
            );
            assert_eq!(socket.tcp_keepalive_retries().unwrap(), 4);
        }
    }
}
