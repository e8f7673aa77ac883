//! The terminal client's state and how events and keys change it.
//!
//! Nothing here touches the terminal or the network: [`App::on_event`] and
//! [`App::on_key`] update the state and return the [`Action`] (a command
//! to send, or quitting) for the event loop to carry out, so the whole
//! client can be driven and checked in tests.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{Local, NaiveTime};
use natter_client::{Command, ConnectionState, ConvId, Event, Nonce, OnlineUsers};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::input::{self, Input};

/// Messages kept per conversation; older ones scroll away for good.
pub const HISTORY: usize = 2000;
/// Lines moved by one PgUp / PgDn.
pub const PAGE: usize = 10;

/// What the event loop should do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Command),
    Quit,
}

/// One chat message as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: NaiveTime,
    pub sender: String,
    pub text: String,
    /// Ours, waiting in the client's outbox for a connection; shown as
    /// pending until the server confirms it (and its `MESSAGE` replaces it).
    pub pending: Option<Nonce>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    pub members: Vec<String>,
    pub messages: VecDeque<Line>,
    pub unread: usize,
    /// We are a member (as opposed to a conversation seen in `/list`).
    pub joined: bool,
}

/// A notice for the user, kept until the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub is_problem: bool,
}

/// The input line: text and a cursor (in characters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputLine {
    pub text: String,
    pub cursor: usize,
}

#[derive(Debug, Clone)]
pub struct App {
    pub me: String,
    pub online: OnlineUsers,
    pub conversations: BTreeMap<ConvId, Conversation>,
    pub active: Option<ConvId>,
    /// Pending invitations, oldest first: (conversation, inviter).
    pub invitations: Vec<(ConvId, String)>,
    pub input: InputLine,
    /// Lines scrolled up from the newest message.
    pub scroll: usize,
    pub connection: ConnectionState,
    /// When the pending reconnect attempt starts.
    pub reconnect_at: Option<Instant>,
    pub last_error: Option<String>,
    pub notice: Option<Notice>,
    pub show_help: bool,
    /// The time the screen is drawn for (updated by the event loop).
    pub now: Instant,
}

impl App {
    pub fn new(server: &str, me: &str) -> App {
        App {
            me: me.to_string(),
            online: OnlineUsers::new(),
            conversations: BTreeMap::new(),
            active: None,
            invitations: Vec::new(),
            input: InputLine::default(),
            scroll: 0,
            connection: ConnectionState::Connected {
                addr: server.to_string(),
            },
            reconnect_at: None,
            last_error: None,
            notice: None,
            show_help: false,
            now: Instant::now(),
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

    /// How long until the reconnect attempt, as the status bar shows it.
    pub fn reconnect_in(&self) -> Option<Duration> {
        self.reconnect_at
            .map(|at| at.saturating_duration_since(self.now))
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
                conv, sender, text, ..
            } => self.on_message(conv, sender, text, at),
            Event::Queued { conv, nonce, text } => self.on_queued(conv, nonce, text, at),
            Event::Sent { conv, nonce, .. } => self.unpend(conv, nonce.as_str()),
            Event::Topic { conv, text, setter } => {
                self.info(format!("#{conv} is now \"{text}\" (set by {setter})"))
            }
            Event::Missed { conv, .. } => self.problem(format!(
                "#{conv}: some messages from while you were away could not be fetched"
            )),
            Event::History { .. } | Event::Unread(_) | Event::Capabilities(_) => {}
            Event::Members { conv, members } => self.on_members(conv, members),
            Event::ServerError(text) => {
                let lost = natter_client::lost_conversation(&text);
                if let Some(conversation) = lost.and_then(|c| self.conversations.get_mut(&c)) {
                    conversation.joined = false;
                }
                self.last_error = Some(text);
            }
            Event::DecodeError { error, .. } => {
                self.last_error = Some(format!("bad data from the server: {error}"))
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
        None
    }

    fn on_state(&mut self, state: ConnectionState) {
        self.reconnect_at = match &state {
            ConnectionState::Reconnecting { delay, .. } => Some(Instant::now() + *delay),
            _ => None,
        };
        if let ConnectionState::Connected { .. } = state {
            // The errors were about the connection that is gone.
            self.last_error = None;
        }
        self.connection = state;
    }

    fn on_invitation(&mut self, conv: ConvId, inviter: String) -> Option<Action> {
        if self.is_me(&inviter) {
            // Our own /invite: the client library joins it; show it.
            self.conversations.entry(conv).or_default().joined = true;
            self.switch_to(conv);
            return None;
        }
        if !self.invitations.iter().any(|(c, _)| *c == conv) {
            self.invitations.push((conv, inviter));
        }
        None
    }

    fn on_listing(&mut self, list: Vec<(ConvId, Vec<String>)>) {
        self.conversations.retain(|_, c| c.joined);
        let count = list.len();
        for (conv, members) in list {
            self.conversations.entry(conv).or_default().members = members;
        }
        self.info(format!("{count} conversation(s) on the server"));
    }

    fn on_message(&mut self, conv: ConvId, sender: String, text: String, at: NaiveTime) {
        let is_active = self.active == Some(conv);
        let conversation = self.conversations.entry(conv).or_default();
        conversation.joined = true;
        if conversation.messages.len() == HISTORY {
            conversation.messages.pop_front();
        }
        conversation.messages.push_back(Line {
            at,
            sender,
            text,
            pending: None,
        });
        if !is_active {
            conversation.unread += 1;
        }
        if self.active.is_none() {
            self.switch_to(conv);
        }
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
        if conversation.messages.len() == HISTORY {
            conversation.messages.pop_front();
        }
        conversation.messages.push_back(Line {
            at,
            sender,
            text,
            pending: Some(nonce),
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

    fn on_members(&mut self, conv: ConvId, members: Vec<String>) {
        let joined = members.iter().any(|m| self.is_me(m));
        if !joined {
            // We left (or were never in it): update only what we show.
            if let Some(conversation) = self.conversations.get_mut(&conv) {
                conversation.members = members;
                conversation.joined = false;
            }
            return;
        }
        let conversation = self.conversations.entry(conv).or_default();
        conversation.members = members;
        conversation.joined = true;
        self.invitations.retain(|(c, _)| *c != conv);
        if self.active.is_none() {
            self.switch_to(conv);
        }
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
        self.active = Some(conv);
        self.scroll = 0;
        if let Some(conversation) = self.conversations.get_mut(&conv) {
            conversation.unread = 0;
        }
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
        });
    }

    fn problem(&mut self, text: String) {
        self.notice = Some(Notice {
            text,
            is_problem: true,
        });
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if self.show_help {
            self.show_help = false;
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => return Some(Action::Quit),
            KeyCode::Char('n') if ctrl => self.cycle(1),
            KeyCode::Char('p') if ctrl => self.cycle(-1),
            KeyCode::Char('y') if ctrl => return self.accept_invitation(),
            KeyCode::Char('x') if ctrl => self.dismiss_invitation(),
            KeyCode::Char('u') if ctrl => self.input = InputLine::default(),
            KeyCode::Tab => self.cycle(1),
            KeyCode::BackTab => self.cycle(-1),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_add(PAGE),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(PAGE),
            KeyCode::Up => self.scroll = self.scroll.saturating_add(1),
            KeyCode::Down => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Enter => return self.submit(),
            KeyCode::Esc => self.input = InputLine::default(),
            _ if ctrl => {}
            code => self.edit(code),
        }
        None
    }

    fn edit(&mut self, code: KeyCode) {
        let input = &mut self.input;
        let len = input.text.chars().count();
        match code {
            KeyCode::Char(c) => {
                input.text.insert(byte_at(&input.text, input.cursor), c);
                input.cursor += 1;
            }
            KeyCode::Backspace if input.cursor > 0 => {
                input.cursor -= 1;
                input.text.remove(byte_at(&input.text, input.cursor));
            }
            KeyCode::Delete if input.cursor < len => {
                input.text.remove(byte_at(&input.text, input.cursor));
            }
            KeyCode::Left => input.cursor = input.cursor.saturating_sub(1),
            KeyCode::Right => input.cursor = (input.cursor + 1).min(len),
            KeyCode::Home => input.cursor = 0,
            KeyCode::End => input.cursor = len,
            _ => {}
        }
    }

    fn accept_invitation(&mut self) -> Option<Action> {
        if self.invitations.is_empty() {
            self.problem("no invitation to accept".into());
            return None;
        }
        let (conv, _) = self.invitations[0];
        Some(self.enter(conv))
    }

    fn dismiss_invitation(&mut self) {
        if !self.invitations.is_empty() {
            let (conv, inviter) = self.invitations.remove(0);
            self.info(format!("dismissed {inviter}'s invitation to #{conv}"));
        }
    }

    fn submit(&mut self) -> Option<Action> {
        let line = std::mem::take(&mut self.input).text;
        match input::parse(&line) {
            Ok(input) => self.run(input),
            Err(problem) => {
                self.problem(problem);
                // Keep what was typed so it can be fixed.
                self.input.cursor = line.chars().count();
                self.input.text = line;
                None
            }
        }
    }

    fn run(&mut self, input: Input) -> Option<Action> {
        let command = match input {
            Input::Nothing => return None,
            Input::Quit => return Some(Action::Quit),
            Input::Help => {
                self.show_help = true;
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

/// The byte offset of character `index` in `text`.
fn byte_at(text: &str, index: usize) -> usize {
    text.char_indices()
        .nth(index)
        .map_or(text.len(), |(at, _)| at)
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
