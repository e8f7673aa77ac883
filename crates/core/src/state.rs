//! The chat state machine's public face: connections in, outputs out.
//!
//! [`Chat`] owns every user, connection and conversation. Each input
//! (connect, a command, a disconnect, a timer) is applied completely before
//! the next, and its effects are appended to an [`Outputs`] buffer the
//! caller reuses, so the order of outputs is the order in which the server
//! accepted things: every member sees a conversation's messages in the same
//! order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::Arc;

use natter_proto::{Command, ConvId, HistoryEntry, Limits, MessageMeta, ServerMessage};

use crate::bans::Bans;
use crate::caps::Caps;
use crate::conversations::{Conversation, Conversations, Member};
use crate::error::ChatError;
use crate::facts::{Fact, Snapshot, StoredMessage, UnixMs};
use crate::identity::AccountsMode;
use crate::policy::Policy;
use crate::presence::Presence;
use crate::users::{Away, Connection, Device, User, user_key};

mod invariants;
mod live;
mod moderation;

pub use live::{LiveAway, LiveConnection, LiveConversation, LiveMember, LiveState, LiveUser};
pub use moderation::{NOTICE_CONV, NOTICE_SENDER, OnlineUser};

/// A connection, as the server shell numbers them. Never reused while the
/// server runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ConnId(pub u64);

/// Settings of the chat state.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    /// Validation limits (name, status and message lengths). Commands are
    /// validated against them before they reach [`Chat::handle`].
    pub limits: Limits,
    /// Whether a store keeps history: then every change to durable state is
    /// emitted as an [`Output::Fact`], messages get seqs, and the `history`
    /// capability is offered. Off, the chat is as ephemeral as the course's.
    pub durable: bool,
    /// Guests, accounts, or both (see [`crate::identity`]).
    pub accounts: AccountsMode,
    /// Most users one `presence-scope` device may WATCH.
    pub max_watched: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Policy::default(),
            limits: Limits::default(),
            durable: false,
            accounts: AccountsMode::default(),
            max_watched: crate::scope::MAX_WATCHED,
        }
    }
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
    /// Offline users who are still members (or, after a restart, invitees),
    /// by key: accounts between sessions, and everyone from before a
    /// restart until they register again or (guests) the grace ends.
    away: HashMap<String, Away>,
    /// Keys of every account: guests may not take these names.
    accounts: HashSet<String>,
    /// The time the shell last fed in: message timestamps.
    now: UnixMs,
    /// Users an operator banned (see [`crate::bans`]).
    bans: Bans,
    /// Messages accepted since this state was made (for operators).
    messages_accepted: u64,
    /// The connections this copy delivers messages to (see
    /// [`Chat::deliver_messages_within`]); `None`: all of them.
    local: Option<RangeInclusive<ConnId>>,
}

impl Chat {
    pub fn new(config: Config) -> Self {
        Chat {
            config,
            connections: HashMap::new(),
            users: BTreeMap::new(),
            conversations: Conversations::default(),
            presence: Presence::default(),
            away: HashMap::new(),
            accounts: HashSet::new(),
            now: 0,
            bans: Bans::default(),
            messages_accepted: 0,
            local: None,
        }
    }

    /// One copy of a replicated state (a cluster node's) delivers to its
    /// own connections only: `MESSAGE`s to connections outside `local` are
    /// not even built, since another copy delivers them. Every copy still
    /// applies every message to the state alike. (Rarer outputs, such as
    /// presence and invitations, are still built for every connection; the
    /// shell drops those it does not hold.)
    pub fn deliver_messages_within(&mut self, local: RangeInclusive<ConnId>) {
        self.local = Some(local);
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
                let away = chat.away.entry(member.key.clone()).or_default();
                away.member_of.push(saved.id);
                let offline = Member {
                    display: member.display,
                    read_seq: member.read_seq,
                };
                conversation.members.insert(member.key, offline);
            }
            for (key, _display) in saved.pending {
                chat.away
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

    /// Whether guests from before a restart have not registered again yet.
    pub fn awaiting_rejoin(&self) -> bool {
        self.away.keys().any(|key| !self.accounts.contains(key))
    }

    /// The rejoin grace is over: guests from before a restart who did not
    /// register again leave their conversations as if they had
    /// disconnected, and conversations left empty end. Accounts stay
    /// members; their invitations lapse as when they go offline.
    pub fn end_rejoin_grace(&mut self, out: &mut Outputs) {
        let keys: Vec<String> = self.away.keys().cloned().collect();
        for key in keys {
            let account = self.accounts.contains(&key);
            let away = self.away.get_mut(&key).expect("listed above");
            let pending = std::mem::take(&mut away.pending_in);
            let member_of = if account {
                Vec::new()
            } else {
                std::mem::take(&mut away.member_of)
            };
            if away.member_of.is_empty() {
                self.away.remove(&key);
            }
            for id in member_of {
                self.remove_member(id, &key, Vec::new(), out);
            }
            for id in pending {
                self.lapse_invitation(id, &key, out);
            }
        }
    }

    /// `key` is an account (loaded from the store, or just signed up):
    /// from now on guests may not take the name.
    pub fn add_account(&mut self, key: String) {
        self.accounts.insert(key);
    }

    /// Whether `key` belongs to an account.
    pub fn is_account(&self, key: &str) -> bool {
        self.accounts.contains(key)
    }

    /// Whether someone is online under `key` (a SIGNUP for it must wait).
    pub fn is_online(&self, key: &str) -> bool {
        self.users.contains_key(key)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Changes the settings an operator may change while the server runs
    /// (a reload): the policy applies to the next invitation or join, the
    /// limits to the next command. What the chat state was built around
    /// (durability, accounts) stays as it started.
    pub fn reconfigure(&mut self, policy: Policy, limits: Limits) {
        self.config.policy = policy;
        self.config.limits = limits;
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
                    users: &self.users,
                    local: self.local.as_ref(),
                    now: self.now,
                    durable: self.config.durable,
                };
                let accepted = match self.conversations.get_mut(conv) {
                    Some(conversation) => sending.send(conversation, conv, text, nonce, out),
                    None => {
                        error(out, conn, ChatError::NoConversation(conv));
                        false
                    }
                };
                self.messages_accepted += u64::from(accepted);
            }
            Command::ListConversations => self.list_conversations(conn, key, out),
            cmd => {
                let key = key.clone();
                self.handle_registered(conn, key, cmd, out);
            }
        }
    }

    /// `conn` is gone (closed, reset, cut off as a slow consumer, or after
    /// GOODBYE). While the user has other devices nothing else changes.
    /// After its last one the user is offline: its presence departure is
    /// recorded and its invitations lapse; a guest leaves every
    /// conversation, an account stays a member.
    pub fn disconnect(&mut self, conn: ConnId, out: &mut Outputs) {
        self.drop_connection(conn, false, out);
    }

    /// `conn` was lost with the server that held it (another node of a
    /// cluster died), not closed by its user. As after a restart, its user
    /// stays a member of its conversations, even a guest, until it
    /// registers again or [`Chat::end_rejoin_grace`]; its invitations lapse
    /// as on any departure.
    pub fn connection_lost(&mut self, conn: ConnId, out: &mut Outputs) {
        self.drop_connection(conn, true, out);
    }

    fn drop_connection(&mut self, conn: ConnId, keep_memberships: bool, out: &mut Outputs) {
        let Some(Connection::Registered { key }) = self.connections.remove(&conn) else {
            return;
        };
        self.presence.note_departed(conn);
        let Some(user) = self.users.get_mut(&key) else {
            return;
        };
        user.devices.retain(|d| d.conn != conn);
        if !user.devices.is_empty() {
            self.presence.note_devices_changed();
            return;
        }
        self.presence.note_change(&key, self.users.get(&key));
        self.note_contacts_leaving(&key);
        let user = self.users.remove(&key).expect("looked up above");
        if user.account || keep_memberships {
            self.away.insert(
                key.clone(),
                Away {
                    member_of: user.member_of.into_iter().collect(),
                    pending_in: Vec::new(),
                },
            );
        } else {
            for id in user.member_of {
                self.remove_member(id, &key, Vec::new(), out);
            }
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
        self.presence.flush(&self.users, &self.conversations, out);
    }

    /// The periodic full `ONLINE_USERS` to every registered client without
    /// `presence-delta`.
    pub fn presence_snapshot(&mut self, out: &mut Outputs) {
        self.presence
            .periodic(&self.users, &self.conversations, out);
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
            // The shell verifies secrets and accounts, then calls `login`.
            Command::Login { .. } | Command::Signup { .. } if !self.config.accounts.enabled() => {
                error(out, conn, ChatError::AccountsOff)
            }
            _ => error(out, conn, ChatError::NotRegistered),
        }
    }

    fn handle_registered(&mut self, conn: ConnId, key: String, cmd: Command, out: &mut Outputs) {
        match cmd {
            Command::Caps(_) => error(out, conn, ChatError::CapsAfterRegister),
            Command::Register { .. } | Command::Login { .. } => {
                let display = self.users[&key].display.clone();
                error(out, conn, ChatError::AlreadyRegistered(display));
            }
            Command::Signup { .. } => error(out, conn, ChatError::OnlyBeforeRegister("SIGNUP")),
            // For accounts the shell takes these before they get here.
            Command::Logout => error(out, conn, ChatError::AccountOnly("LOGOUT")),
            Command::Password { .. } => error(out, conn, ChatError::AccountOnly("PASSWORD")),
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
            Command::Watch(names) => {
                let keys = names.iter().map(|n| user_key(n)).collect();
                let limit = self.config.max_watched;
                if let Err(err) = self.presence.watch(conn, keys, limit) {
                    error(out, conn, err);
                }
            }
            Command::Unwatch(names) => {
                let keys = names.iter().map(|n| user_key(n)).collect();
                if let Err(err) = self.presence.unwatch(conn, keys) {
                    error(out, conn, err);
                }
            }
            Command::ListUsers { prefix, limit } => self.list_users(conn, &prefix, limit, out),
        }
    }

    fn caps(&mut self, conn: ConnId, asked: &[String], out: &mut Outputs) {
        let Some(Connection::Unregistered { caps }) = self.connections.get_mut(&conn) else {
            return;
        };
        let enabled = caps.enable(asked, self.config.durable, self.config.accounts.enabled());
        send_one(out, conn, ServerMessage::Caps(enabled));
    }

    /// REGISTER as a guest: a free name that belongs to no account, on a
    /// server that lets guests in.
    fn register(&mut self, conn: ConnId, name: String, status: String, out: &mut Outputs) {
        let key = user_key(&name);
        if let Err(banned) = self.check_not_banned(&name) {
            return error(out, conn, banned);
        }
        if self.config.accounts == AccountsMode::Required {
            return error(out, conn, ChatError::AccountRequired);
        }
        if self.accounts.contains(&key) {
            return error(out, conn, ChatError::BadCredentials);
        }
        if self.users.contains_key(&key) {
            return error(out, conn, ChatError::NameTaken(name));
        }
        self.arrive(conn, key, name, status, false, out);
    }

    /// REGISTER as the account `display`, whose secret the shell has
    /// verified: a new device if the account is already online. Says
    /// whether `conn` is now registered.
    pub fn login(
        &mut self,
        conn: ConnId,
        display: String,
        status: String,
        out: &mut Outputs,
    ) -> bool {
        let key = user_key(&display);
        let Some(Connection::Unregistered { caps }) = self.connections.get(&conn) else {
            return false;
        };
        let caps = *caps;
        if let Err(banned) = self.check_not_banned(&display) {
            error(out, conn, banned);
            return false;
        }
        self.accounts.insert(key.clone());
        let Some(user) = self.users.get_mut(&key) else {
            self.arrive(conn, key, display, status, true, out);
            return true;
        };
        if !user.account {
            // A guest took the name before it became an account.
            error(out, conn, ChatError::NameTaken(display));
            return false;
        }
        if user.status != status {
            self.set_status(&key, status);
        }
        let user = self.users.get_mut(&key).expect("looked up above");
        user.devices.push(Device { conn, caps });
        self.presence.note_devices_changed();
        self.presence.note_registered(conn, &key, caps);
        self.connections
            .insert(conn, Connection::Registered { key: key.clone() });
        self.welcome(conn, &key, out);
        true
    }

    /// A user comes online with its first device.
    fn arrive(
        &mut self,
        conn: ConnId,
        key: String,
        display: String,
        status: String,
        account: bool,
        out: &mut Outputs,
    ) {
        let caps = match self.connections.get(&conn) {
            Some(Connection::Unregistered { caps }) => *caps,
            _ => return,
        };
        self.presence.note_change(&key, None);
        self.presence.note_registered(conn, &key, caps);
        let mut user = User::new(display, status, Device { conn, caps }, account);
        if let Some(away) = self.away.remove(&key) {
            self.rejoin(&key, &mut user, away);
        }
        self.users.insert(key.clone(), user);
        self.connections
            .insert(conn, Connection::Registered { key: key.clone() });
        self.welcome(conn, &key, out);
    }

    /// A user who was offline is back: its memberships and invitations are
    /// its again.
    fn rejoin(&mut self, key: &str, user: &mut User, away: Away) {
        for id in away.member_of {
            let Some(member) = self
                .conversations
                .get_mut(id)
                .and_then(|c| c.members.get_mut(key))
            else {
                continue;
            };
            member.display.clone_from(&user.display);
            user.member_of.insert(id);
        }
        user.pending_in.extend(away.pending_in);
    }

    /// The capabilities of `conn`, a device of the user stored under `key`.
    fn caps_of(&self, key: &str, conn: ConnId) -> Caps {
        self.users
            .get(key)
            .and_then(|u| u.devices.iter().find(|d| d.conn == conn))
            .map_or_else(Caps::default, |d| d.caps)
    }

    /// What a client with `history`, `topics` or `members` learns right
    /// after REGISTER about the conversations it is already in.
    fn welcome(&self, conn: ConnId, key: &str, out: &mut Outputs) {
        let user = &self.users[key];
        let caps = self.caps_of(key, conn);
        if caps.history {
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
            if caps.members {
                send_one(out, conn, self.members_message(id));
            }
            if caps.topics {
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
        // Every device of the inviter and of each invitee.
        let mut recipients = Vec::with_capacity(invitees.len() + 1);
        recipients.extend(self.users[&key].conns());
        for k in &invitees {
            recipients.extend(self.users[k].conns());
        }
        let mut invited: BTreeSet<String> = invitees.into_iter().collect();
        invited.insert(key.clone());
        let inviter = self.users[&key].display.clone();
        let id = self.conversations.create(invited.clone());
        for k in &invited {
            if let Some(user) = self.users.get_mut(k) {
                user.pending_in.insert(id);
            }
        }
        self.note_circle_changed(id);
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
        let caps = self.caps_of(&key, conn);
        let Some(conversation) = self.conversations.get_mut(id) else {
            return error(out, conn, ChatError::NoConversation(id));
        };
        if conversation.members.contains_key(&key) {
            // JOIN twice: no change; a `members` client still gets its ack.
            if caps.members {
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
        remove_freeing(&mut conversation.pending, &key);
        let member = Member {
            display: user.display.clone(),
            read_seq: 0,
        };
        conversation.members.insert(key.clone(), member);
        user.pending_in.remove(&id);
        user.member_of.insert(id);
        let topics = caps.topics;
        if self.config.durable {
            let display = user.display.clone();
            out.push(Output::Fact(Fact::Joined {
                conv: id,
                key,
                display,
            }));
        }
        self.note_circle_changed(id);
        self.announce_members(id, Vec::new(), out);
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
        // Every device of the leaver with `members` gets its ack.
        let leaver = user.conns_with(|c| c.members).collect();
        self.remove_member(id, key, leaver, out);
    }

    /// Takes `key` out of conversation `id`'s members, tells the remaining
    /// `members` clients (and `leaver`'s devices), and removes the
    /// conversation if it is now abandoned.
    fn remove_member(&mut self, id: ConvId, key: &str, leaver: Vec<ConnId>, out: &mut Outputs) {
        self.note_circle_changed(id);
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
        self.note_circle_changed(id);
        let Some(conversation) = self.conversations.get_mut(id) else {
            return;
        };
        if remove_freeing(&mut conversation.pending, key) && self.config.durable {
            let key = key.to_owned();
            out.push(Output::Fact(Fact::InvitationLapsed { conv: id, key }));
        }
        self.end_if_abandoned(id, out);
    }

    /// Who is in conversation `id` (members or invited) changed, or is
    /// about to: every scoped device in it must recompute its view. Called
    /// before a removal (so the one removed is marked) and after an
    /// addition.
    fn note_circle_changed(&mut self, id: ConvId) {
        if !self.presence.has_scoped() {
            return;
        }
        let Some(conversation) = self.conversations.get(id) else {
            return;
        };
        let keys = conversation.members.keys().chain(&conversation.pending);
        for user in keys.filter_map(|k| self.users.get(k)) {
            for conn in user.conns_with(|c| c.presence_scope) {
                self.presence.note_scope_changed(conn);
            }
        }
    }

    /// The user stored under `key` is going offline: its scoped contacts
    /// must drop it at the next flush, when it can no longer be found.
    fn note_contacts_leaving(&mut self, key: &str) {
        if !self.presence.has_scoped() {
            return;
        }
        let Some(user) = self.users.get(key) else {
            return;
        };
        let mut conns = Vec::new();
        crate::scope::for_contacts(user, &self.users, &self.conversations, |contact| {
            conns.extend(contact.conns_with(|c| c.presence_scope));
        });
        for conn in conns {
            self.presence.note_scope_changed(conn);
        }
    }

    /// USERS: at most `limit` online users whose key starts with `prefix`
    /// (lowercased), in key order. The users are kept sorted by key, so
    /// this reads only what it returns.
    fn list_users(&self, conn: ConnId, prefix: &str, limit: usize, out: &mut Outputs) {
        let prefix = user_key(prefix);
        let found = self
            .users
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(&prefix))
            .take(limit)
            .map(|(_, u)| (u.display.clone(), u.status.clone()))
            .collect();
        send_one(out, conn, ServerMessage::Users(found));
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
            .keys()
            .filter_map(|k| self.users.get(k))
            .flat_map(|u| u.conns_with(|c| c.topics))
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

    /// MEMBERS to every online member's devices with the `members`
    /// capability, plus `extra`.
    fn announce_members(&self, id: ConvId, extra: Vec<ConnId>, out: &mut Outputs) {
        let Some(conversation) = self.conversations.get(id) else {
            return;
        };
        let mut recipients: Vec<ConnId> = conversation
            .members
            .keys()
            .filter_map(|k| self.users.get(k))
            .flat_map(|u| u.conns_with(|c| c.members))
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
    /// Where the members' devices are.
    users: &'a BTreeMap<String, User>,
    /// The connections deliveries are built for (`None`: all).
    local: Option<&'a RangeInclusive<ConnId>>,
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
    ) -> bool {
        if !conversation.members.contains_key(self.key) {
            error(out, self.conn, ChatError::NotMember(conv));
            return false;
        }
        if text.is_empty() {
            error(out, self.conn, ChatError::EmptyMessage);
            return false;
        }
        if !self.durable {
            let message = ServerMessage::Message {
                conv,
                sender: self.display.to_owned(),
                text,
                meta: None,
            };
            let conns = online_conns(conversation, self.users, self.local);
            if !conns.is_empty() {
                send_many(out, conns, message);
            }
            return true;
        }
        if let Some(nonce) = &nonce
            && let Some(original) = conversation.nonces.find(self.key, nonce)
        {
            // A resend: the sender gets the original back, nobody else
            // anything, and nothing is stored twice.
            let message = with_meta(original, original.nonce.clone());
            send_one(out, self.conn, message);
            return false;
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
        true
    }

    /// MESSAGE to every device of every online member: with metadata to
    /// `history` devices (and the nonce to the sender's own), without to
    /// the others.
    fn deliver(&self, conversation: &Conversation, stored: &StoredMessage, out: &mut Outputs) {
        let mut plain = Vec::new();
        let mut with_seq = Vec::new();
        let mut own_nonce = Vec::new();
        for key in conversation.members.keys() {
            let Some(user) = self.users.get(key) else {
                continue;
            };
            let own = key == self.key && stored.nonce.is_some();
            for device in &user.devices {
                if !is_within(self.local, device.conn) {
                    continue;
                }
                if !device.caps.history {
                    plain.push(device.conn);
                } else if own {
                    own_nonce.push(device.conn);
                } else {
                    with_seq.push(device.conn);
                }
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
        if !own_nonce.is_empty() {
            send_many(out, own_nonce, with_meta(stored, stored.nonce.clone()));
        }
    }
}

/// Every device of every online member of `conversation` (within
/// `local`, if given), in member order.
fn online_conns(
    conversation: &Conversation,
    users: &BTreeMap<String, User>,
    local: Option<&RangeInclusive<ConnId>>,
) -> Vec<ConnId> {
    let mut conns = Vec::with_capacity(conversation.members.len());
    for key in conversation.members.keys() {
        if let Some(user) = users.get(key) {
            conns.extend(user.conns().filter(|&conn| is_within(local, conn)));
        }
    }
    conns
}

fn is_within(local: Option<&RangeInclusive<ConnId>>, conn: ConnId) -> bool {
    local.is_none_or(|local| local.contains(&conn))
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

    /// Every live connection, registered or not, in no particular order.
    pub fn connection_ids(&self) -> Vec<ConnId> {
        self.connections.keys().copied().collect()
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

    /// Connections (every device) of a conversation's online members, in
    /// member order.
    pub fn member_conns(&self, id: ConvId) -> Option<Vec<ConnId>> {
        self.conversations
            .get(id)
            .map(|c| online_conns(c, &self.users, None))
    }

    /// Connections of every online user's devices, in name order.
    pub fn user_conns(&self) -> Vec<ConnId> {
        self.users.values().flat_map(|u| u.conns()).collect()
    }

    /// The first device of the online user stored under `key`.
    pub fn user_conn(&self, key: &str) -> Option<ConnId> {
        self.users.get(key).map(|u| u.devices[0].conn)
    }

    /// Every device of the online user stored under `key`.
    pub fn devices_of(&self, key: &str) -> Vec<ConnId> {
        self.users
            .get(key)
            .map(|u| u.conns().collect())
            .unwrap_or_default()
    }

    /// The key `conn` is registered under, and whether it is an account.
    pub fn registered_as(&self, conn: ConnId) -> Option<(&str, bool)> {
        match self.connections.get(&conn)? {
            Connection::Registered { key } => {
                let account = self.users.get(key).is_some_and(|u| u.account);
                Some((key.as_str(), account))
            }
            Connection::Unregistered { .. } => None,
        }
    }

    /// Whether unregistered `conn` asked for the `session` capability.
    pub fn wants_session(&self, conn: ConnId) -> bool {
        match self.connections.get(&conn) {
            Some(Connection::Unregistered { caps }) => caps.session,
            Some(Connection::Registered { key }) => self.caps_of(key, conn).session,
            None => false,
        }
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
    /// classic client's view of presence must equal after a flush.
    pub fn presence(&self) -> Vec<(String, String)> {
        self.users
            .values()
            .map(|u| (u.display.clone(), u.status.clone()))
            .collect()
    }

    /// Whether `conn` is a registered `presence-scope` device.
    pub fn is_scoped(&self, conn: ConnId) -> bool {
        self.presence.watched(conn).is_some()
    }

    /// What `conn`'s view of presence must equal after a flush: all of
    /// [`Chat::presence`], or for a `presence-scope` device the part in its
    /// scope, computed afresh from the conversations (not from the
    /// incremental bookkeeping, which is what it checks).
    pub fn presence_of(&self, conn: ConnId) -> Vec<(String, String)> {
        let Some((key, _)) = self.registered_as(conn) else {
            return Vec::new();
        };
        let Some(watched) = self.presence.watched(conn) else {
            return self.presence();
        };
        crate::scope::view_of(key, watched, &self.users, &self.conversations)
            .into_iter()
            .map(|k| (self.users[k].display.clone(), self.users[k].status.clone()))
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

/// Removes `item` from `set`; a set left empty gives its node back. (A
/// `BTreeSet` keeps its last node allocated when emptied: every idle user
/// whose invitations were all accepted would carry one, and so would every
/// conversation whose invitees have all joined.)
fn remove_freeing<T, Q>(set: &mut BTreeSet<T>, item: &Q) -> bool
where
    T: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ?Sized,
{
    let removed = set.remove(item);
    if set.is_empty() {
        *set = BTreeSet::new();
    }
    removed
}
