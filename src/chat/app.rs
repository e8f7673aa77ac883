//! The terminal client's state and how events and keys change it.
//!
//! Nothing here touches the terminal or the network: [`App::on_event`],
//! [`App::on_key`] and [`App::on_paste`] update the state and return the
//! [`Action`] (a command to send, or quitting) for the event loop to carry
//! out; further commands (history pages, read markers, a quiet
//! `LIST_CONVERSATIONS`) wait in [`App::take_commands`], and a bell in
//! [`App::take_bell`]. So the whole client can be driven and checked in
//! tests.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{Local, NaiveTime};
use natter_client::{
    Command, ConnectionState, ConvId, Event, HistoryEntry, MessageInfo, Nonce, OnlineUsers, Unread,
};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::edit::{InputLine, Recall};
use super::input::{self, Input};
use super::ui;

/// Messages kept per conversation; older ones scroll away (and can be
/// fetched again from a server with history).
pub const HISTORY: usize = 2000;
/// Lines moved by one PgUp / PgDn.
pub const PAGE: usize = 10;
/// Messages asked for per `HISTORY` page.
pub const HISTORY_PAGE: usize = 50;
/// A paste or compose of more lines than this asks before it is sent.
pub const CONFIRM_LINES: usize = 3;
/// How long an error from the server stays in the status bar.
pub const ERROR_SHOWN: Duration = Duration::from_secs(10);
/// Most one `READ` per this long (see [`App::on_tick`]).
pub const READ_EVERY: Duration = Duration::from_secs(2);
/// How long a notice (an invitation, an answer to a command) stays.
pub const NOTICE_SHOWN: Duration = Duration::from_secs(30);

/// What the event loop should do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Command),
    Quit,
}

/// When to ring the terminal bell (`--notify`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Notify {
    /// Mentions of your name, messages in a conversation you are not
    /// looking at, and invitations.
    #[default]
    All,
    /// Only messages that mention your name.
    Mentions,
    /// Never.
    Off,
}

/// What a line in a conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Someone said something.
    Message,
    /// Something happened: a join, a leave, a new topic.
    Event,
}

/// One line of a conversation as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: NaiveTime,
    pub sender: String,
    pub text: String,
    /// Ours, waiting in the client's outbox for a connection; shown as
    /// pending until the server confirms it (and its `MESSAGE` replaces it).
    pub pending: Option<Nonce>,
    /// Its number in the conversation, on servers with history.
    pub seq: Option<u64>,
    pub kind: LineKind,
    /// It mentions us (shown highlighted).
    pub mention: bool,
}

impl Line {
    fn event(at: NaiveTime, text: String) -> Line {
        Line {
            at,
            sender: String::new(),
            text,
            pending: None,
            seq: None,
            kind: LineKind::Event,
            mention: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    pub members: Vec<String>,
    /// Whether `members` came from the server yet (before that, no
    /// join/leave lines: there is nothing to compare with).
    pub members_known: bool,
    pub messages: VecDeque<Line>,
    pub unread: usize,
    /// An unread message mentions us.
    pub mentioned: bool,
    /// We are a member (as opposed to a conversation seen in `/list`).
    pub joined: bool,
    /// Its name (`TOPIC`).
    pub topic: Option<String>,
    /// "Unread since here": the index in `messages` of the first message
    /// not yet seen.
    pub marker: Option<usize>,
    /// Read up to this seq (from `UNREAD`, then as we read).
    pub read_seq: u64,
    /// The newest seq we told the server we read.
    pub read_sent: u64,
    /// A `HISTORY` page is on its way.
    pub loading: bool,
    /// The server has nothing older than what we show.
    pub complete: bool,
    /// Fetching a hole: what was said after this seq while we were away
    /// and the client library could not fetch (`Event::Missed`).
    pub gap_after: Option<u64>,
}

impl Conversation {
    /// Whether the server may have older messages than we show.
    pub fn has_older(&self) -> bool {
        !self.complete && self.oldest_seq() != Some(1)
    }

    fn oldest_seq(&self) -> Option<u64> {
        self.messages.iter().filter_map(|m| m.seq).min()
    }

    fn newest_seq(&self) -> Option<u64> {
        self.messages.iter().filter_map(|m| m.seq).max()
    }

    fn push(&mut self, line: Line) {
        if self.messages.len() == HISTORY {
            self.messages.pop_front();
            self.complete = false;
            self.marker = self.marker.and_then(|m| m.checked_sub(1));
        }
        self.messages.push_back(line);
    }

    /// Puts history entries in seq order among what we have, skipping
    /// those we have already.
    fn merge(&mut self, entries: Vec<HistoryEntry>) -> usize {
        let mut added = 0;
        for entry in entries {
            if self.messages.iter().any(|m| m.seq == Some(entry.seq)) {
                continue;
            }
            let at = self
                .messages
                .iter()
                .position(|m| m.seq.is_some_and(|s| s > entry.seq))
                .unwrap_or(self.messages.len());
            let line = Line {
                at: local_time(entry.ts),
                sender: entry.sender,
                text: entry.text,
                pending: None,
                seq: Some(entry.seq),
                kind: LineKind::Message,
                mention: false,
            };
            self.messages.insert(at, line);
            if self.marker.is_some_and(|m| m >= at) {
                self.marker = self.marker.map(|m| m + 1);
            }
            added += 1;
        }
        added
    }

    /// The names of the others, or the topic when there is one.
    pub fn label(&self, me: &str) -> String {
        if let Some(topic) = &self.topic {
            return topic.clone();
        }
        let others = self.others(me);
        if others.is_empty() {
            "just you".into()
        } else {
            others.join(", ")
        }
    }

    pub fn others(&self, me: &str) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.to_lowercase() != me.to_lowercase())
            .cloned()
            .collect()
    }
}

/// A notice for the user, shown until the next one or for
/// [`NOTICE_SHOWN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub is_problem: bool,
    pub at: Instant,
}

/// A window over the screen, closed by any key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    Help,
    /// `/list`: the server's conversations, with members and topics.
    Conversations(Vec<(ConvId, Vec<String>)>),
}

#[derive(Debug, Clone)]
pub struct App {
    pub me: String,
    pub online: OnlineUsers,
    pub conversations: BTreeMap<ConvId, Conversation>,
    pub active: Option<ConvId>,
    /// Pending invitations, oldest first: (conversation, inviter).
    pub invitations: Vec<(ConvId, String)>,
    /// Who is in the conversations we are invited to (from a listing).
    pub invited_to: BTreeMap<ConvId, Vec<String>>,
    pub input: InputLine,
    pub recall: Recall,
    /// Enter was pressed on a long input: the next Enter sends it.
    pub confirm_send: bool,
    /// Lines scrolled up from the newest message.
    pub scroll: usize,
    pub connection: ConnectionState,
    /// When the pending reconnect attempt starts.
    pub reconnect_at: Option<Instant>,
    /// The server's last `ERROR`, and when it came.
    pub last_error: Option<(String, Instant)>,
    pub notice: Option<Notice>,
    pub overlay: Option<Overlay>,
    /// The time the screen is drawn for (updated by the event loop).
    pub now: Instant,
    /// The terminal's size (updated by the event loop), for scrolling.
    pub screen: (u16, u16),
    pub notify: Notify,
    /// The server numbers messages and keeps them (`history`).
    pub history: bool,
    bell: bool,
    commands: Vec<Command>,
    /// When the last `READ` was sent.
    read_sent_at: Option<Instant>,
    /// `LIST_CONVERSATIONS` we asked for ourselves (for an invitation):
    /// their answers update the sidebar without opening the list.
    quiet_listings: usize,
}

impl App {
    pub fn new(server: &str, me: &str) -> App {
        App {
            me: me.to_string(),
            online: OnlineUsers::new(),
            conversations: BTreeMap::new(),
            active: None,
            invitations: Vec::new(),
            invited_to: BTreeMap::new(),
            input: InputLine::default(),
            recall: Recall::default(),
            confirm_send: false,
            scroll: 0,
            connection: ConnectionState::Connected {
                addr: server.to_string(),
            },
            reconnect_at: None,
            last_error: None,
            notice: None,
            overlay: None,
            now: Instant::now(),
            screen: (80, 24),
            notify: Notify::default(),
            history: false,
            bell: false,
            commands: Vec::new(),
            read_sent_at: None,
            quiet_listings: 0,
        }
    }

    fn is_me(&self, name: &str) -> bool {
        name.to_lowercase() == self.me.to_lowercase()
    }

    /// Conversations we are in, in id order.
    pub fn joined(&self) -> Vec<ConvId> {
        self.conversations
            .iter()
            .filter(|(_, c)| c.joined)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn connected(&self) -> bool {
        self.connection.is_connected()
    }

    /// How long until the reconnect attempt, as the status bar shows it.
    pub fn reconnect_in(&self) -> Option<Duration> {
        self.reconnect_at
            .map(|at| at.saturating_duration_since(self.now))
    }

    /// The server's error, while it is recent.
    pub fn error(&self) -> Option<&str> {
        self.last_error
            .as_ref()
            .filter(|(_, at)| self.now.saturating_duration_since(*at) < ERROR_SHOWN)
            .map(|(text, _)| text.as_str())
    }

    /// The notice, while it is recent.
    pub fn notice(&self) -> Option<&Notice> {
        self.notice
            .as_ref()
            .filter(|n| self.now.saturating_duration_since(n.at) < NOTICE_SHOWN)
    }

    /// Commands to send besides the returned [`Action`]s.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Whether to ring the terminal bell now.
    pub fn take_bell(&mut self) -> bool {
        std::mem::take(&mut self.bell)
    }

    pub fn on_event(&mut self, event: Event) -> Option<Action> {
        self.on_event_at(event, Local::now().time())
    }

    /// Applies a client event that happened at `at` (local time).
    pub fn on_event_at(&mut self, event: Event, at: NaiveTime) -> Option<Action> {
        match event {
            Event::State(state) => self.on_state(state),
            Event::OnlineUsers { users, .. } => self.online = users,
            Event::Invitation { conv, inviter } => return self.on_invitation(conv, inviter),
            Event::Conversations(list) => self.on_listing(list),
            Event::Users(found) => self.info(format_users(&found)),
            // Conversation 0 is never a real one: a notice from the
            // operator (`natter admin broadcast`), shown like our own.
            Event::Message { conv: 0, text, .. } => self.info(format!("server notice: {text}")),
            Event::Message {
                conv,
                sender,
                text,
                info,
            } => self.on_message(conv, sender, text, info, at),
            Event::Queued { conv, nonce, text } => self.on_queued(conv, nonce, text, at),
            Event::Sent { conv, nonce, .. } => self.unpend(conv, nonce.as_str()),
            Event::Topic { conv, text, setter } => self.on_topic(conv, text, setter, at),
            Event::Missed {
                conv,
                after_seq,
                before_seq,
            } => self.on_missed(conv, after_seq, before_seq),
            Event::History { conv, entries } => self.on_history(conv, entries),
            Event::Unread(list) => self.on_unread(list),
            Event::Capabilities(caps) => self.history = caps.iter().any(|c| c == "history"),
            Event::Members { conv, members } => self.on_members(conv, members, at),
            Event::ServerError(text) => self.on_server_error(text),
            Event::DecodeError { error, .. } => {
                self.last_error =
                    Some((format!("bad data from the server: {error}"), Instant::now()))
            }
            Event::NotSent { command, reason } => {
                if let Command::SendMessage {
                    conv,
                    nonce: Some(nonce),
                    ..
                } = &command
                {
                    self.unpend(*conv, nonce);
                }
                self.problem(format!("{} not sent: {reason}", command.word()))
            }
        }
        self.mark_read();
        None
    }

    fn on_state(&mut self, state: ConnectionState) {
        self.reconnect_at = match &state {
            ConnectionState::Reconnecting { delay, .. } => Some(Instant::now() + *delay),
            _ => None,
        };
        if state.is_connected() {
            // The errors were about the connection that is gone.
            self.last_error = None;
        } else {
            // Nobody is known to be online while we cannot see; the
            // reconnect brings a fresh list.
            self.online.clear();
        }
        self.connection = state;
    }

    fn on_server_error(&mut self, text: String) {
        if let Some(conv) = natter_client::lost_conversation(&text) {
            self.lost(conv);
        }
        self.last_error = Some((text, Instant::now()));
    }

    /// The server no longer has `conv` (or we are not in it): a
    /// conversation we only remember is dropped, not kept as "not joined".
    fn lost(&mut self, conv: ConvId) {
        let Some(conversation) = self.conversations.get(&conv) else {
            return;
        };
        if !conversation.joined {
            return;
        }
        self.conversations.remove(&conv);
        self.invitations.retain(|(c, _)| *c != conv);
        self.info(format!("#{conv} is gone: the server no longer has it"));
        if self.active == Some(conv) {
            self.active = None;
            self.cycle(1);
        }
    }

    fn on_invitation(&mut self, conv: ConvId, inviter: String) -> Option<Action> {
        // An INVITE always makes a new conversation: an id we remember is
        // an old one the server forgot (a restart without a store).
        if let Some(old) = self.conversations.get_mut(&conv)
            && !old.messages.is_empty()
        {
            *old = Conversation::default();
        }
        if self.is_me(&inviter) {
            // Our own /invite: the client library joins it; show it.
            self.conversations.entry(conv).or_default().joined = true;
            self.switch_to(conv);
            return None;
        }
        if !self.invitations.iter().any(|(c, _)| *c == conv) {
            self.invitations.push((conv, inviter.clone()));
        }
        self.info(format!(
            "{inviter} invites you to #{conv}: Ctrl-Y joins, Ctrl-X dismisses"
        ));
        if self.notify == Notify::All {
            self.bell = true;
        }
        // Who is in it: the listing says.
        if self.connected() {
            self.quiet_listings += 1;
            return Some(Action::Send(Command::ListConversations));
        }
        None
    }

    fn on_listing(&mut self, list: Vec<(ConvId, Vec<String>)>) {
        for (conv, members) in &list {
            if self.invitations.iter().any(|(c, _)| c == conv) {
                self.invited_to.insert(*conv, members.clone());
            }
        }
        if self.quiet_listings > 0 {
            self.quiet_listings -= 1;
            return;
        }
        self.overlay = Some(Overlay::Conversations(list));
    }

    fn on_message(
        &mut self,
        conv: ConvId,
        sender: String,
        text: String,
        info: Option<MessageInfo>,
        at: NaiveTime,
    ) {
        let seq = info.as_ref().map(|i| i.seq);
        let at = info.as_ref().map_or(at, |i| local_time(i.ts));
        let from_me = self.is_me(&sender);
        let mention = !from_me && mentions(&text, &self.me);
        let looking = self.active == Some(conv) && self.scroll == 0;
        let lines_before = self.scroll_lines(conv);
        let is_active = self.active == Some(conv);
        let conversation = self.conversations.entry(conv).or_default();
        conversation.joined = true;
        if seq.is_some_and(|s| conversation.messages.iter().any(|m| m.seq == Some(s))) {
            return;
        }
        conversation.push(Line {
            at,
            sender,
            text,
            pending: None,
            seq,
            kind: LineKind::Message,
            mention,
        });
        if from_me {
            // Writing is reading: what came before is seen.
            conversation.marker = None;
        } else if !looking {
            if conversation.marker.is_none() {
                conversation.marker = Some(conversation.messages.len() - 1);
            }
            if !is_active {
                conversation.unread += 1;
                conversation.mentioned |= mention;
            }
        }
        if !from_me {
            self.bell |= match self.notify {
                Notify::All => mention || !is_active,
                Notify::Mentions => mention,
                Notify::Off => false,
            };
        }
        if is_active && self.scroll > 0 {
            // Keep the text being read where it is.
            let added = self.scroll_lines(conv).saturating_sub(lines_before);
            self.scroll += added;
        }
        if self.active.is_none() {
            self.switch_to(conv);
        }
    }

    /// How many screen lines the conversation takes (only while scrolled
    /// up, where it matters).
    fn scroll_lines(&self, conv: ConvId) -> usize {
        if self.active != Some(conv) || self.scroll == 0 {
            return 0;
        }
        self.conversations
            .get(&conv)
            .map_or(0, |c| ui::conversation_lines(self, c).len())
    }

    /// Our message waits for a connection: shown at once, as pending.
    fn on_queued(&mut self, conv: ConvId, nonce: Nonce, text: String, at: NaiveTime) {
        let sender = self.me.clone();
        let conversation = self.conversations.entry(conv).or_default();
        if conversation
            .messages
            .iter()
            .any(|m| m.pending.as_ref() == Some(&nonce))
        {
            // Queued again after another lost connection: shown already.
            return;
        }
        conversation.push(Line {
            at,
            sender,
            text,
            pending: Some(nonce),
            seq: None,
            kind: LineKind::Message,
            mention: false,
        });
    }

    /// A pending message was confirmed (its `MESSAGE` shows it) or given up.
    fn unpend(&mut self, conv: ConvId, nonce: &str) {
        if let Some(conversation) = self.conversations.get_mut(&conv) {
            conversation
                .messages
                .retain(|m| m.pending.as_ref().is_none_or(|p| p.as_str() != nonce));
        }
    }

    fn on_topic(&mut self, conv: ConvId, text: String, setter: String, at: NaiveTime) {
        let conversation = self.conversations.entry(conv).or_default();
        let topic = (!text.is_empty()).then_some(text.clone());
        if conversation.topic == topic {
            // Sent again when we (re-)join: nothing new.
            return;
        }
        conversation.topic = topic;
        let line = if text.is_empty() {
            format!("{setter} cleared the topic")
        } else {
            format!("{setter} named the conversation \"{text}\"")
        };
        conversation.push(Line::event(at, line));
    }

    fn on_members(&mut self, conv: ConvId, members: Vec<String>, at: NaiveTime) {
        let joined = members.iter().any(|m| self.is_me(m));
        if !joined {
            // We left (or were never in it): update only what we show.
            if let Some(conversation) = self.conversations.get_mut(&conv) {
                conversation.members = members;
                conversation.joined = false;
            }
            return;
        }
        let me = self.me.clone();
        let history = self.history && self.connected();
        let conversation = self.conversations.entry(conv).or_default();
        if conversation.members_known {
            let lower = |names: &[String]| -> Vec<String> {
                names.iter().map(|n| n.to_lowercase()).collect()
            };
            let (before, after) = (lower(&conversation.members), lower(&members));
            for name in &members {
                if !before.contains(&name.to_lowercase()) && !name.eq_ignore_ascii_case(&me) {
                    conversation.push(Line::event(at, format!("{name} joined")));
                }
            }
            for name in &conversation.members.clone() {
                if !after.contains(&name.to_lowercase()) {
                    conversation.push(Line::event(at, format!("{name} left")));
                }
            }
        }
        let first = !conversation.members_known;
        conversation.members = members;
        conversation.members_known = true;
        conversation.joined = true;
        // What was said before we came: the newest page.
        if first && history && conversation.messages.iter().all(|m| m.seq.is_none()) {
            conversation.loading = true;
            self.commands.push(Command::History {
                conv,
                before_seq: 0,
                limit: HISTORY_PAGE,
            });
        }
        self.invitations.retain(|(c, _)| *c != conv);
        if self.active.is_none() {
            self.switch_to(conv);
        }
    }

    /// Right after registering: where we are in each conversation.
    fn on_unread(&mut self, list: Vec<Unread>) {
        for entry in list {
            let conversation = self.conversations.entry(entry.conv).or_default();
            conversation.joined = true;
            conversation.read_seq = entry.last_read_seq;
            conversation.read_sent = conversation.read_sent.max(entry.last_read_seq);
            let seen = conversation.newest_seq().unwrap_or(0);
            // Unread on the server and not shown here yet.
            let waiting = entry.last_seq.saturating_sub(entry.last_read_seq.max(seen)) as usize;
            if self.active != Some(entry.conv) {
                conversation.unread = conversation.unread.max(waiting);
            }
        }
    }

    /// A page of older messages (or the newest page, on joining).
    /// Older lines come in above: the bottom-anchored view stays put.
    fn on_history(&mut self, conv: ConvId, entries: Vec<HistoryEntry>) {
        let me = self.me.clone();
        let Some(conversation) = self.conversations.get_mut(&conv) else {
            return;
        };
        // A short page is the last one.
        let full = entries.len() >= HISTORY_PAGE;
        let oldest = entries.iter().map(|e| e.seq).min();
        conversation.loading = false;
        conversation.merge(entries);
        if let Some(after) = conversation.gap_after.take() {
            // A page of the hole: the next one goes further back, until
            // it meets what we had.
            if let Some(oldest) = oldest.filter(|o| full && *o > after + 1) {
                conversation.gap_after = Some(after);
                conversation.loading = true;
                self.commands.push(Command::History {
                    conv,
                    before_seq: oldest,
                    limit: HISTORY_PAGE,
                });
            }
        } else if !full {
            conversation.complete = true;
        }
        for line in conversation.messages.iter_mut() {
            line.mention = !line.sender.eq_ignore_ascii_case(&me) && mentions(&line.text, &me);
        }
        // The first message past the read marker starts the unread part.
        if conversation.marker.is_none() && conversation.read_seq > 0 {
            conversation.marker = conversation
                .messages
                .iter()
                .position(|m| m.seq.is_some_and(|s| s > conversation.read_seq));
        }
    }

    /// The client library could not fetch all that was said in `conv`
    /// while we were away: fetched here, page by page, newest first.
    fn on_missed(&mut self, conv: ConvId, after_seq: u64, before_seq: Option<u64>) {
        let can_fetch = self.history && self.connected();
        let Some(conversation) = self.conversations.get_mut(&conv) else {
            return;
        };
        if !can_fetch || conversation.gap_after.is_some() {
            self.problem(format!(
                "#{conv}: some messages from while you were away could not be fetched"
            ));
            return;
        }
        conversation.gap_after = Some(after_seq);
        conversation.loading = true;
        self.commands.push(Command::History {
            conv,
            before_seq: before_seq.unwrap_or(0),
            limit: HISTORY_PAGE,
        });
        self.info(format!(
            "#{conv}: fetching what was said while you were away"
        ));
    }

    /// Tells the server how far we read the conversation we look at (with
    /// history, while connected and at the bottom).
    fn mark_read(&mut self) {
        if !self.history || !self.connected() || self.scroll > 0 {
            return;
        }
        let Some(conv) = self.active else { return };
        let Some(conversation) = self.conversations.get_mut(&conv) else {
            return;
        };
        let Some(newest) = conversation.newest_seq() else {
            return;
        };
        conversation.read_seq = conversation.read_seq.max(newest);
        if newest <= conversation.read_sent || !conversation.joined {
            return;
        }
        // A busy conversation must not spend the rate limit on READs:
        // one every READ_EVERY at most; the clock tick sends the rest.
        if self
            .read_sent_at
            .is_some_and(|at| self.now.saturating_duration_since(at) < READ_EVERY)
        {
            return;
        }
        conversation.read_sent = newest;
        self.read_sent_at = Some(self.now);
        self.commands.push(Command::Read { conv, seq: newest });
    }

    /// The clock ticked (the event loop sets [`App::now`] first): a read
    /// marker held back by [`READ_EVERY`] goes out now.
    pub fn on_tick(&mut self) {
        self.mark_read();
    }

    fn is_joined(&self, conv: ConvId) -> bool {
        self.conversations.get(&conv).is_some_and(|c| c.joined)
    }

    /// Shows `conv` as joined at once; `MEMBERS` confirms it (and an
    /// `ERROR` says when it failed).
    fn enter(&mut self, conv: ConvId) -> Action {
        self.conversations.entry(conv).or_default().joined = true;
        self.invitations.retain(|(c, _)| *c != conv);
        self.switch_to(conv);
        Action::Send(Command::Join(conv))
    }

    fn switch_to(&mut self, conv: ConvId) {
        if let Some(old) = self.active.and_then(|a| self.conversations.get_mut(&a))
            && self.active != Some(conv)
        {
            // Leaving a conversation we looked at: its news are read.
            old.marker = None;
        }
        self.active = Some(conv);
        self.scroll = 0;
        if let Some(conversation) = self.conversations.get_mut(&conv) {
            conversation.unread = 0;
            conversation.mentioned = false;
        }
        self.mark_read();
    }

    /// Moves to the next (`step` 1) or previous (`step` -1) conversation
    /// we are in.
    pub fn cycle(&mut self, step: isize) {
        let joined = self.joined();
        if joined.is_empty() {
            return;
        }
        let here = self
            .active
            .and_then(|active| joined.iter().position(|c| *c == active));
        let next = match here {
            Some(i) => (i as isize + step).rem_euclid(joined.len() as isize) as usize,
            None => 0,
        };
        self.switch_to(joined[next]);
    }

    fn info(&mut self, text: String) {
        self.notice = Some(Notice {
            text,
            is_problem: false,
            at: Instant::now(),
        });
    }

    fn problem(&mut self, text: String) {
        self.notice = Some(Notice {
            text,
            is_problem: true,
            at: Instant::now(),
        });
    }

    /// Text pasted at once (bracketed paste): it goes into the input as
    /// one piece, line breaks and all, and is sent as one message.
    pub fn on_paste(&mut self, text: &str) {
        self.overlay = None;
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        self.input.insert_str(&text);
        self.recall.edited();
        self.confirm_send = false;
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if self.overlay.take().is_some() {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if !matches!(key.code, KeyCode::Enter) {
            self.confirm_send = false;
        }
        match key.code {
            KeyCode::Char('c') if ctrl => return Some(Action::Quit),
            KeyCode::Char('n') if ctrl => self.cycle(1),
            KeyCode::Char('p') if ctrl => self.cycle(-1),
            KeyCode::Char('y') if ctrl => return self.accept_invitation(),
            KeyCode::Char('x') if ctrl => self.dismiss_invitation(),
            KeyCode::Char('u') if ctrl => self.input = InputLine::default(),
            KeyCode::Char('w') if ctrl => self.input.delete_word(),
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char('j') if ctrl => self.input.insert('\n'),
            KeyCode::Char('g') if ctrl => self.jump_to_unread(),
            KeyCode::Enter if alt => self.input.insert('\n'),
            KeyCode::Tab => self.cycle(1),
            KeyCode::BackTab => self.cycle(-1),
            KeyCode::PageUp => self.scroll_up(PAGE),
            KeyCode::PageDown => self.scroll_down(PAGE),
            KeyCode::Up if key.modifiers.contains(KeyModifiers::SHIFT) => self.scroll_up(1),
            KeyCode::Down if key.modifiers.contains(KeyModifiers::SHIFT) => self.scroll_down(1),
            KeyCode::Up => self.recall_older(),
            KeyCode::Down => self.recall_newer(),
            KeyCode::Enter => return self.submit(),
            KeyCode::Esc => self.input = InputLine::default(),
            _ if ctrl => {}
            code => {
                self.recall.edited();
                self.edit(code)
            }
        }
        self.mark_read();
        None
    }

    fn edit(&mut self, code: KeyCode) {
        let input = &mut self.input;
        match code {
            KeyCode::Char(c) => input.insert(c),
            KeyCode::Backspace => input.backspace(),
            KeyCode::Delete => input.delete(),
            KeyCode::Left => input.left(),
            KeyCode::Right => input.right(),
            KeyCode::Home => input.home(),
            KeyCode::End => input.end(),
            _ => {}
        }
    }

    /// ↑: an earlier input; inside a multi-line input, the line above.
    fn recall_older(&mut self) {
        let (line, column) = self.input.position();
        if line > 0 {
            self.input.home();
            self.input.left();
            self.input.home();
            for _ in 0..column {
                if self.input.position().0 != line - 1 {
                    break;
                }
                self.input.right();
            }
            if self.input.position().0 != line - 1 {
                self.input.left();
            }
            return;
        }
        if let Some(text) = self.recall.older(&self.input.text) {
            self.input = InputLine::with(text);
        }
    }

    fn recall_newer(&mut self) {
        let (line, _) = self.input.position();
        if line + 1 < self.input.lines() {
            self.input.end();
            self.input.right();
            return;
        }
        if let Some(text) = self.recall.newer() {
            self.input = InputLine::with(text);
        }
    }

    /// The messages' height on screen.
    fn view_height(&self) -> usize {
        ui::message_area(self, self.screen).1
    }

    fn scroll_up(&mut self, lines: usize) {
        let Some(conv) = self.active else { return };
        let Some(conversation) = self.conversations.get(&conv) else {
            return;
        };
        let total = ui::conversation_lines(self, conversation).len();
        let height = self.view_height();
        let top = total.saturating_sub(height);
        self.scroll = (self.scroll + lines).min(top);
        if self.scroll == top {
            self.load_older(conv);
        }
    }

    fn scroll_down(&mut self, lines: usize) {
        self.scroll = self.scroll.saturating_sub(lines);
    }

    /// At the top of what we have: ask the server for the page before it.
    fn load_older(&mut self, conv: ConvId) {
        if !self.history || !self.connected() {
            return;
        }
        let Some(conversation) = self.conversations.get_mut(&conv) else {
            return;
        };
        if conversation.loading || !conversation.has_older() || !conversation.joined {
            return;
        }
        let before_seq = conversation.oldest_seq().unwrap_or(0);
        conversation.loading = true;
        self.commands.push(Command::History {
            conv,
            before_seq,
            limit: HISTORY_PAGE,
        });
    }

    /// Ctrl-G: scrolls to the "unread since here" line; when already
    /// there (or there is none), goes to the next conversation with
    /// unread messages (those that name us first) and to its line.
    fn jump_to_unread(&mut self) {
        if let Some(target) = self.marker_scroll()
            && target != self.scroll
        {
            self.scroll = target;
            return;
        }
        let next = self
            .conversations
            .iter()
            .filter(|(id, c)| c.joined && c.unread > 0 && self.active != Some(**id))
            .max_by_key(|(id, c)| (c.mentioned, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        let Some(conv) = next else {
            self.info("nothing unread".into());
            return;
        };
        self.switch_to(conv);
        if let Some(target) = self.marker_scroll() {
            self.scroll = target;
        }
    }

    /// The scroll that puts the active conversation's unread line at the
    /// top of the view.
    fn marker_scroll(&self) -> Option<usize> {
        let conversation = self.conversations.get(&self.active?)?;
        let marker = conversation.marker?;
        let total = ui::conversation_lines(self, conversation).len();
        let at = ui::line_of_message(self, conversation, marker);
        Some(total.saturating_sub(at + self.view_height()))
    }

    fn accept_invitation(&mut self) -> Option<Action> {
        if self.invitations.is_empty() {
            self.problem("no invitation to accept".into());
            return None;
        }
        let (conv, _) = self.invitations[0];
        self.notice = None;
        Some(self.enter(conv))
    }

    fn dismiss_invitation(&mut self) {
        if !self.invitations.is_empty() {
            let (conv, inviter) = self.invitations.remove(0);
            self.info(format!("dismissed {inviter}'s invitation to #{conv}"));
        }
    }

    fn submit(&mut self) -> Option<Action> {
        let lines = self.input.lines();
        if lines > CONFIRM_LINES && !self.confirm_send && !self.input.text.starts_with('/') {
            self.confirm_send = true;
            self.info(format!(
                "send these {lines} lines as one message? Enter sends, Esc clears, any other key edits"
            ));
            return None;
        }
        self.confirm_send = false;
        let line = std::mem::take(&mut self.input).text;
        match input::parse(&line) {
            Ok(input) => {
                self.recall.push(&line);
                self.run(input)
            }
            Err(problem) => {
                self.problem(problem);
                // Keep what was typed so it can be fixed.
                self.input = InputLine::with(line);
                None
            }
        }
    }

    fn run(&mut self, input: Input) -> Option<Action> {
        let command = match input {
            Input::Nothing => return None,
            Input::Quit => return Some(Action::Quit),
            Input::Help => {
                self.overlay = Some(Overlay::Help);
                return None;
            }
            Input::Say(text) => match self.active.filter(|c| self.is_joined(*c)) {
                Some(conv) => {
                    self.scroll = 0;
                    Command::SendMessage {
                        conv,
                        text,
                        nonce: None,
                    }
                }
                None => {
                    self.problem("no conversation: /invite NAME to start one, or /join ID".into());
                    return None;
                }
            },
            Input::Invite(names) => Command::Invite(names),
            Input::Join(conv) => return Some(self.enter(conv)),
            Input::Leave(conv) => {
                let Some(conv) = conv.or(self.active) else {
                    self.problem("no conversation to leave".into());
                    return None;
                };
                self.forget(conv);
                Command::Leave(conv)
            }
            Input::Status(status) => {
                self.info(format!("status set to {status:?}"));
                Command::Status(status)
            }
            Input::Topic(text) => match self.active.filter(|c| self.is_joined(*c)) {
                Some(conv) => Command::Topic { conv, text },
                None => {
                    self.problem("no conversation to name".into());
                    return None;
                }
            },
            Input::List => Command::ListConversations,
            Input::Watch(names) => Command::Watch(names),
            Input::Unwatch(names) => Command::Unwatch(names),
            Input::Who(prefix) => Command::ListUsers {
                prefix,
                limit: WHO_LIMIT,
            },
        };
        Some(Action::Send(command))
    }

    /// Drops a conversation we leave and shows another one.
    fn forget(&mut self, conv: ConvId) {
        self.conversations.remove(&conv);
        if self.active == Some(conv) {
            self.active = None;
            self.cycle(1);
        }
    }
}

/// Whether `text` names `me` as a word (any case): "alice:", "@alice",
/// "thanks Alice!" but not "malice".
pub fn mentions(text: &str, me: &str) -> bool {
    let text = text.to_lowercase();
    let me = me.to_lowercase();
    if me.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-' || c == '.';
    let mut from = 0;
    while let Some(found) = text[from..].find(&me) {
        let start = from + found;
        let end = start + me.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        // A trailing dot ends a sentence rather than a name.
        let after_ok = match after {
            None => true,
            Some('.') => text[end + 1..].chars().next().is_none_or(|c| !is_word(c)),
            Some(c) => !is_word(c),
        };
        if before.is_none_or(|c| !is_word(c)) && after_ok {
            return true;
        }
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// A server timestamp (Unix milliseconds) as local time of day.
fn local_time(ts: i64) -> NaiveTime {
    chrono::DateTime::from_timestamp_millis(ts)
        .map(|utc| utc.with_timezone(&Local).time())
        .unwrap_or_default()
}

/// Most users `/who` lists (the protocol's limit).
const WHO_LIMIT: usize = 100;

/// The answer to `/who`: who is online under the prefix asked for.
fn format_users(found: &[(String, String)]) -> String {
    if found.is_empty() {
        return "nobody online by that name".to_owned();
    }
    let listed: Vec<String> = found
        .iter()
        .map(|(name, status)| format!("{name} ({status})"))
        .collect();
    format!("online: {}", listed.join(", "))
}
