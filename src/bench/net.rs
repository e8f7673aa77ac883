//! Socket plumbing shared by both protocols: connecting (loopback only),
//! reading what is there, and writing a whole buffer.
//!
//! The generator runs on one thread, so these work on a shared
//! `&TcpStream` with readiness plus non-blocking reads and writes, which
//! lets one task send on a socket while another reads from it.

use std::io;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::BytesMut;
use tokio::net::TcpStream;

/// Bytes asked of the kernel per read: room for many small deliveries.
const READ_CHUNK: usize = 16 * 1024;

/// Refuses anything but loopback: a load generator must never be pointed
/// at someone else's machine by mistake.
pub fn check_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("natter bench only targets loopback addresses (127.0.0.1, ::1), not {addr}");
    }
    Ok(())
}

pub async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Appends what the socket has to `buf`, waiting until it has something.
/// Ok(0) is the end of the stream.
pub async fn read_more(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        buf.reserve(READ_CHUNK);
        match stream.try_read_buf(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bytes`: one non-blocking write in the usual case, waiting
/// for room only when the socket's buffer is full.
pub async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
