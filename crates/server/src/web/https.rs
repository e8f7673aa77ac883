//! HTTPS for the web listener, with the chat port's certificate.
//!
//! The web listener admits a connection first (its own limits, see
//! `web.rs`), then the connection's task runs the TLS handshake under the
//! configured timeout before HTTP starts, so a client that stalls
//! mid-handshake holds up no one else and counts against the same limits
//! as any other connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::metrics::{Handshake, Listener, Metrics};

/// Runs server-side handshakes for the web listener.
#[derive(Clone)]
pub struct Handshaker {
    acceptor: TlsAcceptor,
    timeout: Duration,
}

impl Handshaker {
    pub fn new(config: Arc<rustls::ServerConfig>, timeout: Duration) -> Handshaker {
        let mut config = (*config).clone();
        // The web listener speaks HTTP/1.1 only (WebSocket upgrades need it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Handshaker {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            timeout,
        }
    }

    /// The TLS stream once the handshake is done; `None` (logged) when it
    /// failed or took longer than the timeout.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        metrics: &Metrics,
    ) -> Option<TlsStream<TcpStream>> {
        match tokio::time::timeout(self.timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                metrics.tls_handshake(Listener::Web, Handshake::Ok);
                Some(tls)
            }
            Ok(Err(error)) => {
                tracing::debug!(peer = %addr, %error, "web TLS handshake failed");
                metrics.tls_handshake(Listener::Web, Handshake::Failed);
                None
            }
            Err(_) => {
                tracing::debug!(peer = %addr, "web TLS handshake timed out");
                metrics.tls_handshake(Listener::Web, Handshake::TimedOut);
                None
            }
        }
    }
}
