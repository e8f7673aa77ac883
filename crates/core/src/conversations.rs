//! Conversations: who is in them, who was invited, who may join, and when
//! one disappears.
//!
//! Membership is the only thing that makes a user receive a conversation's
//! messages; an invitation only makes the user *pending* (and *allowed*,
//! which is what invite-only JOIN checks). Ids come from a counter starting
//! at 1 and are never reused, so a stale id can never reach a newer
//! conversation.

use std::collections::{BTreeMap, BTreeSet};

use natter_proto::ConvId;

use crate::state::ConnId;

/// One conversation. All names are user keys (lowercased).
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    /// Members, sorted by key, with the connection each is online on. The
    /// connection is kept here so fanning a message out needs no lookup.
    pub members: BTreeMap<String, ConnId>,
    /// Invited, online, not yet joined.
    pub pending: BTreeSet<String>,
    /// Ever invited: grants JOIN under the invite-only policy, also after
    /// a user left or reconnected.
    pub allowed: BTreeSet<String>,
}

impl Conversation {
    /// The contract's removal rule: no members and no invited user still
    /// online (pending invitees are dropped when they go offline).
    pub fn is_abandoned(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// The connections of every member, in one allocation.
    pub fn member_conns(&self) -> Vec<ConnId> {
        let mut conns = Vec::with_capacity(self.members.len());
        conns.extend(self.members.values().copied());
        conns
    }
}

/// Every live conversation, by id.
#[derive(Debug)]
pub(crate) struct Conversations {
    by_id: BTreeMap<ConvId, Conversation>,
    next_id: ConvId,
}

impl Default for Conversations {
    fn default() -> Self {
        Conversations {
            by_id: BTreeMap::new(),
            next_id: 1,
        }
    }
}

impl Conversations {
    /// Creates a conversation in which `invited` are pending and allowed.
    pub fn create(&mut self, invited: BTreeSet<String>) -> ConvId {
        let id = self.next_id;
        self.next_id += 1;
        let conversation = Conversation {
            members: BTreeMap::new(),
            allowed: invited.clone(),
            pending: invited,
        };
        self.by_id.insert(id, conversation);
        id
    }

    pub fn get(&self, id: ConvId) -> Option<&Conversation> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: ConvId) -> Option<&mut Conversation> {
        self.by_id.get_mut(&id)
    }

    /// Removes conversation `id` if nobody is left to use it.
    pub fn remove_if_abandoned(&mut self, id: ConvId) {
        if self.by_id.get(&id).is_some_and(Conversation::is_abandoned) {
            self.by_id.remove(&id);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (ConvId, &Conversation)> {
        self.by_id.iter().map(|(id, c)| (*id, c))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}
