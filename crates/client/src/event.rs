//! What the client tells the application: typed events, one per thing that
//! happened, delivered in the order the server sent them.

use std::collections::BTreeMap;
use std::time::Duration;

use natter_proto::{Command, ConvId, HistoryEntry};

use crate::outbox::Nonce;

/// Every online user and their status, sorted by name.
pub type OnlineUsers = BTreeMap<String, String>;

/// One event from the client. Read them with [`crate::Events::recv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The connection changed state.
    State(ConnectionState),
    /// Who is online changed. Comes from a full `ONLINE_USERS` and from
    /// `PRESENCE` deltas alike: `users` is always the whole list, `changes`
    /// what changed since the previous event (`None` = went offline).
    /// A periodic `ONLINE_USERS` that changes nothing produces no event.
    OnlineUsers {
        users: OnlineUsers,
        changes: Vec<(String, Option<String>)>,
    },
    /// `INVITATION`: `inviter` created conversation `conv` and invited us
    /// (we get our own invitations too).
    Invitation { conv: ConvId, inviter: String },
    /// `USERS`: the answer to [`crate::Client::list_users`], online users
    /// whose names start with the prefix asked for, sorted.
    Users(Vec<(String, String)>),
    /// `CONVERSATIONS`: the answer to `list_conversations`.
    Conversations(Vec<(ConvId, Vec<String>)>),
    /// `MESSAGE`: `sender` said `text` in `conv` (our own messages too).
    /// `info` is set by servers with `history`: then each message is
    /// delivered once, by seq, including those fetched after a reconnect.
    Message {
        conv: ConvId,
        sender: String,
        text: String,
        info: Option<MessageInfo>,
    },
    /// A message we sent waits in the outbox for a connection: sent while
    /// disconnected (or before registering), or in flight when the
    /// connection was lost. It goes out after the reconnect with the same
    /// nonce; [`Event::Sent`] or [`Event::NotSent`] follows.
    Queued {
        conv: ConvId,
        nonce: Nonce,
        text: String,
    },
    /// The server confirmed a message we sent (our own `MESSAGE` came
    /// back): it left the outbox. `seq` is its number on servers with
    /// `history`. Every message sent ends in `Sent` or `NotSent`.
    Sent {
        conv: ConvId,
        nonce: Nonce,
        seq: Option<u64>,
    },
    /// `HISTORY`: the answer to [`crate::Client::history`], oldest first.
    History {
        conv: ConvId,
        entries: Vec<HistoryEntry>,
    },
    /// `UNREAD`, right after registering on a server with `history`: each
    /// conversation we are in, its newest seq and how far we have read.
    Unread(Vec<Unread>),
    /// `TOPIC`: `setter` named `conv` (or we joined one with a topic).
    Topic {
        conv: ConvId,
        text: String,
        setter: String,
    },
    /// After a reconnect, messages of `conv` with a seq above `after_seq`
    /// and below `before_seq` (`None`: no upper bound known) were said
    /// while we were away but could not be fetched (more than
    /// [`crate::ClientConfig::catch_up_limit`], or the server refused).
    /// [`crate::Client::history`] pages through them.
    Missed {
        conv: ConvId,
        after_seq: u64,
        before_seq: Option<u64>,
    },
    /// `CAPS`: the extensions this server enabled for this connection
    /// (sent on every connection, before registering completes). Without
    /// `history` there are no seqs, no catch-up, and the outbox is
    /// at-least-once.
    Capabilities(Vec<String>),
    /// `MEMBERS`: the members of `conv` now. Acknowledges our own `JOIN`
    /// and `LEAVE` (after a leave we are not in the list).
    Members { conv: ConvId, members: Vec<String> },
    /// `ERROR` from the server: something we sent could not be done.
    ServerError(String),
    /// The server sent bytes that could not be decoded. When the stream
    /// can no longer be trusted (`fatal`), the connection is dropped and a
    /// reconnect follows.
    DecodeError { error: String, fatal: bool },
    /// A command was not sent because there was no connection at the time
    /// (while reconnecting). Status, join and leave are never dropped: they
    /// are remembered and replayed on reconnect; messages wait in the
    /// outbox. A message (with its nonce in `command`) ends here when the
    /// server refused it, never confirmed it, or the client closed first.
    NotSent { command: Command, reason: String },
}

/// The metadata of a message on a server with `history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Its number in the conversation: never reused, increasing.
    pub seq: u64,
    /// When the server accepted it, in Unix milliseconds.
    pub ts: i64,
    /// Set on our own messages that came back live: the nonce
    /// [`crate::Client::send_message`] returned.
    pub nonce: Option<Nonce>,
    /// Fetched with `HISTORY` after a reconnect (said while we were away)
    /// rather than received as it was said.
    pub catch_up: bool,
}

/// One conversation in [`Event::Unread`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unread {
    pub conv: ConvId,
    /// The newest message's seq (0: none yet).
    pub last_seq: u64,
    /// Read up to here (moved by [`crate::Client::read`], on every device).
    pub last_read_seq: u64,
}

/// The state of the connection, as the user should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening a connection to `addr` (after a reconnect delay).
    Connecting { addr: String },
    /// Connected to `addr` (and, after a reconnect, registered again with
    /// our conversations re-joined).
    Connected { addr: String },
    /// The connection was lost (or the reconnect failed) because of
    /// `reason`; attempt number `attempt` starts after `delay`.
    Reconnecting {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// The client is done: after `goodbye`, or a connection lost before
    /// registration. No more events follow.
    Disconnected { reason: String },
}

impl ConnectionState {
    /// Whether commands sent now reach the server.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected { .. })
    }
}
