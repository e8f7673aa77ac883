//! What every copy decides from the log alone: which nodes are alive,
//! which of their inputs to apply and in what order, and when the rejoin
//! grace of a dead node's users ends.
//!
//! Nothing here reads a clock or a socket. The time is the log's: each
//! entry carries the time the stream stored it, and every copy sees the
//! same entries with the same times, so every copy declares the same node
//! dead at the same entry. That is the whole liveness protocol: a node
//! appends a heartbeat every `heartbeat`, and a node none of whose entries
//! is younger than `timeout` (by the time of the entry being applied) is
//! down. Its connections are dropped in every copy at that entry. A gap in
//! the log longer than half the timeout is an outage of the log itself,
//! which blames nobody: silences count from the entry after it. A node
//! not heard from since its own `NodeUp` is still starting (catching up
//! with the log; its first publishes may wait on a stream that is still
//! settling): it is given [`STARTING_TIMEOUTS`] times the timeout.

use std::collections::{BTreeMap, btree_map};

use natter_core::UnixMs;
use natter_proto::Limits;
use serde::{Deserialize, Serialize};

use super::entry::{Entry, Input};

/// Most inputs of one node held while an earlier one is missing (a publish
/// being retried). Past it the node's later inputs are dropped: it is
/// broken, and will be declared down when its heartbeats stop.
const MAX_WAITING: usize = 4096;

/// A starting node's silence may last this many timeouts: two nodes
/// started at once on fresh NATS servers could otherwise declare one
/// another down before their first heartbeats got through.
pub const STARTING_TIMEOUTS: i64 = 5;

/// The live nodes, as every copy sees them.
#[derive(Debug)]
pub struct Replica {
    nodes: BTreeMap<u64, Node>,
    /// The log's time: the latest entry time seen (entry times can step
    /// back a little when the stream's leader changes).
    clock: UnixMs,
    timeout: UnixMs,
    rejoin_grace: UnixMs,
    /// When the users of dead nodes stop being waited for.
    grace_until: Option<UnixMs>,
}

#[derive(Debug)]
struct Node {
    name: String,
    last_seen: UnixMs,
    /// Nothing came from it since its `NodeUp` yet.
    starting: bool,
    /// The seq of the node's next input to apply.
    next_seq: u64,
    /// Inputs that came before an earlier one (retried publishes).
    waiting: BTreeMap<u64, Input>,
}

/// A [`Replica`] as plain data, for a snapshot (its settings are every
/// node's own).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplicaState {
    pub clock: UnixMs,
    pub grace_until: Option<UnixMs>,
    pub nodes: Vec<NodeState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub incarnation: u64,
    pub name: String,
    pub last_seen: UnixMs,
    /// Absent from snapshots written before it existed: not starting.
    #[serde(default)]
    pub starting: bool,
    pub next_seq: u64,
    /// Inputs waiting for an earlier one, as log entries (rare: only while
    /// a node retries a publish).
    pub waiting: Vec<Vec<u8>>,
}

impl Replica {
    /// The state a snapshot keeps.
    pub fn export(&self) -> ReplicaState {
        let nodes = self
            .nodes
            .iter()
            .map(|(&incarnation, node)| NodeState {
                incarnation,
                name: node.name.clone(),
                last_seen: node.last_seen,
                starting: node.starting,
                next_seq: node.next_seq,
                waiting: node
                    .waiting
                    .iter()
                    .map(|(&seq, input)| {
                        let input = input.clone();
                        Entry::Input { seq, input }.encode().to_vec()
                    })
                    .collect(),
            })
            .collect();
        ReplicaState {
            clock: self.clock,
            grace_until: self.grace_until,
            nodes,
        }
    }

    /// A replica that goes on from `state` (see [`Replica::new`] for the
    /// settings); waiting inputs are decoded with `limits`.
    pub fn import(
        timeout: UnixMs,
        rejoin_grace: UnixMs,
        state: ReplicaState,
        limits: &Limits,
    ) -> Self {
        let mut replica = Replica::new(timeout, rejoin_grace);
        replica.clock = state.clock;
        replica.grace_until = state.grace_until;
        for saved in state.nodes {
            let waiting = saved
                .waiting
                .iter()
                .filter_map(|bytes| match Entry::decode(bytes, limits) {
                    Ok(Entry::Input { seq, input }) => Some((seq, input)),
                    _ => None,
                })
                .collect();
            let node = Node {
                name: saved.name,
                last_seen: saved.last_seen,
                starting: saved.starting,
                next_seq: saved.next_seq,
                waiting,
            };
            replica.nodes.insert(saved.incarnation, node);
        }
        replica
    }

    /// The live node that writes snapshots: the oldest, which every copy
    /// names alike.
    pub fn snapshot_writer(&self) -> Option<u64> {
        self.nodes.keys().next().copied()
    }

    /// `timeout` and `rejoin_grace` in milliseconds: every node of a
    /// cluster must use the same.
    pub fn new(timeout: UnixMs, rejoin_grace: UnixMs) -> Self {
        Replica {
            nodes: BTreeMap::new(),
            clock: 0,
            timeout,
            rejoin_grace,
            grace_until: None,
        }
    }

    pub fn clock(&self) -> UnixMs {
        self.clock
    }

    /// Moves the log clock to an entry's time; returns the incarnations now
    /// down (ascending), whose connections every copy drops.
    pub fn advance(&mut self, time: UnixMs) -> Vec<u64> {
        if time - self.clock > self.timeout / 2 {
            // Nobody appended for that long, though every live node
            // heartbeats: the log itself was out (a NATS failover, or the
            // whole cluster was down). Nobody could speak, so nobody is
            // blamed: every node's silence counts from now.
            for node in self.nodes.values_mut() {
                node.last_seen = time;
            }
        }
        self.clock = self.clock.max(time);
        let (clock, timeout) = (self.clock, self.timeout);
        let down: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, node)| {
                let allowed = if node.starting {
                    timeout * STARTING_TIMEOUTS
                } else {
                    timeout
                };
                node.last_seen < clock.saturating_sub(allowed)
            })
            .map(|(&incarnation, _)| incarnation)
            .collect();
        for incarnation in &down {
            if let Some(node) = self.nodes.remove(incarnation) {
                tracing::warn!(incarnation, node = node.name, "cluster node down");
            }
        }
        if !down.is_empty() {
            self.grace_until = Some(self.clock + self.rejoin_grace);
        }
        down
    }

    /// Whether the rejoin grace of dead nodes' users just ended (once).
    pub fn grace_over(&mut self) -> bool {
        match self.grace_until {
            Some(until) if self.clock >= until => {
                self.grace_until = None;
                true
            }
            _ => false,
        }
    }

    pub fn node_up(&mut self, incarnation: u64, name: String) {
        tracing::info!(incarnation, node = name, "cluster node up");
        self.nodes.insert(
            incarnation,
            Node {
                name,
                last_seen: self.clock,
                starting: true,
                next_seq: 1,
                waiting: BTreeMap::new(),
            },
        );
    }

    pub fn is_live(&self, incarnation: u64) -> bool {
        self.nodes.contains_key(&incarnation)
    }

    /// The node of `incarnation` said it stops; whether it was live.
    pub fn leave(&mut self, incarnation: u64) -> bool {
        let Some(node) = self.nodes.remove(&incarnation) else {
            return false;
        };
        tracing::info!(incarnation, node = node.name, "cluster node stopped");
        self.grace_until = Some(self.clock + self.rejoin_grace);
        true
    }

    pub fn heartbeat(&mut self, incarnation: u64) {
        let clock = self.clock;
        if let Some(node) = self.nodes.get_mut(&incarnation) {
            node.last_seen = clock;
            node.starting = false;
        }
    }

    /// Input number `seq` of `incarnation`: appends to `ready` what can be
    /// applied now, in the node's order. Inputs of dead or unknown nodes and
    /// duplicates are dropped.
    pub fn input(&mut self, incarnation: u64, seq: u64, input: Input, ready: &mut Vec<Input>) {
        let clock = self.clock;
        let Some(node) = self.nodes.get_mut(&incarnation) else {
            return;
        };
        node.last_seen = clock;
        node.starting = false;
        if seq < node.next_seq {
            return;
        }
        if seq > node.next_seq {
            if node.waiting.len() < MAX_WAITING
                && let btree_map::Entry::Vacant(slot) = node.waiting.entry(seq)
            {
                slot.insert(input);
            }
            return;
        }
        ready.push(input);
        node.next_seq += 1;
        while let Some(next) = node.waiting.remove(&node.next_seq) {
            ready.push(next);
            node.next_seq += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use natter_core::ConnId;

    use super::*;

    fn connect(n: u64) -> Input {
        Input::Connect(ConnId(n))
    }

    #[test]
    fn a_replica_goes_on_from_its_export() {
        let limits = Limits::server_default();
        let mut r = Replica::new(4_000, 60_000);
        r.advance(1_000);
        r.node_up(3, "a".into());
        r.node_up(9, "b".into());
        r.heartbeat(9);
        let mut ready = Vec::new();
        r.input(3, 2, connect(2), &mut ready);
        let mut copy = Replica::import(4_000, 60_000, r.export(), &limits);
        assert_eq!(copy.export(), r.export());
        assert_eq!(copy.snapshot_writer(), Some(3));
        // The waiting input comes out once the one before it arrives.
        copy.input(3, 1, connect(1), &mut ready);
        assert_eq!(ready, [connect(1), connect(2)]);
        // And the copy's clock goes on: both fall silent, both are down.
        for t in [2_000, 3_000, 4_000] {
            assert!(copy.advance(t).is_empty());
        }
        assert_eq!(copy.advance(5_001), [3, 9]);
    }

    #[test]
    fn an_outage_of_the_log_blames_nobody() {
        let mut r = Replica::new(4_000, 60_000);
        r.advance(1_000);
        r.node_up(1, "a".into());
        r.node_up(2, "b".into());
        r.heartbeat(2);
        // Nothing for ten seconds, then a's heartbeat: b is not down yet...
        assert!(r.advance(11_000).is_empty());
        r.heartbeat(1);
        // ...only once it stays silent for the timeout after the outage.
        for t in [12_000, 13_000, 14_000, 15_000] {
            assert!(r.advance(t).is_empty());
            r.heartbeat(1);
        }
        assert_eq!(r.advance(15_001), [2]);
    }

    #[test]
    fn a_starting_node_is_given_longer_before_it_is_declared_down() {
        let mut r = Replica::new(4_000, 60_000);
        r.advance(1_000);
        r.node_up(1, "a".into());
        r.heartbeat(1);
        // b appended its NodeUp, then nothing: its first heartbeats wait
        // (a stream still settling, a long catch-up).
        r.node_up(2, "b".into());
        let starting = 4_000 * STARTING_TIMEOUTS;
        for t in (2_000..=1_000 + starting).step_by(1_000) {
            assert!(r.advance(t).is_empty(), "b declared down at {t}");
            r.heartbeat(1);
        }
        assert_eq!(r.advance(1_001 + starting), [2]);
        // Once a node has been heard from, the usual timeout holds.
        r.node_up(3, "c".into());
        r.heartbeat(3);
        let up = r.clock();
        for t in (up + 1_000..=up + 4_000).step_by(1_000) {
            assert!(r.advance(t).is_empty());
            r.heartbeat(1);
        }
        assert_eq!(r.advance(up + 4_001), [3]);
        assert!(r.is_live(1));
    }

    #[test]
    fn a_node_that_leaves_is_down_at_once() {
        let mut r = Replica::new(4_000, 60_000);
        r.advance(1_000);
        r.node_up(1, "a".into());
        assert!(r.leave(1));
        assert!(!r.is_live(1) && !r.leave(1));
        r.advance(61_000);
        assert!(r.grace_over());
    }

    #[test]
    fn inputs_apply_once_in_the_nodes_order() {
        let mut r = Replica::new(5_000, 60_000);
        r.advance(1_000);
        r.node_up(7, "a".into());
        let mut ready = Vec::new();
        r.input(7, 2, connect(2), &mut ready);
        assert!(ready.is_empty(), "2 waits for 1");
        r.input(7, 1, connect(1), &mut ready);
        r.input(7, 1, connect(1), &mut ready);
        r.input(7, 2, connect(2), &mut ready);
        assert_eq!(ready, [connect(1), connect(2)]);
        r.input(8, 1, connect(3), &mut ready);
        assert_eq!(ready.len(), 2, "an unknown node's input is dropped");
    }

    #[test]
    fn a_silent_node_is_down_by_the_logs_clock_and_its_grace_ends() {
        let mut r = Replica::new(5_000, 60_000);
        r.advance(1_000);
        r.node_up(1, "a".into());
        r.node_up(2, "b".into());
        r.heartbeat(2);
        for t in (2_000..=6_000).step_by(1_000) {
            assert!(r.advance(t).is_empty());
            r.heartbeat(1);
        }
        assert_eq!(r.advance(6_001), [2]);
        assert!(r.is_live(1) && !r.is_live(2));
        let mut ready = Vec::new();
        r.input(2, 1, connect(1), &mut ready);
        assert!(ready.is_empty(), "a dead node's late input is dropped");
        // The clock only moves forward, even if an entry's time steps back.
        r.advance(3_000);
        assert_eq!(r.clock(), 6_001);
        for t in (10_000..=66_000).step_by(4_000) {
            assert!(r.advance(t).is_empty());
            r.heartbeat(1);
            assert!(!r.grace_over());
        }
        r.advance(66_001);
        assert!(r.grace_over());
        assert!(!r.grace_over());
    }
}
