//! The bounded pool that hashes and verifies passwords, off the hub.
//!
//! argon2id takes tens of milliseconds and 19 MiB per call by design. Run
//! on the hub it would stall every chat; run without a bound, a storm of
//! logins would take every core and gigabytes. So a job waits for one of
//! `threads` permits and then runs on tokio's blocking threads; at most
//! `threads` hashes run at once (memory: `threads` × 19 MiB), and at most
//! [`MAX_QUEUED`] wait. Past that a login is refused with "busy" at once,
//! which costs nothing. The result comes back to the hub as an event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use natter_core::ConnId;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::Outcome;
use crate::hub::{HubEvent, HubSender};

/// Jobs that may wait for a permit.
pub const MAX_QUEUED: usize = 1024;

/// The pool was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is busy checking passwords; try again in a moment")]
pub struct Busy;

pub struct Pool {
    permits: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    events: HubSender,
    tracker: TaskTracker,
}

impl Pool {
    pub fn new(threads: usize, events: HubSender, tracker: TaskTracker) -> Self {
        Pool {
            permits: Arc::new(Semaphore::new(threads.max(1))),
            queued: Arc::new(AtomicUsize::new(0)),
            events,
            tracker,
        }
    }

    /// Runs `job` for `conn` when a permit is free; its outcome comes back
    /// as [`HubEvent::AuthDone`].
    pub fn submit(
        &self,
        conn: ConnId,
        job: impl FnOnce() -> Outcome + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit_then(job, move |outcome| HubEvent::AuthDone { conn, outcome })
    }

    /// Runs `job` when a permit is free; its outcome comes back to the hub
    /// as the event `then` makes of it (the web page's logins, which have
    /// no connection yet, come back this way).
    pub fn submit_then(
        &self,
        job: impl FnOnce() -> Outcome + Send + 'static,
        then: impl FnOnce(Outcome) -> HubEvent + Send + 'static,
    ) -> Result<(), Busy> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        let permits = self.permits.clone();
        let queued = self.queued.clone();
        let events = self.events.clone();
        self.tracker.spawn(async move {
            let permit = permits.acquire_owned().await;
            queued.fetch_sub(1, Ordering::AcqRel);
            let Ok(_permit) = permit else { return };
            let Ok(outcome) = tokio::task::spawn_blocking(job).await else {
                return;
            };
            let _ = events.send(then(outcome)).await;
        });
        Ok(())
    }
}
