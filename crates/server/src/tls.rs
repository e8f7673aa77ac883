//! TLS on the chat port: a first byte of `0x16` (a TLS handshake record)
//! starts a rustls handshake, and the first *decrypted* byte then picks the
//! encoding exactly as for plaintext ([`crate::connection`]).
//!
//! # The write path, and why it looks like this
//!
//! The hub writes to plaintext clients itself, with non-blocking `writev`,
//! once per batch of work ([`crate::peer`]). A TLS session is one state
//! machine for both directions (the reader decrypts, the hub encrypts, and
//! both move the record sequence numbers), so it needs one owner at a time.
//! We chose a small lock over a per-connection writer task:
//!
//! - The peer holds the rustls [`ServerConnection`] in a `Mutex` shared with
//!   the connection's reader. The hub's flush locks it, hands the whole
//!   queue to rustls in one vectored write (rustls packs the slices into
//!   full-size records: one encryption per batch, not per message), and
//!   writes the records with the same non-blocking `writev` as plaintext.
//!   The reader locks it only to feed ciphertext and take plaintext out.
//!   Neither holds it across an await, so it is never contended for long.
//! - The slow-consumer rule, write coalescing and the wait for writability
//!   stay exactly as they are: the transport is still a TCP socket that the
//!   hub writes without blocking. A writer task would need a channel, a
//!   second queue to account for, and a task per idle connection.
//! - The price: encryption runs on the hub's thread. AES-GCM and
//!   ChaCha20-Poly1305 cost far less per byte than the system call that
//!   follows them, and batching keeps the record count low.
//!
//! The plaintext hot path gains one `match` arm, nothing else.
//!
//! The handshake runs in the connection's own task, before the hub hears
//! of it, under [`crate::Config::tls_handshake_timeout`]: a stalled or
//! garbage handshake costs only its own connection.

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use natter_core::ConnId;
use rustls::ServerConnection;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::connection::{self, Source};
use crate::listener::Shared;
use crate::metrics::{Handshake, Listener};
use crate::peer::{Flushed, Transport};
use crate::socket::{self, Registered, Socket};

/// The first byte of every TLS connection: a handshake record.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Ciphertext asked of the kernel per read.
const READ_CHUNK: usize = 4096;

/// At most this many queued messages go to rustls in one vectored write.
const MAX_SLICES: usize = 64;

/// Why the server's TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the certificate and key do not go together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The rustls provider natter uses everywhere: ring, which builds with a C
/// compiler alone.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM certificate chain and private key into a server config.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsSetupError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsSetupError::Read {
        path: key.to_owned(),
        source,
    })?;
    server_config(certs, key)
}

/// A server config from a chain and key already in memory (tests use it
/// with certificates they make).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(config)
}

/// A server config from PEM text (tests, and certificates made in memory).
pub fn server_config_from_pem(
    cert: &str,
    key: &str,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsSetupError::Read {
            path: "(memory)".into(),
            source,
        })?;
    let key =
        PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|source| TlsSetupError::Read {
            path: "(memory)".into(),
            source,
        })?;
    server_config(certs, key)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsSetupError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// Which addresses may speak plaintext (`--require-tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Plaintext {
    /// Anyone (no `--require-tls`).
    #[default]
    Anywhere,
    /// Loopback only: 127.0.0.0/8, ::1, and IPv4-mapped 127.0.0.0/8. Those
    /// bytes never leave the machine, so nothing is gained by encrypting
    /// them (`--require-tls`).
    Loopback,
    /// No one, not even loopback (for a machine whose local users are not
    /// trusted, and for testing the refusal).
    Nowhere,
}

impl Plaintext {
    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            Plaintext::Anywhere => true,
            Plaintext::Loopback => ip.to_canonical().is_loopback(),
            Plaintext::Nowhere => false,
        }
    }
}

/// The ERROR a refused plaintext client gets.
pub fn plaintext_refused(ip: IpAddr) -> String {
    format!(
        "TLS required: this server accepts plaintext only from loopback, \
         not from {ip}; connect with TLS"
    )
}

/// The half of a TLS connection the hub writes to: the socket and the
/// session it shares with the reader.
pub struct TlsTransport {
    pub stream: Arc<Socket>,
    session: Arc<Mutex<ServerConnection>>,
}

impl TlsTransport {
    /// Encrypts the queue and writes it without blocking: one vectored
    /// write into rustls per [`MAX_SLICES`] messages, then the records in
    /// one `writev`.
    /// `pending_bytes` counts what is still queued. (Never inlined into
    /// [`crate::peer::Peer::flush`], whose plaintext path stays as it was.)
    #[inline(never)]
    pub fn flush(
        &self,
        pending: &mut std::collections::VecDeque<Bytes>,
        pending_bytes: &mut usize,
    ) -> Flushed {
        let mut session = lock(&self.session);
        loop {
            let mut accepted = 0;
            if !pending.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (slot, bytes) in slices.iter_mut().zip(pending.iter()) {
                    *slot = IoSlice::new(bytes);
                    count += 1;
                }
                match session.writer().write_vectored(&slices[..count]) {
                    Ok(n) => accepted = n,
                    Err(e) => return Flushed::Failed(e),
                }
                consume(pending, accepted);
                *pending_bytes -= accepted;
            }
            if !session.wants_write() {
                if pending.is_empty() {
                    return Flushed::All;
                }
                if accepted == 0 {
                    return Flushed::Failed(io::ErrorKind::WriteZero.into());
                }
                continue;
            }
            match session.write_tls(&mut NonBlocking(&self.stream)) {
                Ok(0) => return Flushed::Failed(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flushed::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Flushed::Failed(e),
            }
        }
    }

    /// Writes what is queued (waiting for writability as needed), then
    /// close_notify, so that the client knows the end is real.
    pub async fn finish(&self, mut pending: std::collections::VecDeque<Bytes>) -> io::Result<()> {
        let mut notified = false;
        let mut left = pending.iter().map(Bytes::len).sum();
        loop {
            match self.flush(&mut pending, &mut left) {
                Flushed::All if notified => return Ok(()),
                Flushed::All => {
                    lock(&self.session).send_close_notify();
                    notified = true;
                }
                Flushed::Blocked => self.stream.writable().await?,
                Flushed::Failed(e) => return Err(e),
            }
        }
    }
}

/// Drops `n` bytes that rustls took from the front of the queue.
fn consume(pending: &mut std::collections::VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let front = pending
            .front_mut()
            .expect("rustls took more than was queued");
        if front.len() <= n {
            n -= front.len();
            pending.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

/// A poisoned lock means a panic mid-record; the session is still the
/// best we have, and the connection ends soon anyway.
fn lock(session: &Mutex<ServerConnection>) -> MutexGuard<'_, ServerConnection> {
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `io::Write` over a socket that never waits: a full buffer is
/// `WouldBlock`, which rustls passes back and keeps the rest queued.
struct NonBlocking<'a>(&'a Socket);

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading half: ciphertext from the socket, plaintext out.
pub struct TlsSource<'a> {
    stream: &'a Registered,
    session: &'a Mutex<ServerConnection>,
}

impl Source for TlsSource<'_> {
    fn transport(&self) -> crate::metrics::Transport {
        crate::metrics::Transport::Tls
    }

    fn socket(&mut self) -> Option<&Registered> {
        Some(self.stream)
    }

    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            // rustls may hold plaintext already: the client's first bytes
            // can arrive with its last handshake message.
            match self.take_plaintext(buf)? {
                Taken::Bytes(0) => {}
                Taken::Bytes(n) => return Ok(n),
                Taken::Closed => return Ok(0),
            }
            let fed = socket::read_with(self.stream, |socket| {
                connection::with_scratch(|chunk| match socket.try_read(chunk) {
                    Ok(0) => Ok(Taken::Closed),
                    Ok(n) => self.feed(&chunk[..n], buf),
                    Err(e) => Err(e),
                })
            });
            match fed.await? {
                Taken::Bytes(0) => {}
                Taken::Bytes(n) => return Ok(n),
                Taken::Closed => return Ok(0),
            }
        }
    }
}

/// What rustls had for the reader.
enum Taken {
    Bytes(usize),
    /// The client sent close_notify.
    Closed,
}

impl TlsSource<'_> {
    fn take_plaintext(&self, buf: &mut BytesMut) -> io::Result<Taken> {
        drain_plaintext(&mut lock(self.session), buf)
    }

    /// Decrypts `ciphertext`, appending the plaintext to `buf`. Anything
    /// rustls wants to answer (an alert, a key update) goes out at once if
    /// the socket takes it, else with the hub's next write.
    fn feed(&self, mut ciphertext: &[u8], buf: &mut BytesMut) -> io::Result<Taken> {
        let mut session = lock(self.session);
        let mut total = 0;
        while !ciphertext.is_empty() {
            session.read_tls(&mut ciphertext)?;
            let state = session.process_new_packets();
            if session.wants_write() {
                let _ = session.write_tls(&mut NonBlocking(self.stream.get_ref()));
            }
            state.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            match drain_plaintext(&mut session, buf)? {
                Taken::Bytes(n) => total += n,
                Taken::Closed if total == 0 => return Ok(Taken::Closed),
                Taken::Closed => break,
            }
        }
        Ok(Taken::Bytes(total))
    }
}

fn drain_plaintext(session: &mut ServerConnection, buf: &mut BytesMut) -> io::Result<Taken> {
    let mut total = 0;
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match session.reader().read(&mut chunk) {
            Ok(0) if total == 0 => return Ok(Taken::Closed),
            Ok(0) => return Ok(Taken::Bytes(total)),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Taken::Bytes(total)),
            Err(e) => return Err(e),
        }
    }
}

/// Serves one connection whose first bytes (`first`) began a TLS
/// handshake: the handshake, under its timeout, then the same conversation
/// as plaintext.
pub async fn serve(
    conn: ConnId,
    stream: TcpStream,
    first: BytesMut,
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    accepted: tokio::time::Instant,
) {
    // The settings now: a reloaded certificate serves new handshakes.
    let settings = shared.config.get();
    let Some(config) = settings.tls.clone() else {
        return;
    };
    let acceptor = TlsAcceptor::from(config);
    let timeout = settings.tls_handshake_timeout;
    let handshake = tokio::time::timeout(timeout, acceptor.accept(Prefixed::new(first, stream)));
    let tls = tokio::select! {
        _ = cancel.cancelled() => return,
        done = handshake => match done {
            Ok(Ok(tls)) => {
                shared.metrics.tls_handshake(Listener::Chat, Handshake::Ok);
                tls
            }
            Ok(Err(error)) => {
                tracing::debug!(conn = conn.0, peer = %addr, %error, "TLS handshake failed");
                shared.metrics.tls_handshake(Listener::Chat, Handshake::Failed);
                return;
            }
            Err(_) => {
                tracing::debug!(conn = conn.0, peer = %addr, "TLS handshake timed out");
                shared.metrics.tls_handshake(Listener::Chat, Handshake::TimedOut);
                return;
            }
        },
    };
    let (prefixed, session) = tls.into_inner();
    let (stream, _) = prefixed.into_parts();
    let stream = match Socket::from_tokio(stream).and_then(|s| socket::register(Arc::new(s))) {
        Ok(registered) => registered,
        Err(error) => {
            tracing::warn!(conn = conn.0, peer = %addr, %error, "cannot register the socket");
            return;
        }
    };
    let session = Arc::new(Mutex::new(session));
    let mut source = TlsSource {
        stream: &stream,
        session: &session,
    };
    let mut buf = BytesMut::new();
    // The registration deadline runs from the accept here too: a client
    // that finishes the handshake and then says nothing is closed in time.
    let register_timeout = settings.register_timeout;
    let first = tokio::select! {
        _ = cancel.cancelled() => return,
        read = source.read_some(&mut buf) => Some(read),
        _ = connection::registration_expires(accepted, register_timeout) => None,
    };
    if matches!(first, Some(Ok(0) | Err(_))) {
        return;
    }
    let first_read = buf.len() as u64;
    shared
        .metrics
        .bytes_in(crate::metrics::Transport::Tls)
        .inc_by(first_read);
    let transport = Transport::Tls(TlsTransport {
        stream: stream.get_ref().clone(),
        session: session.clone(),
    });
    let _never_quiet = connection::converse(
        conn, addr, &shared, cancel, source, buf, transport, accepted,
    )
    .await;
}

/// The socket with the bytes already read from it (the start of the
/// ClientHello) put back in front, for the handshake to read first.
struct Prefixed {
    prefix: BytesMut,
    inner: TcpStream,
}

impl Prefixed {
    fn new(prefix: BytesMut, inner: TcpStream) -> Self {
        Prefixed { prefix, inner }
    }

    /// The socket, and whatever of the prefix the handshake did not read
    /// (nothing: a client cannot finish a handshake before our reply).
    fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.inner, self.prefix)
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_127_slash_8_and_colon_colon_1() {
        let rule = Plaintext::Loopback;
        for ip in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.1.1",
            "::1",
            "::ffff:127.0.0.3",
        ] {
            assert!(rule.allows(ip.parse().unwrap()), "{ip} is loopback");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "::2",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!rule.allows(ip.parse().unwrap()), "{ip} is not loopback");
        }
        assert!(!Plaintext::Nowhere.allows("127.0.0.1".parse().unwrap()));
        assert!(Plaintext::Anywhere.allows("10.0.0.1".parse().unwrap()));
    }
}
