//! The web listener: the chat page, its WebSocket gateway and a health
//! check, on their own address (`natter serve --web`).
//!
//! Browsers cannot open raw TCP sockets, so they speak the same protocol in
//! its JSON encoding, one message per WebSocket text frame. A WebSocket is
//! just another transport for the hub: it joins through the same
//! [`Shared`] as a TCP client and gets the same rules and limits.
//!
//! - `/`, `/app.js`, `/style.css`: the page, embedded in the binary
//!   ([`assets`]).
//! - `/ws`: the gateway ([`socket`]).
//! - `/healthz`: `200 ok` while the server accepts clients, `503` once it
//!   is shutting down (for load balancers and supervisors).

mod assets;
mod https;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::listener::Shared;

/// Serves the page and the gateway until the server shuts down: over
/// HTTPS when the server has a certificate ([`https`]), else plain HTTP.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone().cancelled_owned();
    let served = match shared.config.tls.clone() {
        Some(tls) => {
            let timeout = shared.config.tls_handshake_timeout;
            let stop = shared.shutdown.clone();
            match https::listen(listener, tls, timeout, stop, &shared.tracker) {
                // (The tap does nothing: it gives axum the address.)
                Ok(listener) => {
                    let listener = listener.tap_io(|_| {});
                    axum::serve(listener, app(shared))
                        .with_graceful_shutdown(shutdown)
                        .await
                }
                Err(error) => Err(error),
            }
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                // Chat messages are small and latency matters more than packing.
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app(shared))
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    if let Err(error) = served {
        tracing::warn!(%error, "web listener stopped");
    }
}

fn app(shared: Arc<Shared>) -> IntoMakeServiceWithConnectInfo<Router, SocketAddr> {
    router(shared).into_make_service_with_connect_info::<SocketAddr>()
}

/// Every route of the web listener.
pub fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/ws", get(upgrade));
    for asset in assets::ASSETS {
        router = router.route(asset.path, get(move || async move { asset.response() }));
    }
    router.with_state(shared)
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

/// Accepts a WebSocket with the server's frame limit: a larger message is
/// refused by the WebSocket layer before it is buffered whole.
async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    State(shared): State<Arc<Shared>>,
) -> Response {
    if shared.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let max = shared.config.limits.max_frame;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let tracker = shared.tracker.clone();
            tracker.track_future(socket::serve(socket, addr, shared))
        })
}
