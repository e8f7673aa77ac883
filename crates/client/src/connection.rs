//! One framed TCP connection to a server: typed commands out, typed
//! messages in.
//!
//! Writes are paced ([`crate::pace`]). Reading is cancel-safe (the only await point is the socket read into
//! our own buffer), so the connection task can `select!` on it. The read
//! buffer is bounded by the decoder: a partial message longer than the
//! client's frame limit is a decode error, not an allocation.

use std::time::Duration;

use bytes::BytesMut;
use natter_proto::codec::{Decoder, Encoding, encode_command};
use natter_proto::wire::Direction;
use natter_proto::{Command, Limits, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{SERVER_CLOSED, io_reason};
use crate::pace::{Bucket, Pace};

/// How much to read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

pub(crate) struct Connection {
    stream: TcpStream,
    decoder: Decoder,
    inbound: BytesMut,
    outbound: BytesMut,
    write_timeout: Duration,
    pace: Option<Bucket>,
}

/// What one read produced.
pub(crate) enum Incoming {
    Message(ServerMessage),
    /// A message that could not be decoded or typed; the stream goes on.
    Undecodable(String),
    /// The connection is over: closed, broken, or its bytes can no longer
    /// be trusted. `decode_error` is set in the last case.
    Lost {
        reason: String,
        decode_error: Option<String>,
    },
}

impl Connection {
    /// Connects to `addr` (`HOST:PORT`). The error is a short reason such
    /// as "connection refused".
    pub async fn open(
        addr: &str,
        timeout: Duration,
        pace: Option<Pace>,
    ) -> Result<Connection, String> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err("timed out".into()),
            Ok(Err(err)) => return Err(io_reason(&err)),
            Ok(Ok(stream)) => stream,
        };
        // Chat messages are small and interactive.
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            decoder: Decoder::new(
                Encoding::Framed,
                Direction::ToClient,
                Limits::client_default(),
            ),
            inbound: BytesMut::with_capacity(READ_CHUNK),
            outbound: BytesMut::new(),
            write_timeout: timeout,
            pace: pace.map(|pace| Bucket::new(pace, std::time::Instant::now())),
        })
    }

    /// How long until a command could be written without waiting.
    pub fn ready_in(&self) -> Duration {
        self.pace.as_ref().map_or(Duration::ZERO, |bucket| {
            bucket.ready_in(std::time::Instant::now())
        })
    }

    /// Writes one command, when the pace allows. A server that stops
    /// reading for longer than the timeout counts as a lost connection.
    pub async fn send(&mut self, command: &Command) -> Result<(), String> {
        if let Some(bucket) = &mut self.pace {
            let wait = bucket.take(std::time::Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        self.outbound.clear();
        encode_command(command, Encoding::Framed, &mut self.outbound);
        match tokio::time::timeout(self.write_timeout, self.stream.write_all(&self.outbound)).await
        {
            Err(_) => Err("the server stopped reading".into()),
            Ok(Err(err)) => Err(io_reason(&err)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads the next message. Cancel-safe.
    pub async fn next(&mut self) -> Incoming {
        loop {
            match self.decoder.decode(&mut self.inbound) {
                Ok(Some(raw)) => {
                    return match ServerMessage::from_raw(raw) {
                        Ok(message) => Incoming::Message(message),
                        Err(err) => Incoming::Undecodable(err.to_string()),
                    };
                }
                Ok(None) => {}
                Err(err) if err.is_fatal() => {
                    return Incoming::Lost {
                        reason: format!("bad data from the server: {err}"),
                        decode_error: Some(err.to_string()),
                    };
                }
                Err(err) => return Incoming::Undecodable(err.to_string()),
            }
            self.inbound.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.inbound).await {
                Ok(0) => return lost(SERVER_CLOSED.into()),
                Ok(_) => {}
                Err(err) => return lost(io_reason(&err)),
            }
        }
    }
}

fn lost(reason: String) -> Incoming {
    Incoming::Lost {
        reason,
        decode_error: None,
    }
}
