//! One browser on the WebSocket gateway: text frames in, [`HubEvent`]s out,
//! and the hub's messages back out as text frames.
//!
//! Each text frame carries exactly one message of the JSON encoding
//! (`{"command":"JOIN","args":[3]}`), so a frame is parsed whole instead of
//! being split into lines. The hub writes to a browser through
//! [`Transport::Channel`]: it pushes each encoded message into an unbounded
//! channel and counts its bytes in `queued`; the writer here sends them and
//! counts them back out, and says while it waits for the socket, so the
//! hub's slow-consumer rule counts only what the socket refused, as it
//! does for TCP.
//!
//! The rules are those of a TCP client in JSON mode: invalid JSON (or
//! UTF-8) gets ERROR and the connection closes; a well-formed message that
//! is not a valid command gets ERROR and the connection stays; the frame
//! limit, rate limit (every frame counts, binary and bad ones too),
//! idle timeout and connection limits are the same.
//!
//! A page signed in with an account ([`WebCookie`]) cannot read its
//! session token (the cookie is HttpOnly), so it sends a plain
//! `REGISTER [name, status]` and the gateway adds the cookie's token as
//! the secret when the name is the cookie's account: the hub checks it
//! like any other session token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use natter_core::{ConnId, user_key};
use natter_proto::codec::encode_message;
use natter_proto::{Command, DecodeError, Encoding, ServerMessage, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::admission::Ticket;
use crate::hub::HubEvent;
use crate::listener::Shared;
use crate::live::Tracked;
use crate::peer::{Peer, Transport};
use crate::rate::FrameGate;
use crate::supervise::HUB_FAILED_MESSAGE;
use crate::web::signin::WebCookie;

/// Most queued messages written before one flush: several small messages
/// leave in one system call, and a long queue still gets flushed now and
/// then.
const MAX_FRAMES_PER_FLUSH: usize = 64;

/// How long a writer whose hub let go without a word waits to learn that
/// the hub failed.
const HUB_FAILURE_WAIT: Duration = Duration::from_secs(1);

/// The text of the ERROR a binary frame gets.
const BINARY_REFUSED: &str =
    "binary frames are not supported: send each message as one JSON text frame";

/// Serves one upgraded WebSocket until it ends, holding the place it was
/// admitted to before the upgrade.
pub async fn serve(
    socket: WebSocket,
    addr: SocketAddr,
    shared: Arc<Shared>,
    _ticket: Ticket,
    session: Option<WebCookie>,
) {
    let conn = shared.next_conn_id();
    let (sink, stream) = socket.split();
    let (sender, outgoing) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let blocked = Arc::new(AtomicBool::new(false));
    // Fires when the hub closes this connection, on shutdown, and when
    // the hub fails.
    let cancel = shared.connections.child_token();
    let transport = Transport::Channel {
        sender,
        queued: queued.clone(),
        blocked: blocked.clone(),
    };
    let peer = Peer::new(addr, Encoding::Json, transport, cancel.clone());
    if shared
        .hub
        .send(HubEvent::Connected {
            conn,
            peer: Box::new(peer),
        })
        .await
        .is_err()
    {
        return; // the server is stopping
    }
    let settings = shared.config.track();
    let linger = settings.config.close_linger;
    let writing = async {
        tokio::select! {
            _ = write_frames(sink, outgoing, &queued, &blocked, &cancel, &shared.hub_failed) => {}
            // Once the hub let go, the rest may take `linger`, no more.
            _ = async { cancel.cancelled().await; tokio::time::sleep(linger).await } => {}
        }
    };
    let reader = Reader {
        conn,
        shared: &shared,
        session,
        gate: gate(&settings.config),
        settings,
    };
    let reading = reader.run(stream, &cancel);
    tokio::join!(writing, reading);
}

/// Sends what the hub queues, in order, until the hub drops its sender;
/// then a Close frame (after an ERROR saying so, if the hub failed).
/// `blocked` is set while the socket takes no more.
async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    mut outgoing: mpsc::UnboundedReceiver<Bytes>,
    queued: &AtomicUsize,
    blocked: &AtomicBool,
    cancel: &CancellationToken,
    hub_failed: &CancellationToken,
) {
    while let Some(first) = outgoing.recv().await {
        let mut sent_bytes = 0;
        let mut next = Some(first);
        let mut frames = 0;
        while let Some(bytes) = next.take() {
            sent_bytes += bytes.len();
            if let Some(frame) = text_frame(bytes)
                && noting_blocked(sink.feed(frame), blocked).await.is_err()
            {
                return;
            }
            frames += 1;
            if frames < MAX_FRAMES_PER_FLUSH {
                next = outgoing.try_recv().ok();
            }
        }
        let flushed = noting_blocked(sink.flush(), blocked).await;
        queued.fetch_sub(sent_bytes, Ordering::Relaxed);
        if flushed.is_err() {
            return;
        }
    }
    // The hub cancels a connection before it lets go of it; one it let go
    // of without that failed, which the watcher says a moment later.
    let _ = tokio::time::timeout(HUB_FAILURE_WAIT, cancel.cancelled()).await;
    if !hub_failed.is_cancelled() {
        let _ = sink.send(close_frame(close_code::NORMAL)).await;
        return;
    }
    let error = encode_message(
        &ServerMessage::Error(HUB_FAILED_MESSAGE.to_string()),
        Encoding::Json,
    );
    if let Some(frame) = text_frame(error) {
        let _ = sink.feed(frame).await;
    }
    let _ = sink.send(close_frame(close_code::AGAIN)).await;
}

/// Runs one write, with `blocked` set while it waits for the socket.
async fn noting_blocked<F: Future>(write: F, blocked: &AtomicBool) -> F::Output {
    let mut write = std::pin::pin!(write);
    std::future::poll_fn(|cx| {
        let poll = write.as_mut().poll(cx);
        blocked.store(poll.is_pending(), Ordering::Relaxed);
        poll
    })
    .await
}

/// One encoded JSON line as a text frame, without its newline.
fn text_frame(mut line: Bytes) -> Option<Message> {
    if line.last() == Some(&b'\n') {
        line.truncate(line.len() - 1);
    }
    match Utf8Bytes::try_from(line) {
        Ok(text) => Some(Message::Text(text)),
        Err(error) => {
            // The JSON encoder writes UTF-8 only; this would be a bug there.
            tracing::error!(%error, "encoded JSON message is not UTF-8; dropped");
            None
        }
    }
}

fn close_frame(code: u16) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(""),
    }))
}

/// Who ended the conversation.
enum Ended {
    /// The browser closed, or the connection broke.
    ByClient,
    /// The hub closes the connection (GOODBYE, fatal input, shutdown, slow
    /// consumer), or it is told to.
    ByServer,
}

/// What a failed read means.
enum ReadFailure {
    /// The connection is gone; nothing can be said any more.
    Gone,
    /// The browser broke the rules (a message over the limit, invalid
    /// UTF-8, a protocol violation): ERROR, then close. The text says why.
    Fatal(String),
}

struct Reader<'a> {
    conn: ConnId,
    shared: &'a Shared,
    /// The page's account session, from its cookie.
    session: Option<WebCookie>,
    gate: FrameGate,
    /// The settings this connection follows, refreshed before each frame
    /// (a reload changes limits for connected browsers too).
    settings: Tracked,
}

fn gate(config: &Config) -> FrameGate {
    FrameGate::new(config.rate_limit, config.rate_burst, Instant::now())
}

impl Reader<'_> {
    /// Reads until the connection ends, then tells the hub (or, when the
    /// server ended it, drains what the browser still sends so that closing
    /// does not reset the connection under our last messages).
    async fn run(mut self, mut stream: SplitStream<WebSocket>, cancel: &CancellationToken) {
        match self.read_frames(&mut stream, cancel).await {
            Ended::ByClient => {
                let _ = self
                    .shared
                    .hub
                    .send(HubEvent::Disconnected { conn: self.conn })
                    .await;
            }
            Ended::ByServer => {
                let drain = async { while let Some(Ok(_)) = stream.next().await {} };
                let linger = self.settings.config.close_linger;
                let _ = tokio::time::timeout(linger, drain).await;
            }
        }
    }

    async fn read_frames(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        cancel: &CancellationToken,
    ) -> Ended {
        loop {
            self.follow_settings();
            let idle = self.settings.config.idle_timeout;
            let frame = tokio::select! {
                _ = cancel.cancelled() => return Ended::ByServer,
                _ = self.shared.shutdown.cancelled() => return Ended::ByServer,
                _ = idle_deadline(idle) => {
                    let error = format!("idle for {} s: closing the connection", idle.as_secs());
                    self.reject(error, true).await;
                    return Ended::ByServer;
                }
                frame = stream.next() => frame,
            };
            let frame = match frame {
                None | Some(Ok(Message::Close(_))) => return Ended::ByClient,
                Some(Err(error)) => match classify(error) {
                    ReadFailure::Gone => return Ended::ByClient,
                    ReadFailure::Fatal(text) => {
                        self.reject(text, true).await;
                        return Ended::ByServer;
                    }
                },
                Some(Ok(frame)) => frame,
            };
            // A reload while we waited applies to this frame already.
            self.follow_settings();
            // Every frame counts against the rate limit, whatever it holds:
            // each costs an answer (the WebSocket layer answers pings).
            if !self.take_turn(cancel).await {
                return Ended::ByServer;
            }
            let keep_going = match frame {
                Message::Text(text) => self.handle_text(&text).await,
                Message::Binary(_) => self.reject(BINARY_REFUSED.into(), false).await,
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) => true,
            };
            if !keep_going {
                return Ended::ByServer;
            }
        }
    }

    /// Takes reloaded settings, if any (one atomic load when there are
    /// none). A new rate limit starts with a full burst.
    fn follow_settings(&mut self) {
        if self.settings.refresh(&self.shared.config) {
            self.gate = gate(&self.settings.config);
        }
    }

    /// Forwards one message to the hub. False when the connection must
    /// close (or the hub is gone).
    async fn handle_text(&mut self, text: &str) -> bool {
        let limits = &self.settings.config.limits;
        let raw = match json::parse_line(text.as_bytes(), limits) {
            Ok(raw) => raw,
            Err(error) => {
                let fatal = error.is_fatal();
                return self.reject(error.to_string(), fatal).await && !fatal;
            }
        };
        let event = match Command::from_raw(raw, limits) {
            Ok(command) => HubEvent::Command {
                conn: self.conn,
                command: self.with_session(command),
            },
            Err(error) => HubEvent::Rejected {
                conn: self.conn,
                error: error.to_string(),
                fatal: false,
            },
        };
        self.shared.hub.send(event).await.is_ok()
    }

    /// The page's `REGISTER` of its cookie's account, with the cookie's
    /// token as the secret; any other command as it is.
    fn with_session(&self, command: Command) -> Command {
        match (command, &self.session) {
            (Command::Register { name, status }, Some(session))
                if user_key(&name) == user_key(&session.name) =>
            {
                Command::Login {
                    name,
                    status,
                    secret: session.token.clone(),
                }
            }
            (command, _) => command,
        }
    }

    /// Waits for this frame's turn under the rate limit; reads nothing
    /// meanwhile, so TCP pushes back on the browser. False when the
    /// connection ends instead (a flood, or it is closed meanwhile).
    async fn take_turn(&mut self, cancel: &CancellationToken) -> bool {
        match self.gate.admit(Instant::now()) {
            Ok(wait) if wait.is_zero() => true,
            Ok(wait) => tokio::select! {
                _ = cancel.cancelled() => false,
                _ = self.shared.shutdown.cancelled() => false,
                _ = tokio::time::sleep(wait) => true,
            },
            Err(flooding) => {
                self.reject(flooding.to_string(), true).await;
                false
            }
        }
    }

    /// Has the hub answer ERROR (and close, when `fatal`). False when the
    /// hub is gone.
    async fn reject(&self, error: String, fatal: bool) -> bool {
        let event = HubEvent::Rejected {
            conn: self.conn,
            error,
            fatal,
        };
        self.shared.hub.send(event).await.is_ok()
    }
}

/// Sorts a read error into "gone" and "broke the rules", with the ERROR
/// text the latter gets (the contract's words where it has them).
fn classify(error: axum::Error) -> ReadFailure {
    use tungstenite::Error as Ws;
    use tungstenite::error::CapacityError;
    let error = match error.into_inner().downcast::<Ws>() {
        Ok(error) => *error,
        Err(other) => return ReadFailure::Fatal(format!("websocket error: {other}")),
    };
    match error {
        Ws::ConnectionClosed | Ws::AlreadyClosed | Ws::Io(_) => ReadFailure::Gone,
        Ws::Capacity(CapacityError::MessageTooLong { max_size, .. }) => {
            ReadFailure::Fatal(DecodeError::TooLarge { max: max_size }.to_string())
        }
        Ws::Utf8(_) => ReadFailure::Fatal(DecodeError::InvalidUtf8.to_string()),
        other => ReadFailure::Fatal(format!("websocket error: {other}")),
    }
}

/// Fires after `idle` (never when `idle` is zero). Raced against each read,
/// so every frame starts a new deadline.
async fn idle_deadline(idle: Duration) {
    if idle.is_zero() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(idle).await;
}
