//! Who may use a name: guests, accounts, or both.
//!
//! The core never sees a password or a token: the server shell verifies
//! secrets off the hub and then calls [`crate::Chat::login`]. What the core
//! decides is the naming rule: which names guests may take (not an
//! account's), whether guests are let in at all, and that an account may be
//! online on several connections (its devices) while a guest name has one.

/// The `--accounts` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccountsMode {
    /// No accounts: names are first come, first served, as in the notes.
    Off,
    /// An account's name needs its secret; other names are free for guests.
    #[default]
    Optional,
    /// Guests are refused: every REGISTER needs an account.
    Required,
}

impl AccountsMode {
    /// Whether accounts exist at all (SIGNUP, secrets, `session`).
    pub fn enabled(self) -> bool {
        self != AccountsMode::Off
    }
}
