//! Presence: who is online with which status, coalesced.
//!
//! Sending the whole `ONLINE_USERS` to everyone on every change costs n³
//! bytes to bring n users online. So changes (REGISTER, STATUS, departures)
//! only mark the state dirty; [`Presence::flush`], called by the shell at
//! the end of each coalescing window, sends each client at most one message
//! carrying the *net* change since the previous flush: a full snapshot to
//! classic clients and to delta clients that just registered, a `PRESENCE`
//! delta to the other delta clients.
//!
//! The net change is computed by remembering, for every user key touched in
//! the window, what the previous flush published for it (the baseline) and
//! comparing with the state at flush time. The full snapshot is cached until
//! the next change, so the periodic snapshot costs no rebuild.
//!
//! Devices with `presence-scope` see only their contacts; their views are
//! kept apart, in [`crate::scope`], and the flush hands them the same
//! baseline.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use natter_proto::ServerMessage;

use crate::caps::Caps;
use crate::conversations::Conversations;
use crate::error::ChatError;
use crate::scope::{FlushInput, Scopes, push_change};
use crate::state::{ConnId, Output, Recipients};
use crate::users::User;

/// What a client last learnt about one user: display name and status, or
/// nothing (not online).
type Published = Option<(String, String)>;

/// The presence bookkeeping between flushes.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    /// Keys touched since the last flush, with what that flush published.
    baseline: BTreeMap<String, Published>,
    /// Connections registered since the last flush: each still owes its
    /// first full `ONLINE_USERS`.
    awaiting_snapshot: HashSet<ConnId>,
    /// The full snapshot of the current state, until it changes.
    cached: Option<Snapshot>,
    /// The views of `presence-scope` devices.
    scopes: Scopes,
}

/// The full `ONLINE_USERS`, and who gets it periodically.
#[derive(Debug)]
struct Snapshot {
    message: Arc<ServerMessage>,
    /// Registered connections (devices) without `presence-delta`, by user
    /// key.
    classic_conns: Vec<ConnId>,
}

impl Presence {
    /// Must be called before the user stored under `key` arrives, changes
    /// status or leaves; `before` is its state before the change.
    pub fn note_change(&mut self, key: &str, before: Option<&User>) {
        self.cached = None;
        if !self.baseline.contains_key(key) {
            let published = before.map(|u| (u.display.clone(), u.status.clone()));
            self.baseline.insert(key.to_owned(), published);
        }
    }

    /// A device came or went without changing who is online: the cached
    /// snapshot's list of recipients is stale.
    pub fn note_devices_changed(&mut self) {
        self.cached = None;
    }

    /// `conn` has just registered as `key` and needs a first full
    /// snapshot.
    pub fn note_registered(&mut self, conn: ConnId, key: &str, caps: Caps) {
        self.awaiting_snapshot.insert(conn);
        if caps.presence_scope {
            self.scopes.add_device(conn, key);
        }
    }

    /// Scoped device `conn` of `key`, from another copy of the state: it
    /// needs no first snapshot here (see `state/live.rs`).
    pub fn scopes_add_device(&mut self, conn: ConnId, key: &str) {
        self.scopes.add_device(conn, key);
    }

    /// `conn` went away; it no longer needs anything.
    pub fn note_departed(&mut self, conn: ConnId) {
        self.awaiting_snapshot.remove(&conn);
        self.scopes.remove_device(conn);
    }

    /// Whether any device has `presence-scope` (else scope bookkeeping
    /// can be skipped).
    pub fn has_scoped(&self) -> bool {
        !self.scopes.is_empty()
    }

    /// The conversations of the user behind scoped device `conn` changed.
    pub fn note_scope_changed(&mut self, conn: ConnId) {
        self.scopes.mark(conn);
    }

    pub fn watch(
        &mut self,
        conn: ConnId,
        keys: Vec<String>,
        limit: usize,
    ) -> Result<(), ChatError> {
        self.scopes.watch(conn, keys, limit)
    }

    pub fn unwatch(&mut self, conn: ConnId, keys: Vec<String>) -> Result<(), ChatError> {
        self.scopes.unwatch(conn, keys)
    }

    /// The keys scoped device `conn` watches (`None`: not scoped).
    pub fn watched(&self, conn: ConnId) -> Option<&std::collections::BTreeSet<String>> {
        self.scopes.watched(conn)
    }

    /// Checks the scoped bookkeeping (see [`Scopes::check`]).
    pub fn check(
        &self,
        registered: impl Fn(ConnId, &str) -> bool,
        limit: usize,
    ) -> Result<(), String> {
        self.scopes.check(registered, limit)
    }

    /// Whether [`Presence::flush`] would send anything.
    pub fn pending(&self, users: &BTreeMap<String, User>) -> bool {
        !self.awaiting_snapshot.is_empty()
            || self.scopes.pending()
            || self
                .baseline
                .iter()
                .any(|(key, before)| changed(before, users.get(key)))
    }

    /// Ends a coalescing window.
    pub fn flush(
        &mut self,
        users: &BTreeMap<String, User>,
        conversations: &Conversations,
        out: &mut Vec<Output>,
    ) {
        self.publish(users, conversations, false, out);
    }

    /// The periodic full snapshot to every classic client. It also ends the
    /// current window: otherwise classic clients could see an arrival that
    /// a departure later in the window cancels out, and the flush, finding
    /// no net change, would never correct them.
    pub fn periodic(
        &mut self,
        users: &BTreeMap<String, User>,
        conversations: &Conversations,
        out: &mut Vec<Output>,
    ) {
        if !self.baseline.is_empty() || !self.awaiting_snapshot.is_empty() || self.scopes.pending()
        {
            return self.publish(users, conversations, true, out);
        }
        // Without classic clients nobody gets it: no list of every user is
        // built (and kept) for nothing.
        let classic = |u: &User| u.devices.iter().any(|d| !d.caps.presence_delta);
        if self.cached.is_none() && !users.values().any(classic) {
            return;
        }
        // The usual case, nothing pending: everything comes from the cache.
        let snapshot = self.snapshot(users);
        if !snapshot.classic_conns.is_empty() {
            out.push(Output::Send {
                to: Recipients::Many(snapshot.classic_conns.clone()),
                message: snapshot.message.clone(),
            });
        }
    }

    /// Sends the net change since the last publication: the full snapshot
    /// to newcomers and (if anything changed, or `to_all_classic`) to every
    /// classic client, a `PRESENCE` delta to the other delta clients.
    fn publish(
        &mut self,
        users: &BTreeMap<String, User>,
        conversations: &Conversations,
        to_all_classic: bool,
        out: &mut Vec<Output>,
    ) {
        let changes = self.net_changes(users);
        let awaiting = std::mem::take(&mut self.awaiting_snapshot);
        self.publish_scoped(users, conversations, &awaiting, out);
        self.baseline.clear();
        let changed = !changes.is_empty();
        if !changed && awaiting.is_empty() && !to_all_classic {
            return;
        }
        let mut full_to = Vec::new();
        let mut delta_to = Vec::new();
        for device in users.values().flat_map(|u| &u.devices) {
            if device.caps.presence_scope {
                continue;
            } else if awaiting.contains(&device.conn) {
                full_to.push(device.conn);
            } else if device.caps.presence_delta {
                if changed {
                    delta_to.push(device.conn);
                }
            } else if changed || to_all_classic {
                full_to.push(device.conn);
            }
        }
        if !full_to.is_empty() {
            let message = self.snapshot(users).message.clone();
            out.push(Output::Send {
                to: Recipients::Many(full_to),
                message,
            });
        }
        if !delta_to.is_empty() {
            out.push(Output::Send {
                to: Recipients::Many(delta_to),
                message: Arc::new(ServerMessage::Presence(changes)),
            });
        }
    }

    /// The scoped devices' share of a publication, from the same baseline.
    fn publish_scoped(
        &mut self,
        users: &BTreeMap<String, User>,
        conversations: &Conversations,
        awaiting: &HashSet<ConnId>,
        out: &mut Vec<Output>,
    ) {
        if self.scopes.is_empty() {
            return;
        }
        let changed_keys: Vec<&str> = self
            .baseline
            .iter()
            .filter(|(key, before)| changed(before, users.get(*key)))
            .map(|(key, _)| key.as_str())
            .collect();
        let input = FlushInput {
            users,
            conversations,
            baseline: &self.baseline,
            changed_keys: &changed_keys,
            awaiting,
        };
        self.scopes.flush(&input, out);
    }

    /// The full `ONLINE_USERS` of the current state, built at most once per
    /// change.
    pub fn online_users(&mut self, users: &BTreeMap<String, User>) -> Arc<ServerMessage> {
        self.snapshot(users).message.clone()
    }

    fn snapshot(&mut self, users: &BTreeMap<String, User>) -> &Snapshot {
        self.cached.get_or_insert_with(|| build_snapshot(users))
    }

    /// `{name: status | None}` for every user whose published state differs
    /// from the current one, in key order. A user who left and a new one
    /// who took the same name with other capitalisation show up as the old
    /// name leaving and the new one arriving.
    fn net_changes(&self, users: &BTreeMap<String, User>) -> Vec<(String, Option<String>)> {
        let mut changes = Vec::new();
        for (key, before) in &self.baseline {
            let before = before.as_ref().map(|(d, s)| (d.as_str(), s.as_str()));
            push_change(before, users.get(key), &mut changes);
        }
        changes
    }
}

fn changed(before: &Published, after: Option<&User>) -> bool {
    match (before, after) {
        (None, None) => false,
        (Some((display, status)), Some(user)) => *display != user.display || *status != user.status,
        _ => true,
    }
}

fn build_snapshot(users: &BTreeMap<String, User>) -> Snapshot {
    let mut entries = Vec::with_capacity(users.len());
    let mut classic_conns = Vec::with_capacity(users.len());
    for user in users.values() {
        entries.push((user.display.clone(), user.status.clone()));
        // `presence-scope` implies `presence-delta`.
        classic_conns.extend(user.conns_with(|c| !c.presence_delta));
    }
    Snapshot {
        message: Arc::new(ServerMessage::OnlineUsers(entries)),
        classic_conns,
    }
}
