//! A TCP client's socket as the hub and the connection's reader share it: a
//! plain non-blocking descriptor, registered with tokio only while a task
//! waits on it.
//!
//! tokio keeps a readiness record (`ScheduledIo`, some 260 bytes with its
//! alignment) for every socket registered with it, for as long as the
//! socket lives. An idle client's reader parks ([`crate::parking`]) and
//! waits in the parking's own epoll set instead, so it needs no such record:
//! the reader registers the socket ([`register`]) when it runs and gives the
//! registration up when it parks. The hub never waits to write: it writes
//! through the descriptor without blocking ([`Socket::try_write`]), and in
//! the rare case that the kernel's buffer is full, [`Socket::writable`]
//! registers a duplicate of the descriptor just for that wait.

use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A connected, non-blocking TCP socket.
#[derive(Debug)]
pub struct Socket(TcpStream);

/// A socket registered with tokio, for a task that reads (and, for its last
/// words, writes) it.
pub type Registered = AsyncFd<Arc<Socket>>;

impl Socket {
    /// Takes an accepted socket out of tokio's hands (it stays
    /// non-blocking).
    pub fn from_tokio(stream: tokio::net::TcpStream) -> io::Result<Socket> {
        Ok(Socket(stream.into_std()?))
    }

    /// Gives the socket back to tokio (for a TLS handshake), if nothing
    /// else holds it.
    pub fn into_tokio(socket: Arc<Socket>) -> io::Result<tokio::net::TcpStream> {
        let socket =
            Arc::try_unwrap(socket).map_err(|_| io::Error::other("the socket is shared"))?;
        tokio::net::TcpStream::from_std(socket.0)
    }

    /// Writes what the kernel takes now; `WouldBlock` when it takes
    /// nothing.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        (&self.0).write(bytes)
    }

    /// One `writev` of what the kernel takes now.
    pub fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.0).write_vectored(slices)
    }

    /// Reads what the kernel has now; `WouldBlock` when it has nothing.
    pub fn try_read(&self, chunk: &mut [u8]) -> io::Result<usize> {
        (&self.0).read(chunk)
    }

    /// Waits until the socket takes bytes again. A duplicate descriptor is
    /// registered for the wait (the reader may hold the socket's own
    /// registration, which tokio allows only once), and dropped after it.
    pub async fn writable(&self) -> io::Result<()> {
        // Sound: the registration owns the duplicate (see [`register`]).
        #[allow(deprecated)]
        let duplicate = AsyncFd::with_interest(self.0.try_clone()?, Interest::WRITABLE)?;
        let _ready = duplicate.writable().await?;
        Ok(())
    }

    /// Ends one or both directions of the stream.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.shutdown(how)
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Registers `socket` with tokio for a task that waits on it; the
/// registration ends with [`AsyncFd::into_inner`] or the drop.
///
/// tokio deprecated this safe constructor because a registration must not
/// outlive its descriptor, which it cannot check in general (its
/// replacement is `unsafe`, which this project forbids). Here it holds: the
/// registration holds a reference to the socket, so the descriptor stays
/// open, and the same, for as long as the registration lives.
#[allow(deprecated)]
pub fn register(socket: Arc<Socket>) -> io::Result<Registered> {
    AsyncFd::with_interest(socket, Interest::READABLE | Interest::WRITABLE)
}

/// Waits until `socket` may have something to read, then runs `read` on it.
/// When `read` says `WouldBlock`, the readiness is cleared and the wait
/// begins again, so that a spurious wake-up costs one system call.
///
/// `poll_read_ready` keeps the waker in the socket's own slot (the calling
/// task is the socket's only reader), so waiting needs no waiter node in the
/// caller's future.
pub async fn read_with<R>(
    socket: &Registered,
    mut read: impl FnMut(&Socket) -> io::Result<R>,
) -> io::Result<R> {
    loop {
        let mut ready = poll_fn(|cx| socket.poll_read_ready(cx)).await?;
        match ready.try_io(|socket| read(socket.get_ref())) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// Writes all of `bytes`, waiting for room as needed.
pub async fn write_all(socket: &Registered, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let mut ready = socket.writable().await?;
        match ready.try_io(|socket| socket.get_ref().try_write(bytes)) {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}
