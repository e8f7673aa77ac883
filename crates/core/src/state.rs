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

use natter_proto::{Command, ConvId, HistoryEntry, Limits, MessageMeta, ServerMessage};

use crate::caps::Caps;
use crate::conversations::{Conversation, Conversations, Member};
use crate::error::ChatError;
use crate::facts::{Fact, Snapshot, StoredMessage, UnixMs};
use crate::policy::Policy;
use crate::presence::Presence;
use crate::users::{Connection, Restored, User, user_key};

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
    /// Whether a store keeps history: then every change to durable state is
    /// emitted as an [`Output::Fact`], messages get seqs, and the `history`
    /// capability is offered. Off, the chat is as ephemeral as the course's.
    pub durable: bool,
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
    /// A change to durable state (only with [`Config::durable`]). Every
    /// output after it in the stream may reveal it, so a shell with a store
    /// holds them until it is committed.
    Fact(Fact),
    /// `conn` asked for stored messages (and may see them): the shell
    /// answers with `HISTORY` from its store.
    FetchHistory {
        conn: ConnId,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    },
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
    /// Offline users who were members or invitees before a restart, by key,
    /// until they register again or the rejoin grace ends.
    restored: HashMap<String, Restored>,
    /// The time the shell last fed in: message timestamps.
    now: UnixMs,
}

impl Chat {
    pub fn new(config: Config) -> Self {
        Chat {
            config,
            connections: HashMap::new(),
            users: BTreeMap::new(),
            conversations: Conversations::default(),
            presence: Presence::default(),
            restored: HashMap::new(),
            now: 0,
        }
    }

    /// A chat state that continues from what a store remembered: every
    /// conversation with its members (all offline), invitations, topic,
    /// read markers and recent nonces; ids continue above every id used.
    pub fn restore(config: Config, snapshot: Snapshot) -> Self {
        let mut chat = Chat::new(config);
        chat.conversations.reserve_below(snapshot.next_conv_id);
        for saved in snapshot.conversations {
            let mut conversation = Conversation {
                last_seq: saved.last_seq,
                topic: saved.topic,
                allowed: saved.allowed.into_iter().collect(),
                ..Conversation::default()
            };
            for member in saved.members {
                let restored = chat.restored.entry(member.key.clone()).or_default();
                restored.member_of.push(saved.id);
                let offline = Member {
                    conn: None,
                    display: member.display,
                    history: false,
                    read_seq: member.read_seq,
                };
                conversation.members.insert(member.key, offline);
            }
            for (key, _display) in saved.pending {
                chat.restored
                    .entry(key.clone())
                    .or_default()
                    .pending_in
                    .push(saved.id);
                conversation.allowed.insert(key.clone());
                conversation.pending.insert(key);
            }
            chat.conversations.restore(saved.id, conversation);
        }
        for message in snapshot.recent_nonces {
            let now = message.ts;
            if let Some(conversation) = chat.conversations.get_mut(message.conv) {
                conversation.nonces.remember(Arc::new(message), now);
            }
        }
        chat
    }

    /// Feeds in the wall clock (Unix milliseconds): messages accepted from
    /// now on carry this time.
    pub fn set_time(&mut self, now: UnixMs) {
        self.now = now;
    }

    /// A message the store could not keep: it was never delivered, so a
    /// resend of its nonce must be accepted as new.
    pub fn message_lost(&mut self, message: &StoredMessage) {
        if let Some(conversation) = self.conversations.get_mut(message.conv) {
            conversation.nonces.forget(message);
        }
    }

    /// Whether users from before a restart have not registered again yet.
    pub fn awaiting_rejoin(&self) -> bool {
        !self.restored.is_empty()
    }

    /// The rejoin grace is over: users from before a restart who did not
    /// register again leave their conversations as if they had
    /// disconnected, and conversations left empty end.
    pub fn end_rejoin_grace(&mut self, out: &mut Outputs) {
        for (key, restored) in std::mem::take(&mut self.restored) {
            for id in restored.member_of {
                self.remove_member(id, &key, None, out);
            }
            for id in restored.pending_in {
                self.lapse_invitation(id, &key, out);
            }
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
        // The hot commands borrow the key; the rest own a copy.
        match cmd {
            Command::SendMessage { conv, text, nonce } => {
                let sending = Sending {
                    conn,
                    key,
                    display: &self.users[key].display,
                    now: self.now,
                    durable: self.config.durable,
                };
                match self.conversations.get_mut(conv) {
                    Some(conversation) => sending.send(conversation, conv, text, nonce, out),
                    None => error(out, conn, ChatError::NoConversation(conv)),
                }
            }
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
            self.lapse_invitation(id, &key, out);
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
            // Taken in `handle`, with a borrowed key.
            Command::SendMessage { .. } | Command::ListConversations => {}
            Command::History {
                conv,
                before_seq,
                limit,
            } => self.history(conn, &key, conv, before_seq, limit, out),
            Command::Read { conv, seq } => self.read(conn, &key, conv, seq, out),
            Command::Topic { conv, text } => self.topic(conn, &key, conv, text, out),
        }
    }

    fn caps(&mut self, conn: ConnId, asked: &[String], out: &mut Outputs) {
        let Some(Connection::Unregistered { caps }) = self.connections.get_mut(&conn) else {
            return;
        };
        let enabled = caps.enable(asked, self.config.durable);
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
        let mut user = User::new(name, status, conn, caps);
        if let Some(restored) = self.restored.remove(&key) {
            self.rejoin(&key, &mut user, restored);
        }
        self.users.insert(key.clone(), user);
        self.connections
            .insert(conn, Connection::Registered { key: key.clone() });
        self.welcome(conn, &key, out);
    }

    /// A user from before a restart is back: its memberships and
    /// invitations are its again.
    fn rejoin(&mut self, key: &str, user: &mut User, restored: Restored) {
        for id in restored.member_of {
            let Some(member) = self
                .conversations
                .get_mut(id)
                .and_then(|c| c.members.get_mut(key))
            else {
                continue;
            };
            member.conn = Some(user.conn);
            member.history = user.caps.history;
            member.display.clone_from(&user.display);
            user.member_of.insert(id);
        }
        user.pending_in.extend(restored.pending_in);
    }

    /// What a client with `history`, `topics` or `members` learns right
    /// after REGISTER about the conversations it is already in.
    fn welcome(&self, conn: ConnId, key: &str, out: &mut Outputs) {
        let user = &self.users[key];
        if user.caps.history {
            let unread = user
                .member_of
                .iter()
                .filter_map(|&id| {
                    let c = self.conversations.get(id)?;
                    Some((id, c.last_seq, c.members.get(key)?.read_seq))
                })
                .collect();
            send_one(out, conn, ServerMessage::Unread(unread));
        }
        for &id in &user.member_of {
            if user.caps.members {
                send_one(out, conn, self.members_message(id));
            }
            if user.caps.topics {
                self.send_topic_to(conn, id, out);
            }
        }
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
        if self.config.durable {
            let invited = invited
                .iter()
                .map(|k| (k.clone(), self.users[k].display.clone()))
                .collect();
            let ts = self.now;
            out.push(Output::Fact(Fact::ConversationCreated {
                conv: id,
                ts,
                invited,
            }));
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
        let user = self
            .users
            .get_mut(&key)
            .expect("a registered key has a user");
        conversation.pending.remove(&key);
        let member = Member {
            conn: Some(conn),
            display: user.display.clone(),
            history: user.caps.history,
            read_seq: 0,
        };
        conversation.members.insert(key.clone(), member);
        user.pending_in.remove(&id);
        user.member_of.insert(id);
        let topics = user.caps.topics;
        if self.config.durable {
            let display = user.display.clone();
            out.push(Output::Fact(Fact::Joined {
                conv: id,
                key,
                display,
            }));
        }
        self.announce_members(id, None, out);
        if topics {
            self.send_topic_to(conn, id, out);
        }
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
        let Some(conversation) = self.conversations.get_mut(id) else {
            return;
        };
        if conversation.members.remove(key).is_some() && self.config.durable {
            let key = key.to_owned();
            out.push(Output::Fact(Fact::Left { conv: id, key }));
        }
        self.announce_members(id, leaver, out);
        self.end_if_abandoned(id, out);
    }

    /// `key` went offline without joining `id`: no longer pending (still
    /// allowed), and the conversation ends if that was its last hope.
    fn lapse_invitation(&mut self, id: ConvId, key: &str, out: &mut Outputs) {
        let Some(conversation) = self.conversations.get_mut(id) else {
            return;
        };
        if conversation.pending.remove(key) && self.config.durable {
            let key = key.to_owned();
            out.push(Output::Fact(Fact::InvitationLapsed { conv: id, key }));
        }
        self.end_if_abandoned(id, out);
    }

    fn end_if_abandoned(&mut self, id: ConvId, out: &mut Outputs) {
        if self.conversations.remove_if_abandoned(id) && self.config.durable {
            let ts = self.now;
            out.push(Output::Fact(Fact::ConversationEnded { conv: id, ts }));
        }
    }

    fn history(
        &self,
        conn: ConnId,
        key: &str,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
        out: &mut Outputs,
    ) {
        if !self.config.durable {
            return error(out, conn, ChatError::HistoryNotKept);
        }
        if let Err(err) = self.check_member(key, conv) {
            return error(out, conn, err);
        }
        out.push(Output::FetchHistory {
            conn,
            conv,
            before_seq,
            limit,
        });
    }

    fn read(&mut self, conn: ConnId, key: &str, conv: ConvId, seq: u64, out: &mut Outputs) {
        if let Err(err) = self.check_member(key, conv) {
            return error(out, conn, err);
        }
        let conversation = self.conversations.get_mut(conv).expect("checked above");
        let seq = seq.min(conversation.last_seq);
        let member = conversation.members.get_mut(key).expect("checked above");
        if seq <= member.read_seq {
            return;
        }
        member.read_seq = seq;
        if self.config.durable {
            let key = key.to_owned();
            out.push(Output::Fact(Fact::ReadUpTo { key, conv, seq }));
        }
    }

    fn topic(&mut self, conn: ConnId, key: &str, conv: ConvId, text: String, out: &mut Outputs) {
        if let Err(err) = self.check_member(key, conv) {
            return error(out, conn, err);
        }
        let setter = self.users[key].display.clone();
        let conversation = self.conversations.get_mut(conv).expect("checked above");
        conversation.topic = Some((text.clone(), setter.clone()));
        if self.config.durable {
            out.push(Output::Fact(Fact::TopicSet {
                conv,
                text: text.clone(),
                setter: setter.clone(),
            }));
        }
        let recipients: Vec<ConnId> = conversation
            .members
            .iter()
            .filter(|(k, m)| m.conn.is_some() && self.users.get(*k).is_some_and(|u| u.caps.topics))
            .filter_map(|(_, m)| m.conn)
            .collect();
        if !recipients.is_empty() {
            send_many(out, recipients, ServerMessage::Topic { conv, text, setter });
        }
    }

    /// The current topic of `id`, if it has one, to `conn`.
    fn send_topic_to(&self, conn: ConnId, id: ConvId, out: &mut Outputs) {
        let topic = self.conversations.get(id).and_then(|c| c.topic.as_ref());
        if let Some((text, setter)) = topic {
            let message = ServerMessage::Topic {
                conv: id,
                text: text.clone(),
                setter: setter.clone(),
            };
            send_one(out, conn, message);
        }
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
            .filter_map(|(_, member)| member.conn)
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
            .values()
            .map(|m| m.display.clone())
            .collect()
    }
}

/// One conversation's durable state, for comparing chat states (see
/// [`Chat::durable_view`]).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationView {
    pub id: ConvId,
    pub last_seq: u64,
    pub topic: Option<(String, String)>,
    /// `(key, read_seq)`.
    pub members: Vec<(String, u64)>,
    pub pending: Vec<String>,
    pub allowed: Vec<String>,
}

/// One SEND_MESSAGE being accepted: who sends, and the state it needs,
/// borrowed field by field so the sender's key stays borrowed too.
struct Sending<'a> {
    conn: ConnId,
    key: &'a str,
    display: &'a str,
    now: UnixMs,
    durable: bool,
}

impl Sending<'_> {
    fn send(
        &self,
        conversation: &mut Conversation,
        conv: ConvId,
        text: String,
        nonce: Option<String>,
        out: &mut Outputs,
    ) {
        if !conversation.members.contains_key(self.key) {
            return error(out, self.conn, ChatError::NotMember(conv));
        }
        if text.is_empty() {
            return error(out, self.conn, ChatError::EmptyMessage);
        }
        if !self.durable {
            let message = ServerMessage::Message {
                conv,
                sender: self.display.to_owned(),
                text,
                meta: None,
            };
            return send_many(out, conversation.member_conns(), message);
        }
        if let Some(nonce) = &nonce
            && let Some(original) = conversation.nonces.find(self.key, nonce)
        {
            // A resend: the sender gets the original back, nobody else
            // anything, and nothing is stored twice.
            let message = with_meta(original, original.nonce.clone());
            return send_one(out, self.conn, message);
        }
        conversation.last_seq += 1;
        let stored = Arc::new(StoredMessage {
            conv,
            seq: conversation.last_seq,
            ts: self.now,
            sender_key: self.key.to_owned(),
            sender: self.display.to_owned(),
            text,
            nonce,
        });
        if stored.nonce.is_some() {
            conversation.nonces.remember(stored.clone(), self.now);
        }
        out.push(Output::Fact(Fact::MessageAccepted(stored.clone())));
        self.deliver(conversation, &stored, out);
    }

    /// MESSAGE to every online member: with metadata to `history` clients
    /// (and the nonce to the sender), without to the others.
    fn deliver(&self, conversation: &Conversation, stored: &StoredMessage, out: &mut Outputs) {
        let mut plain = Vec::new();
        let mut with_seq = Vec::new();
        let mut own_nonce = None;
        for member in conversation.members.values() {
            let Some(conn) = member.conn else { continue };
            if !member.history {
                plain.push(conn);
            } else if conn == self.conn && stored.nonce.is_some() {
                own_nonce = Some(conn);
            } else {
                with_seq.push(conn);
            }
        }
        if !plain.is_empty() {
            let message = ServerMessage::Message {
                conv: stored.conv,
                sender: stored.sender.clone(),
                text: stored.text.clone(),
                meta: None,
            };
            send_many(out, plain, message);
        }
        if !with_seq.is_empty() {
            send_many(out, with_seq, with_meta(stored, None));
        }
        if let Some(conn) = own_nonce {
            send_one(out, conn, with_meta(stored, stored.nonce.clone()));
        }
    }
}

/// `MESSAGE` with its metadata, as `history` clients get it.
fn with_meta(stored: &StoredMessage, nonce: Option<String>) -> ServerMessage {
    ServerMessage::Message {
        conv: stored.conv,
        sender: stored.sender.clone(),
        text: stored.text.clone(),
        meta: Some(MessageMeta {
            seq: stored.seq,
            ts: stored.ts,
            nonce,
        }),
    }
}

/// A stored message as one entry of a `HISTORY` answer.
pub fn history_entry(stored: &StoredMessage) -> HistoryEntry {
    HistoryEntry {
        seq: stored.seq,
        ts: stored.ts,
        sender: stored.sender.clone(),
        text: stored.text.clone(),
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

    /// Connections of a conversation's online members, in member order.
    pub fn member_conns(&self, id: ConvId) -> Option<Vec<ConnId>> {
        self.conversations.get(id).map(|c| c.member_conns())
    }

    /// Connections of every online user, in name order.
    pub fn user_conns(&self) -> Vec<ConnId> {
        self.users.values().map(|u| u.conn).collect()
    }

    /// The connection of the online user stored under `key`.
    pub fn user_conn(&self, key: &str) -> Option<ConnId> {
        self.users.get(key).map(|u| u.conn)
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

    /// What a store must be able to give back of every conversation, in
    /// id order (members and invitees as keys, sorted): two chat states
    /// with equal views hold the same durable state.
    #[doc(hidden)]
    pub fn durable_view(&self) -> Vec<ConversationView> {
        self.conversations
            .iter()
            .map(|(id, c)| ConversationView {
                id,
                last_seq: c.last_seq,
                topic: c.topic.clone(),
                members: c
                    .members
                    .iter()
                    .map(|(k, m)| (k.clone(), m.read_seq))
                    .collect(),
                pending: c.pending.iter().cloned().collect(),
                allowed: c.allowed.iter().cloned().collect(),
            })
            .collect()
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
