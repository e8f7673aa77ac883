//! Scoped presence (capability `presence-scope`): each such device sees
//! only its *contacts*, so that bringing n users online costs O(n ×
//! contacts) bytes instead of O(n²).
//!
//! A device's scope is its own user, every user who shares a conversation
//! with it (member or invited, on either side: an invitation puts inviter
//! and invitees in the new conversation's pending set), and the users it
//! watches. Its view is the online part of that scope.
//!
//! The scope cannot be kept as one shared snapshot, so each scoped device
//! remembers which keys its last `ONLINE_USERS`/`PRESENCE` showed (`seen`).
//! At a flush only the devices a change can concern are recomputed: those
//! marked dirty (WATCH, UNWATCH, a conversation they are in changed, a
//! contact went offline) and, for each user whose presence changed, the
//! devices that watch it or share a conversation with it. A device can
//! only have seen a user for one of those reasons, and losing the reason
//! marks it, so no reverse index of `seen` is needed (it cost about a
//! kilobyte per idle connection). What a device was last shown about a
//! user is the same for every device (the global baseline of
//! [`crate::presence`]), so `seen` needs only keys, and it holds them
//! packed in one allocation ([`KeyList`]): every idle scoped connection
//! keeps one. Devices that end up with the same delta share one message.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use natter_proto::ServerMessage;

use crate::conversations::Conversations;
use crate::error::ChatError;
use crate::state::{ConnId, Output, Recipients};
use crate::users::User;

/// Default bound on the users one device may watch.
pub const MAX_WATCHED: usize = 1_000;

/// What the previous flush published about one user, borrowed.
pub(crate) type PublishedRef<'a> = Option<(&'a str, &'a str)>;

/// One change as `PRESENCE` carries it.
pub(crate) type Change = (String, Option<String>);

/// The scoped state of one device.
#[derive(Debug)]
struct ScopedDevice {
    /// The user this device is registered as.
    key: String,
    /// Keys this device watches (bounded).
    watched: BTreeSet<String>,
    /// Keys its last presence message showed online.
    seen: KeyList,
}

/// A sorted list of keys in one allocation, each preceded by its length
/// (two bytes, little-endian). A scoped device holds the keys it was last
/// shown for as long as it is connected, and reads them only at a flush
/// that concerns it; as a `BTreeSet<String>` ten names cost some 600 bytes
/// (a tree node and a heap string each), packed they cost their bytes and
/// two more each.
#[derive(Debug, Default)]
struct KeyList(Box<[u8]>);

impl KeyList {
    /// Packs `keys`, which must be sorted and distinct.
    fn from_sorted<'a>(keys: impl IntoIterator<Item = &'a str>) -> KeyList {
        let mut bytes = Vec::new();
        for key in keys {
            let len = u16::try_from(key.len()).expect("a key is far shorter than 64 KiB");
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(key.as_bytes());
        }
        KeyList(bytes.into_boxed_slice())
    }

    /// The keys, in order.
    fn iter(&self) -> impl Iterator<Item = &str> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let (len, after) = rest.split_first_chunk::<2>()?;
            let (key, after) = after.split_at(usize::from(u16::from_le_bytes(*len)));
            rest = after;
            Some(std::str::from_utf8(key).expect("packed from a str"))
        })
    }
}

/// Every scoped device, with the indexes a flush needs.
#[derive(Debug, Default)]
pub(crate) struct Scopes {
    devices: HashMap<ConnId, ScopedDevice>,
    /// Key → scoped devices watching it.
    watchers: HashMap<String, HashSet<ConnId>>,
    /// Devices to recompute at the next flush.
    dirty: HashSet<ConnId>,
}

/// What a flush reads: the state after the window, and what the previous
/// flush published about the users changed since.
pub(crate) struct FlushInput<'a> {
    pub users: &'a BTreeMap<String, User>,
    pub conversations: &'a Conversations,
    /// Keys changed in the window, with what the previous flush published.
    pub baseline: &'a BTreeMap<String, Option<(String, String)>>,
    pub changed_keys: &'a [&'a str],
    /// Devices that registered in the window: they get a full snapshot.
    pub awaiting: &'a HashSet<ConnId>,
}

impl FlushInput<'_> {
    /// What the previous flush showed about `key`.
    fn published(&self, key: &str) -> PublishedRef<'_> {
        match self.baseline.get(key) {
            Some(before) => before.as_ref().map(|(d, s)| (d.as_str(), s.as_str())),
            None => self
                .users
                .get(key)
                .map(|u| (u.display.as_str(), u.status.as_str())),
        }
    }
}

impl Scopes {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Whether a flush has devices to recompute regardless of changes.
    pub fn pending(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// `conn` registered as `key` with `presence-scope`.
    pub fn add_device(&mut self, conn: ConnId, key: &str) {
        let device = ScopedDevice {
            key: key.to_owned(),
            watched: BTreeSet::new(),
            seen: KeyList::default(),
        };
        self.devices.insert(conn, device);
    }

    /// `conn` went away: forget it and its entries in the indexes.
    pub fn remove_device(&mut self, conn: ConnId) {
        self.dirty.remove(&conn);
        let Some(device) = self.devices.remove(&conn) else {
            return;
        };
        unindex(&mut self.watchers, &device.watched, conn);
    }

    /// The conversations of the user behind `conn` changed, or a contact
    /// is going offline: recompute it.
    pub fn mark(&mut self, conn: ConnId) {
        if self.devices.contains_key(&conn) {
            self.dirty.insert(conn);
        }
    }

    /// WATCH: all `keys` or, over `limit`, none.
    pub fn watch(
        &mut self,
        conn: ConnId,
        keys: Vec<String>,
        limit: usize,
    ) -> Result<(), ChatError> {
        let device = self
            .devices
            .get_mut(&conn)
            .ok_or(ChatError::NeedsScope("WATCH"))?;
        let new: BTreeSet<String> = keys
            .into_iter()
            .filter(|k| !device.watched.contains(k))
            .collect();
        if device.watched.len() + new.len() > limit {
            return Err(ChatError::WatchLimit(limit));
        }
        for key in new {
            self.watchers.entry(key.clone()).or_default().insert(conn);
            device.watched.insert(key);
        }
        self.dirty.insert(conn);
        Ok(())
    }

    /// UNWATCH: names not watched are ignored.
    pub fn unwatch(&mut self, conn: ConnId, keys: Vec<String>) -> Result<(), ChatError> {
        let device = self
            .devices
            .get_mut(&conn)
            .ok_or(ChatError::NeedsScope("UNWATCH"))?;
        let gone: BTreeSet<String> = keys
            .into_iter()
            .filter(|k| device.watched.remove(k))
            .collect();
        unindex(&mut self.watchers, &gone, conn);
        self.dirty.insert(conn);
        Ok(())
    }

    /// The keys `conn` watches, if it is scoped.
    pub fn watched(&self, conn: ConnId) -> Option<&BTreeSet<String>> {
        self.devices.get(&conn).map(|d| &d.watched)
    }

    /// Sends each concerned scoped device one message: a full
    /// `ONLINE_USERS` of its view if it just registered, else the
    /// `PRESENCE` delta between what it saw and its view now (if any).
    pub fn flush(&mut self, input: &FlushInput<'_>, out: &mut Vec<Output>) {
        if self.devices.is_empty() {
            return;
        }
        let concerned = self.concerned(input);
        let mut fulls: BTreeMap<Vec<(String, String)>, Vec<ConnId>> = BTreeMap::new();
        let mut deltas: BTreeMap<Vec<Change>, Vec<ConnId>> = BTreeMap::new();
        for conn in concerned {
            let Some(device) = self.devices.get_mut(&conn) else {
                continue;
            };
            let view = view_of(
                &device.key,
                &device.watched,
                input.users,
                input.conversations,
            );
            if input.awaiting.contains(&conn) {
                let full = view
                    .iter()
                    .map(|k| {
                        let user = &input.users[*k];
                        (user.display.clone(), user.status.clone())
                    })
                    .collect();
                fulls.entry(full).or_default().push(conn);
            } else {
                let delta = delta(&device.seen, &view, input);
                if !delta.is_empty() {
                    deltas.entry(delta).or_default().push(conn);
                }
            }
            device.seen = KeyList::from_sorted(view);
        }
        for (full, to) in fulls {
            send(out, to, ServerMessage::OnlineUsers(full));
        }
        for (delta, to) in deltas {
            send(out, to, ServerMessage::Presence(delta));
        }
    }

    /// The scoped devices a flush must recompute, in a stable order.
    fn concerned(&mut self, input: &FlushInput<'_>) -> BTreeSet<ConnId> {
        let mut concerned: BTreeSet<ConnId> = self.dirty.drain().collect();
        concerned.extend(
            input
                .awaiting
                .iter()
                .filter(|c| self.devices.contains_key(c)),
        );
        for key in input.changed_keys {
            concerned.extend(self.watchers.get(*key).into_iter().flatten());
            if let Some(user) = input.users.get(*key) {
                // Its own devices see it too, with or without contacts.
                concerned.extend(user.conns_with(|c| c.presence_scope));
                for_contacts(user, input.users, input.conversations, |contact| {
                    concerned.extend(contact.conns_with(|c| c.presence_scope));
                });
            }
        }
        concerned
    }

    /// Checks the indexes against the devices; `registered` says whether
    /// a connection is a registered scoped device of that key.
    pub fn check(
        &self,
        registered: impl Fn(ConnId, &str) -> bool,
        limit: usize,
    ) -> Result<(), String> {
        for (conn, device) in &self.devices {
            if !registered(*conn, &device.key) {
                return Err(format!(
                    "scoped {conn:?} is not a scoped device of {}",
                    device.key
                ));
            }
            if device.watched.len() > limit {
                return Err(format!("{conn:?} watches {} users", device.watched.len()));
            }
            check_index(&self.watchers, &device.watched, *conn, "watched")?;
        }
        let indexed: usize = self.watchers.values().map(HashSet::len).sum();
        let owned: usize = self.devices.values().map(|d| d.watched.len()).sum();
        if indexed != owned {
            return Err(format!("indexes hold {indexed} entries, devices {owned}"));
        }
        Ok(())
    }
}

/// Calls `f` with every online user sharing a conversation with `user`
/// (member or invited), `user` itself included.
pub(crate) fn for_contacts<'a>(
    user: &User,
    users: &'a BTreeMap<String, User>,
    conversations: &'a Conversations,
    mut f: impl FnMut(&'a User),
) {
    let ids = user.member_of.iter().chain(&user.pending_in);
    for conversation in ids.filter_map(|id| conversations.get(*id)) {
        let keys = conversation.members.keys().chain(&conversation.pending);
        keys.filter_map(|k| users.get(k)).for_each(&mut f);
    }
}

/// The keys of the online users in the scope of a device of `key` that
/// watches `watched`, sorted.
pub(crate) fn view_of<'a>(
    key: &'a str,
    watched: &'a BTreeSet<String>,
    users: &'a BTreeMap<String, User>,
    conversations: &'a Conversations,
) -> BTreeSet<&'a str> {
    let mut view = BTreeSet::new();
    let online = |k: &&String| users.contains_key(k.as_str());
    view.extend(watched.iter().filter(online).map(String::as_str));
    if let Some(user) = users.get(key) {
        view.insert(key);
        let ids = user.member_of.iter().chain(&user.pending_in);
        for conversation in ids.filter_map(|id| conversations.get(*id)) {
            let keys = conversation.members.keys().chain(&conversation.pending);
            view.extend(keys.filter(online).map(String::as_str));
        }
    }
    view
}

/// The `PRESENCE` entries that take a device from `seen` to `view`, in
/// key order: both are sorted, so one merge finds who left the view, who
/// came into it, and who stayed (and may have changed).
fn delta(seen: &KeyList, view: &BTreeSet<&str>, input: &FlushInput<'_>) -> Vec<Change> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let mut changes = Vec::new();
    let mut seen = seen.iter().peekable();
    let mut view = view.iter().copied().peekable();
    loop {
        let next = match (seen.peek(), view.peek()) {
            (None, None) => return changes,
            (Some(_), None) => Less,
            (None, Some(_)) => Greater,
            (Some(old), Some(new)) => old.cmp(new),
        };
        let (before, after) = match next {
            // Shown before, out of the view now.
            Less => (input.published(seen.next().expect("peeked")), None),
            // New in the view.
            Greater => (None, input.users.get(view.next().expect("peeked"))),
            // In both: shown again only if it changed.
            Equal => {
                view.next();
                let key = seen.next().expect("peeked");
                (input.published(key), input.users.get(key))
            }
        };
        push_change(before, after, &mut changes);
    }
}

/// The entries that take a client from `before` to `after` about one user.
/// A user who left and a new one who took the name with other
/// capitalisation show up as the old name leaving and the new one
/// arriving.
pub(crate) fn push_change(before: PublishedRef<'_>, after: Option<&User>, out: &mut Vec<Change>) {
    match (before, after) {
        (Some((display, status)), Some(now)) if display == now.display && status == now.status => {}
        (Some((old, _)), Some(now)) if old != now.display => {
            out.push((old.to_owned(), None));
            out.push((now.display.clone(), Some(now.status.clone())));
        }
        (_, Some(now)) => out.push((now.display.clone(), Some(now.status.clone()))),
        (Some((old, _)), None) => out.push((old.to_owned(), None)),
        (None, None) => {}
    }
}

/// Removes `conn` from the index entries of `keys`, dropping empty ones.
fn unindex(index: &mut HashMap<String, HashSet<ConnId>>, keys: &BTreeSet<String>, conn: ConnId) {
    for key in keys {
        if let Some(conns) = index.get_mut(key) {
            conns.remove(&conn);
            if conns.is_empty() {
                index.remove(key);
            }
        }
    }
}

fn check_index(
    index: &HashMap<String, HashSet<ConnId>>,
    keys: &BTreeSet<String>,
    conn: ConnId,
    what: &str,
) -> Result<(), String> {
    match keys
        .iter()
        .find(|k| !index.get(*k).is_some_and(|c| c.contains(&conn)))
    {
        Some(key) => Err(format!(
            "{conn:?} {what} {key} but the index does not say so"
        )),
        None => Ok(()),
    }
}

fn send(out: &mut Vec<Output>, to: Vec<ConnId>, message: ServerMessage) {
    out.push(Output::Send {
        to: Recipients::Many(to),
        message: Arc::new(message),
    });
}
