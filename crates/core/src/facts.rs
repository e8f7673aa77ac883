//! Facts: what the chat state decided, for whoever must remember it.
//!
//! Deliveries ([`crate::Output::Send`]) say who gets which bytes; a store
//! (and later another node) needs to know what *happened*: "message 7 of
//! conversation 3 was accepted from alice at this time", "bob joined 3".
//! The core emits one [`Fact`] per change to durable state, in the order it
//! made the changes, as [`crate::Output::Fact`]. Every delivery that reveals
//! a fact comes after it in the output stream, so a shell that holds
//! deliveries until the facts before them are committed gets "durable before
//! anyone sees it" without knowing what any delivery means.
//!
//! [`Snapshot`] is the other direction: what a store hands back at start-up
//! so that conversations, memberships, invitations, topics, read markers and
//! recent nonces come back as they were.
//!
//! Names here are user *keys* (see [`crate::user_key`]) unless they say
//! `display`: the key is the identity, the display form is how it is shown.

use std::sync::Arc;

use natter_proto::ConvId;

/// Milliseconds since the Unix epoch.
pub type UnixMs = i64;

/// A message the chat state accepted, with everything history needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredMessage {
    pub conv: ConvId,
    /// Per-conversation sequence number: 1, 2, 3, ... never reused.
    pub seq: u64,
    pub ts: UnixMs,
    pub sender_key: String,
    /// The sender's name as shown.
    pub sender: String,
    pub text: String,
    /// The client-chosen nonce that makes a resend safe, if any.
    pub nonce: Option<String>,
}

/// One change to durable chat state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// INVITE created conversation `conv`. `invited` are `(key, display)`
    /// of everyone invited, the inviter included: all are pending and
    /// allowed (see [`crate::conversations`]).
    ConversationCreated {
        conv: ConvId,
        ts: UnixMs,
        invited: Vec<(String, String)>,
    },
    /// `key` became a member (and is no longer pending).
    Joined {
        conv: ConvId,
        key: String,
        display: String,
    },
    /// `key` stopped being a member (LEAVE, or a guest's departure).
    Left { conv: ConvId, key: String },
    /// `key`'s invitation lapsed (a guest invitee went offline before
    /// joining); it stays allowed.
    InvitationLapsed { conv: ConvId, key: String },
    /// Nobody is left to use `conv`; its id is never handed out again.
    ConversationEnded { conv: ConvId, ts: UnixMs },
    /// A message was accepted.
    MessageAccepted(Arc<StoredMessage>),
    /// A member named the conversation.
    TopicSet {
        conv: ConvId,
        text: String,
        setter: String,
    },
    /// `key` has read `conv` up to `seq` (on every device).
    ReadUpTo { key: String, conv: ConvId, seq: u64 },
    /// SIGNUP created an account. `phc` is the argon2id hash of its
    /// password as a PHC string (never the password).
    AccountCreated {
        key: String,
        display: String,
        phc: String,
        ts: UnixMs,
    },
    /// The account's password changed: a new hash, and every session but
    /// `keep` (the one that changed it) ends.
    PasswordChanged {
        key: String,
        phc: String,
        keep: Option<TokenHash>,
    },
    /// A session token was issued; only its hash is kept.
    SessionStarted {
        key: String,
        token: TokenHash,
        ts: UnixMs,
    },
    /// LOGOUT ended this session.
    SessionEnded { token: TokenHash },
    /// An operator banned a user or an address (replacing an earlier ban
    /// on the same target).
    Banned(crate::bans::Ban),
    /// An operator lifted the ban on this target.
    Unbanned(crate::bans::BanTarget),
}

/// The SHA-256 of a session token: what a store keeps instead of it.
pub type TokenHash = [u8; 32];

/// An account as a store remembers it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredAccount {
    pub key: String,
    pub display: String,
    /// argon2id, PHC string.
    pub phc: String,
    /// Hashes of its live session tokens.
    pub sessions: Vec<TokenHash>,
}

impl std::fmt::Debug for StoredAccount {
    /// Leaves the hashes out: they are not secrets, but logs need none.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAccount")
            .field("key", &self.key)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// A member of a restored conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredMember {
    pub key: String,
    pub display: String,
    /// The last seq this member marked read (0: none).
    pub read_seq: u64,
}

/// A conversation as a store remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestoredConversation {
    pub id: ConvId,
    /// The seq of its newest message (0: none yet).
    pub last_seq: u64,
    /// `(text, setter display name)`.
    pub topic: Option<(String, String)>,
    pub members: Vec<RestoredMember>,
    /// Invited, not joined, invitation not lapsed: `(key, display)`.
    pub pending: Vec<(String, String)>,
    /// Everyone ever invited (keys): grants JOIN under invite-only.
    pub allowed: Vec<String>,
}

/// Everything the chat state needs back after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The next conversation id to hand out: above every id ever used,
    /// ended conversations included.
    pub next_conv_id: ConvId,
    /// Live (not ended) conversations, by ascending id.
    pub conversations: Vec<RestoredConversation>,
    /// Messages of the last [`NONCE_WINDOW_MS`] that carried a nonce, oldest
    /// first, so that a resend after a restart is still recognised.
    pub recent_nonces: Vec<StoredMessage>,
}

/// How long a nonce is remembered: a resend within this window is answered
/// with the original message instead of being stored twice.
pub const NONCE_WINDOW_MS: UnixMs = 24 * 3600 * 1000;
