//! Messages a server sends, typed.
//!
//! The server builds a [`ServerMessage`] once and encodes it once per
//! encoding in use ([`crate::codec::encode_message`]); clients decode with
//! [`ServerMessage::from_raw`].

use crate::ConvId;
use crate::wire::RawMessage;

/// A server → client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// `ONLINE_USERS {username: status}`: every registered user.
    OnlineUsers(Vec<(String, String)>),
    /// `PRESENCE {username: status | None}` (capability `presence-delta`):
    /// users who arrived or changed status; `None` for users who left.
    Presence(Vec<(String, Option<String>)>),
    /// `INVITATION [convID, inviter]`
    Invitation { conv: ConvId, inviter: String },
    /// `CONVERSATIONS {convID: [member, ...]}`, members sorted.
    Conversations(Vec<(ConvId, Vec<String>)>),
    /// `MESSAGE [convID, sender, message]`
    Message {
        conv: ConvId,
        sender: String,
        text: String,
    },
    /// `MEMBERS [convID, [member, ...]]` (capability `members`), sorted.
    Members { conv: ConvId, members: Vec<String> },
    /// `CAPS [name, ...]`: the capabilities the server enabled.
    Caps(Vec<String>),
    /// `ERROR "text"`: the argument is a bare string.
    Error(String),
}

/// A server message a client could not make sense of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected {word} from server: {reason}")]
pub struct MessageError {
    pub word: String,
    pub reason: String,
}

impl ServerMessage {
    pub fn word(&self) -> &'static str {
        match self {
            ServerMessage::OnlineUsers(_) => "ONLINE_USERS",
            ServerMessage::Presence(_) => "PRESENCE",
            ServerMessage::Invitation { .. } => "INVITATION",
            ServerMessage::Conversations(_) => "CONVERSATIONS",
            ServerMessage::Message { .. } => "MESSAGE",
            ServerMessage::Members { .. } => "MEMBERS",
            ServerMessage::Caps(_) => "CAPS",
            ServerMessage::Error(_) => "ERROR",
        }
    }

    /// Types a raw message from a server (client side). Lenient where the
    /// contract allows (ids as JSON string keys, lists or tuples).
    pub fn from_raw(raw: RawMessage) -> Result<ServerMessage, MessageError> {
        todo!("implemented by the proto work: {raw:?}")
    }
}
