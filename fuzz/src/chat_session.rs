//! What the chat fuzz target checks: random command sequences from several
//! users, interpreted from the fuzzer's bytes.
//!
//! After every input: the state's own invariants
//! ([`Chat::check_invariants`]: every member online, no conversation without
//! members and without online invitees, ...) and what clients see
//! ([`Audit`]: every MESSAGE to exactly the members at that moment, each
//! member sees a conversation's messages in sending order, so all members
//! see the same order). After a flush: every client's picture of presence
//! is the server's. At the end, when everyone has gone, the state is empty
//! (nothing leaks, so memory is bounded by who is online).
//!
//! Also compiled into `crates/core/tests/fuzz_corpus.rs`.

use natter_core::audit::Audit;
use natter_core::{Chat, Config, ConnId, Outputs, Policy};
use natter_proto::{Command, ConvId};

/// Connections alive at once.
const SLOTS: usize = 6;
/// Case variants and non-ASCII letters exercise case-insensitive names.
const NAMES: [&str; 8] = [
    "alice", "bob", "carol", "Alice", "BOB", "émile", "ÉMILE", "dave",
];
const STATUSES: [&str; 3] = ["here", "away", "busy"];
/// Inputs beyond this many are ignored (each one is checked in full).
const MAX_STEPS: usize = 2000;

/// Input layout: byte 0 bit 0 picks the invite-only policy; then one input
/// per opcode byte, taking its arguments from the bytes that follow.
pub fn check_session(data: &[u8]) {
    let Some((&flags, ops)) = data.split_first() else {
        return;
    };
    let policy = if flags & 1 == 0 {
        Policy::Open
    } else {
        Policy::InviteOnly
    };
    let mut session = Session::new(policy);
    let mut input = ops.iter().copied();
    while let Some(op) = input.next() {
        if session.step >= MAX_STEPS {
            break;
        }
        let mut arg = || input.next().unwrap_or(0);
        if let Err(why) = session.apply(op, &mut arg) {
            panic!("step {}: {why}", session.step);
        }
    }
    session.finish();
}

struct Session {
    chat: Chat,
    audit: Audit,
    slots: [ConnId; SLOTS],
    next_conn: u64,
    step: usize,
}

impl Session {
    fn new(policy: Policy) -> Self {
        let mut chat = Chat::new(Config::with_policy(policy));
        let slots = std::array::from_fn(|i| ConnId(i as u64 + 1));
        for conn in slots {
            chat.connect(conn);
        }
        Session {
            chat,
            audit: Audit::new().expect_ordered_texts(),
            slots,
            next_conn: SLOTS as u64 + 1,
            step: 0,
        }
    }

    fn apply(&mut self, op: u8, arg: &mut impl FnMut() -> u8) -> Result<(), String> {
        self.step += 1;
        let mut out = Outputs::new();
        let slot = usize::from(arg()) % SLOTS;
        let conn = self.slots[slot];
        let mut flushed = false;
        match op % 14 {
            0 => self.reconnect(slot),
            1 => self.chat.disconnect(conn, &mut out),
            2 => {
                self.chat.flush_presence(&mut out);
                flushed = true;
            }
            3 => self.chat.presence_snapshot(&mut out),
            code => {
                let command = self.command(code, arg);
                self.chat.handle(conn, command, &mut out);
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

    /// A slot whose connection is gone gets a fresh id; a live one is left
    /// alone (its old id keeps sending, to exercise "ignored").
    fn reconnect(&mut self, slot: usize) {
        if !self.chat.is_connected(self.slots[slot]) {
            self.slots[slot] = ConnId(self.next_conn);
            self.next_conn += 1;
            self.chat.connect(self.slots[slot]);
        }
    }

    fn command(&self, code: u8, arg: &mut impl FnMut() -> u8) -> Command {
        match code {
            4 => {
                let bits = arg();
                let mut caps = vec!["unknown".to_owned()];
                if bits & 1 != 0 {
                    caps.push("presence-delta".into());
                }
                if bits & 2 != 0 {
                    caps.push("members".into());
                }
                if bits & 4 != 0 {
                    caps.push("presence-scope".into());
                }
                Command::Caps(caps)
            }
            5 => Command::Register {
                name: NAMES[usize::from(arg()) % NAMES.len()].into(),
                status: STATUSES[usize::from(arg()) % STATUSES.len()].into(),
            },
            6 => Command::Status(STATUSES[usize::from(arg()) % STATUSES.len()].into()),
            7 => {
                let mask = arg();
                let names = (0..NAMES.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| NAMES[i].to_owned())
                    .collect();
                Command::Invite(names)
            }
            8 | 9 => Command::Join(self.conv(arg())),
            10 => Command::Leave(self.conv(arg())),
            11 | 12 => Command::SendMessage {
                conv: self.conv(arg()),
                // Zero-padded step numbers sort in sending order.
                text: format!("{:08}", self.step),
                nonce: None,
            },
            13 => {
                let pick = arg();
                let name = vec![NAMES[usize::from(arg()) % NAMES.len()].to_owned()];
                match pick % 5 {
                    0 => Command::ListConversations,
                    1 => Command::Goodbye,
                    2 => Command::Watch(name),
                    3 => Command::Unwatch(name),
                    _ => Command::ListUsers {
                        prefix: String::new(),
                        limit: 2,
                    },
                }
            }
            _ => unreachable!("codes 0-3 are not commands"),
        }
    }

    /// Mostly a live conversation; sometimes an id that does not exist.
    fn conv(&self, pick: u8) -> ConvId {
        let ids = self.chat.conversation_ids();
        match pick {
            0..=0xef if !ids.is_empty() => ids[usize::from(pick) % ids.len()],
            0xff => ConvId::MAX,
            _ => ConvId::from(pick & 0x0f),
        }
    }

    /// Closes the window, then everyone leaves: nothing may remain.
    fn finish(mut self) {
        let mut out = Outputs::new();
        self.chat.flush_presence(&mut out);
        self.audit
            .observe(&self.chat, &out)
            .and_then(|()| self.audit.check_presence_views(&self.chat))
            .unwrap_or_else(|why| panic!("final flush: {why}"));
        for conn in self.slots {
            out.clear();
            self.chat.disconnect(conn, &mut out);
            self.chat
                .check_invariants()
                .unwrap_or_else(|why| panic!("{why}"));
            self.audit
                .observe(&self.chat, &out)
                .unwrap_or_else(|why| panic!("disconnect: {why}"));
        }
        assert_eq!(self.chat.connection_count(), 0, "connections left");
        assert_eq!(self.chat.user_count(), 0, "users left");
        assert_eq!(self.chat.conversation_count(), 0, "conversations left");
    }
}
