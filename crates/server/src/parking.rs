//! Idle plaintext connections without a task of their own.
//!
//! A client that chats needs a task reading its socket, but most clients of
//! a big server say nothing for minutes, and each task costs its future and
//! header (some 1.8 KB) for nothing. So a plaintext reader holding no
//! unread bytes hands its small state ([`Parked`]) to the server's one
//! [`Parking`] and ends its task: as soon as it has handled what it read if
//! it had been quiet for a [`TICK`] before (a new connection, a client that
//! speaks now and then), or after a quiet tick if it was talking (so a busy
//! client does not park and resume for every message). The parked socket
//! waits in an epoll set of its own, which one thread ([`start`]) waits on;
//! when bytes (or the end of the stream) arrive there, it spawns the
//! connection's reader again with its state, and the reader goes on as if
//! it had never stopped.
//!
//! The same task keeps the time for every connection, so that none needs a
//! timer of its own: every [`TICK`] it tells the running readers (which
//! count quiet ticks, and check their idle timeout), and it resumes the
//! parked connections whose idle timeout passed or which the hub closed
//! (their token cancelled), so that they say why or linger as before.
//! Timeouts are therefore coarse: one fires up to a tick late.
//!
//! Writing is not this module's business: the hub writes to every socket
//! itself ([`crate::peer`]), parked or not.
//!
//! TLS and WebSocket connections keep their tasks: their sessions hold
//! state that would have to be parked too.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use natter_core::ConnId;
use rustix::event::{EventfdFlags, Timespec, epoll, eventfd};
use tokio::runtime::Handle;
use tokio::sync::watch as ticks;

use crate::connection::{self, Parked};
use crate::listener::Shared;

/// How often the time is kept: a reader parks after at least one quiet
/// tick, and timeouts fire up to a tick late.
pub const TICK: Duration = Duration::from_millis(500);

/// Events taken from the epoll set per system call.
const EVENTS_PER_WAIT: usize = 256;

/// Most resumed readers spawned and not yet running. A burst of wake-ups
/// (everyone answering an invitation at once) would otherwise make a task
/// for each at once, and the memory they took would stay with the process
/// after they park again.
const MAX_RESUMING: usize = 64;

/// How soon the watcher looks again when resumed readers are waiting for
/// their turn.
const RESUME_RETRY: Duration = Duration::from_millis(1);

/// The epoll key of the watcher's own wake-up (never a connection id: those
/// count up from 1, or from a cluster node's incarnation, far below this).
const WAKE: u64 = u64::MAX;

/// Where quiet connections wait, and the tick everyone keeps time by.
pub struct Parking {
    inner: Arc<Inner>,
}

/// What the watcher thread shares with the connections.
struct Inner {
    /// `None` when no epoll set could be made: then readers keep their
    /// tasks.
    epoll: Option<Epoll>,
    /// Set once the watcher runs: only then does a parked reader wake.
    watching: AtomicBool,
    /// Readers spawned again that have not started yet.
    resuming: AtomicUsize,
    parked: Mutex<HashMap<ConnId, Box<Parked>>>,
    ticks: ticks::Sender<()>,
}

/// The epoll set, and an eventfd in it that wakes the watcher at shutdown.
struct Epoll {
    set: OwnedFd,
    wake: OwnedFd,
}

impl Default for Parking {
    fn default() -> Self {
        Self::new()
    }
}

impl Parking {
    pub fn new() -> Self {
        let epoll = match Epoll::new() {
            Ok(epoll) => Some(epoll),
            Err(error) => {
                tracing::warn!(%error, "no epoll set: idle connections keep their tasks");
                None
            }
        };
        let inner = Inner {
            epoll,
            watching: AtomicBool::new(false),
            resuming: AtomicUsize::new(0),
            parked: Mutex::default(),
            ticks: ticks::Sender::new(()),
        };
        Parking {
            inner: Arc::new(inner),
        }
    }

    /// How many connections are parked now.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A resumed reader has started (see [`MAX_RESUMING`]).
    pub(crate) fn resumed(&self) {
        self.inner.resuming.fetch_sub(1, Ordering::Relaxed);
    }

    /// A receiver that sees every tick.
    pub fn ticks(&self) -> ticks::Receiver<()> {
        self.inner.ticks.subscribe()
    }

    /// Parks a quiet connection until bytes arrive, its idle timeout passes
    /// or it is closed. Gives it back when it cannot wait here: its token
    /// is cancelled already (the watcher may have stopped looking), or
    /// nothing watches the parking.
    pub(crate) fn park(&self, parked: Box<Parked>) -> Result<(), Box<Parked>> {
        let inner = &self.inner;
        let Some(epoll) = &inner.epoll else {
            return Err(parked);
        };
        if !inner.watching.load(Ordering::Acquire) {
            return Err(parked);
        }
        // Under the lock, so that the watcher's last sweep at shutdown
        // either sees this connection or this check sees the cancel.
        let mut map = inner.lock();
        if parked.cancel.is_cancelled() {
            return Err(parked);
        }
        let conn = parked.conn;
        // Level-triggered and one-shot: bytes that came before the `add`
        // are reported at once, and an event is reported only once.
        let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
        let data = epoll::EventData::new_u64(conn.0);
        if let Err(error) = epoll::add(&epoll.set, &*parked.stream, data, flags) {
            tracing::debug!(conn = conn.0, %error, "cannot park");
            return Err(parked);
        }
        map.insert(conn, parked);
        Ok(())
    }
}

impl Epoll {
    fn new() -> io::Result<Self> {
        let set = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let data = epoll::EventData::new_u64(WAKE);
        epoll::add(&set, &wake, data, epoll::EventFlags::IN)?;
        Ok(Epoll { set, wake })
    }

    /// Waits up to `timeout` for events; returns the connections whose
    /// sockets have something (or ended), and whether the wake-up fired.
    fn wait(&self, timeout: Duration) -> (Vec<ConnId>, bool) {
        let mut events = Vec::with_capacity(EVENTS_PER_WAIT);
        let timeout = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: timeout.subsec_nanos().into(),
        };
        let buffer = rustix::buffer::spare_capacity(&mut events);
        match epoll::wait(&self.set, buffer, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(error) => {
                tracing::warn!(%error, "epoll_wait failed");
                // Not a busy loop if it keeps failing.
                std::thread::sleep(TICK);
            }
        }
        let woken = events.iter().any(|event| event.data.u64() == WAKE);
        let conns = events
            .iter()
            .map(|event| event.data.u64())
            .filter(|&key| key != WAKE)
            .map(ConnId)
            .collect();
        (conns, woken)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<ConnId, Box<Parked>>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `conn` out of the parking, if it is there.
    fn unpark(&self, map: &mut HashMap<ConnId, Box<Parked>>, conn: ConnId) -> Option<Box<Parked>> {
        let parked = map.remove(&conn)?;
        if let Some(epoll) = &self.epoll {
            // Out of the set, so that parking it again is a plain `add`.
            let _ = epoll::delete(&epoll.set, &*parked.stream);
        }
        Some(parked)
    }

    // The boxes go on to the resumed tasks as they are: no copy.
    #[allow(clippy::vec_box)]
    fn take(&self, conns: impl IntoIterator<Item = ConnId>) -> Vec<Box<Parked>> {
        let mut map = self.lock();
        conns
            .into_iter()
            .filter_map(|conn| self.unpark(&mut map, conn))
            .collect()
    }

    /// The parked connections that must run again without bytes: closed by
    /// the hub, or silent past their idle timeout.
    fn due(&self, now: Instant) -> Vec<ConnId> {
        self.lock()
            .values()
            .filter(|parked| parked.cancel.is_cancelled() || parked.idle_expired(now))
            .map(|parked| parked.conn)
            .collect()
    }

    fn all(&self) -> Vec<ConnId> {
        self.lock().keys().copied().collect()
    }
}

/// Starts the watcher: one thread that waits on the epoll set (and keeps
/// the clock), and a task that wakes it when the connections end. Without
/// it, no reader parks.
pub fn start(shared: &Arc<Shared>) -> io::Result<()> {
    let inner = shared.parking.inner.clone();
    if inner.epoll.is_none() {
        return Ok(());
    }
    let weak = Arc::downgrade(shared);
    let handle = Handle::current();
    let watcher = inner.clone();
    // Dropped when the thread ends: by then it has handed every parked
    // connection to a tracked task, which shutdown waits for.
    let (finished, thread_ended) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("natter-parking".into())
        .spawn(move || {
            watch(&watcher, &weak, &handle);
            drop(finished);
        })?;
    inner.watching.store(true, Ordering::Release);
    let connections = shared.connections.clone();
    shared.tracker.spawn(async move {
        connections.cancelled().await;
        if let Some(epoll) = &inner.epoll {
            let _ = rustix::io::write(&epoll.wake, &1u64.to_ne_bytes());
        }
        // Tracked until then, so that the tracker is not empty before the
        // resumed connections are in it.
        let _ = thread_ended.await;
    });
    Ok(())
}

/// The watcher thread: resumes parked connections when their sockets wake
/// or their time comes, and ticks. When the connections end (shutdown, or
/// the hub failed) it resumes every parked one, so that each ends as a
/// running reader would, and stops; it also stops once the server is gone.
fn watch(inner: &Inner, shared: &Weak<Shared>, handle: &Handle) {
    let Some(epoll) = &inner.epoll else {
        return;
    };
    let mut next_tick = Instant::now() + TICK;
    // Woken, waiting for their turn to be spawned (MAX_RESUMING).
    let mut woken = std::collections::VecDeque::new();
    loop {
        let mut timeout = next_tick.saturating_duration_since(Instant::now());
        if !woken.is_empty() {
            timeout = timeout.min(RESUME_RETRY);
        }
        let (ready, _) = epoll.wait(timeout);
        woken.extend(inner.take(ready));
        let now = Instant::now();
        if now >= next_tick {
            inner.ticks.send_replace(());
            woken.extend(inner.take(inner.due(now)));
            next_tick = now + TICK;
        }
        let Some(shared) = shared.upgrade() else {
            return; // the server is gone, and with it every connection
        };
        let ending = shared.connections.is_cancelled();
        if ending {
            woken.extend(inner.take(inner.all()));
        }
        while ending || inner.resuming.load(Ordering::Relaxed) < MAX_RESUMING {
            let Some(parked) = woken.pop_front() else {
                break;
            };
            inner.resuming.fetch_add(1, Ordering::Relaxed);
            let resumed = connection::resume(parked, shared.clone());
            shared.tracker.spawn_on(resumed, handle);
        }
        if ending {
            return;
        }
    }
}
