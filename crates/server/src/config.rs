//! The server's settings, with the contract's defaults.

use std::net::SocketAddr;
use std::time::Duration;

use natter_core::Policy;
use natter_proto::Limits;

/// Everything `natter serve` can be told. `Default` gives the contract's
/// defaults, except that tests usually set `listen` to port 0.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to accept TCP clients.
    pub listen: SocketAddr,
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
    /// How long a closing connection may take to flush and see the peer's
    /// end of stream before it is dropped.
    pub close_linger: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 6666)),
            presence_interval: Duration::from_secs(10),
            presence_coalesce: Duration::from_millis(100),
            policy: Policy::Open,
            limits: Limits::server_default(),
            send_queue: 1024 * 1024,
            close_linger: Duration::from_secs(2),
        }
    }
}
