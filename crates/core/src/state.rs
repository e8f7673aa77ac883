//! The chat state machine's public face: connections in, outputs out.
//!
//! [`Chat`] owns every user, connection and conversation. Each input
//! (connect, a command, a disconnect, a timer) is applied completely before
//! the next, and its effects are appended to an [`Outputs`] buffer the
//! caller reuses, so the order of outputs is the order in which the server
//! accepted things: every member sees a conversation's messages in the same
//! order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use natter_proto::{Command, ConvId, Limits, ServerMessage};

use crate::caps::Caps;
use crate::conversations::Conversations;
use crate::error::ChatError;
use crate::policy::Policy;
use crate::presence::Presence;
use crate::users::{Connection, User, user_key};

mod invariants;

/// A connection, as the server shell numbers them. Never reused while the
/// server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Settings of the chat state.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub policy: Policy,
    /// Validation limits (name, status and message lengths). Commands are
    /// validated against them before they reach [`Chat::handle`].
    pub limits: Limits,
}

impl Config {
    /// The defaults with another conversation policy.
    pub fn with_policy(policy: Policy) -> Self {
        Config {
            policy,
            ..Config::default()
        }
    }
}

/// Who gets a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    One(ConnId),
    /// Several connections; one allocation per message, shared by all.
    Many(Vec<ConnId>),
}

impl Recipients {
    /// The connections, whichever the variant.
    pub fn as_slice(&self) -> &[ConnId] {
        match self {
            Recipients::One(conn) => std::slice::from_ref(conn),
            Recipients::Many(conns) => conns,
        }
    }
}

/// One effect of an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `message` to `to`. The message is behind an `Arc` so that the
    /// shell can encode it once per encoding and share the bytes.
    Send {
        to: Recipients,
        message: Arc<ServerMessage>,
    },
    /// Close this connection after what was queued for it is written
    /// (GOODBYE).
    Close(ConnId),
}

/// The outputs of one or more inputs, in order. Reused between calls to
/// avoid allocating.
pub type Outputs = Vec<Output>;

/// The whole chat state.
pub struct Chat {
    config: Config,
    connections: HashMap<ConnId, Connection>,
    /// Online users by key, so that snapshots come out sorted.
    users: BTreeMap<String, User>,
    conversations: Conversations,
    presence: Presence,
}

impl Chat {
    pub fn new(config: Config) -> Self {
        Chat {
            config,
            connections: HashMap::new(),
            users: BTreeMap::new(),
            conversations: Conversations::default(),
            presence: Presence::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new connection arrived (not yet registered). A second call for a
    /// live connection changes nothing.
    pub fn connect(&mut self, conn: ConnId) {
        self.connections
            .entry(conn)
            .or_insert(Connection::Unregistered {
                caps: Caps::default(),
            });
    }

    /// `conn` sent `cmd`. Input from a connection that is not connected
    /// (never was, or already gone) is ignored.
    pub fn handle(&mut self, conn: ConnId, cmd: Command, out: &mut Outputs) {
        let key = match self.connections.get(&conn) {
            None => return,
            Some(Connection::Unregistered { .. }) => {
                return self.handle_unregistered(conn, cmd, out);
            }
            Some(Connection::Registered { key }) => key,
        };
        // The hot, read-only commands borrow the key; the rest own a copy.
        match cmd {
            Command::SendMessage { conv, text } => self.send_message(conn, key, conv, text, out),
            Command::ListConversations => self.list_conversations(conn, key, out),
            cmd => {
                let key = key.clone();
                self.handle_registered(conn, key, cmd, out);
            }
        }
    }

    /// `conn` is gone (closed, reset, cut off as a slow consumer, or after
    /// GOODBYE): it leaves every conversation, its presence departure is
    /// recorded.
    pub fn disconnect(&mut self, conn: ConnId, out: &mut Outputs) {
        let Some(Connection::Registered { key }) = self.connections.remove(&conn) else {
            return;
        };
        self.presence.note_change(&key, self.users.get(&key));
        self.presence.note_departed(conn);
        let Some(user) = self.users.remove(&key) else {
            return;
        };
        for id in user.member_of {
            self.remove_member(id, &key, None, out);
        }
        for id in user.pending_in {
            if let Some(conversation) = self.conversations.get_mut(id) {
                conversation.pending.remove(&key);
            }
            self.conversations.remove_if_abandoned(id);
        }
    }

    /// Whether presence changes are waiting for [`Chat::flush_presence`].
    pub fn presence_pending(&self) -> bool {
        self.presence.pending(&self.users)
    }

    /// Ends a coalescing window: sends one `ONLINE_USERS` (classic clients,
    /// and the first one for newly registered delta clients) or `PRESENCE`
    /// (delta clients) carrying the state after every change in the window.
    pub fn flush_presence(&mut self, out: &mut Outputs) {
        self.presence.flush(&self.users, out);
    }

    /// The periodic full `ONLINE_USERS` to every registered client without
    /// `presence-delta`.
    pub fn presence_snapshot(&mut self, out: &mut Outputs) {
        self.presence.periodic(&self.users, out);
    }

    /// The full `ONLINE_USERS` of the current state (cached until presence
    /// changes).
    pub fn online_users(&mut self) -> Arc<ServerMessage> {
        self.presence.online_users(&self.users)
    }

    fn handle_unregistered(&mut self, conn: ConnId, cmd: Command, out: &mut Outputs) {
        match cmd {
            Command::Caps(asked) => self.caps(conn, &asked, out),
            Command::Register { name, status } => self.register(conn, name, status, out),
            _ => error(out, conn, ChatError::NotRegistered),
        }
    }

    fn handle_registered(&mut self, conn: ConnId, key: String, cmd: Command, out: &mut Outputs) {
        match cmd {
            Command::Caps(_) => error(out, conn, ChatError::CapsAfterRegister),
            Command::Register { .. } => {
                let display = self.users[&key].display.clone();
                error(out, conn, ChatError::AlreadyRegistered(display));
            }
            Command::Status(status) => self.set_status(&key, status),
            Command::Goodbye => {
                self.disconnect(conn, out);
                out.push(Output::Close(conn));
            }
            Command::Invite(names) => self.invite(conn, key, names, out),
            Command::Join(id) => self.join(conn, key, id, out),
            Command::Leave(id) => self.leave(conn, &key, id, out),
            Command::SendMessage { conv, text } => self.send_message(conn, &key, conv, text, out),
            Command::ListConversations => self.list_conversations(conn, &key, out),
        }
    }

    fn caps(&mut self, conn: ConnId, asked: &[String], out: &mut Outputs) {
        let Some(Connection::Unregistered { caps }) = self.connections.get_mut(&conn) else {
            return;
        };
        let enabled = caps.enable(asked);
        send_one(out, conn, ServerMessage::Caps(enabled));
    }

    fn register(&mut self, conn: ConnId, name: String, status: String, out: &mut Outputs) {
        let key = user_key(&name);
        if self.users.contains_key(&key) {
            return error(out, conn, ChatError::NameTaken(name));
        }
        let caps = match self.connections.get(&conn) {
            Some(Connection::Unregistered { caps }) => *caps,
            _ => return,
        };
        self.presence.note_change(&key, None);
        self.presence.note_registered(conn);
        self.users
            .insert(key.clone(), User::new(name, status, conn, caps));
        self.connections
            .insert(conn, Connection::Registered { key });
    }

    fn set_status(&mut self, key: &str, status: String) {
        self.presence.note_change(key, self.users.get(key));
        if let Some(user) = self.users.get_mut(key) {
            user.status = status;
        }
    }

    fn invite(&mut self, conn: ConnId, key: String, names: Vec<String>, out: &mut Outputs) {
        let (invitees, offline) = self.sort_invitees(&key, names);
        if invitees.is_empty() {
            let err = if offline.is_empty() {
                ChatError::NobodyToInvite
            } else {
                ChatError::NobodyOnlineToInvite(offline)
            };
            return error(out, conn, err);
        }
        let mut recipients = Vec::with_capacity(invitees.len() + 1);
        recipients.push(conn);
        recipients.extend(invitees.iter().map(|k| self.users[k].conn));
        let mut invited: BTreeSet<String> = invitees.into_iter().collect();
        invited.insert(key.clone());
        let inviter = self.users[&key].display.clone();
        let id = self.conversations.create(invited.clone());
        for k in &invited {
            if let Some(user) = self.users.get_mut(k) {
                user.pending_in.insert(id);
            }
        }
        send_many(
            out,
            recipients,
            ServerMessage::Invitation { conv: id, inviter },
        );
        if !offline.is_empty() {
            error(out, conn, ChatError::NotOnline(offline));
        }
    }

    /// Splits INVITE's names into online invitee keys (deduplicated, in the
    /// order named, the inviter left out) and names nobody online has.
    fn sort_invitees(&self, inviter: &str, names: Vec<String>) -> (Vec<String>, Vec<String>) {
        let mut seen = BTreeSet::from([inviter.to_owned()]);
        let mut invitees = Vec::new();
        let mut offline = Vec::new();
        for name in names {
            let key = user_key(&name);
            if !seen.insert(key.clone()) {
                continue;
            }
            if self.users.contains_key(&key) {
                invitees.push(key);
            } else {
                offline.push(name);
            }
        }
        (invitees, offline)
    }

    fn join(&mut self, conn: ConnId, key: String, id: ConvId, out: &mut Outputs) {
        let policy = self.config.policy;
        let Some(conversation) = self.conversations.get_mut(id) else {
            return error(out, conn, ChatError::NoConversation(id));
        };
        if conversation.members.contains_key(&key) {
            // JOIN twice: no change; a `members` client still gets its ack.
            if self.users[&key].caps.members {
                let members = self.members_message(id);
                send_one(out, conn, members);
            }
            return;
        }
        if policy == Policy::InviteOnly && !conversation.allowed.contains(&key) {
            return error(out, conn, ChatError::NotInvited(id));
        }
        conversation.pending.remove(&key);
        conversation.members.insert(key.clone(), conn);
        if let Some(user) = self.users.get_mut(&key) {
            user.pending_in.remove(&id);
            user.member_of.insert(id);
        }
        self.announce_members(id, None, out);
    }

    fn leave(&mut self, conn: ConnId, key: &str, id: ConvId, out: &mut Outputs) {
        if let Err(err) = self.check_member(key, id) {
            return error(out, conn, err);
        }
        let user = self
            .users
            .get_mut(key)
            .expect("a registered key has a user");
        user.member_of.remove(&id);
        let leaver = user.caps.members.then_some(conn);
        self.remove_member(id, key, leaver, out);
    }

    /// Takes `key` out of conversation `id`'s members, tells the remaining
    /// `members` clients (and `leaver`, if given), and removes the
    /// conversation if it is now abandoned.
    fn remove_member(&mut self, id: ConvId, key: &str, leaver: Option<ConnId>, out: &mut Outputs) {
        if let Some(conversation) = self.conversations.get_mut(id) {
            conversation.members.remove(key);
        }
        self.announce_members(id, leaver, out);
        self.conversations.remove_if_abandoned(id);
    }

    fn send_message(&self, conn: ConnId, key: &str, id: ConvId, text: String, out: &mut Outputs) {
        if let Err(err) = self.check_member(key, id) {
            return error(out, conn, err);
        }
        if text.is_empty() {
            return error(out, conn, ChatError::EmptyMessage);
        }
        let conversation = self.conversations.get(id).expect("checked above");
        let message = ServerMessage::Message {
            conv: id,
            sender: self.users[key].display.clone(),
            text,
        };
        send_many(out, conversation.member_conns(), message);
    }

    fn check_member(&self, key: &str, id: ConvId) -> Result<(), ChatError> {
        match self.conversations.get(id) {
            None => Err(ChatError::NoConversation(id)),
            Some(c) if !c.members.contains_key(key) => Err(ChatError::NotMember(id)),
            Some(_) => Ok(()),
        }
    }

    fn list_conversations(&self, conn: ConnId, key: &str, out: &mut Outputs) {
        let open = self.config.policy == Policy::Open;
        let listed = self
            .conversations
            .iter()
            .filter(|(_, c)| open || c.members.contains_key(key) || c.allowed.contains(key))
            .map(|(id, _)| (id, self.member_names(id)))
            .collect();
        send_one(out, conn, ServerMessage::Conversations(listed));
    }

    /// MEMBERS to every member with the `members` capability, plus `extra`.
    fn announce_members(&self, id: ConvId, extra: Option<ConnId>, out: &mut Outputs) {
        let Some(conversation) = self.conversations.get(id) else {
            return;
        };
        let mut recipients: Vec<ConnId> = conversation
            .members
            .iter()
            .filter(|(k, _)| self.users.get(*k).is_some_and(|u| u.caps.members))
            .map(|(_, conn)| *conn)
            .collect();
        recipients.extend(extra);
        if !recipients.is_empty() {
            send_many(out, recipients, self.members_message(id));
        }
    }

    fn members_message(&self, id: ConvId) -> ServerMessage {
        ServerMessage::Members {
            conv: id,
            members: self.member_names(id),
        }
    }

    /// Display names of conversation `id`'s members, sorted by key.
    fn member_names(&self, id: ConvId) -> Vec<String> {
        let Some(conversation) = self.conversations.get(id) else {
            return Vec::new();
        };
        conversation
            .members
            .keys()
            .filter_map(|k| self.users.get(k))
            .map(|u| u.display.clone())
            .collect()
    }
}

/// Inspection, for tests, benchmarks and the server's own checks.
impl Chat {
    /// Registered (online) users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Live connections, registered or not.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub fn conversation_count(&self) -> usize {
        self.conversations.len()
    }

    /// Ids of every live conversation, ascending.
    pub fn conversation_ids(&self) -> Vec<ConvId> {
        self.conversations.iter().map(|(id, _)| id).collect()
    }

    /// Display names of a conversation's members, sorted; `None` if it does
    /// not exist.
    pub fn members(&self, id: ConvId) -> Option<Vec<String>> {
        self.conversations.get(id).map(|_| self.member_names(id))
    }

    /// Connections of a conversation's members, in member order.
    pub fn member_conns(&self, id: ConvId) -> Option<Vec<ConnId>> {
        self.conversations.get(id).map(|c| c.member_conns())
    }

    /// Connections of every online user, in name order.
    pub fn user_conns(&self) -> Vec<ConnId> {
        self.users.values().map(|u| u.conn).collect()
    }

    /// Whether `conn` is connected (registered or not).
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.connections.contains_key(&conn)
    }

    /// The display name `conn` registered, if it did.
    pub fn user_name(&self, conn: ConnId) -> Option<&str> {
        match self.connections.get(&conn)? {
            Connection::Registered { key } => self.users.get(key).map(|u| u.display.as_str()),
            Connection::Unregistered { .. } => None,
        }
    }

    /// `(display name, status)` of every online user, sorted by key: what a
    /// client's view of presence must equal after a flush.
    pub fn presence(&self) -> Vec<(String, String)> {
        self.users
            .values()
            .map(|u| (u.display.clone(), u.status.clone()))
            .collect()
    }
}

fn send_one(out: &mut Outputs, conn: ConnId, message: ServerMessage) {
    out.push(Output::Send {
        to: Recipients::One(conn),
        message: Arc::new(message),
    });
}

fn send_many(out: &mut Outputs, conns: Vec<ConnId>, message: ServerMessage) {
    out.push(Output::Send {
        to: Recipients::Many(conns),
        message: Arc::new(message),
    });
}

fn error(out: &mut Outputs, conn: ConnId, err: ChatError) {
    send_one(out, conn, ServerMessage::Error(err.to_string()));
}
