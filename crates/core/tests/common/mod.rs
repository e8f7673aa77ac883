//! A small driver for the chat state: numbered connections, and outputs
//! turned into `(recipients, message)` pairs that are easy to assert on.
#![allow(dead_code)]

use std::sync::Arc;

use natter_core::{Chat, Config, ConnId, Fact, Output, Outputs, Policy, Recipients};
use natter_proto::{Command, ServerMessage};

pub struct Harness {
    pub chat: Chat,
    next_conn: u64,
}

/// One `Output::Send`, flattened.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    To(Vec<ConnId>, ServerMessage),
    Close(ConnId),
    Fact(Fact),
    FetchHistory {
        conn: ConnId,
        conv: u64,
        before_seq: u64,
        limit: usize,
    },
}

impl Harness {
    pub fn new() -> Self {
        Harness::with_policy(Policy::Open)
    }

    pub fn with_policy(policy: Policy) -> Self {
        Harness {
            chat: Chat::new(Config::with_policy(policy)),
            next_conn: 1,
        }
    }

    /// A chat state that keeps history (as with a store): facts, seqs and
    /// the `history` capability.
    pub fn durable() -> Self {
        Harness::over(Chat::new(Config {
            durable: true,
            ..Config::default()
        }))
    }

    /// Drives an existing chat state (e.g. one restored from a snapshot).
    pub fn over(chat: Chat) -> Self {
        Harness { chat, next_conn: 1 }
    }

    pub fn connect(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.chat.connect(conn);
        conn
    }

    /// A registered user without capabilities; its outputs discarded and
    /// presence flushed, so the next outputs are about what the test does.
    pub fn user(&mut self, name: &str) -> ConnId {
        self.user_with_caps(name, &[])
    }

    pub fn user_with_caps(&mut self, name: &str, caps: &[&str]) -> ConnId {
        let conn = self.connect();
        if !caps.is_empty() {
            self.send(conn, caps_cmd(caps));
        }
        let mut replies = self.send(conn, register(name));
        // What REGISTER tells a `history` client about its conversations.
        replies.retain(|r| !matches!(r, Sent::To(_, ServerMessage::Unread(_))));
        assert!(replies.is_empty(), "REGISTER {name}: {replies:?}");
        self.flush();
        conn
    }

    pub fn send(&mut self, conn: ConnId, cmd: Command) -> Vec<Sent> {
        let mut out = Outputs::new();
        self.chat.handle(conn, cmd, &mut out);
        self.checked(out)
    }

    pub fn disconnect(&mut self, conn: ConnId) -> Vec<Sent> {
        let mut out = Outputs::new();
        self.chat.disconnect(conn, &mut out);
        self.checked(out)
    }

    pub fn flush(&mut self) -> Vec<Sent> {
        let mut out = Outputs::new();
        self.chat.flush_presence(&mut out);
        assert!(!self.chat.presence_pending(), "pending right after a flush");
        self.checked(out)
    }

    pub fn snapshot(&mut self) -> Vec<Sent> {
        let mut out = Outputs::new();
        self.chat.presence_snapshot(&mut out);
        self.checked(out)
    }

    /// Invites `others` and has everyone (inviter included) join.
    pub fn conversation(&mut self, inviter: ConnId, others: &[(&str, ConnId)]) -> u64 {
        let names = others.iter().map(|(n, _)| n.to_string()).collect();
        let id = invitation_id(&self.send(inviter, Command::Invite(names)));
        self.send(inviter, Command::Join(id));
        for (_, conn) in others {
            self.send(*conn, Command::Join(id));
        }
        id
    }

    fn checked(&self, out: Outputs) -> Vec<Sent> {
        self.chat.check_invariants().expect("invariants hold");
        flatten(out)
    }
}

pub fn flatten(out: Outputs) -> Vec<Sent> {
    out.into_iter()
        .map(|o| match o {
            Output::Send { to, message } => {
                let to = match to {
                    Recipients::One(c) => vec![c],
                    Recipients::Many(cs) => cs,
                };
                Sent::To(to, Arc::unwrap_or_clone(message))
            }
            Output::Close(c) => Sent::Close(c),
            Output::Fact(fact) => Sent::Fact(fact),
            Output::FetchHistory {
                conn,
                conv,
                before_seq,
                limit,
            } => Sent::FetchHistory {
                conn,
                conv,
                before_seq,
                limit,
            },
        })
        .collect()
}

pub fn register(name: &str) -> Command {
    Command::Register {
        name: name.into(),
        status: "here".into(),
    }
}

pub fn caps_cmd(caps: &[&str]) -> Command {
    Command::Caps(caps.iter().map(|c| c.to_string()).collect())
}

pub fn invite(names: &[&str]) -> Command {
    Command::Invite(names.iter().map(|c| c.to_string()).collect())
}

pub fn say(conv: u64, text: &str) -> Command {
    Command::SendMessage {
        conv,
        text: text.into(),
        nonce: None,
    }
}

pub fn error_to(conn: ConnId, text: &str) -> Sent {
    Sent::To(vec![conn], ServerMessage::Error(text.into()))
}

pub fn one(conn: ConnId, message: ServerMessage) -> Sent {
    Sent::To(vec![conn], message)
}

pub fn many(conns: &[ConnId], message: ServerMessage) -> Sent {
    Sent::To(conns.to_vec(), message)
}

pub fn online(users: &[(&str, &str)]) -> ServerMessage {
    ServerMessage::OnlineUsers(
        users
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect(),
    )
}

pub fn members(conv: u64, names: &[&str]) -> ServerMessage {
    ServerMessage::Members {
        conv,
        members: names.iter().map(|n| n.to_string()).collect(),
    }
}

pub fn invitation_id(sent: &[Sent]) -> u64 {
    sent.iter()
        .find_map(|s| match s {
            Sent::To(_, ServerMessage::Invitation { conv, .. }) => Some(*conv),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no INVITATION in {sent:?}"))
}
