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
//! - `/ws`: the gateway ([`socket`]), for pages of this origin only; with
//!   a session cookie, its account's session.
//! - `/session`, `/signin`, `/signup`, `/signout`: signing in with an
//!   account ([`signin`]).
//! - `/healthz`: `200 ok` while the hub answers, `503` once the server is
//!   shutting down or the hub failed (for load balancers and supervisors).
//!
//! The listener's own limits come before anything else: at most
//! [`Config::max_web_connections`] HTTP connections (and
//! `max_connections_per_ip` from one address; IPv6 by /64), request headers
//! within [`Config::web_header_timeout`] (a slow-loris holds nothing for
//! long), and a WebSocket takes its place among the server's clients
//! (the same admission as TCP) before the upgrade, not after.
//!
//! [`Config::max_web_connections`]: crate::Config::max_web_connections
//! [`Config::web_header_timeout`]: crate::Config::web_header_timeout

mod assets;
mod https;
mod signin;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::Config;
use crate::admission::{Refusal, Ticket};
use crate::hub::HubEvent;
use crate::listener::Shared;

/// How long `/healthz` waits for the hub to answer.
const HEALTH_PROBE_WAIT: Duration = Duration::from_secs(2);

/// Serves the page and the gateway until the server shuts down: one task
/// per admitted HTTP connection, over HTTPS when the server has a
/// certificate ([`https`]).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let app = router(shared.clone());
    // Rebuilt when a reload changes the settings (a new certificate).
    let mut settings = shared.config.track();
    let mut handshaker = handshaker(&settings.config);
    loop {
        let (stream, addr) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most likely: give others a moment.
                    tracing::warn!(%error, "web accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if settings.refresh(&shared.config) {
            handshaker = self::handshaker(&settings.config);
        }
        match shared.web_admission.admit(addr.ip()) {
            Ok(ticket) => {
                let handshaker = handshaker.clone();
                let connection = serve_admitted(
                    stream,
                    addr,
                    app.clone(),
                    shared.clone(),
                    handshaker,
                    ticket,
                );
                shared.tracker.spawn(connection);
            }
            // Closed without a word: answering would cost what the limit saves.
            Err(refusal) => shared.log_refusal(addr, &refusal),
        }
    }
}

/// HTTPS handshakes with the server's certificate, if it has one.
fn handshaker(config: &Config) -> Option<https::Handshaker> {
    let tls = config.tls.clone()?;
    Some(https::Handshaker::new(tls, config.tls_handshake_timeout))
}

/// Serves one HTTP connection (requests, or one WebSocket handshake),
/// holding its place until it ends or hands its socket to a WebSocket.
async fn serve_admitted(
    stream: TcpStream,
    addr: SocketAddr,
    app: Router,
    shared: Arc<Shared>,
    handshaker: Option<https::Handshaker>,
    ticket: Ticket,
) {
    // Chat messages are small and latency matters more than packing.
    let _ = stream.set_nodelay(true);
    let Some(handshaker) = handshaker else {
        return serve_http(stream, addr, app, shared, ticket).await;
    };
    // HTTPS: the handshake runs here, in this connection's own task and
    // under its timeout, so a stalled one holds up no one else.
    let handshake = handshaker.accept(stream, addr);
    let tls = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        tls = handshake => tls,
    };
    if let Some(tls) = tls {
        serve_http(tls, addr, app, shared, ticket).await;
    }
}

/// Serves one HTTP connection (plain or TLS) until it ends.
async fn serve_http<Io>(
    stream: Io,
    addr: SocketAddr,
    app: Router,
    shared: Arc<Shared>,
    _ticket: Ticket,
) where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app.layer(Extension(ConnectInfo(addr))));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.get().web_header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = shared.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(peer = %addr, %error, "http connection ended");
    }
}

/// Every route of the web listener.
pub fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/ws", get(upgrade))
        .route("/session", get(signin::session))
        .route("/signin", post(signin::sign_in))
        .route("/signup", post(signin::sign_up))
        .route("/signout", post(signin::sign_out))
        .layer(DefaultBodyLimit::max(signin::MAX_FORM_BYTES));
    for asset in assets::ASSETS {
        router = router.route(asset.path, get(move || async move { asset.response() }));
    }
    router.with_state(shared)
}

/// `200 ok` only while the hub answers: a failed hub, one that does not
/// answer within [`HEALTH_PROBE_WAIT`] and a server shutting down are 503.
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let unhealthy = |why: &'static str| (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    if shared.hub_failed.is_cancelled() {
        return unhealthy("hub failed\n");
    }
    if shared.shutdown.is_cancelled() {
        return unhealthy("shutting down\n");
    }
    let (reply, answer) = oneshot::channel();
    let probe = async {
        shared.hub.send(HubEvent::Stats { reply }).await.ok()?;
        answer.await.ok()
    };
    match tokio::time::timeout(HEALTH_PROBE_WAIT, probe).await {
        Ok(Some(_)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(None) => unhealthy("hub failed\n"),
        Err(_) => unhealthy("hub not answering\n"),
    }
}

/// Accepts a WebSocket with the server's frame limit: a larger message is
/// refused by the WebSocket layer before it is buffered whole.
///
/// A page of another origin is refused (403), and a session cookie that no
/// longer signs in is refused (401) and cleared: the page then shows its
/// sign-in form. The browser takes its place among the server's clients
/// first, as a TCP client does: over a limit it gets `429` (its address)
/// or `503` (the server) with the reason as text, and no WebSocket.
async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    if shared.shutdown.is_cancelled() || shared.hub_failed.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if shared.draining.is_cancelled() {
        let text = "the server is draining for maintenance: try again later\n";
        return (StatusCode::SERVICE_UNAVAILABLE, text).into_response();
    }
    let https = shared.config.get().tls.is_some();
    if !signin::same_origin(&headers, https) {
        return signin::cross_origin();
    }
    let session = match signin::WebCookie::from_headers(&headers) {
        Some(cookie) if shared.config.get().accounts.enabled() => {
            match signin::check(&shared, &cookie).await {
                Ok(Some(_)) => Some(cookie),
                Ok(None) => return session_ended(&headers, https),
                Err(()) => {
                    return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
                }
            }
        }
        _ => None,
    };
    let ticket = match shared.admission.admit(addr.ip()) {
        Ok(ticket) => ticket,
        Err(refusal) => {
            let status = match refusal {
                Refusal::AddressFull(_) => StatusCode::TOO_MANY_REQUESTS,
                Refusal::ServerFull(_) => StatusCode::SERVICE_UNAVAILABLE,
                Refusal::Banned { .. } => StatusCode::FORBIDDEN,
            };
            let text = format!("{refusal}\n");
            shared.log_refusal(addr, &refusal);
            return (status, text).into_response();
        }
    };
    let max = shared.config.get().limits.max_frame;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let tracker = shared.tracker.clone();
            tracker.track_future(socket::serve(socket, addr, shared, ticket, session))
        })
}

/// The answer to a WebSocket whose session cookie no longer signs in.
fn session_ended(headers: &HeaderMap, https: bool) -> Response {
    let mut response = signin::error(
        StatusCode::UNAUTHORIZED,
        "your session has ended: sign in again",
    );
    response
        .headers_mut()
        .insert(SET_COOKIE, signin::clear_cookie(headers, https));
    response
}
