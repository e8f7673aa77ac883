//! Conversations: who is in them, who was invited, who may join, what was
//! said last, and when one disappears.
//!
//! Membership is the only thing that makes a user receive a conversation's
//! messages; an invitation only makes the user *pending* (and *allowed*,
//! which is what invite-only JOIN checks). Ids come from a counter that a
//! store restores across restarts, so an id is never reused: a stale id can
//! never reach a newer conversation.
//!
//! A member is online while its user has a device; the devices live with
//! the user (`users.rs`), so a member here is only a name and a read
//! marker. An offline member is an account between sessions, or anyone
//! restored after a restart who has not registered again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use natter_proto::ConvId;

use crate::facts::{NONCE_WINDOW_MS, StoredMessage, UnixMs};

/// Most nonces remembered per conversation: past it the oldest are
/// forgotten early, so a hostile client cannot grow memory without bound.
pub const MAX_NONCES: usize = 10_000;

/// A member of a conversation.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The name as shown.
    pub display: String,
    /// Read up to this seq.
    pub read_seq: u64,
}

/// One conversation. All names are user keys (lowercased).
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    /// Members, sorted by key; their devices are found through the users.
    pub members: BTreeMap<String, Member>,
    /// Invited, not yet joined, invitation not lapsed.
    pub pending: BTreeSet<String>,
    /// Ever invited: grants JOIN under the invite-only policy, also after
    /// a user left or reconnected.
    pub allowed: BTreeSet<String>,
    /// The seq of the newest message (0: none yet).
    pub last_seq: u64,
    /// `(text, setter display name)`.
    pub topic: Option<(String, String)>,
    pub nonces: Nonces,
}

impl Conversation {
    /// The contract's removal rule: no members and no invited user still
    /// online (pending invitees are dropped when they go offline).
    pub fn is_abandoned(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }
}

/// Recent `(sender key, nonce)` pairs of one conversation and the message
/// each produced, for the contract's safe retries.
#[derive(Debug, Default)]
pub(crate) struct Nonces {
    by_nonce: HashMap<(String, String), Arc<StoredMessage>>,
    /// The same messages, oldest first, for expiry.
    order: VecDeque<Arc<StoredMessage>>,
}

impl Nonces {
    /// The message an earlier send with this nonce produced, if it is
    /// still remembered.
    pub fn find(&self, sender_key: &str, nonce: &str) -> Option<&Arc<StoredMessage>> {
        // Keys are owned pairs; a lookup without allocating would need a
        // borrowed-pair trait, which resends are too rare to deserve.
        self.by_nonce
            .get(&(sender_key.to_owned(), nonce.to_owned()))
    }

    /// The remembered messages, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = &Arc<StoredMessage>> {
        self.order.iter()
    }

    /// Forgets `message`'s nonce (it was never stored).
    pub fn forget(&mut self, message: &StoredMessage) {
        let Some(nonce) = &message.nonce else { return };
        let key = (message.sender_key.clone(), nonce.clone());
        if self
            .by_nonce
            .get(&key)
            .is_some_and(|m| m.seq == message.seq)
        {
            self.by_nonce.remove(&key);
        }
    }

    /// Remembers `message` (which carries a nonce), forgetting what is
    /// older than the window or over the cap.
    pub fn remember(&mut self, message: Arc<StoredMessage>, now: UnixMs) {
        let Some(nonce) = message.nonce.clone() else {
            return;
        };
        while let Some(oldest) = self.order.front() {
            if oldest.ts >= now - NONCE_WINDOW_MS && self.order.len() < MAX_NONCES {
                break;
            }
            let oldest = self.order.pop_front().expect("front exists");
            let key = (
                oldest.sender_key.clone(),
                oldest.nonce.clone().unwrap_or_default(),
            );
            if self
                .by_nonce
                .get(&key)
                .is_some_and(|m| Arc::ptr_eq(m, &oldest))
            {
                self.by_nonce.remove(&key);
            }
        }
        self.by_nonce
            .insert((message.sender_key.clone(), nonce), message.clone());
        self.order.push_back(message);
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
            allowed: invited.clone(),
            pending: invited,
            ..Conversation::default()
        };
        self.by_id.insert(id, conversation);
        id
    }

    /// Puts back a conversation a store remembered.
    pub fn restore(&mut self, id: ConvId, conversation: Conversation) {
        self.next_id = self.next_id.max(id + 1);
        self.by_id.insert(id, conversation);
    }

    /// Never hands out an id below `next` (ids of ended conversations
    /// included).
    pub fn reserve_below(&mut self, next: ConvId) {
        self.next_id = self.next_id.max(next);
    }

    /// The id the next conversation will get.
    pub fn next_id(&self) -> ConvId {
        self.next_id
    }

    pub fn get(&self, id: ConvId) -> Option<&Conversation> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: ConvId) -> Option<&mut Conversation> {
        self.by_id.get_mut(&id)
    }

    /// Removes conversation `id` if nobody is left to use it; says whether
    /// it did.
    pub fn remove_if_abandoned(&mut self, id: ConvId) -> bool {
        if self.by_id.get(&id).is_some_and(Conversation::is_abandoned) {
            self.by_id.remove(&id);
            return true;
        }
        false
    }

    pub fn iter(&self) -> impl Iterator<Item = (ConvId, &Conversation)> {
        self.by_id.iter().map(|(id, c)| (*id, c))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}
