//! Random command sequences from a handful of users, checking after every
//! step what must always hold: the state's own invariants
//! ([`Chat::check_invariants`]) and what clients see ([`Audit`]): every
//! MESSAGE reaches exactly the members at that moment, each member sees a
//! conversation's messages in sending order, and after a flush every
//! client's picture of who is online equals the server's (for
//! `presence-scope` clients, the part of it in their scope).

use natter_core::audit::Audit;
use natter_core::{Chat, Config, ConnId, Outputs, Policy};
use natter_proto::Command;
use proptest::prelude::*;

const SLOTS: usize = 5;
const NAMES: &[&str] = &["alice", "bob", "carol", "dave", "eve", "Alice", "BOB"];
const STATUSES: &[&str] = &["here", "away", "busy"];
const MAX_CONV: u64 = 8;
/// The first names are accounts (devices, offline membership); guests may
/// not take them, in any capitalisation.
const ACCOUNTS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    /// Slot, presence mode (0 classic, 1 delta, 2 scope), members.
    Caps(usize, u8, bool),
    Watch(usize, Vec<usize>),
    Unwatch(usize, Vec<usize>),
    /// Slot, prefix length taken from a name, limit.
    ListUsers(usize, usize, usize, usize),
    Register(usize, usize, usize),
    /// A REGISTER whose secret the shell verified: a device of an account.
    Login(usize, usize, usize),
    Status(usize, usize),
    Invite(usize, Vec<usize>),
    Join(usize, u64),
    Leave(usize, u64),
    Send(usize, u64),
    List(usize),
    Goodbye(usize),
    Disconnect(usize),
    Flush,
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let conv = 1..=MAX_CONV;
    prop_oneof![
        1 => slot.clone().prop_map(Op::Connect),
        2 => (slot.clone(), 0..3u8, any::<bool>()).prop_map(|(s, d, m)| Op::Caps(s, d, m)),
        2 => (slot.clone(), proptest::collection::vec(0..NAMES.len(), 1..3))
            .prop_map(|(s, n)| Op::Watch(s, n)),
        1 => (slot.clone(), proptest::collection::vec(0..NAMES.len(), 1..3))
            .prop_map(|(s, n)| Op::Unwatch(s, n)),
        1 => (slot.clone(), 0..NAMES.len(), 1..4usize, 1..4usize)
            .prop_map(|(s, n, len, limit)| Op::ListUsers(s, n, len, limit)),
        3 => (slot.clone(), 0..NAMES.len(), 0..STATUSES.len())
            .prop_map(|(s, n, st)| Op::Register(s, n, st)),
        2 => (slot.clone(), 0..ACCOUNTS, 0..STATUSES.len())
            .prop_map(|(s, n, st)| Op::Login(s, n, st)),
        2 => (slot.clone(), 0..STATUSES.len()).prop_map(|(s, st)| Op::Status(s, st)),
        3 => (slot.clone(), proptest::collection::vec(0..NAMES.len(), 0..4))
            .prop_map(|(s, n)| Op::Invite(s, n)),
        4 => (slot.clone(), conv.clone()).prop_map(|(s, c)| Op::Join(s, c)),
        2 => (slot.clone(), conv.clone()).prop_map(|(s, c)| Op::Leave(s, c)),
        5 => (slot.clone(), conv).prop_map(|(s, c)| Op::Send(s, c)),
        1 => slot.clone().prop_map(Op::List),
        1 => slot.clone().prop_map(Op::Goodbye),
        1 => slot.prop_map(Op::Disconnect),
        3 => Just(Op::Flush),
        1 => Just(Op::Snapshot),
    ]
}

/// Drives a chat with up to [`SLOTS`] connections at a time. A slot whose
/// connection went away keeps its old id (so later input from it exercises
/// "ignored") until `Connect` gives it a fresh one.
struct Run {
    chat: Chat,
    audit: Audit,
    slots: [ConnId; SLOTS],
    next_conn: u64,
    step: usize,
}

impl Run {
    fn new(policy: Policy) -> Self {
        // A tiny WATCH bound, so that random runs reach it.
        let config = Config {
            max_watched: 3,
            ..Config::with_policy(policy)
        };
        let mut chat = Chat::new(config);
        for name in &NAMES[..ACCOUNTS] {
            chat.add_account(natter_core::user_key(name));
        }
        let slots = std::array::from_fn(|i| ConnId(i as u64 + 1));
        for conn in slots {
            chat.connect(conn);
        }
        Run {
            chat,
            audit: Audit::new().expect_ordered_texts(),
            slots,
            next_conn: SLOTS as u64 + 1,
            step: 0,
        }
    }

    fn apply(&mut self, op: Op) -> Result<(), String> {
        self.step += 1;
        let mut out = Outputs::new();
        let flushed = matches!(op, Op::Flush);
        match op {
            Op::Connect(s) => {
                if !self.chat.is_connected(self.slots[s]) {
                    self.slots[s] = ConnId(self.next_conn);
                    self.next_conn += 1;
                    self.chat.connect(self.slots[s]);
                }
            }
            Op::Disconnect(s) => self.chat.disconnect(self.slots[s], &mut out),
            Op::Login(s, n, st) => {
                let (name, status) = (NAMES[n].to_string(), STATUSES[st].to_string());
                self.chat.login(self.slots[s], name, status, &mut out);
            }
            Op::Flush => self.chat.flush_presence(&mut out),
            Op::Snapshot => self.chat.presence_snapshot(&mut out),
            op => {
                let (slot, cmd) = self.command(op);
                self.chat.handle(self.slots[slot], cmd, &mut out);
            }
        }
        self.chat.check_invariants()?;
        self.audit.observe(&self.chat, &out)?;
        if flushed {
            if self.chat.presence_pending() {
                return Err("presence still pending right after a flush".into());
            }
            self.audit.check_presence_views(&self.chat)?;
        }
        Ok(())
    }

    fn command(&self, op: Op) -> (usize, Command) {
        match op {
            Op::Caps(s, presence, members) => {
                let mut caps = vec!["unknown".to_string()];
                match presence {
                    1 => caps.push("presence-delta".into()),
                    2 => caps.push("presence-scope".into()),
                    _ => {}
                }
                if members {
                    caps.push("members".into());
                }
                (s, Command::Caps(caps))
            }
            Op::Register(s, n, st) => (
                s,
                Command::Register {
                    name: NAMES[n].into(),
                    status: STATUSES[st].into(),
                },
            ),
            Op::Status(s, st) => (s, Command::Status(STATUSES[st].into())),
            Op::Invite(s, names) => (
                s,
                Command::Invite(names.iter().map(|&n| NAMES[n].to_string()).collect()),
            ),
            Op::Join(s, c) => (s, Command::Join(c)),
            Op::Leave(s, c) => (s, Command::Leave(c)),
            // Zero-padded step numbers sort in sending order.
            Op::Send(s, c) => (
                s,
                Command::SendMessage {
                    conv: c,
                    text: format!("{:06}", self.step),
                    nonce: None,
                },
            ),
            Op::List(s) => (s, Command::ListConversations),
            Op::Watch(s, names) => (s, Command::Watch(names_of(&names))),
            Op::Unwatch(s, names) => (s, Command::Unwatch(names_of(&names))),
            Op::ListUsers(s, n, len, limit) => {
                let prefix = NAMES[n].chars().take(len).collect();
                (s, Command::ListUsers { prefix, limit })
            }
            Op::Goodbye(s) => (s, Command::Goodbye),
            Op::Connect(_) | Op::Disconnect(_) | Op::Login(..) | Op::Flush | Op::Snapshot => {
                unreachable!("not a command")
            }
        }
    }
}

fn names_of(indexes: &[usize]) -> Vec<String> {
    indexes.iter().map(|&n| NAMES[n].to_string()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_sessions_keep_every_invariant(
        invite_only in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let policy = if invite_only { Policy::InviteOnly } else { Policy::Open };
        let mut run = Run::new(policy);
        for (i, op) in ops.into_iter().enumerate() {
            let shown = format!("{op:?}");
            if let Err(why) = run.apply(op) {
                return Err(TestCaseError::fail(format!("step {i} {shown}: {why}")));
            }
        }
        // Closing the window at the end must leave every view correct.
        run.apply(Op::Flush).map_err(TestCaseError::fail)?;
    }
}
