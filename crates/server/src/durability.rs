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
//! Nothing here touches a socket or the disk, which is what lets the tests
//! below check the ordering rules directly.

use std::collections::VecDeque;

use natter_core::{Fact, Output};

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
        Some((self.submitted, std::mem::take(&mut self.gathering)))
    }

    /// Every ticket up to `up_to` is finished: appends the outputs now free
    /// to go to `released`, in order. `keep` decides for each output tagged
    /// with a ticket in `failed` whether it still goes (a failed batch's
    /// messages must not be delivered).
    pub fn finish(
        &mut self,
        up_to: u64,
        failed: Option<(u64, u64)>,
        mut keep: impl FnMut(&Output) -> bool,
        released: &mut Vec<Output>,
    ) {
        self.finished = self.finished.max(up_to);
        while let Some((ticket, _)) = self.held.front() {
            if *ticket > self.finished {
                break;
            }
            let (ticket, output) = self.held.pop_front().expect("front exists");
            let in_failed = failed.is_some_and(|(first, last)| (first..=last).contains(&ticket));
            if !in_failed || keep(&output) {
                released.push(output);
            }
        }
    }

    /// Batches submitted and not finished yet.
    pub fn backlog(&self) -> u64 {
        self.submitted - self.finished
    }

    /// Whether nothing is gathered, in flight or held.
    pub fn is_idle(&self) -> bool {
        self.gathering.is_empty() && self.backlog() == 0 && self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use natter_core::{ConnId, Recipients};
    use natter_proto::ServerMessage;

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

    fn texts(outputs: &[Output]) -> Vec<String> {
        outputs
            .iter()
            .map(|o| match o {
                Output::Send { message, .. } => match &**message {
                    ServerMessage::Error(text) => text.clone(),
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
        d.finish(1, None, |_| true, &mut released);
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
        d.finish(1, None, |_| true, &mut released);
        assert_eq!(texts(&released), ["one"]);
        released.clear();
        d.finish(2, None, |_| true, &mut released);
        assert_eq!(texts(&released), ["two"]);
    }

    #[test]
    fn a_failed_batch_drops_what_keep_refuses() {
        let mut d = Durability::default();
        d.route(fact());
        d.route(send("lost"));
        d.route(send("kept"));
        d.take_batch();
        d.route(fact());
        d.route(send("next"));
        d.take_batch();
        let mut released = Vec::new();
        let keep = |o: &Output| texts(std::slice::from_ref(o)) != ["lost"];
        d.finish(1, Some((1, 1)), keep, &mut released);
        assert_eq!(texts(&released), ["kept"]);
        released.clear();
        d.finish(2, None, |_| false, &mut released);
        assert_eq!(texts(&released), ["next"]);
    }
}
