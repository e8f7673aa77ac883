//! The admin socket: how `natter admin` talks to a running server.
//!
//! A Unix socket (by default `DATA_DIR/admin.sock`), usable by the user
//! the server runs as and nobody else: it is created with permissions
//! 0600, in a private 0700 directory, and only then moved into place, so
//! there is no moment at which another user could connect. A socket left
//! behind by a crash is replaced; one that a running server still answers
//! on is not (the second server refuses to start). A clean exit removes
//! it.
//!
//! The protocol is one JSON object per line each way, so `socat` works as
//! well as `natter admin`:
//!
//! ```text
//! → {"command":"kick","name":"bob","reason":"spamming"}
//! ← {"ok":true,"result":{"closed":1}}
//! → {"command":"nonsense"}
//! ← {"ok":false,"error":"not a request: unknown variant `nonsense`, ..."}
//! ```
//!
//! Lines are bounded ([`MAX_REQUEST_LINE`]), so are the connections at once
//! ([`MAX_ADMIN_CONNECTIONS`]); a bad request gets an error answer and
//! harms nothing else. Each request becomes a typed [`AdminRequest`] for
//! the hub, which owns the chat state; `drain` is carried out here, since
//! it is about the listeners and the process rather than the chat. Every
//! action is logged.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use natter_core::bans::{Ban, BanTarget, human_duration, parse_duration};
use natter_proto::Encoding;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

use crate::hub::{HubEvent, unix_ms};
use crate::listener::Shared;

/// The admin socket's name in the data dir (`natter serve` puts it there
/// unless told `--admin-socket PATH`).
pub const SOCKET_NAME: &str = "admin.sock";

/// The longest request line: a broadcast of the longest chat message,
/// escaped, fits.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Admin connections at once; more are told so and closed.
pub const MAX_ADMIN_CONNECTIONS: usize = 8;

/// An admin connection silent this long is closed.
const ADMIN_IDLE: Duration = Duration::from_secs(300);

/// The longest reason for a kick or a ban.
const MAX_REASON: usize = 256;

/// How long `drain` waits for clients to leave when not told.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a drain checks whether everyone has left.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// What the hub is asked to do.
#[derive(Debug)]
pub enum AdminRequest {
    Stats,
    Users,
    Kick { name: String, reason: String },
    Ban(Ban),
    Unban(BanTarget),
    Bans,
    Broadcast(String),
}

/// What the hub answers.
#[derive(Debug)]
pub enum AdminAnswer {
    Stats(ChatStats),
    Users(Vec<UserView>),
    /// Connections closed (kick, ban).
    Closed(usize),
    /// The ban that was lifted.
    Lifted(Ban),
    Bans(Vec<Ban>),
    /// Devices a notice went to.
    Sent(usize),
}

/// The chat state's counts, for `stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatStats {
    /// Clients the hub writes to (registered or not).
    pub connections: usize,
    pub users_online: usize,
    /// Registered connections (an account may have several).
    pub devices: usize,
    pub conversations: usize,
    pub messages_since_start: u64,
    pub accounts: usize,
    pub bans: usize,
}

/// One online user, for `users`.
#[derive(Debug, Clone)]
pub struct UserView {
    pub name: String,
    pub status: String,
    pub account: bool,
    pub devices: Vec<DeviceView>,
}

/// One device of an online user.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub conn: u64,
    pub address: SocketAddr,
    pub transport: &'static str,
    pub encoding: Encoding,
}

/// A request as it comes off the socket.
#[derive(Debug, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
enum WireRequest {
    Stats,
    Users,
    Kick {
        name: String,
        #[serde(default)]
        reason: String,
    },
    Ban {
        target: String,
        /// `30m`, `2h`, `7d`, `permanent` (the default).
        #[serde(default)]
        duration: Option<String>,
        #[serde(default)]
        reason: String,
    },
    Unban {
        target: String,
    },
    Bans,
    Broadcast {
        text: String,
    },
    Drain {
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
}

/// The admin socket's file: removed when this is dropped, if it is still
/// the one this server made.
#[derive(Debug)]
pub struct AdminSocket {
    path: PathBuf,
    /// Device and inode of the socket made, so that a socket another
    /// server put there since is left alone.
    made: (u64, u64),
}

/// Numbers the private directories of servers in one process (tests).
static BINDS: AtomicU64 = AtomicU64::new(0);

impl AdminSocket {
    /// Creates the socket at `path` (see the module doc for how), replacing
    /// a stale one from a crash.
    pub fn bind(path: &Path) -> io::Result<(UnixListener, AdminSocket)> {
        refuse_live_socket(path)?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let n = BINDS.fetch_add(1, Ordering::Relaxed);
        let private = parent.join(format!(".natter-admin.{}.{n}", std::process::id()));
        let private_dir = || std::fs::DirBuilder::new().mode(0o700).create(&private);
        if let Err(e) = private_dir() {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
            // Left by a crash of a process with the same id: ours to clear.
            std::fs::remove_dir_all(&private)?;
            private_dir()?;
        }
        let result = bind_privately(&private, path);
        let _ = std::fs::remove_dir(&private);
        let listener = result?;
        let meta = std::fs::symlink_metadata(path)?;
        let socket = AdminSocket {
            path: path.to_path_buf(),
            made: (meta.dev(), meta.ino()),
        };
        Ok((listener, socket))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds in `private` (0700), makes the socket 0600, then moves it to
/// `path`: a rename, which also replaces a stale socket atomically.
fn bind_privately(private: &Path, path: &Path) -> io::Result<UnixListener> {
    let temporary = private.join("s");
    let listener = UnixListener::bind(&temporary)?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&temporary, path)?;
    Ok(listener)
}

/// An existing `path` must be a socket nobody answers on (left by a
/// crash); anything else is not ours to replace.
fn refuse_live_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another server is running with the admin socket {}",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale admin socket");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.made);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Answers operators until the server shuts down.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let mut lines = Framed::new(stream, LinesCodec::new());
            let busy = failure(&format!(
                "too many admin connections (at most {MAX_ADMIN_CONNECTIONS})"
            ));
            let _ = tokio::time::timeout(Duration::from_secs(1), lines.send(busy)).await;
            continue;
        };
        let shared = shared.clone();
        shared.tracker.clone().spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = shared.shutdown.cancelled() => {}
                _ = session(stream, &shared) => {}
            }
        });
    }
}

/// One operator's connection: a request per line, an answer per line.
async fn session(stream: UnixStream, shared: &Arc<Shared>) {
    let codec = LinesCodec::new_with_max_length(MAX_REQUEST_LINE);
    let mut lines = Framed::new(stream, codec);
    loop {
        let line = match tokio::time::timeout(ADMIN_IDLE, lines.next()).await {
            Err(_) | Ok(None) => return,
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(error))) => {
                // The stream cannot be trusted past this: answer and close.
                let text = match error {
                    LinesCodecError::MaxLineLengthExceeded => {
                        format!("request line longer than {MAX_REQUEST_LINE} bytes")
                    }
                    LinesCodecError::Io(e) => format!("cannot read the request: {e}"),
                };
                tracing::warn!(error = %text, "admin: bad request, closing");
                let _ = lines.send(failure(&text)).await;
                return;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match answer(&line, shared).await {
            Ok(result) => json!({ "ok": true, "result": result }).to_string(),
            Err(error) => failure(&error),
        };
        // An operator that stops reading holds its slot only so long.
        match tokio::time::timeout(ADMIN_IDLE, lines.send(answer)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

fn failure(error: &str) -> String {
    json!({ "ok": false, "error": error }).to_string()
}

/// Carries out one request line; logs what it did.
async fn answer(line: &str, shared: &Arc<Shared>) -> Result<Value, String> {
    let result = match serde_json::from_str::<WireRequest>(line) {
        Ok(request) => carry_out(request, shared).await,
        Err(e) => Err(format!("not a request: {e}")),
    };
    match &result {
        Ok(answer) => {
            let answer = answer.to_string();
            tracing::info!(request = %summary(line), answer = %summary(&answer), "admin");
        }
        Err(error) => tracing::warn!(request = %summary(line), %error, "admin: refused"),
    }
    result
}

/// The request as logged: whole unless it is long.
fn summary(line: &str) -> &str {
    match line.char_indices().nth(200) {
        Some((at, _)) => &line[..at],
        None => line,
    }
}

async fn carry_out(request: WireRequest, shared: &Arc<Shared>) -> Result<Value, String> {
    let now = unix_ms();
    if let WireRequest::Drain { timeout_secs } = request {
        let timeout = timeout_secs.map_or(DEFAULT_DRAIN_TIMEOUT, Duration::from_secs);
        return drain(shared, timeout).await;
    }
    let request = typed(request, shared, now)?;
    let ban = match &request {
        AdminRequest::Ban(ban) => Some(ban_json(ban, now)),
        _ => None,
    };
    let answer = ask(shared, request).await?;
    Ok(answer_json(answer, ban, shared, now))
}

/// Checks a request off the socket and makes it a typed one for the hub.
fn typed(request: WireRequest, shared: &Shared, now: i64) -> Result<AdminRequest, String> {
    let target = |text: &str| BanTarget::parse(text).map_err(|e| e.to_string());
    Ok(match request {
        WireRequest::Stats => AdminRequest::Stats,
        WireRequest::Users => AdminRequest::Users,
        WireRequest::Kick { name, reason } => AdminRequest::Kick {
            name,
            reason: checked_reason(reason)?,
        },
        WireRequest::Ban {
            target: text,
            duration,
            reason,
        } => {
            let length = match duration.as_deref() {
                None | Some("") => None,
                Some(text) => parse_duration(text).map_err(|e| e.to_string())?,
            };
            AdminRequest::Ban(Ban {
                target: target(&text)?,
                until: length.map(|ms| now + ms),
                reason: checked_reason(reason)?,
                created: now,
            })
        }
        WireRequest::Unban { target: text } => AdminRequest::Unban(target(&text)?),
        WireRequest::Bans => AdminRequest::Bans,
        WireRequest::Broadcast { text } => AdminRequest::Broadcast(checked_notice(text, shared)?),
        // Carried out in `carry_out`, never sent to the hub.
        WireRequest::Drain { .. } => return Err("drain is not for the hub".to_owned()),
    })
}

/// The hub's answer as the operator gets it; `ban` is the ban just set.
fn answer_json(answer: AdminAnswer, ban: Option<Value>, shared: &Shared, now: i64) -> Value {
    match answer {
        AdminAnswer::Stats(stats) => json!({
            "uptime_secs": shared.started.elapsed().as_secs(),
            "connections": stats.connections,
            "users_online": stats.users_online,
            "devices": stats.devices,
            "conversations": stats.conversations,
            "messages_since_start": stats.messages_since_start,
            "accounts": stats.accounts,
            "bans": stats.bans,
            "draining": shared.draining.is_cancelled(),
        }),
        AdminAnswer::Users(users) => {
            let users: Vec<Value> = users.iter().map(user_json).collect();
            json!({ "users": users })
        }
        AdminAnswer::Closed(closed) => match ban {
            Some(ban) => json!({ "ban": ban, "closed": closed }),
            None => json!({ "closed": closed }),
        },
        AdminAnswer::Lifted(ban) => json!({ "lifted": ban_json(&ban, now) }),
        AdminAnswer::Bans(bans) => {
            let bans: Vec<Value> = bans.iter().map(|b| ban_json(b, now)).collect();
            json!({ "bans": bans })
        }
        AdminAnswer::Sent(sent) => json!({ "sent": sent }),
    }
}

fn checked_reason(reason: String) -> Result<String, String> {
    let reason = reason.trim().to_owned();
    if reason.chars().count() > MAX_REASON {
        return Err(format!("the reason is longer than {MAX_REASON} characters"));
    }
    if reason.chars().any(char::is_control) {
        return Err("the reason must be one line".to_owned());
    }
    Ok(reason)
}

/// A notice is a chat message: not empty, no longer than one.
fn checked_notice(text: String, shared: &Shared) -> Result<String, String> {
    let max = shared.config.get().limits.max_message;
    if text.trim().is_empty() {
        return Err("the notice is empty".to_owned());
    }
    if text.len() > max {
        return Err(format!(
            "the notice is too long ({} bytes, at most {max})",
            text.len()
        ));
    }
    Ok(text)
}

/// Sends `request` to the hub and waits for its answer.
async fn ask(shared: &Shared, request: AdminRequest) -> Result<AdminAnswer, String> {
    let stopping = || "the server is stopping".to_owned();
    let (reply, answer) = oneshot::channel();
    shared
        .hub
        .send(HubEvent::Admin { request, reply })
        .await
        .map_err(|_| stopping())?;
    answer.await.map_err(|_| stopping())?
}

/// Stops accepting clients, tells everyone online, and asks for the
/// server to stop once every connection is gone or `timeout` has passed
/// (the normal shutdown then says goodbye to whoever is left).
async fn drain(shared: &Arc<Shared>, timeout: Duration) -> Result<Value, String> {
    if shared.draining.is_cancelled() {
        return Err("the server is already draining".to_owned());
    }
    shared.draining.cancel();
    let secs = timeout.as_secs();
    tracing::warn!(timeout_secs = secs, "admin: draining");
    let text = format!(
        "this server is going down for maintenance within {}: \
         please finish up; you can reconnect later",
        human_duration(timeout.as_millis() as i64)
    );
    let told = match ask(shared, AdminRequest::Broadcast(text)).await? {
        AdminAnswer::Sent(told) => told,
        _ => 0,
    };
    let connections = shared.admission.connections();
    let deadline = tokio::time::Instant::now() + timeout;
    shared
        .tracker
        .spawn(stop_when_empty(shared.clone(), deadline));
    Ok(json!({ "connections": connections, "told": told, "timeout_secs": secs }))
}

async fn stop_when_empty(shared: Arc<Shared>, deadline: tokio::time::Instant) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(DRAIN_POLL) => {}
        }
        let peers = hub_peers(&shared).await;
        let empty = peers == Some(0) && shared.admission.connections() == 0;
        let late = tokio::time::Instant::now() >= deadline;
        if empty || late || peers.is_none() {
            if empty {
                tracing::info!("drained: every client has left; stopping");
            } else {
                tracing::warn!(clients = ?peers, "drain timeout: stopping anyway");
            }
            shared.stop_requested.cancel();
            return;
        }
    }
}

async fn hub_peers(shared: &Shared) -> Option<usize> {
    let (reply, answer) = oneshot::channel();
    shared.hub.send(HubEvent::Stats { reply }).await.ok()?;
    answer.await.ok().map(|stats| stats.peers)
}

fn user_json(user: &UserView) -> Value {
    let devices: Vec<Value> = user
        .devices
        .iter()
        .map(|d| {
            json!({
                "conn": d.conn,
                "address": d.address.to_string(),
                "transport": d.transport,
                "encoding": encoding_name(d.encoding),
            })
        })
        .collect();
    json!({
        "name": user.name,
        "status": user.status,
        "account": user.account,
        "devices": devices,
    })
}

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Framed => "framed",
        Encoding::Classic => "classic",
        Encoding::Json => "json",
    }
}

fn ban_json(ban: &Ban, now: i64) -> Value {
    json!({
        "target": ban.target.to_string(),
        "until_ms": ban.until,
        "remaining_secs": ban.until.map(|until| (until - now).max(0) / 1000),
        "reason": ban.reason,
        "created_ms": ban.created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private directory left by a crashed process with the same id is
    /// cleared, not a reason to refuse to start; the socket is 0600, and
    /// dropping the guard removes it.
    #[tokio::test]
    async fn a_leftover_private_dir_is_cleared_and_the_socket_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let n = BINDS.load(Ordering::Relaxed);
        let leftover = dir
            .path()
            .join(format!(".natter-admin.{}.{n}", std::process::id()));
        std::fs::create_dir(&leftover).unwrap();
        std::fs::write(leftover.join("s"), b"stale").unwrap();
        let path = dir.path().join("admin.sock");
        let (_listener, socket) = AdminSocket::bind(&path).unwrap();
        assert!(!leftover.exists());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(socket);
        assert!(!path.exists());
    }
}
