//! Socket plumbing shared by both protocols: connecting (loopback only),
//! reading what is there, and writing a whole buffer, in the clear or over
//! TLS (`--tls`).
//!
//! The generator runs on one thread, so these work on a shared [`Link`]
//! with readiness plus non-blocking reads and writes, which lets one task
//! send on a socket while another reads from it. Over TLS the session sits
//! in a `RefCell` next to the socket, borrowed only between awaits: each
//! message enters it whole, so records never interleave.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::BytesMut;
use rustls::ClientConnection;
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

/// Where the clients connect, and whether with TLS.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One client's connection.
pub struct Link {
    tcp: TcpStream,
    tls: Option<RefCell<ClientConnection>>,
}

/// Clients that share one source address (see [`connect_as`]).
pub const CLIENTS_PER_SOURCE: u32 = 1000;

pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Link> {
    connect_as(endpoint, 0).await
}

/// Connects client `index`. Against 127.0.0.1, clients come from loopback
/// addresses of their own, [`CLIENTS_PER_SOURCE`] to an address (127.0.0.1
/// for the first thousand, 127.0.0.2 for the next...), as clients on many
/// machines would: from one address, each `connect` must find a free
/// source port, and the kernel's search through ports already used towards
/// the same server grows with every client (with 15,000 clients it took
/// 40% of the generator's time, and the last clients' connects waited over
/// a second). Other targets (::1) connect from their own address.
pub async fn connect_as(endpoint: &Endpoint, index: u32) -> anyhow::Result<Link> {
    let addr = endpoint.addr;
    let tcp = match addr {
        SocketAddr::V4(v4) if *v4.ip() == std::net::Ipv4Addr::LOCALHOST => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            // A port a previous run left in TIME_WAIT is free to take.
            socket.set_reuseaddr(true)?;
            let host = 1 + (index / CLIENTS_PER_SOURCE) % 250;
            let source = std::net::Ipv4Addr::new(127, 0, 0, host as u8);
            socket.bind(SocketAddr::from((source, 0)))?;
            socket.connect(addr).await
        }
        _ => TcpStream::connect(addr).await,
    }
    .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let Some(config) = &endpoint.tls else {
        return Ok(Link { tcp, tls: None });
    };
    // The certificate must name the address (natter cert's covers
    // 127.0.0.1 and ::1).
    let name = rustls_pki_types::ServerName::from(addr.ip());
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr}"))?;
    let (tcp, session) = tls.into_inner();
    Ok(Link {
        tcp,
        tls: Some(RefCell::new(session)),
    })
}

/// Appends what the link has to `buf`, waiting until it has something.
/// Ok(0) is the end of the stream.
pub async fn read_more(link: &Link, buf: &mut BytesMut) -> io::Result<usize> {
    let Some(session) = &link.tls else {
        return read_tcp(&link.tcp, buf).await;
    };
    loop {
        let n = take_plaintext(&mut session.borrow_mut(), buf)?;
        if n > 0 {
            return Ok(n);
        }
        let mut ciphertext = BytesMut::new();
        if read_tcp(&link.tcp, &mut ciphertext).await? == 0 {
            return Ok(0);
        }
        let mut session = session.borrow_mut();
        let mut rest = &ciphertext[..];
        while !rest.is_empty() {
            session.read_tls(&mut rest)?;
            session
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            take_plaintext(&mut session, buf)?;
        }
        if !buf.is_empty() {
            return Ok(buf.len());
        }
    }
}

/// Moves the plaintext the session holds into `buf`.
fn take_plaintext(session: &mut ClientConnection, buf: &mut BytesMut) -> io::Result<usize> {
    let mut total = 0;
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match session.reader().read(&mut chunk) {
            Ok(n) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                total += n;
            }
            Ok(_) => return Ok(total),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}

async fn read_tcp(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
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
/// for room only when the socket's buffer is full. Over TLS, `bytes` is
/// encrypted whole first.
pub async fn write_all(link: &Link, bytes: &[u8]) -> io::Result<()> {
    let Some(session) = &link.tls else {
        return write_tcp(&link.tcp, bytes).await;
    };
    let mut left = bytes;
    loop {
        {
            let mut session = session.borrow_mut();
            while !left.is_empty() {
                let n = session.writer().write(left)?;
                if n == 0 {
                    break; // its buffer is full: send some first
                }
                left = &left[n..];
            }
            while session.wants_write() {
                match session.write_tls(&mut NonBlocking(&link.tcp)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if left.is_empty() && !session.wants_write() {
                return Ok(());
            }
        }
        link.tcp.writable().await?;
    }
}

/// `io::Write` over a socket that never waits.
struct NonBlocking<'a>(&'a TcpStream);

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn write_tcp(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
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
