//! The chat state's internal invariants, checkable at any moment.
//!
//! Used after every step of the property tests and by fuzz targets: a
//! violation means a rule of the contract can be broken by some sequence of
//! inputs.

use std::collections::BTreeSet;

use super::Chat;
use crate::users::Connection;

impl Chat {
    /// Checks that connections, users and conversations agree with each
    /// other and with the contract. Returns what is wrong, if anything.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_users()?;
        self.check_conversations()?;
        self.check_scopes()
    }

    /// Scoped presence bookkeeping matches the scoped devices.
    fn check_scopes(&self) -> Result<(), String> {
        let scoped_device = |conn, key: &str| {
            self.users.get(key).is_some_and(|u| {
                u.devices
                    .iter()
                    .any(|d| d.conn == conn && d.caps.presence_scope)
            })
        };
        let scoped = self
            .users
            .values()
            .flat_map(|u| u.conns_with(|c| c.presence_scope))
            .filter(|c| self.presence.watched(*c).is_none())
            .count();
        if scoped != 0 {
            return Err(format!("{scoped} scoped devices have no scoped state"));
        }
        self.presence.check(scoped_device, self.config.max_watched)
    }

    fn check_users(&self) -> Result<(), String> {
        let registered = self
            .connections
            .values()
            .filter(|c| matches!(c, Connection::Registered { .. }))
            .count();
        let devices: usize = self.users.values().map(|u| u.devices.len()).sum();
        if registered != devices {
            return Err(format!(
                "{registered} registered connections but {devices} devices"
            ));
        }
        for (key, user) in &self.users {
            if *key != crate::user_key(&user.display) {
                return Err(format!("user {} stored under key {key}", user.display));
            }
            if user.devices.is_empty() || (!user.account && user.devices.len() != 1) {
                return Err(format!("user {key} has {} devices", user.devices.len()));
            }
            if user.account != self.accounts.contains(key) {
                return Err(format!("user {key} disagrees about being an account"));
            }
            if self.away.contains_key(key) {
                return Err(format!("user {key} is both online and away"));
            }
            for device in &user.devices {
                match self.connections.get(&device.conn) {
                    Some(Connection::Registered { key: k }) if k == key => {}
                    other => return Err(format!("user {key} on {:?}: {other:?}", device.conn)),
                }
            }
            for id in &user.member_of {
                let c = self.conversations.get(*id);
                if c.is_none_or(|c| !c.members.contains_key(key)) {
                    return Err(format!("{key} thinks it is a member of {id} but is not"));
                }
            }
            for id in &user.pending_in {
                if self
                    .conversations
                    .get(*id)
                    .is_none_or(|c| !c.pending.contains(key))
                {
                    return Err(format!("{key} thinks it is invited to {id} but is not"));
                }
            }
        }
        Ok(())
    }

    fn check_conversations(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for (id, c) in self.conversations.iter() {
            if !seen.insert(id) {
                return Err(format!("conversation id {id} appears twice"));
            }
            if c.is_abandoned() {
                return Err(format!(
                    "conversation {id} has no members and no online invitee"
                ));
            }
            for key in c.members.keys() {
                let Some(user) = self.users.get(key) else {
                    // Offline: an account between sessions, or anyone from
                    // before a restart, and then it is awaited.
                    if !self
                        .away
                        .get(key)
                        .is_some_and(|a| a.member_of.contains(&id))
                    {
                        return Err(format!("offline member {key} of {id} is not awaited"));
                    }
                    continue;
                };
                if !user.member_of.contains(&id) {
                    return Err(format!("member {key} of {id} does not know it"));
                }
                if c.pending.contains(key) {
                    return Err(format!("{key} is both member and pending in {id}"));
                }
            }
            for key in &c.pending {
                let Some(user) = self.users.get(key) else {
                    if !self
                        .away
                        .get(key)
                        .is_some_and(|r| r.pending_in.contains(&id))
                    {
                        return Err(format!("invitee {key} of {id} is offline"));
                    }
                    continue;
                };
                if !user.pending_in.contains(&id) || !c.allowed.contains(key) {
                    return Err(format!("invitee {key} of {id} is inconsistent"));
                }
            }
        }
        Ok(())
    }
}
