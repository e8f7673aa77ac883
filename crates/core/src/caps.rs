//! Protocol extensions a client may ask for with `CAPS` before `REGISTER`.
//!
//! Course clients never send CAPS and see exactly the classic behaviour;
//! the extensions only ever add or replace messages for clients that asked.

/// Capability name: `PRESENCE` deltas instead of repeated `ONLINE_USERS`.
pub const PRESENCE_DELTA: &str = "presence-delta";
/// Capability name: presence only for the users a client shares a
/// conversation with or watches; `WATCH`, `UNWATCH`. Implies
/// `presence-delta`.
pub const PRESENCE_SCOPE: &str = "presence-scope";
/// Capability name: `MEMBERS` on every membership change.
pub const MEMBERS: &str = "members";
/// Capability name: message ids, `HISTORY`, `READ`, `UNREAD`, nonces. Only
/// offered by a server that keeps history (not `--ephemeral`).
pub const HISTORY: &str = "history";
/// Capability name: `TOPIC`, conversation names.
pub const TOPICS: &str = "topics";
/// Capability name: `SESSION [token]` after a REGISTER with a password.
/// Only offered by a server with accounts.
pub const SESSION: &str = "session";

/// The capabilities one connection enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Caps {
    pub presence_delta: bool,
    /// Implies `presence_delta`.
    pub presence_scope: bool,
    pub members: bool,
    pub history: bool,
    pub topics: bool,
    pub session: bool,
}

impl Caps {
    /// Enables the known names among `asked` and returns them in the order
    /// asked, each once, spelled canonically. Unknown names are ignored, as
    /// the contract says, so newer clients work with this server.
    /// `history` is only known when the server keeps history, `session`
    /// only when it has accounts.
    pub fn enable(&mut self, asked: &[String], history_kept: bool, accounts: bool) -> Vec<String> {
        let mut enabled: Vec<String> = Vec::new();
        for name in asked {
            let known = if name.eq_ignore_ascii_case(PRESENCE_DELTA) {
                self.presence_delta = true;
                PRESENCE_DELTA
            } else if name.eq_ignore_ascii_case(PRESENCE_SCOPE) {
                self.presence_scope = true;
                self.presence_delta = true;
                PRESENCE_SCOPE
            } else if name.eq_ignore_ascii_case(MEMBERS) {
                self.members = true;
                MEMBERS
            } else if history_kept && name.eq_ignore_ascii_case(HISTORY) {
                self.history = true;
                HISTORY
            } else if name.eq_ignore_ascii_case(TOPICS) {
                self.topics = true;
                TOPICS
            } else if accounts && name.eq_ignore_ascii_case(SESSION) {
                self.session = true;
                SESSION
            } else {
                continue;
            };
            if !enabled.iter().any(|e| e == known) {
                enabled.push(known.to_owned());
            }
        }
        enabled
    }
}
