//! The reading half of one TCP client: bytes in, [`HubEvent`]s out.
//!
//! The first byte picks the encoding; from then on the task feeds what it
//! reads to the protocol decoder and forwards each command to the hub. It
//! never writes: everything a client receives goes through the hub, so
//! replies and errors keep their order. An idle connection holds no read
//! buffer: one is allocated when bytes arrive and released once they are
//! all decoded.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use natter_core::ConnId;
use natter_proto::wire::Direction;
use natter_proto::{DecodeError, Decoder, Encoding};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::admission::Ticket;
use crate::config::Config;
use crate::hub::{HubEvent, HubSender};
use crate::listener::Shared;
use crate::peer::{Peer, Transport};
use crate::rate::{RateLimiter, Verdict};

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 4096;

/// Serves one accepted TCP connection until it ends.
pub async fn serve(
    conn: ConnId,
    stream: TcpStream,
    addr: SocketAddr,
    shared: Arc<Shared>,
    _ticket: Ticket,
) {
    let hub = shared.hub.clone();
    let config = shared.config.clone();
    let shutdown = shared.shutdown.clone();
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let mut buf = BytesMut::new();
    // Wait for the first byte, which says how the client will speak.
    let first = tokio::select! {
        _ = shutdown.cancelled() => return,
        read = read_some(&stream, &mut buf) => read,
    };
    match first {
        Ok(0) | Err(_) => {
            tracing::debug!(conn = conn.0, peer = %addr, "closed before sending anything");
            return;
        }
        Ok(_) => {}
    }
    let detected = Encoding::detect(buf[0]);
    let cancel = CancellationToken::new();
    // An unknown first byte is answered in JSON, the one encoding a person
    // typing into a terminal can read.
    let encoding = detected.unwrap_or(Encoding::Json);
    let peer = Peer::new(
        addr,
        encoding,
        Transport::Tcp(stream.clone()),
        cancel.clone(),
    );
    if hub.send(HubEvent::Connected { conn, peer }).await.is_err() {
        return; // the server is stopping
    }
    let reader = Reader {
        conn,
        hub: &hub,
        decoder: Decoder::new(encoding, Direction::ToServer, config.limits.clone()),
        config: &config,
        limiter: RateLimiter::new(config.rate_limit, config.rate_burst, Instant::now()),
    };
    let ended = match detected {
        None => {
            let error = DecodeError::UnknownEncoding(buf[0]);
            reader.reject(error.to_string(), true).await;
            Ended::ByServer
        }
        Some(_) => reader.run(&stream, buf, &cancel, &shutdown).await,
    };
    match ended {
        Ended::ByClient => {
            let _ = hub.send(HubEvent::Disconnected { conn }).await;
        }
        Ended::ByServer => {
            // Let the hub write its last words before draining.
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = shutdown.cancelled() => {}
            }
            linger(&stream, &config).await;
        }
    }
}

/// Who ended the conversation.
enum Ended {
    /// End of stream or an error on the socket.
    ByClient,
    /// The hub closes the connection (GOODBYE, fatal input, shutdown, slow
    /// consumer).
    ByServer,
}

struct Reader<'a> {
    conn: ConnId,
    hub: &'a HubSender,
    decoder: Decoder,
    config: &'a Config,
    /// `None` when rate limiting is off.
    limiter: Option<RateLimiter>,
}

impl Reader<'_> {
    async fn run(
        mut self,
        stream: &TcpStream,
        mut buf: BytesMut,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Ended {
        loop {
            if !self.decode_all(&mut buf).await {
                return Ended::ByServer;
            }
            if buf.is_empty() {
                buf = BytesMut::new(); // idle connections hold no buffer
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ended::ByServer,
                _ = shutdown.cancelled() => return Ended::ByServer,
                read = read_some(stream, &mut buf) => match read {
                    Ok(0) | Err(_) => return Ended::ByClient,
                    Ok(_) => {}
                },
                _ = idle_deadline(self.config.idle_timeout) => {
                    let secs = self.config.idle_timeout.as_secs();
                    self.reject(format!("idle for {secs} s: closing the connection"), true).await;
                    return Ended::ByServer;
                }
            }
        }
    }

    /// Forwards every whole message in `buf`. False when the stream can no
    /// longer be trusted (or the hub is gone).
    async fn decode_all(&mut self, buf: &mut BytesMut) -> bool {
        loop {
            let event = match self.decoder.decode_command(buf) {
                Ok(None) => return true,
                Ok(Some(typed)) => match self.rate_check() {
                    Verdict::Allow => match typed {
                        Ok(command) => HubEvent::Command {
                            conn: self.conn,
                            command,
                        },
                        Err(error) => self.rejection(error.to_string(), false),
                    },
                    Verdict::Refuse => {
                        let error = format!(
                            "rate limit: at most {} commands per second (burst {}); command ignored",
                            self.config.rate_limit, self.config.rate_burst
                        );
                        self.rejection(error, false)
                    }
                    Verdict::Disconnect => {
                        let error = "flooding: over the rate limit for 5 s, disconnecting";
                        self.rejection(error.to_string(), true)
                    }
                },
                Err(error) => self.rejection(error.to_string(), error.is_fatal()),
            };
            let fatal = matches!(event, HubEvent::Rejected { fatal: true, .. });
            if self.hub.send(event).await.is_err() || fatal {
                return false;
            }
        }
    }

    /// Counts one command against the rate limit (every command counts,
    /// valid or not).
    fn rate_check(&mut self) -> Verdict {
        match &mut self.limiter {
            Some(limiter) => limiter.check(Instant::now()),
            None => Verdict::Allow,
        }
    }

    fn rejection(&self, error: String, fatal: bool) -> HubEvent {
        HubEvent::Rejected {
            conn: self.conn,
            error,
            fatal,
        }
    }

    async fn reject(&self, error: String, fatal: bool) -> bool {
        self.hub.send(self.rejection(error, fatal)).await.is_ok()
    }
}

/// Reads what the socket has into `buf`, waiting until it has something.
/// Ok(0) is the end of the stream.
async fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
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

/// Fires after `idle` (never when `idle` is zero). Raced against each read,
/// so every read starts a new deadline.
async fn idle_deadline(idle: Duration) {
    if idle.is_zero() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(idle).await;
}

/// After the server closed its side, reads and discards until the client
/// closes too (or the linger time runs out), so the close is a clean FIN
/// exchange rather than a reset that could destroy our last message.
async fn linger(stream: &TcpStream, config: &Config) {
    let drain = async {
        let mut sink = BytesMut::new();
        loop {
            sink.clear();
            match read_some(stream, &mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(config.close_linger, drain).await;
}
