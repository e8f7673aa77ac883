//! HTTPS for the web listener, with the chat port's certificate.
//!
//! axum serves whatever a [`Listener`] hands it; this one hands it
//! connections whose TLS handshake is already done. Handshakes run in
//! their own tasks (at most [`MAX_HANDSHAKES`] at once, each under the
//! configured timeout), so a client that stalls mid-handshake holds up no
//! one else, and the accept loop never waits on one.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Handshakes in progress at once; beyond that, new connections are
/// closed at once (a flood of them costs little).
const MAX_HANDSHAKES: usize = 256;

/// Finished handshakes waiting for axum to take them.
const READY_QUEUE: usize = 64;

/// Connections with their handshake done, for axum.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// Accepts on `listener` until `shutdown`, handshaking in the background.
pub fn listen(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<TlsListener> {
    let local = listener.local_addr()?;
    let mut config = (*config).clone();
    // The web listener speaks HTTP/1.1 only (WebSocket upgrades need it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (sender, ready) = mpsc::channel(READY_QUEUE);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let spawner = tracker.clone();
    tracker.spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "web accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                continue; // dropped: too many handshakes at once
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            let shutdown = shutdown.clone();
            spawner.spawn(async move {
                let _permit = permit;
                let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp));
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    done = handshake => match done {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, addr)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(peer = %addr, %error, "web TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(peer = %addr, "web TLS handshake timed out"),
                    },
                }
            });
        }
    });
    Ok(TlsListener { ready, local })
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // Shutting down: axum's graceful shutdown ends the serve loop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
