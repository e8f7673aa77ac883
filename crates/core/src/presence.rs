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

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use natter_proto::ServerMessage;

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

    /// `conn` has just registered and needs a first full snapshot.
    pub fn note_registered(&mut self, conn: ConnId) {
        self.awaiting_snapshot.insert(conn);
    }

    /// `conn` went away; it no longer needs anything.
    pub fn note_departed(&mut self, conn: ConnId) {
        self.awaiting_snapshot.remove(&conn);
    }

    /// Whether [`Presence::flush`] would send anything.
    pub fn pending(&self, users: &BTreeMap<String, User>) -> bool {
        !self.awaiting_snapshot.is_empty()
            || self
                .baseline
                .iter()
                .any(|(key, before)| changed(before, users.get(key)))
    }

    /// Ends a coalescing window.
    pub fn flush(&mut self, users: &BTreeMap<String, User>, out: &mut Vec<Output>) {
        self.publish(users, false, out);
    }

    /// The periodic full snapshot to every classic client. It also ends the
    /// current window: otherwise classic clients could see an arrival that
    /// a departure later in the window cancels out, and the flush, finding
    /// no net change, would never correct them.
    pub fn periodic(&mut self, users: &BTreeMap<String, User>, out: &mut Vec<Output>) {
        if !self.baseline.is_empty() || !self.awaiting_snapshot.is_empty() {
            return self.publish(users, true, out);
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
        to_all_classic: bool,
        out: &mut Vec<Output>,
    ) {
        let changes = self.net_changes(users);
        self.baseline.clear();
        let awaiting = std::mem::take(&mut self.awaiting_snapshot);
        let changed = !changes.is_empty();
        if !changed && awaiting.is_empty() && !to_all_classic {
            return;
        }
        let mut full_to = Vec::new();
        let mut delta_to = Vec::new();
        for device in users.values().flat_map(|u| &u.devices) {
            if awaiting.contains(&device.conn) {
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
            let after = users.get(key);
            if !changed(before, after) {
                continue;
            }
            match (before, after) {
                (Some((old, _)), Some(now)) if *old != now.display => {
                    changes.push((old.clone(), None));
                    changes.push((now.display.clone(), Some(now.status.clone())));
                }
                (_, Some(now)) => changes.push((now.display.clone(), Some(now.status.clone()))),
                (Some((old, _)), None) => changes.push((old.clone(), None)),
                (None, None) => {}
            }
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
        classic_conns.extend(user.conns_with(|c| !c.presence_delta));
    }
    Snapshot {
        message: Arc::new(ServerMessage::OnlineUsers(entries)),
        classic_conns,
    }
}
