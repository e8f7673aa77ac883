//! One connected client as the hub sees it: where its bytes go, and the
//! bounded queue of bytes waiting to go there (the slow-consumer rule).
//!
//! The hub writes to TCP sockets itself, without blocking: messages for a
//! client pile up in [`Peer::pending`] while the hub works through a batch of
//! inputs, then [`Peer::flush`] hands them all to the kernel in one
//! `writev`. So a message fanned out to N members costs one `Bytes` clone
//! (a reference count) per member, and under load several messages for one
//! client leave in one system call. Only when the kernel's buffer is full
//! does a small task wait for the socket to become writable again.
//!
//! The slow-consumer limit counts only what the kernel refused: a batch may
//! queue more than the limit for a client that reads well, so a queue about
//! to pass the limit is first offered to the kernel, and only what it does
//! not take counts against the client.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use natter_proto::Encoding;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::log_limit::LogLimiter;
use crate::socket::Socket;
use crate::tls::TlsTransport;

/// At most this many buffers go into one `writev`.
const MAX_IOVECS: usize = 64;

/// A queue this large is released after it drains, so that a burst does not
/// pin memory to an idle connection for good.
const KEEP_QUEUE_CAPACITY: usize = 4;

/// Where a peer's bytes go.
pub enum Transport {
    /// A TCP socket, shared with the connection's reader task; the hub only
    /// ever calls the non-blocking `try_write_vectored` on it.
    Tcp(Arc<Socket>),
    /// A TCP socket under a TLS session shared with the reader: the hub
    /// encrypts each batch and writes it without blocking ([`crate::tls`]).
    Tls(TlsTransport),
    /// A task that owns the real sink (a WebSocket): each `Bytes` is one
    /// whole message. `queued` counts the bytes in the channel; the task
    /// subtracts what it has sent. `blocked` is set while the task waits for
    /// the socket: only then are the queued bytes refused ones.
    Channel {
        sender: mpsc::UnboundedSender<Bytes>,
        queued: Arc<AtomicUsize>,
        blocked: Arc<AtomicBool>,
    },
}

/// Whether everything written to a TCP client so far ends where a message
/// ends. The connection's task keeps a clone: if the hub dies, the task may
/// still write a last ERROR itself, but never into a half-written message.
#[derive(Debug, Clone)]
pub struct Boundary(Arc<AtomicBool>);

impl Boundary {
    fn new() -> Self {
        Boundary(Arc::new(AtomicBool::new(true)))
    }

    pub fn holds(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The queue passed the server's limit: the client does not read.
#[derive(Debug)]
pub struct Overflow;

/// What a flush achieved.
pub enum Flushed {
    /// Everything queued is with the kernel.
    All,
    /// The socket's buffer is full; the rest waits for writability.
    Blocked,
    /// The connection is broken.
    Failed(io::Error),
}

/// A connected client, owned by the hub.
pub struct Peer {
    pub addr: SocketAddr,
    pub encoding: Encoding,
    transport: Transport,
    /// Tells the connection's reader to stop.
    pub cancel: CancellationToken,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// Set while a task waits for the socket to become writable; the hub
    /// does not write until it reports back.
    pub awaiting_writable: bool,
    /// Set when bytes were queued since the last flush.
    pub dirty: bool,
    /// When the oldest message not yet handed to the kernel was queued
    /// (for write coalescing; set by the hub when it defers a flush).
    pub queued: std::time::Instant,
    /// When the connection was accepted: the registration deadline counts
    /// from here, not from the first byte.
    pub accepted: tokio::time::Instant,
    /// Limits the log lines this client's bad input causes.
    pub bad_input_log: LogLimiter,
    /// Where the bytes written so far end.
    pub boundary: Boundary,
    /// Bytes handed to the socket (or TLS) since the hub last took the
    /// count ([`Peer::take_written`]).
    written: u64,
}

impl Peer {
    pub fn new(
        addr: SocketAddr,
        encoding: Encoding,
        transport: Transport,
        cancel: CancellationToken,
    ) -> Self {
        Peer {
            addr,
            encoding,
            transport,
            cancel,
            pending: VecDeque::new(),
            pending_bytes: 0,
            awaiting_writable: false,
            dirty: false,
            queued: std::time::Instant::now(),
            accepted: tokio::time::Instant::now(),
            bad_input_log: LogLimiter::new(std::time::Instant::now()),
            boundary: Boundary::new(),
            written: 0,
        }
    }

    /// How this client reaches the server (a metrics label).
    pub fn transport(&self) -> crate::metrics::Transport {
        match self.transport {
            Transport::Tcp(_) => crate::metrics::Transport::Tcp,
            Transport::Tls(_) => crate::metrics::Transport::Tls,
            Transport::Channel { .. } => crate::metrics::Transport::WebSocket,
        }
    }

    /// Bytes written to the client since the last call (TCP and TLS; a
    /// WebSocket's writer counts its own).
    pub fn take_written(&mut self) -> u64 {
        std::mem::take(&mut self.written)
    }

    /// Queues one encoded message, or reports that the client has fallen
    /// more than `limit` bytes behind: that the kernel refused to take that
    /// much, not merely that a batch produced it.
    pub fn enqueue(&mut self, bytes: Bytes, limit: usize) -> Result<(), Overflow> {
        match &self.transport {
            Transport::Tcp(_) | Transport::Tls(_) => {
                if self.pending_bytes + bytes.len() > limit {
                    // Try the write before declaring the client slow (the
                    // bytes pushed below mark the peer dirty again).
                    if let Flushed::Failed(_) = self.flush() {
                        return Err(Overflow);
                    }
                    if self.pending_bytes + bytes.len() > limit {
                        return Err(Overflow);
                    }
                }
                self.pending_bytes += bytes.len();
                self.pending.push_back(bytes);
                self.dirty = true;
                Ok(())
            }
            Transport::Channel {
                sender,
                queued,
                blocked,
            } => {
                let len = bytes.len();
                // Bytes the task has not had a chance to send yet are not
                // refused ones; bytes waiting while it is stuck on a full
                // socket are.
                if blocked.load(Ordering::Relaxed) && queued.load(Ordering::Relaxed) + len > limit {
                    return Err(Overflow);
                }
                queued.fetch_add(len, Ordering::Relaxed);
                // A closed channel means the task is gone; its own
                // disconnect event is on its way to the hub.
                let _ = sender.send(bytes);
                Ok(())
            }
        }
    }

    /// How many messages wait in the queue (none for a channel transport,
    /// whose task holds them).
    pub fn queued_messages(&self) -> usize {
        self.pending.len()
    }

    /// Writes as much of the queue as the kernel takes now, without waiting.
    pub fn flush(&mut self) -> Flushed {
        let before = self.pending_bytes;
        let flushed = self.flush_queue();
        self.written += (before - self.pending_bytes) as u64;
        flushed
    }

    fn flush_queue(&mut self) -> Flushed {
        self.dirty = false;
        let stream = match &self.transport {
            Transport::Tcp(stream) => stream,
            // Encrypts the batch, then the same non-blocking writev.
            Transport::Tls(tls) => return tls.flush(&mut self.pending, &mut self.pending_bytes),
            Transport::Channel { .. } => return Flushed::All,
        };
        while !self.pending.is_empty() {
            let written = match write_some(stream, &self.pending) {
                Ok(0) => return Flushed::Failed(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flushed::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Flushed::Failed(e),
            };
            let partial = consume(&mut self.pending, &mut self.pending_bytes, written);
            self.boundary.0.store(!partial, Ordering::Relaxed);
        }
        if self.pending.capacity() > KEEP_QUEUE_CAPACITY {
            self.pending = VecDeque::new();
        }
        Flushed::All
    }

    /// How the client is connected, as an operator reads it.
    pub fn transport_name(&self) -> &'static str {
        match &self.transport {
            Transport::Tcp(_) => "tcp",
            Transport::Tls(_) => "tls",
            Transport::Channel { .. } => "websocket",
        }
    }

    /// The TCP socket, for the task that waits for writability.
    pub fn tcp_stream(&self) -> Option<&Arc<Socket>> {
        match &self.transport {
            Transport::Tcp(stream) => Some(stream),
            Transport::Tls(tls) => Some(&tls.stream),
            Transport::Channel { .. } => None,
        }
    }

    /// Closes at once: used for slow consumers and broken connections.
    /// Whatever is queued is dropped.
    pub fn abort(self) {
        if let Some(stream) = self.tcp_stream() {
            // Wakes the reader with end-of-stream and tells the client now.
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.cancel.cancel();
    }

    /// Closes cleanly: what is queued is still written (for at most
    /// `linger`), then our side of the stream ends and the reader drains
    /// the client's side. Returns the task doing it, for the caller to track.
    pub fn close_gracefully(self, linger: Duration) -> impl Future<Output = ()> + Send + 'static {
        let Peer {
            transport,
            pending,
            cancel,
            ..
        } = self;
        async move {
            match transport {
                Transport::Tcp(stream) => {
                    let _ = tokio::time::timeout(linger, write_all(&stream, pending)).await;
                    let _ = stream.shutdown(Shutdown::Write);
                }
                Transport::Tls(tls) => {
                    let _ = tokio::time::timeout(linger, tls.finish(pending)).await;
                    let _ = tls.stream.shutdown(Shutdown::Write);
                }
                Transport::Channel { .. } => {}
            }
            // A channel transport closes when its sender drops, here, after
            // the last message went into it.
            cancel.cancel();
        }
    }
}

/// One non-blocking write of the front of the queue: a plain `write` for
/// one message, a `writev` of up to [`MAX_IOVECS`] buffers for several.
fn write_some(stream: &Socket, pending: &VecDeque<Bytes>) -> io::Result<usize> {
    if pending.len() == 1 {
        return stream.try_write(&pending[0]);
    }
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let mut count = 0;
    for (slot, bytes) in slices.iter_mut().zip(pending) {
        *slot = IoSlice::new(bytes);
        count += 1;
    }
    stream.try_write_vectored(&slices[..count])
}

/// Drops `n` written bytes from the front of the queue. True when the write
/// ended inside a message.
fn consume(pending: &mut VecDeque<Bytes>, pending_bytes: &mut usize, mut n: usize) -> bool {
    *pending_bytes -= n;
    while n > 0 {
        let front = pending.front_mut().expect("wrote more than was queued");
        if front.len() <= n {
            n -= front.len();
            pending.pop_front();
        } else {
            front.advance(n);
            return true;
        }
    }
    false
}

/// Writes every queued buffer, waiting for writability as needed (only
/// then: each wait registers the socket anew).
async fn write_all(stream: &Socket, pending: VecDeque<Bytes>) -> io::Result<()> {
    for mut bytes in pending {
        while !bytes.is_empty() {
            match stream.try_write(&bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
