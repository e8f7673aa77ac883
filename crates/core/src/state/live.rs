//! The whole chat state of a running server as plain data, to seed a copy
//! of it elsewhere: a cluster node that catches up from a snapshot of the
//! log instead of replaying all of it.
//!
//! [`Snapshot`](crate::Snapshot) is what survives a restart: conversations
//! whose members are all offline. A copy in a cluster continues *mid-run*:
//! who is connected (through other nodes), as which user, with which
//! devices and capabilities, who is away, invitations, read markers, recent
//! nonces and the log's time. [`Chat::export_live`] writes that down;
//! [`Chat::import_live`] builds a state that decides every later input as
//! the exporter would.
//!
//! Left out on purpose: what only shapes deliveries to the exported
//! connections (the presence baseline, the users a scoped device watches
//! and was last shown). A copy delivers only to its own clients, and the
//! copy that imports has none of the exported connections: they belong to
//! the nodes that exported them.

use std::collections::HashMap;
use std::sync::Arc;

use natter_proto::ConvId;
use serde::{Deserialize, Serialize};

use super::{Chat, Config, ConnId};
use crate::bans::Ban;
use crate::caps::Caps;
use crate::conversations::{Conversation, Member};
use crate::facts::{StoredMessage, UnixMs};
use crate::users::{Away, Connection, Device, User};

/// Everything [`Chat::import_live`] needs; sorted, so that two copies with
/// the same state export the same data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LiveState {
    pub now: UnixMs,
    /// Above every conversation id ever handed out.
    pub next_conv_id: ConvId,
    pub conversations: Vec<LiveConversation>,
    pub connections: Vec<LiveConnection>,
    pub users: Vec<LiveUser>,
    pub away: Vec<LiveAway>,
    /// Keys of every account.
    pub accounts: Vec<String>,
    /// User bans that still hold.
    pub bans: Vec<Ban>,
    pub messages_accepted: u64,
}

/// A live conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LiveConversation {
    pub id: ConvId,
    pub members: Vec<LiveMember>,
    pub pending: Vec<String>,
    pub allowed: Vec<String>,
    pub last_seq: u64,
    pub topic: Option<(String, String)>,
    /// Messages whose nonce is remembered, oldest first.
    pub nonces: Vec<StoredMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveMember {
    pub key: String,
    pub display: String,
    pub read_seq: u64,
}

/// A connection, registered or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LiveConnection {
    Unregistered { conn: ConnId, caps: Caps },
    Registered { conn: ConnId, key: String },
}

/// An online user and its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveUser {
    pub key: String,
    pub display: String,
    pub status: String,
    pub account: bool,
    pub devices: Vec<(ConnId, Caps)>,
    pub member_of: Vec<ConvId>,
    pub pending_in: Vec<ConvId>,
}

/// An offline user still part of conversations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveAway {
    pub key: String,
    pub member_of: Vec<ConvId>,
    pub pending_in: Vec<ConvId>,
}

impl Chat {
    /// The whole state as plain data (see the module's comment for what
    /// is left out).
    pub fn export_live(&self) -> LiveState {
        let mut connections: Vec<LiveConnection> = self
            .connections
            .iter()
            .map(|(&conn, c)| match c {
                Connection::Unregistered { caps } => {
                    LiveConnection::Unregistered { conn, caps: *caps }
                }
                Connection::Registered { key } => LiveConnection::Registered {
                    conn,
                    key: key.clone(),
                },
            })
            .collect();
        connections.sort_by_key(|c| match c {
            LiveConnection::Unregistered { conn, .. } | LiveConnection::Registered { conn, .. } => {
                *conn
            }
        });
        let mut away: Vec<LiveAway> = self
            .away
            .iter()
            .map(|(key, away)| LiveAway {
                key: key.clone(),
                member_of: away.member_of.clone(),
                pending_in: away.pending_in.clone(),
            })
            .collect();
        away.sort_by(|a, b| a.key.cmp(&b.key));
        let mut accounts: Vec<String> = self.accounts.iter().cloned().collect();
        accounts.sort();
        LiveState {
            now: self.now,
            next_conv_id: self.conversations.next_id(),
            conversations: self.conversations.iter().map(export_conv).collect(),
            connections,
            users: self.users.iter().map(export_user).collect(),
            away,
            accounts,
            bans: self.bans.list(self.now),
            messages_accepted: self.messages_accepted,
        }
    }

    /// A chat state with `config` that continues from `live`.
    pub fn import_live(config: Config, live: LiveState) -> Chat {
        let mut chat = Chat::new(config);
        chat.now = live.now;
        chat.messages_accepted = live.messages_accepted;
        chat.conversations.reserve_below(live.next_conv_id);
        for saved in live.conversations {
            let id = saved.id;
            let mut conversation = Conversation {
                members: saved
                    .members
                    .into_iter()
                    .map(|m| {
                        let member = Member {
                            display: m.display,
                            read_seq: m.read_seq,
                        };
                        (m.key, member)
                    })
                    .collect(),
                pending: saved.pending.into_iter().collect(),
                allowed: saved.allowed.into_iter().collect(),
                last_seq: saved.last_seq,
                topic: saved.topic,
                ..Conversation::default()
            };
            for message in saved.nonces {
                let now = message.ts;
                conversation.nonces.remember(Arc::new(message), now);
            }
            chat.conversations.restore(id, conversation);
        }
        chat.connections = live
            .connections
            .into_iter()
            .map(|c| match c {
                LiveConnection::Unregistered { conn, caps } => {
                    (conn, Connection::Unregistered { caps })
                }
                LiveConnection::Registered { conn, key } => (conn, Connection::Registered { key }),
            })
            .collect::<HashMap<_, _>>();
        for user in live.users {
            for &(conn, caps) in &user.devices {
                if caps.presence_scope {
                    chat.presence.scopes_add_device(conn, &user.key);
                }
            }
            let imported = User {
                display: user.display,
                status: user.status,
                devices: user
                    .devices
                    .into_iter()
                    .map(|(conn, caps)| Device { conn, caps })
                    .collect(),
                account: user.account,
                member_of: user.member_of.into_iter().collect(),
                pending_in: user.pending_in.into_iter().collect(),
            };
            chat.users.insert(user.key, imported);
        }
        chat.away = live
            .away
            .into_iter()
            .map(|a| {
                let away = Away {
                    member_of: a.member_of,
                    pending_in: a.pending_in,
                };
                (a.key, away)
            })
            .collect();
        chat.accounts = live.accounts.into_iter().collect();
        for ban in live.bans {
            chat.bans.insert(ban);
        }
        chat
    }
}

fn export_conv((id, conversation): (ConvId, &Conversation)) -> LiveConversation {
    LiveConversation {
        id,
        members: conversation
            .members
            .iter()
            .map(|(key, member)| LiveMember {
                key: key.clone(),
                display: member.display.clone(),
                read_seq: member.read_seq,
            })
            .collect(),
        pending: conversation.pending.iter().cloned().collect(),
        allowed: conversation.allowed.iter().cloned().collect(),
        last_seq: conversation.last_seq,
        topic: conversation.topic.clone(),
        nonces: conversation
            .nonces
            .messages()
            .map(|m| StoredMessage::clone(m))
            .collect(),
    }
}

fn export_user((key, user): (&String, &User)) -> LiveUser {
    LiveUser {
        key: key.clone(),
        display: user.display.clone(),
        status: user.status.clone(),
        account: user.account,
        devices: user.devices.iter().map(|d| (d.conn, d.caps)).collect(),
        member_of: user.member_of.iter().copied().collect(),
        pending_in: user.pending_in.iter().copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use natter_proto::Command;

    use super::*;
    use crate::Output;

    fn register(chat: &mut Chat, conn: u64, name: &str, caps: &[&str]) {
        let mut out = Vec::new();
        chat.connect(ConnId(conn));
        if !caps.is_empty() {
            let caps = caps.iter().map(|c| c.to_string()).collect();
            chat.handle(ConnId(conn), Command::Caps(caps), &mut out);
        }
        let register = Command::Register {
            name: name.into(),
            status: "here".into(),
        };
        chat.handle(ConnId(conn), register, &mut out);
    }

    fn durable() -> Config {
        Config {
            durable: true,
            ..Config::default()
        }
    }

    /// Everything `conn` is sent from now on, as text.
    fn sent_to(out: &[Output], conn: u64) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to, message } if to.as_slice().contains(&ConnId(conn)) => {
                    Some(format!("{message:?}"))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_imported_copy_decides_as_the_original() {
        let mut chat = Chat::new(durable());
        chat.set_time(1_000);
        register(&mut chat, 1, "Alice", &["history", "presence-scope"]);
        register(&mut chat, 2, "bob", &[]);
        register(&mut chat, 3, "carol", &["members"]);
        chat.connect(ConnId(4));
        let mut out = Vec::new();
        let invite = Command::Invite(vec!["bob".into(), "carol".into()]);
        chat.handle(ConnId(1), invite, &mut out);
        chat.handle(ConnId(2), Command::Join(1), &mut out);
        let send = Command::SendMessage {
            conv: 1,
            text: "hi".into(),
            nonce: Some("n1".into()),
        };
        chat.handle(ConnId(1), send.clone(), &mut out);
        chat.check_invariants().expect("original is sound");

        let live = chat.export_live();
        let mut copy = Chat::import_live(durable(), live.clone());
        copy.check_invariants().expect("copy is sound");
        assert_eq!(copy.export_live(), live, "export of the copy is the same");

        // The same inputs from here on: the same outputs, to everyone.
        let then = [
            (3, Command::Join(1)),
            (1, send),
            (
                2,
                Command::SendMessage {
                    conv: 1,
                    text: "yo".into(),
                    nonce: None,
                },
            ),
            (
                4,
                Command::Register {
                    name: "alice".into(),
                    status: "x".into(),
                },
            ),
            (1, Command::Invite(vec!["bob".into()])),
        ];
        for (conn, command) in then {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            chat.handle(ConnId(conn), command.clone(), &mut a);
            copy.handle(ConnId(conn), command, &mut b);
            for who in 1..=4 {
                assert_eq!(sent_to(&a, who), sent_to(&b, who), "to {who}");
            }
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        chat.disconnect(ConnId(2), &mut a);
        copy.disconnect(ConnId(2), &mut b);
        assert_eq!(a.len(), b.len());
        assert_eq!(chat.export_live(), copy.export_live());
    }
}
