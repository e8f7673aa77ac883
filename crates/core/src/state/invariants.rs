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
        self.check_conversations()
    }

    fn check_users(&self) -> Result<(), String> {
        let registered = self
            .connections
            .values()
            .filter(|c| matches!(c, Connection::Registered { .. }))
            .count();
        if registered != self.users.len() {
            return Err(format!(
                "{registered} registered connections but {} users",
                self.users.len()
            ));
        }
        for (key, user) in &self.users {
            if *key != crate::user_key(&user.display) {
                return Err(format!("user {} stored under key {key}", user.display));
            }
            match self.connections.get(&user.conn) {
                Some(Connection::Registered { key: k }) if k == key => {}
                other => return Err(format!("user {key} on {:?}: {other:?}", user.conn)),
            }
            for id in &user.member_of {
                let c = self.conversations.get(*id);
                if c.is_none_or(|c| c.members.get(key).and_then(|m| m.conn) != Some(user.conn)) {
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
            for (key, member) in &c.members {
                let Some(conn) = member.conn else {
                    // Offline: only a member from before a restart.
                    if self.users.contains_key(key)
                        || !self
                            .restored
                            .get(key)
                            .is_some_and(|r| r.member_of.contains(&id))
                    {
                        return Err(format!("offline member {key} of {id} is not awaited"));
                    }
                    continue;
                };
                let user = self
                    .users
                    .get(key)
                    .ok_or(format!("member {key} of {id} is offline"))?;
                if user.conn != conn || !user.member_of.contains(&id) {
                    return Err(format!("member {key} of {id} does not know it"));
                }
                if c.pending.contains(key) {
                    return Err(format!("{key} is both member and pending in {id}"));
                }
            }
            for key in &c.pending {
                let Some(user) = self.users.get(key) else {
                    if !self
                        .restored
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
