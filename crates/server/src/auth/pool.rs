//! The bounded pool that hashes and verifies passwords, off the hub.
//!
//! argon2id takes tens of milliseconds and 19 MiB per call by design. Run
//! on the hub it would stall every chat; run without a bound, a storm of
//! logins would take every core and gigabytes. So the pool is `threads`
//! dedicated threads fed by a queue of at most [`MAX_QUEUED`] jobs; past
//! that a login is refused with "busy" at once, which costs nothing.
//!
//! Dedicated threads, rather than tokio's blocking pool, for two reasons
//! measured in a login storm: the allocator keeps a freed 19 MiB block in
//! the arena of the thread that used it, so hashing on tokio's ever-changing
//! blocking threads grew the server by hundreds of MiB, while `threads`
//! fixed threads keep at most `threads` such blocks; and the threads run at
//! a lower scheduling priority than the hub, so on a busy machine chat
//! traffic goes first and logins wait. The result comes back to the hub as
//! an event.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use natter_core::ConnId;
use tracing::warn;

use super::Outcome;
use crate::hub::{HubEvent, HubSender};

/// Jobs that may wait for a thread.
pub const MAX_QUEUED: usize = 1024;

/// How much nicer than the hub the hashing threads are (Linux nice values).
const NICENESS: i32 = 10;

/// The pool was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is busy checking passwords; try again in a moment")]
pub struct Busy;

type Job = Box<dyn FnOnce() -> Outcome + Send>;
/// Makes the event that takes a job's outcome back to the hub.
type Then = Box<dyn FnOnce(Outcome) -> HubEvent + Send>;

pub struct Pool {
    jobs: SyncSender<(Job, Then)>,
}

impl Pool {
    /// Starts `threads` hashing threads (at least one). They end when the
    /// pool is dropped and the queue is empty.
    pub fn new(threads: usize, events: HubSender) -> Self {
        let (jobs, queue) = mpsc::sync_channel(MAX_QUEUED);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            let events = events.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("natter-auth-{n}"))
                .spawn(move || work(&queue, &events));
            if let Err(error) = spawned {
                warn!(%error, "cannot start a password hashing thread");
            }
        }
        Pool { jobs }
    }

    /// Queues `job` for `conn`; its outcome comes back as
    /// [`HubEvent::AuthDone`].
    pub fn submit(
        &self,
        conn: ConnId,
        job: impl FnOnce() -> Outcome + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit_then(job, move |outcome| HubEvent::AuthDone { conn, outcome })
    }

    /// Queues `job`; its outcome comes back to the hub as the event `then`
    /// makes of it (the web page's logins, which have no connection yet,
    /// come back this way).
    pub fn submit_then(
        &self,
        job: impl FnOnce() -> Outcome + Send + 'static,
        then: impl FnOnce(Outcome) -> HubEvent + Send + 'static,
    ) -> Result<(), Busy> {
        match self.jobs.try_send((Box::new(job), Box::new(then))) {
            Ok(()) => Ok(()),
            // Disconnected only if every thread failed to start: refusing
            // is all that is left to do.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

/// One hashing thread: takes jobs until the pool is gone.
fn work(queue: &Mutex<Receiver<(Job, Then)>>, events: &HubSender) {
    lower_priority();
    loop {
        // The lock is held only while waiting for the next job, never while
        // hashing, so the threads hash in parallel.
        let next = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok((job, then)) = next else { return };
        let outcome = job();
        if events.blocking_send(then(outcome)).is_err() {
            return; // the hub has stopped
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    // On Linux the process priority calls with no pid act on the calling
    // thread alone.
    let lowered = getpriority_process(None)
        .and_then(|now| setpriority_process(None, (now + NICENESS).min(19)));
    if let Err(error) = lowered {
        warn!(%error, "cannot lower the priority of a password hashing thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}
