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
    pub member_of: ConvSet,
    /// Conversations this user was invited to and has not joined yet.
    pub pending_in: ConvSet,
}

impl User {
    pub fn new(display: String, status: String, device: Device, account: bool) -> Self {
        User {
            display,
            status,
            devices: vec![device],
            account,
            member_of: ConvSet::default(),
            pending_in: ConvSet::default(),
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

/// A user's conversations: a sorted list in one allocation of exactly its
/// length (none when empty). Every online user holds two such sets, nearly
/// always of one conversation or none; a `BTreeSet` holds a node of eleven
/// slots (112 bytes with malloc's header) for one, and keeps it when
/// emptied. Inserting and removing copy the list, which a user's few
/// conversations make cheap; reads are a binary search or a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConvSet(Box<[ConvId]>);

impl ConvSet {
    /// Adds `id`; false if it was there already.
    pub fn insert(&mut self, id: ConvId) -> bool {
        let Err(at) = self.0.binary_search(&id) else {
            return false;
        };
        let mut ids = std::mem::take(&mut self.0).into_vec();
        ids.insert(at, id);
        self.0 = ids.into_boxed_slice();
        true
    }

    /// Takes `id` out; false if it was not there.
    pub fn remove(&mut self, id: &ConvId) -> bool {
        let Ok(at) = self.0.binary_search(id) else {
            return false;
        };
        let mut ids = std::mem::take(&mut self.0).into_vec();
        ids.remove(at);
        self.0 = ids.into_boxed_slice();
        true
    }

    pub fn contains(&self, id: &ConvId) -> bool {
        self.0.binary_search(id).is_ok()
    }

    /// The ids, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConvId> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a ConvSet {
    type Item = &'a ConvId;
    type IntoIter = std::slice::Iter<'a, ConvId>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for ConvSet {
    type Item = ConvId;
    type IntoIter = std::vec::IntoIter<ConvId>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

impl FromIterator<ConvId> for ConvSet {
    fn from_iter<I: IntoIterator<Item = ConvId>>(ids: I) -> Self {
        let mut ids: Vec<ConvId> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        ConvSet(ids.into_boxed_slice())
    }
}

impl Extend<ConvId> for ConvSet {
    fn extend<I: IntoIterator<Item = ConvId>>(&mut self, ids: I) {
        let mut all = std::mem::take(&mut self.0).into_vec();
        all.extend(ids);
        *self = all.into_iter().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conv_set_keeps_its_ids_sorted_distinct_and_exactly_sized() {
        let mut set = ConvSet::default();
        assert!(set.insert(7));
        assert!(set.insert(3));
        assert!(!set.insert(7));
        set.extend([9, 3]);
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [3, 7, 9]);
        assert!(set.contains(&9) && !set.contains(&4));
        assert!(set.remove(&7));
        assert!(!set.remove(&7));
        assert_eq!(set.0.len(), 2);
        assert!(set.remove(&3) && set.remove(&9));
        assert_eq!(set, ConvSet::default());
    }
}
