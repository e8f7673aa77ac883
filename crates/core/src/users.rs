//! Connections and the users registered on them.
//!
//! A connection exists from `connect` until it goes away; it becomes a user
//! when it registers. Users are keyed by their lowercased name (see
//! [`user_key`]) so that uniqueness is case-insensitive while the display
//! form stays as the user typed it.

use std::collections::BTreeSet;

use natter_proto::ConvId;

use crate::caps::Caps;
use crate::state::ConnId;

/// The key a username is stored and compared under.
pub fn user_key(name: &str) -> String {
    name.to_lowercase()
}

/// A live connection, registered or not.
#[derive(Debug)]
pub(crate) enum Connection {
    /// Connected, not yet registered: only CAPS and REGISTER are accepted.
    Unregistered { caps: Caps },
    /// Registered as the user stored under `key`.
    Registered { key: String },
}

/// A registered, online user.
#[derive(Debug)]
pub(crate) struct User {
    /// The name as the user registered it.
    pub display: String,
    pub status: String,
    pub conn: ConnId,
    /// Fixed at REGISTER (CAPS is only accepted before).
    pub caps: Caps,
    /// Conversations this user is a member of.
    pub member_of: BTreeSet<ConvId>,
    /// Conversations this user was invited to and has not joined yet.
    pub pending_in: BTreeSet<ConvId>,
}

impl User {
    pub fn new(display: String, status: String, conn: ConnId, caps: Caps) -> Self {
        User {
            display,
            status,
            conn,
            caps,
            member_of: BTreeSet::new(),
            pending_in: BTreeSet::new(),
        }
    }
}

/// What an offline user from before a restart is still part of, until it
/// registers again or the rejoin grace ends.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    pub member_of: Vec<ConvId>,
    pub pending_in: Vec<ConvId>,
}
