//! "Durable before anyone sees it", as bookkeeping the hub can afford.
//!
//! The chat core emits [`Output::Fact`]s in the order it changes durable
//! state, and every delivery that could reveal a fact comes after it in the
//! output stream. So the hub needs no knowledge of what a delivery means:
//! facts gathered during one pass of the hub form a *batch* with a ticket
//! number, sent to the store thread in one piece (the store commits
//! several batches in one transaction when they queue up: group commit);
//! every other output waits, in order, until the batch before it is
//! committed. Outputs that follow no uncommitted fact go out at once, so
//! without a store (no facts at all) nothing ever waits.
//!
//! When a commit fails, only the copies of the messages it lost are
//! dropped: whatever else waited behind it (presence, an invitation, a
//! resend answered with a message stored long ago) reveals nothing that
//! was lost. But the failed batch's other facts (a conversation created,
//! a member joined) are not stored yet either: the store keeps them and
//! retries them first in its next transaction. So what waited behind them
//! now waits *for the retry*, until the next commit succeeds (the store
//! also retries on its own when nothing else comes): an invitation to a
//! conversation whose id is not stored could, after a crash, name a
//! different conversation. A copy can also wait behind a *later* batch
//! that commits: a resend answered with its original while that original's
//! commit was still under way. So the lost seqs are remembered until every
//! output made before the failure was known has been released. And
//! while a conversation's creation waits for its retry, an output made
//! later that names it (a `CONVERSATIONS` listing, say) waits with them:
//! it follows no uncommitted fact, yet it would reveal an id that a crash
//! could still hand out again.
//!
//! Nothing here touches a socket or the disk, which is what lets the tests
//! below check the ordering rules directly.

use std::collections::{HashSet, VecDeque};
use std::ops::RangeInclusive;
use std::sync::Arc;

use natter_core::{Fact, Output, StoredMessage};
use natter_proto::{ConvId, ServerMessage};

/// Facts gathered for the store, and outputs waiting for them.
#[derive(Debug, Default)]
pub struct Durability {
    /// Tickets handed out so far: the open batch, once it has facts, gets
    /// `submitted + 1`.
    submitted: u64,
    /// Every ticket up to this one is finished (committed or failed).
    finished: u64,
    /// Facts of the open batch.
    gathering: Vec<Fact>,
    /// Outputs waiting for the ticket they are tagged with, in order.
    held: VecDeque<(u64, Output)>,
    /// `(conv, seq)` of messages failed commits lost, while held outputs
    /// tagged up to `lost_until` may still carry a copy of one.
    lost: HashSet<(ConvId, u64)>,
    lost_until: u64,
    /// Outputs of failed tickets whose facts the store keeps for a retry:
    /// they go out, in order, before anything the next commit releases.
    awaiting_retry: VecDeque<Output>,
    /// Conversations created by submitted batches, by ticket, until the
    /// ticket is finished.
    creating: VecDeque<(u64, ConvId)>,
    /// Conversations whose creation the store keeps for a retry: nothing
    /// that names one goes out before the retry commits.
    unstored: HashSet<ConvId>,
}

impl Durability {
    /// Routes one output of the core: a fact joins the open batch; any
    /// other output is returned to be carried out now if nothing before it
    /// is uncommitted, and otherwise waits its turn.
    pub fn route(&mut self, output: Output) -> Option<Output> {
        if let Output::Fact(fact) = output {
            self.gathering.push(fact);
            return None;
        }
        if self.names_unstored(&output) && self.held.is_empty() {
            self.awaiting_retry.push_back(output);
            return None;
        }
        let waits_for = if self.gathering.is_empty() {
            self.submitted
        } else {
            self.submitted + 1
        };
        if waits_for <= self.finished && self.held.is_empty() {
            return Some(output);
        }
        self.held.push_back((waits_for, output));
        None
    }

    /// Closes the open batch: its ticket and facts, for the store, if it
    /// gathered any.
    pub fn take_batch(&mut self) -> Option<(u64, Vec<Fact>)> {
        if self.gathering.is_empty() {
            return None;
        }
        self.submitted += 1;
        let ticket = self.submitted;
        self.creating
            .extend(self.gathering.iter().filter_map(|fact| match fact {
                Fact::ConversationCreated { conv, .. } => Some((ticket, *conv)),
                _ => None,
            }));
        Some((ticket, std::mem::take(&mut self.gathering)))
    }

    /// Every ticket up to `up_to` is committed: appends the outputs now
    /// free to go to `released`, in order.
    pub fn committed(&mut self, up_to: u64, released: &mut Vec<Output>) {
        // A commit stores the retried facts first, in the same transaction.
        released.extend(self.awaiting_retry.drain(..));
        self.unstored.clear();
        self.settle_creations(up_to, false);
        self.release(up_to, None, released);
    }

    /// Tickets `first..=last` failed, `lost` being their messages (never
    /// stored, so nobody may see them): appends what waited for them to
    /// `released`, except the copies of those messages. With `kept` (the
    /// store kept other facts to retry) what waited waits on for the next
    /// commit instead.
    pub fn failed(
        &mut self,
        first: u64,
        last: u64,
        lost: &[Arc<StoredMessage>],
        kept: bool,
        released: &mut Vec<Output>,
    ) {
        self.lost.extend(lost.iter().map(|m| (m.conv, m.seq)));
        // Outputs made from now on know the loss (the core forgot the lost
        // nonces); those made before are tagged at most with the open
        // batch's ticket, or the last one submitted if none is open.
        let open = u64::from(!self.gathering.is_empty());
        self.lost_until = self.lost_until.max(self.submitted + open);
        let plain = PlainCopies::new(lost);
        self.settle_creations(last, kept);
        if kept || !self.awaiting_retry.is_empty() {
            let mut freed = Vec::new();
            self.release(last, Some((first..=last, plain)), &mut freed);
            self.awaiting_retry.extend(freed);
        } else {
            self.release(last, Some((first..=last, plain)), released);
        }
    }

    /// Tickets up to `up_to` are finished: their conversations are stored,
    /// or (`kept`) wait for the store's retry.
    fn settle_creations(&mut self, up_to: u64, kept: bool) {
        while let Some(&(ticket, conv)) = self.creating.front() {
            if ticket > up_to {
                break;
            }
            self.creating.pop_front();
            if kept {
                self.unstored.insert(conv);
            }
        }
    }

    /// Whether `output` names a conversation whose creation is not stored.
    fn names_unstored(&self, output: &Output) -> bool {
        if self.unstored.is_empty() {
            return false;
        }
        let Output::Send { message, .. } = output else {
            return false;
        };
        message.names_conversation(|conv| self.unstored.contains(&conv))
    }

    fn release(
        &mut self,
        up_to: u64,
        failed: Option<(RangeInclusive<u64>, PlainCopies)>,
        released: &mut Vec<Output>,
    ) {
        self.finished = self.finished.max(up_to);
        while let Some((ticket, _)) = self.held.front() {
            if *ticket > self.finished {
                break;
            }
            let (ticket, output) = self.held.pop_front().expect("front exists");
            let plain_lost = failed
                .as_ref()
                .is_some_and(|(tickets, plain)| tickets.contains(&ticket) && plain.of(&output));
            if !plain_lost && !self.copies_lost(ticket, &output) {
                released.push(output);
            }
        }
        if self.finished >= self.lost_until {
            self.lost.clear();
        }
    }

    /// Whether `output`, tagged with `ticket`, is a `history` client's copy
    /// of a lost message.
    fn copies_lost(&self, ticket: u64, output: &Output) -> bool {
        if self.lost.is_empty() || ticket > self.lost_until {
            return false;
        }
        let Output::Send { message, .. } = output else {
            return false;
        };
        matches!(&**message, ServerMessage::Message { conv, meta: Some(meta), .. }
            if self.lost.contains(&(*conv, meta.seq)))
    }

    /// The ticket whose commit an output made now would wait for (the
    /// open batch's, if it has facts); done once [`Self::finished`] reaches it.
    pub fn current_ticket(&self) -> u64 {
        self.submitted + u64::from(!self.gathering.is_empty())
    }

    /// Every ticket up to this one is finished (committed or failed).
    pub fn finished(&self) -> u64 {
        self.finished
    }

    /// Batches submitted and not finished yet.
    pub fn backlog(&self) -> u64 {
        self.submitted - self.finished
    }

    /// Outputs waiting for the store to retry the facts of failed commits.
    pub fn awaiting_retry(&self) -> usize {
        self.awaiting_retry.len()
    }

    /// Whether nothing is gathered, in flight or held.
    pub fn is_idle(&self) -> bool {
        self.gathering.is_empty()
            && self.backlog() == 0
            && self.held.is_empty()
            && self.awaiting_retry.is_empty()
    }
}

/// The messages among `facts`: what a batch the store could not take
/// loses.
pub fn accepted_messages(facts: &[Fact]) -> Vec<Arc<StoredMessage>> {
    facts
        .iter()
        .filter_map(|fact| match fact {
            Fact::MessageAccepted(message) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Course clients' copies of a failed commit's messages: they carry no
/// seq, only `(conv, sender, text)`. A plain copy only ever comes right
/// after the fact it reveals, in the same batch (a resend is answered with
/// a seq), so within the failed batches this never matches a message that
/// was stored.
struct PlainCopies<'a>(HashSet<(ConvId, &'a str, &'a str)>);

impl<'a> PlainCopies<'a> {
    fn new(lost: &'a [Arc<StoredMessage>]) -> Self {
        PlainCopies(
            lost.iter()
                .map(|m| (m.conv, m.sender.as_str(), m.text.as_str()))
                .collect(),
        )
    }

    fn of(&self, output: &Output) -> bool {
        let Output::Send { message, .. } = output else {
            return false;
        };
        matches!(&**message, ServerMessage::Message { conv, sender, text, meta: None }
            if self.0.contains(&(*conv, sender.as_str(), text.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use natter_core::{ConnId, Recipients};
    use natter_proto::MessageMeta;

    use super::*;

    fn send(text: &str) -> Output {
        Output::Send {
            to: Recipients::One(ConnId(1)),
            message: Arc::new(ServerMessage::Error(text.into())),
        }
    }

    fn fact() -> Output {
        Output::Fact(Fact::Left {
            conv: 1,
            key: "a".into(),
        })
    }

    fn stored(seq: u64, text: &str) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            conv: 3,
            seq,
            ts: 1,
            sender_key: "alice".into(),
            sender: "Alice".into(),
            text: text.into(),
            nonce: None,
        })
    }

    fn accepted(message: &Arc<StoredMessage>) -> Output {
        Output::Fact(Fact::MessageAccepted(message.clone()))
    }

    /// A copy of `stored` as a `history` client gets it (`with_seq`) or a
    /// course client does.
    fn copy(stored: &StoredMessage, with_seq: bool) -> Output {
        Output::Send {
            to: Recipients::One(ConnId(1)),
            message: Arc::new(ServerMessage::Message {
                conv: stored.conv,
                sender: stored.sender.clone(),
                text: stored.text.clone(),
                meta: with_seq.then_some(MessageMeta {
                    seq: stored.seq,
                    ts: stored.ts,
                    nonce: None,
                }),
            }),
        }
    }

    /// ERROR texts, and MESSAGE texts with `#seq` (or `plain`).
    fn texts(outputs: &[Output]) -> Vec<String> {
        outputs
            .iter()
            .map(|o| match o {
                Output::Send { message, .. } => match &**message {
                    ServerMessage::Error(text) => text.clone(),
                    ServerMessage::Message { text, meta, .. } => match meta {
                        Some(meta) => format!("{text} #{}", meta.seq),
                        None => format!("{text} plain"),
                    },
                    other => format!("{other:?}"),
                },
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn without_facts_everything_goes_at_once() {
        let mut d = Durability::default();
        assert!(d.route(send("a")).is_some());
        assert!(d.take_batch().is_none());
        assert!(d.route(send("b")).is_some());
        assert!(d.is_idle());
    }

    #[test]
    fn outputs_after_a_fact_wait_for_its_commit() {
        let mut d = Durability::default();
        assert!(d.route(send("before")).is_some());
        assert!(d.route(fact()).is_none());
        assert!(d.route(send("after")).is_none());
        let (ticket, facts) = d.take_batch().unwrap();
        assert_eq!((ticket, facts.len()), (1, 1));
        // Later outputs queue behind, even with no fact of their own.
        assert!(d.route(send("later")).is_none());
        let mut released = Vec::new();
        d.committed(1, &mut released);
        assert_eq!(texts(&released), ["after", "later"]);
        assert!(d.is_idle());
        assert!(d.route(send("free")).is_some());
    }

    #[test]
    fn commits_release_in_ticket_order() {
        let mut d = Durability::default();
        d.route(fact());
        d.route(send("one"));
        d.take_batch();
        d.route(fact());
        d.route(send("two"));
        d.take_batch();
        assert_eq!(d.backlog(), 2);
        let mut released = Vec::new();
        d.committed(1, &mut released);
        assert_eq!(texts(&released), ["one"]);
        released.clear();
        d.committed(2, &mut released);
        assert_eq!(texts(&released), ["two"]);
    }

    #[test]
    fn a_failed_batch_holds_back_only_the_copies_of_its_messages() {
        let mut d = Durability::default();
        let earlier = stored(2, "stored before");
        let lost = stored(7, "lost");
        d.route(accepted(&lost));
        d.route(copy(&lost, true));
        d.route(copy(&lost, false));
        d.route(send("presence"));
        // A resend answered with a message committed long ago.
        d.route(copy(&earlier, true));
        d.route(fact());
        d.take_batch();
        let next = stored(8, "next");
        d.route(accepted(&next));
        d.route(copy(&next, true));
        d.take_batch();
        let mut released = Vec::new();
        d.failed(1, 1, &[lost], false, &mut released);
        assert_eq!(texts(&released), ["presence", "stored before #2"]);
        released.clear();
        d.committed(2, &mut released);
        assert_eq!(texts(&released), ["next #8"]);
        assert!(d.is_idle());
    }

    #[test]
    fn a_copy_made_before_the_failure_was_known_never_shows_the_lost_message() {
        let mut d = Durability::default();
        let lost = stored(7, "lost");
        d.route(accepted(&lost));
        d.route(copy(&lost, true));
        d.take_batch();
        // Its sender resends it while the commit is under way: answered
        // with the original, behind the next batch, which will commit.
        let other = stored(8, "other");
        d.route(accepted(&other));
        d.route(copy(&lost, true));
        d.route(copy(&other, true));
        d.take_batch();
        let mut released = Vec::new();
        d.failed(1, 1, std::slice::from_ref(&lost), false, &mut released);
        assert!(released.is_empty());
        d.committed(2, &mut released);
        assert_eq!(texts(&released), ["other #8"]);
        // Once everything made before the failure is out, the lost seqs
        // are forgotten (a later message cannot copy them).
        assert!(d.is_idle() && d.lost.is_empty());
    }

    #[test]
    fn a_batch_the_store_never_got_loses_its_messages_and_nothing_else() {
        let mut d = Durability::default();
        let lost = stored(7, "lost");
        d.route(accepted(&lost));
        d.route(copy(&lost, true));
        d.route(copy(&lost, false));
        d.route(fact());
        d.route(send("presence"));
        let (ticket, facts) = d.take_batch().unwrap();
        let lost = accepted_messages(&facts);
        assert_eq!(texts(&[copy(&lost[0], true)]), ["lost #7"]);
        let mut released = Vec::new();
        d.failed(ticket, ticket, &lost, false, &mut released);
        assert_eq!(texts(&released), ["presence"]);
        assert!(d.is_idle());
    }

    #[test]
    fn what_revealed_a_kept_fact_waits_for_its_retry_and_keeps_its_order() {
        let mut d = Durability::default();
        let lost = stored(7, "lost");
        d.route(fact()); // say, a conversation created: kept for a retry
        d.route(send("invitation"));
        d.route(accepted(&lost));
        d.route(copy(&lost, true));
        d.take_batch();
        d.route(fact());
        d.route(send("joined"));
        d.take_batch();
        let mut released = Vec::new();
        d.failed(1, 1, std::slice::from_ref(&lost), true, &mut released);
        assert!(released.is_empty(), "the invitation waits for the retry");
        assert_eq!(d.awaiting_retry(), 1);
        assert_eq!(d.backlog(), 1, "the failed batch is finished");
        // The next batch fails too: its output queues behind.
        d.failed(2, 2, &[], true, &mut released);
        assert!(released.is_empty());
        assert!(!d.is_idle());
        // The next commit stores the retried facts first.
        d.route(fact());
        d.route(send("later"));
        d.take_batch();
        d.committed(3, &mut released);
        assert_eq!(texts(&released), ["invitation", "joined", "later"]);
        assert!(d.is_idle());
    }

    fn listing(convs: &[ConvId]) -> Output {
        Output::Send {
            to: Recipients::One(ConnId(2)),
            message: Arc::new(ServerMessage::Conversations(
                convs
                    .iter()
                    .map(|&conv| (conv, vec!["alice".into()]))
                    .collect(),
            )),
        }
    }

    fn created(conv: ConvId) -> Output {
        Output::Fact(Fact::ConversationCreated {
            conv,
            ts: 1,
            invited: vec![("alice".into(), "alice".into())],
        })
    }

    #[test]
    fn a_conversation_not_stored_is_named_by_nothing_until_its_retry_commits() {
        let mut d = Durability::default();
        d.route(created(5));
        d.route(send("invitation"));
        d.take_batch();
        let mut released = Vec::new();
        d.failed(1, 1, &[], true, &mut released);
        assert!(released.is_empty());
        // Later, with nothing uncommitted: a listing that names #5 waits
        // for the retry; one that does not, and other outputs, go at once.
        assert!(d.route(listing(&[2, 5])).is_none(), "it names #5");
        assert!(d.route(listing(&[2])).is_some());
        assert!(d.route(send("presence")).is_some());
        d.committed(1, &mut released);
        assert_eq!(texts(&released)[0], "invitation");
        assert_eq!(released.len(), 2, "the listing follows the invitation");
        assert!(d.is_idle());
        // Stored now: it is named freely.
        assert!(d.route(listing(&[5])).is_some());
    }

    #[test]
    fn a_conversation_whose_batch_commits_is_never_held_back() {
        let mut d = Durability::default();
        d.route(created(6));
        d.take_batch();
        let mut released = Vec::new();
        // Another batch's failure keeps facts, but #6 was stored.
        d.committed(1, &mut released);
        d.route(fact());
        d.take_batch();
        d.failed(2, 2, &[], true, &mut released);
        assert!(d.route(listing(&[6])).is_some());
    }
}
