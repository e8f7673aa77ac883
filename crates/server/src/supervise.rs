//! Supervision of the hub, so that the server cannot half-die.
//!
//! Everything a client gets goes through the hub. If the hub task ends
//! while the server is not shutting down (a panic, most likely), the
//! listeners would go on accepting clients into a dead channel. So a
//! watcher marks the hub as failed ([`Shared::hub_failed`]): every
//! connection is then closed, with a last `ERROR` where its stream allows
//! one (see [`crate::peer::Boundary`]), no new client is accepted, `/healthz`
//! answers 503, and [`crate::ServerHandle::failed`] resolves, upon which
//! `natter serve` exits with a non-zero status for systemd (or any
//! supervisor) to restart it.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::hub::HubEvent;
use crate::listener::Shared;

/// The ERROR every client gets when the hub fails.
pub const HUB_FAILED_MESSAGE: &str = "server failure: the server is stopping";

/// Test-only: when this environment variable is set, SIGUSR1 makes the hub
/// panic, so that tests can watch a real `natter serve` process handle a
/// failed hub. Nothing else reads it; it is not meant for operators.
pub const TEST_PANIC_ENV: &str = "NATTER_TEST_HUB_PANIC_ON_SIGUSR1";

/// Waits for the hub task to end; an end the server did not ask for is a
/// failure.
pub async fn watch(hub: JoinHandle<()>, shared: Arc<Shared>) {
    let ended = hub.await;
    if ended.is_ok() && shared.shutdown.is_cancelled() {
        return; // a normal shutdown
    }
    match ended {
        Err(error) if error.is_panic() => tracing::error!("the hub panicked: stopping"),
        _ => tracing::error!("the hub stopped unexpectedly: stopping"),
    }
    // In this order: a connection woken by the second knows the first.
    shared.hub_failed.cancel();
    shared.connections.cancel();
}

/// Installs the test-only hook described at [`TEST_PANIC_ENV`], if asked.
pub fn install_test_hook(shared: &Arc<Shared>) {
    if std::env::var_os(TEST_PANIC_ENV).is_none() {
        return;
    }
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    let hub = shared.hub.clone();
    tokio::spawn(async move {
        if usr1.recv().await.is_some() {
            let _ = hub.send(HubEvent::PanicForTest).await;
        }
    });
}
