//! The accept loop: one task per TCP client.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use natter_core::ConnId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connection;
use crate::hub::HubSender;

/// The longest pause after a failed accept (e.g. out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Shared by every source of connections (TCP here, WebSocket elsewhere):
/// numbers them and knows where to send their events.
pub struct Shared {
    pub config: Arc<Config>,
    pub hub: HubSender,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    next_conn: AtomicU64,
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        hub: HubSender,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Shared {
            config,
            hub,
            shutdown,
            tracker,
            next_conn: AtomicU64::new(1),
        }
    }

    /// A connection id never used before in this server's life.
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }
}

/// Accepts clients until shutdown. A failed accept never stops the loop: it
/// backs off (1 ms doubling to 1 s), as tokio's and hyper's loops do, so that
/// running out of file descriptors slows accepting instead of spinning.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(1);
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff = Duration::from_millis(1);
                let conn = shared.next_conn_id();
                shared.tracker.spawn(connection::serve(
                    conn,
                    stream,
                    addr,
                    shared.hub.clone(),
                    shared.config.clone(),
                    shared.shutdown.clone(),
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
