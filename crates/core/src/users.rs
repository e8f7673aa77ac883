//! Connections and the users registered on them: user → connections.
//!
//! A connection exists from `connect` until it goes away; it becomes a
//! *device* of a user when it registers. A guest has exactly one device; an
//! account may have several at once (its devices share one presence entry
//! and one status, and each gets everything the user gets). A user is
//! online while it has a device; an offline account stays a member of its
//! conversations (see [`Away`]). Users are keyed by their lowercased name (see
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

/// One connection a user is registered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Device {
    pub conn: ConnId,
    /// Fixed at REGISTER (CAPS is only accepted before); each device asks
    /// for its own.
    pub caps: Caps,
}

/// A registered, online user.
#[derive(Debug)]
pub(crate) struct User {
    /// The name as the user registered it.
    pub display: String,
    pub status: String,
    /// Never empty: a user without devices is offline and not stored here.
    pub devices: Vec<Device>,
    /// An account (may have several devices, stays a member while
    /// offline) rather than a guest.
    pub account: bool,
    /// Conversations this user is a member of.
    pub member_of: BTreeSet<ConvId>,
    /// Conversations this user was invited to and has not joined yet.
    pub pending_in: BTreeSet<ConvId>,
}

impl User {
    pub fn new(display: String, status: String, device: Device, account: bool) -> Self {
        User {
            display,
            status,
            devices: vec![device],
            account,
            member_of: BTreeSet::new(),
            pending_in: BTreeSet::new(),
        }
    }

    /// The connections of the devices whose capabilities pass `wanted`.
    pub fn conns_with<F: Fn(&Caps) -> bool>(
        &self,
        wanted: F,
    ) -> impl Iterator<Item = ConnId> + use<'_, F> {
        self.devices
            .iter()
            .filter(move |d| wanted(&d.caps))
            .map(|d| d.conn)
    }

    pub fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.devices.iter().map(|d| d.conn)
    }
}

/// What an offline user is still part of: an account between its
/// sessions, or anyone from before a restart until it registers again (or,
/// for a guest, until the rejoin grace ends).
#[derive(Debug, Default)]
pub(crate) struct Away {
    pub member_of: Vec<ConvId>,
    pub pending_in: Vec<ConvId>,
}
