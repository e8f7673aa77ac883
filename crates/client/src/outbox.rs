//! The outbox: every message we send stays here until the server confirms
//! it, so that a connection lost in between loses nothing.
//!
//! A message written to a socket that then breaks may or may not have
//! reached the server. So each message carries a [`Nonce`], and whatever
//! is unconfirmed when a connection is lost is sent again, in order and
//! with the same nonces, after the reconnect. A server with the `history`
//! capability stores a nonce once and answers a resend with the original
//! `MESSAGE`: nothing lost, nothing doubled. A server without it ignores
//! nonces, so there the outbox is at-least-once: a message whose echo was
//! lost with the connection may show twice.
//!
//! The confirmation is our own `MESSAGE` coming back: by its nonce with
//! `history`, by conversation and text without. A refusal is an `ERROR`,
//! which the protocol does not tie to a command; [`blame`] reads the ones
//! that name a conversation or a message length, and anything else is
//! caught by the confirmation timeout.
//!
//! The outbox is bounded by [`Slots`], shared with every
//! [`crate::Client`] handle: a slot is taken before a message is queued,
//! so a full outbox is an error at the call, never a silent drop.
//!
//! No I/O here: the connection task asks what to send and reports what
//! came back.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use natter_proto::command::MAX_NONCE;
use natter_proto::{Command, ConvId};

use crate::error::ClientError;

/// How many times one message is sent on a server with `history` before
/// it is given up (a resend is safe there: the nonce is stored once).
pub(crate) const MAX_ATTEMPTS: u32 = 3;

/// The identifier a message is sent with; [`crate::Client::send_message`]
/// returns it, and [`crate::Event::Sent`] and [`crate::Event::Queued`]
/// carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nonce(String);

impl Nonce {
    /// 128 random bits as 32 hex digits: unique without coordination.
    pub(crate) fn random() -> Nonce {
        Nonce(format!("{:032x}", rand::random::<u128>()))
    }

    /// A nonce the server sent back (ours, from an earlier send).
    pub(crate) fn from_server(text: String) -> Nonce {
        Nonce(text)
    }

    /// A nonce the application chooses (for [`crate::Client::send`], or to
    /// compare with the ones it was given): at most 64 characters.
    pub fn new(text: impl Into<String>) -> Result<Nonce, ClientError> {
        let text = text.into();
        let len = text.chars().count();
        if len > MAX_NONCE {
            return Err(ClientError::NonceTooLong { len });
        }
        Ok(Nonce(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Nonce> for String {
    fn from(nonce: Nonce) -> String {
        nonce.0
    }
}

/// The outbox's capacity, counted where messages are submitted (the
/// handles) and where they leave the outbox (the task).
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    used: Arc<AtomicUsize>,
    capacity: usize,
}

impl Slots {
    pub fn new(capacity: usize) -> Slots {
        Slots {
            used: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    /// Takes a slot, or says the outbox is full.
    pub fn take(&self) -> Result<(), ClientError> {
        let capacity = self.capacity;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < capacity).then_some(used + 1)
            })
            .map(|_| ())
            .map_err(|_| ClientError::OutboxFull { capacity })
    }

    pub fn give_back(&self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One message waiting for its confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub nonce: Nonce,
    pub conv: ConvId,
    pub text: String,
    /// When it was last written to the current connection; `None` while it
    /// waits to be sent.
    sent_at: Option<Instant>,
    /// How many times it was written, over every connection.
    attempts: u32,
}

impl Entry {
    pub fn command(&self) -> Command {
        Command::SendMessage {
            conv: self.conv,
            text: self.text.clone(),
            nonce: Some(self.nonce.to_string()),
        }
    }
}

/// Which message an `ERROR` is about, when its text says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blame {
    /// Not a member, no such conversation, or not stored: the oldest
    /// message in flight to this conversation.
    Conversation(ConvId),
    /// "message is too long (N bytes, ...)": the oldest in flight of N bytes.
    Length(usize),
}

/// Reads an `ERROR` text for the message it refuses.
pub(crate) fn blame(error_text: &str) -> Option<Blame> {
    if let Some(conv) = crate::session::lost_conversation(error_text) {
        return Some(Blame::Conversation(conv));
    }
    if let Some(rest) = error_text.strip_prefix("message not stored in conversation ") {
        let id = rest.split(|c: char| !c.is_ascii_digit()).next()?;
        return id.parse().ok().map(Blame::Conversation);
    }
    let rest = error_text.strip_prefix("message is too long (")?;
    let len = rest.split(' ').next()?;
    len.parse().ok().map(Blame::Length)
}

/// What became of messages whose confirmation is overdue.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Overdue {
    /// Sent again (same nonce) on the current connection.
    pub resend: Vec<Command>,
    /// Given up: reported to the application as not sent.
    pub failed: Vec<Entry>,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    entries: VecDeque<Entry>,
    slots: Slots,
}

impl Outbox {
    pub fn new(slots: Slots) -> Outbox {
        Outbox {
            entries: VecDeque::new(),
            slots,
        }
    }

    /// Queues a message whose slot the submitting handle already took.
    pub fn push(&mut self, nonce: Nonce, conv: ConvId, text: String) {
        self.entries.push_back(Entry {
            nonce,
            conv,
            text,
            sent_at: None,
            attempts: 0,
        });
    }

    /// Whether a message waits to be sent on this connection.
    pub fn has_unsent(&self) -> bool {
        self.entries.iter().any(|entry| entry.sent_at.is_none())
    }

    /// The oldest message waiting to be sent, marked as sent at `now`
    /// (call it right before writing: its confirmation is due from then).
    pub fn next_unsent(&mut self, now: Instant) -> Option<Command> {
        let entry = self.entries.iter_mut().find(|e| e.sent_at.is_none())?;
        entry.sent_at = Some(now);
        entry.attempts += 1;
        Some(entry.command())
    }

    /// The connection is gone: whatever was in flight waits to be sent
    /// again. Returns those messages, oldest first.
    pub fn requeue(&mut self) -> Vec<Entry> {
        let mut requeued = Vec::new();
        for entry in &mut self.entries {
            if entry.sent_at.take().is_some() {
                requeued.push(entry.clone());
            }
        }
        requeued
    }

    /// Our own `MESSAGE` came back with this nonce.
    pub fn confirm(&mut self, nonce: &str) -> Option<Entry> {
        let at = self
            .entries
            .iter()
            .position(|e| e.nonce.as_str() == nonce)?;
        self.remove(at)
    }

    /// Our own `MESSAGE` came back without a nonce (a server without
    /// `history`): it confirms the oldest message in flight with that text.
    pub fn confirm_echo(&mut self, conv: ConvId, text: &str) -> Option<Entry> {
        self.remove_first(|e| e.conv == conv && e.text == text)
    }

    /// The server refused a message; the oldest in flight it fits leaves.
    pub fn refused(&mut self, blame: Blame) -> Option<Entry> {
        match blame {
            Blame::Conversation(conv) => self.remove_first(|e| e.conv == conv),
            Blame::Length(len) => self.remove_first(|e| e.text.len() == len),
        }
    }

    /// When the oldest message in flight is overdue.
    pub fn next_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.entries
            .iter()
            .filter_map(|e| e.sent_at)
            .min()
            .map(|sent| sent + timeout)
    }

    /// Messages unconfirmed for `timeout`: sent again when `may_resend`
    /// (a server that dedupes nonces) and attempts remain, else given up.
    pub fn overdue(&mut self, now: Instant, timeout: Duration, may_resend: bool) -> Overdue {
        let mut result = Overdue::default();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for mut entry in self.entries.drain(..) {
            let late = entry.sent_at.is_some_and(|sent| now >= sent + timeout);
            if !late {
                kept.push_back(entry);
            } else if may_resend && entry.attempts < MAX_ATTEMPTS {
                entry.sent_at = Some(now);
                entry.attempts += 1;
                result.resend.push(entry.command());
                kept.push_back(entry);
            } else {
                self.slots.give_back();
                result.failed.push(entry);
            }
        }
        self.entries = kept;
        result
    }

    /// Empties the outbox (the client is closing); returns what was in it.
    pub fn drain(&mut self) -> Vec<Entry> {
        let all: Vec<Entry> = self.entries.drain(..).collect();
        for _ in &all {
            self.slots.give_back();
        }
        all
    }

    fn remove_first(&mut self, fits: impl Fn(&Entry) -> bool) -> Option<Entry> {
        let at = self
            .entries
            .iter()
            .position(|e| e.sent_at.is_some() && fits(e))?;
        self.remove(at)
    }

    fn remove(&mut self, at: usize) -> Option<Entry> {
        let entry = self.entries.remove(at)?;
        self.slots.give_back();
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn outbox_with(slots: &Slots, texts: &[(ConvId, &str)]) -> Outbox {
        let mut outbox = Outbox::new(slots.clone());
        for (conv, text) in texts {
            slots.take().unwrap();
            outbox.push(Nonce::random(), *conv, text.to_string());
        }
        outbox
    }

    fn all_unsent(outbox: &mut Outbox, now: Instant) -> Vec<Command> {
        std::iter::from_fn(|| outbox.next_unsent(now)).collect()
    }

    fn texts(commands: &[Command]) -> Vec<&str> {
        commands
            .iter()
            .map(|c| match c {
                Command::SendMessage { text, .. } => text.as_str(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_full_outbox_refuses_until_a_message_is_confirmed() {
        let slots = Slots::new(2);
        let mut outbox = outbox_with(&slots, &[(1, "a"), (1, "b")]);
        assert_eq!(slots.take(), Err(ClientError::OutboxFull { capacity: 2 }));
        all_unsent(&mut outbox, Instant::now());
        let first = outbox.entries[0].nonce.clone();
        assert_eq!(outbox.confirm(first.as_str()).unwrap().text, "a");
        assert_eq!(slots.take(), Ok(()));
    }

    #[test]
    fn a_lost_connection_requeues_in_flight_messages_in_order_with_their_nonces() {
        let slots = Slots::new(10);
        let mut outbox = outbox_with(&slots, &[(1, "a"), (2, "b")]);
        let now = Instant::now();
        let first = all_unsent(&mut outbox, now);
        slots.take().unwrap();
        outbox.push(Nonce::random(), 1, "c".into());
        let requeued: Vec<String> = outbox.requeue().into_iter().map(|e| e.text).collect();
        assert_eq!(requeued, ["a", "b"], "c was never sent");
        assert!(outbox.has_unsent());
        let again = all_unsent(&mut outbox, now);
        assert!(!outbox.has_unsent());
        assert_eq!(texts(&again), ["a", "b", "c"]);
        assert_eq!(&again[..2], &first[..], "same nonces");
    }

    #[test]
    fn an_echo_without_nonce_confirms_the_oldest_matching_message() {
        let slots = Slots::new(10);
        let mut outbox = outbox_with(&slots, &[(1, "same"), (2, "same"), (1, "same")]);
        let nonces: Vec<Nonce> = outbox.entries.iter().map(|e| e.nonce.clone()).collect();
        assert_eq!(outbox.confirm_echo(1, "same"), None, "nothing sent yet");
        all_unsent(&mut outbox, Instant::now());
        assert_eq!(outbox.confirm_echo(1, "same").unwrap().nonce, nonces[0]);
        assert_eq!(outbox.confirm_echo(1, "same").unwrap().nonce, nonces[2]);
        assert_eq!(outbox.confirm_echo(1, "same"), None);
    }

    #[test]
    fn refusals_are_blamed_on_the_message_their_text_names() {
        assert_eq!(
            blame("you are not a member of conversation 3"),
            Some(Blame::Conversation(3))
        );
        assert_eq!(blame("no conversation 7"), Some(Blame::Conversation(7)));
        assert_eq!(
            blame(
                "message not stored in conversation 12 (the server could not write it: \
                 disk full); nobody received it, send it again"
            ),
            Some(Blame::Conversation(12))
        );
        assert_eq!(
            blame("message is too long (8193 bytes, at most 8192)"),
            Some(Blame::Length(8193))
        );
        assert_eq!(
            blame("rate limit: at most 10 commands per second (burst 20); command ignored"),
            None
        );

        let slots = Slots::new(10);
        let mut outbox = outbox_with(&slots, &[(1, "a"), (2, "bb"), (2, "c")]);
        all_unsent(&mut outbox, Instant::now());
        assert_eq!(outbox.refused(Blame::Conversation(2)).unwrap().text, "bb");
        assert_eq!(outbox.refused(Blame::Length(1)).unwrap().text, "a");
        assert_eq!(outbox.refused(Blame::Conversation(1)), None);
    }

    #[test]
    fn overdue_messages_are_resent_a_bounded_number_of_times_then_given_up() {
        let slots = Slots::new(10);
        let mut outbox = outbox_with(&slots, &[(1, "a")]);
        let mut now = Instant::now();
        all_unsent(&mut outbox, now);
        assert_eq!(outbox.next_deadline(TIMEOUT), Some(now + TIMEOUT));
        assert_eq!(outbox.overdue(now, TIMEOUT, true), Overdue::default());
        for _ in 1..MAX_ATTEMPTS {
            now += TIMEOUT;
            let overdue = outbox.overdue(now, TIMEOUT, true);
            assert_eq!(texts(&overdue.resend), ["a"]);
        }
        now += TIMEOUT;
        let overdue = outbox.overdue(now, TIMEOUT, true);
        assert!(overdue.resend.is_empty());
        assert_eq!(overdue.failed.len(), 1);
        assert_eq!(outbox.next_deadline(TIMEOUT), None);
        assert_eq!(slots.used.load(Ordering::Acquire), 0, "slot given back");
    }

    #[test]
    fn without_nonce_dedup_an_overdue_message_is_given_up_not_resent() {
        let slots = Slots::new(10);
        let mut outbox = outbox_with(&slots, &[(1, "a")]);
        let now = Instant::now();
        all_unsent(&mut outbox, now);
        let overdue = outbox.overdue(now + TIMEOUT, TIMEOUT, false);
        assert!(overdue.resend.is_empty());
        assert_eq!(overdue.failed[0].text, "a");
    }

    #[test]
    fn chosen_nonces_are_checked_against_the_protocol_limit() {
        assert!(Nonce::new("x".repeat(MAX_NONCE)).is_ok());
        assert_eq!(
            Nonce::new("x".repeat(MAX_NONCE + 1)),
            Err(ClientError::NonceTooLong { len: MAX_NONCE + 1 })
        );
        assert_eq!(Nonce::random().as_str().len(), 32);
        assert_ne!(Nonce::random(), Nonce::random());
    }
}
