//! Why a command could not be carried out.
//!
//! Each variant's `Display` is the text of the `ERROR` the sender gets, so it
//! says what went wrong and why. Client libraries match on some of these
//! phrases ("name NAME is taken"), so changing a text is a protocol change.

use natter_proto::ConvId;

/// A command that was well-formed but not allowed in the current state.
/// Never fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("not registered: send REGISTER [username, status] first")]
    NotRegistered,
    #[error("already registered as {0}: one connection carries one user")]
    AlreadyRegistered(String),
    #[error("CAPS must be sent before REGISTER")]
    CapsAfterRegister,
    #[error("name {0} is taken")]
    NameTaken(String),
    #[error("cannot invite {}: not online", .0.join(", "))]
    NotOnline(Vec<String>),
    #[error("INVITE needs at least one other online user")]
    NobodyToInvite,
    #[error(
        "cannot invite {}: not online; INVITE needs at least one other online user, \
         so no conversation was created",
        .0.join(", ")
    )]
    NobodyOnlineToInvite(Vec<String>),
    #[error("no conversation {0}")]
    NoConversation(ConvId),
    #[error("conversation {0}: you are not invited")]
    NotInvited(ConvId),
    #[error("you are not a member of conversation {0}")]
    NotMember(ConvId),
    #[error("message is empty")]
    EmptyMessage,
    #[error("this server keeps no history (it runs with --ephemeral)")]
    HistoryNotKept,
    /// The one answer for an unknown account, a wrong secret and a guest
    /// asking for an account's name, so that names cannot be probed.
    #[error("wrong username or password")]
    BadCredentials,
    #[error("this server requires an account: REGISTER [username, status, password]")]
    AccountRequired,
    #[error("this server has no accounts (it runs with --accounts off)")]
    AccountsOff,
    #[error("{0} is only accepted before REGISTER")]
    OnlyBeforeRegister(&'static str),
    #[error("{0} needs a REGISTER with an account")]
    AccountOnly(&'static str),
    #[error("{0} needs the presence-scope capability (CAPS [\"presence-scope\"] before REGISTER)")]
    NeedsScope(&'static str),
    /// An operator banned this name; `how` says for how long and why.
    #[error("{name} is banned from this server {how}")]
    Banned { name: String, how: String },
    #[error("cannot watch more than {0} users: UNWATCH some first (nothing was added)")]
    WatchLimit(usize),
}
