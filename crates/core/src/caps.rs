//! Protocol extensions a client may ask for with `CAPS` before `REGISTER`.
//!
//! Course clients never send CAPS and see exactly the classic behaviour;
//! the extensions only ever add or replace messages for clients that asked.

/// Capability name: `PRESENCE` deltas instead of repeated `ONLINE_USERS`.
pub const PRESENCE_DELTA: &str = "presence-delta";
/// Capability name: `MEMBERS` on every membership change.
pub const MEMBERS: &str = "members";

/// The capabilities one connection enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub presence_delta: bool,
    pub members: bool,
}

impl Caps {
    /// Enables the known names among `asked` and returns them in the order
    /// asked, each once, spelled canonically. Unknown names are ignored, as
    /// the contract says, so newer clients work with this server.
    pub fn enable(&mut self, asked: &[String]) -> Vec<String> {
        let mut enabled: Vec<String> = Vec::new();
        for name in asked {
            let known = if name.eq_ignore_ascii_case(PRESENCE_DELTA) {
                self.presence_delta = true;
                PRESENCE_DELTA
            } else if name.eq_ignore_ascii_case(MEMBERS) {
                self.members = true;
                MEMBERS
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
