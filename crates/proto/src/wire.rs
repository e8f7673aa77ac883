//! A message on the wire before it is typed: a command word plus optional
//! arguments. The three encodings produce and consume [`RawMessage`]s; the
//! [`crate::command`] and [`crate::message`] modules give them meaning.

use std::borrow::Cow;

use crate::pickle::Value;

/// Which side sent a message, which fixes the vocabulary of command words.
/// Classic mode needs it: names carry no length, so the decoder recognises
/// them from a fixed list (none is a prefix of another within one side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → server: REGISTER, STATUS, GOODBYE, ...
    ToServer,
    /// Server → client: ONLINE_USERS, MESSAGE, ERROR, ...
    ToClient,
}

/// Words a client may send. `takes_args` is false for GOODBYE and
/// LIST_CONVERSATIONS.
pub const CLIENT_WORDS: &[(&str, bool)] = &[
    ("REGISTER", true),
    ("STATUS", true),
    ("GOODBYE", false),
    ("INVITE", true),
    ("LIST_CONVERSATIONS", false),
    ("JOIN", true),
    ("SEND_MESSAGE", true),
    ("LEAVE", true),
    ("CAPS", true),
    ("HISTORY", true),
    ("READ", true),
    ("TOPIC", true),
    ("SIGNUP", true),
    ("LOGOUT", false),
    ("PASSWORD", true),
    ("WATCH", true),
    ("UNWATCH", true),
    ("LIST_USERS", true),
];

/// Words a server may send; all carry arguments.
pub const SERVER_WORDS: &[(&str, bool)] = &[
    ("ONLINE_USERS", true),
    ("PRESENCE", true),
    ("INVITATION", true),
    ("CONVERSATIONS", true),
    ("MESSAGE", true),
    ("MEMBERS", true),
    ("CAPS", true),
    ("ERROR", true),
    ("HISTORY", true),
    ("UNREAD", true),
    ("TOPIC", true),
    ("SIGNED_UP", true),
    ("SESSION", true),
    ("PASSWORD_CHANGED", true),
    ("USERS", true),
];

impl Direction {
    pub fn words(self) -> &'static [(&'static str, bool)] {
        match self {
            Direction::ToServer => CLIENT_WORDS,
            Direction::ToClient => SERVER_WORDS,
        }
    }
}

/// One message as read off the wire, not yet validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMessage {
    /// The command word exactly as sent (framed and JSON modes may carry
    /// words outside the vocabulary; typing rejects them).
    pub word: String,
    /// The arguments, if any were sent.
    pub args: Option<Value>,
}

/// A message as the decoders produce it: a word from the vocabulary
/// borrows the static word list, so the hot path allocates no word.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub word: Cow<'static, str>,
    pub args: Option<Value>,
}

impl From<Decoded> for RawMessage {
    fn from(decoded: Decoded) -> Self {
        RawMessage {
            word: decoded.word.into_owned(),
            args: decoded.args,
        }
    }
}

impl From<RawMessage> for Decoded {
    fn from(raw: RawMessage) -> Self {
        Decoded {
            word: Cow::Owned(raw.word),
            args: raw.args,
        }
    }
}
