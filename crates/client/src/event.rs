//! What the client tells the application: typed events, one per thing that
//! happened, delivered in the order the server sent them.

use std::collections::BTreeMap;
use std::time::Duration;

use natter_proto::{Command, ConvId};

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
    /// `CONVERSATIONS`: the answer to `list_conversations`.
    Conversations(Vec<(ConvId, Vec<String>)>),
    /// `MESSAGE`: `sender` said `text` in `conv` (our own messages too).
    Message {
        conv: ConvId,
        sender: String,
        text: String,
    },
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
    /// are remembered and replayed on reconnect.
    NotSent { command: Command, reason: String },
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
