//! Who may join and list which conversations.

/// The conversation policy, a server setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Any registered user may JOIN any existing conversation, and
    /// LIST_CONVERSATIONS lists all of them (the course server's behaviour).
    #[default]
    Open,
    /// JOIN needs an invitation to that conversation; LIST_CONVERSATIONS
    /// lists only those the user is a member of or invited to.
    InviteOnly,
}
