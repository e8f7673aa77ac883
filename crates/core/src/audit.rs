//! An observer of [`Output`]s that checks what clients would see.
//!
//! [`Chat::check_invariants`] looks at the state; [`Audit`] looks at the
//! effects, as a client would: it keeps each connection's view of presence
//! (its last `ONLINE_USERS` with every `PRESENCE` applied) and checks that
//! messages reach exactly the members, in the order they were sent. The
//! property tests and fuzz targets drive a [`Chat`] and feed every batch of
//! outputs through [`Audit::observe`].

use std::collections::{BTreeMap, HashMap, HashSet};

use natter_proto::{ConvId, ServerMessage};

use crate::caps::{PRESENCE_DELTA, PRESENCE_SCOPE};
use crate::state::{Chat, ConnId, Output};

/// What one connection has received so far that matters to the checks.
#[derive(Debug, Default)]
struct ClientView {
    /// Asked for (and got) `presence-delta` or `presence-scope`.
    delta: bool,
    /// Display name → status, as this client believes it.
    presence: Option<BTreeMap<String, String>>,
    /// Per conversation, the text of the last MESSAGE received.
    last_message: HashMap<ConvId, String>,
}

/// Checks outputs against the contract, batch by batch.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Audit {
    views: HashMap<ConnId, ClientView>,
    /// Orders texts when tests send texts that sort in sending order; see
    /// [`Audit::expect_ordered_texts`].
    ordered_texts: bool,
}

impl Audit {
    pub fn new() -> Self {
        Audit::default()
    }

    /// Declares that every message text sorts after the ones sent before it
    /// (e.g. zero-padded counters), so each client's per-conversation
    /// sequence must be increasing: everyone sees the acceptance order.
    pub fn expect_ordered_texts(mut self) -> Self {
        self.ordered_texts = true;
        self
    }

    /// Checks one input's outputs, `chat` being the state after that input.
    pub fn observe(&mut self, chat: &Chat, outputs: &[Output]) -> Result<(), String> {
        let mut presence_seen = HashSet::new();
        // One input accepts at most one message, sent in up to three parts
        // (with and without metadata): their recipients together must be
        // exactly the online members.
        let mut fanout: BTreeMap<ConvId, Vec<ConnId>> = BTreeMap::new();
        for output in outputs {
            match output {
                Output::Close(conn) => {
                    if chat.is_connected(*conn) {
                        return Err(format!("{conn:?} closed but still connected"));
                    }
                    self.views.remove(conn);
                }
                Output::Send { to, message } => {
                    for conn in to.as_slice() {
                        check_recipient(chat, *conn, message)?;
                        if is_presence(message) && !presence_seen.insert(*conn) {
                            return Err(format!("{conn:?} got two presence messages at once"));
                        }
                    }
                    if let ServerMessage::Message { conv, meta, .. } = &**message {
                        let is_resend = meta.as_ref().is_some_and(|m| m.nonce.is_some())
                            && to.as_slice().len() == 1
                            && !fanout.contains_key(conv);
                        if !is_resend {
                            fanout.entry(*conv).or_default().extend(to.as_slice());
                        }
                    }
                    if let ServerMessage::Users(found) = &**message {
                        check_users(chat, found)?;
                    }
                    for conn in to.as_slice() {
                        self.receive(*conn, message)?;
                    }
                }
                Output::Fact(_) => {}
                Output::FetchHistory { conn, .. } => {
                    if chat.user_name(*conn).is_none() {
                        return Err(format!("history fetched for unregistered {conn:?}"));
                    }
                }
            }
        }
        for (conv, to) in fanout {
            self.check_fanout(chat, conv, to)?;
        }
        self.views.retain(|conn, _| chat.is_connected(*conn));
        Ok(())
    }

    /// After a flush: every registered client's view of presence equals the
    /// server's state, restricted to its scope for `presence-scope`
    /// clients.
    pub fn check_presence_views(&self, chat: &Chat) -> Result<(), String> {
        let all: BTreeMap<String, String> = chat.presence().into_iter().collect();
        for conn in chat.user_conns() {
            let scoped: BTreeMap<String, String>;
            let truth = match chat.is_scoped(conn) {
                true => {
                    scoped = chat.presence_of(conn).into_iter().collect();
                    &scoped
                }
                false => &all,
            };
            match self.views.get(&conn).and_then(|v| v.presence.as_ref()) {
                Some(seen) if seen == truth => {}
                seen => return Err(format!("{conn:?} sees {seen:?}, server has {truth:?}")),
            }
        }
        Ok(())
    }

    fn check_fanout(&self, chat: &Chat, conv: ConvId, mut got: Vec<ConnId>) -> Result<(), String> {
        let mut members = chat.member_conns(conv).unwrap_or_default();
        members.sort();
        got.sort();
        if members != got {
            return Err(format!("MESSAGE in {conv} to {got:?}, members {members:?}"));
        }
        Ok(())
    }

    fn receive(&mut self, conn: ConnId, message: &ServerMessage) -> Result<(), String> {
        let view = self.views.entry(conn).or_default();
        match message {
            ServerMessage::Caps(names) => {
                view.delta |= names
                    .iter()
                    .any(|n| n == PRESENCE_DELTA || n == PRESENCE_SCOPE);
            }
            ServerMessage::OnlineUsers(all) => {
                view.presence = Some(all.iter().cloned().collect());
            }
            ServerMessage::Presence(changes) => {
                if !view.delta {
                    return Err(format!("PRESENCE to {conn:?}, which did not ask for it"));
                }
                let Some(seen) = view.presence.as_mut() else {
                    return Err(format!(
                        "PRESENCE to {conn:?} before its first ONLINE_USERS"
                    ));
                };
                for (name, status) in changes {
                    match status {
                        Some(status) => seen.insert(name.clone(), status.clone()),
                        None => seen.remove(name),
                    };
                }
            }
            ServerMessage::Message { conv, text, .. } if self.ordered_texts => {
                if let Some(last) = view.last_message.get(conv)
                    && last >= text
                {
                    return Err(format!("{conn:?} got {text:?} after {last:?} in {conv}"));
                }
                view.last_message.insert(*conv, text.clone());
            }
            _ => {}
        }
        Ok(())
    }
}

/// A `USERS` answer names online users with their status, sorted by key.
fn check_users(chat: &Chat, found: &[(String, String)]) -> Result<(), String> {
    let online: BTreeMap<String, String> = chat.presence().into_iter().collect();
    if let Some((name, _)) = found.iter().find(|(n, s)| online.get(n) != Some(s)) {
        return Err(format!("USERS names {name}, who is not online like that"));
    }
    if !found.is_sorted_by_key(|(n, _)| crate::user_key(n)) {
        return Err(format!("USERS not sorted: {found:?}"));
    }
    Ok(())
}

fn is_presence(message: &ServerMessage) -> bool {
    matches!(
        message,
        ServerMessage::OnlineUsers(_) | ServerMessage::Presence(_)
    )
}

/// Only live connections get messages, and only registered ones get more
/// than `CAPS` and `ERROR`.
fn check_recipient(chat: &Chat, conn: ConnId, message: &ServerMessage) -> Result<(), String> {
    if !chat.is_connected(conn) {
        return Err(format!("{} to {conn:?}, which is gone", message.word()));
    }
    let pre_register = matches!(message, ServerMessage::Caps(_) | ServerMessage::Error(_));
    if !pre_register && chat.user_name(conn).is_none() {
        return Err(format!("{} to unregistered {conn:?}", message.word()));
    }
    Ok(())
}
