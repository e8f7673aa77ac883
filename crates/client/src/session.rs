//! What the client remembers about its session, with no I/O: who we are,
//! who is online, which conversations we are in.
//!
//! It exists so that a reconnect can restore the session (register with the
//! same name and status, re-join the same conversations) and so that the
//! application always gets the whole online list, whether the server sends
//! full `ONLINE_USERS` snapshots or `PRESENCE` deltas.

use std::collections::BTreeSet;

use natter_proto::{Command, ConvId, ServerMessage};

use crate::event::{Event, OnlineUsers, Unread};

/// The name and status we registered with (and re-register with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub name: String,
    pub status: String,
}

#[derive(Debug, Default)]
pub(crate) struct Session {
    identity: Option<Identity>,
    online: OnlineUsers,
    /// Whether `online` came from a snapshot of this server yet; the first
    /// snapshot is always reported, even an unchanged one.
    have_snapshot: bool,
    memberships: BTreeSet<ConvId>,
    /// Users we watch (by lowercased name, as the server compares them),
    /// to WATCH again after a reconnect.
    watched: BTreeSet<String>,
}

impl Session {
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub fn set_identity(&mut self, name: String, status: String) {
        self.identity = Some(Identity { name, status });
    }

    /// Whether `name` is us (the server compares names case-insensitively).
    pub fn is_me(&self, name: &str) -> bool {
        self.identity
            .as_ref()
            .is_some_and(|identity| identity.name.to_lowercase() == name.to_lowercase())
    }

    /// The conversations to re-join after a reconnect.
    pub fn memberships(&self) -> Vec<ConvId> {
        self.memberships.iter().copied().collect()
    }

    /// The users to WATCH again after a reconnect.
    pub fn watched(&self) -> Vec<String> {
        self.watched.iter().cloned().collect()
    }

    /// The next full snapshot is reported even if it matches what we had
    /// (called on each new connection).
    pub fn expect_snapshot(&mut self) {
        self.have_snapshot = false;
    }

    /// Remembers the effect of a command we send, so that a reconnect can
    /// replay it. Without the `members` capability this is also the only
    /// way to know our memberships.
    pub fn note_sent(&mut self, command: &Command) {
        match command {
            Command::Status(status) => {
                if let Some(identity) = &mut self.identity {
                    identity.status = status.clone();
                }
            }
            Command::Join(conv) => {
                self.memberships.insert(*conv);
            }
            Command::Leave(conv) => {
                self.memberships.remove(conv);
            }
            Command::Watch(names) => {
                self.watched.extend(names.iter().map(|n| n.to_lowercase()));
            }
            Command::Unwatch(names) => {
                for name in names {
                    self.watched.remove(&name.to_lowercase());
                }
            }
            _ => {}
        }
    }

    /// The conversation a message says we created: the `INVITATION` that
    /// answers our own `INVITE`. The contract makes the inviter a member
    /// only once it joins, and a person who invites others means to talk to
    /// them, so the client joins it.
    pub fn created_by_us(&self, message: &ServerMessage) -> Option<ConvId> {
        let ServerMessage::Invitation { conv, inviter } = message else {
            return None;
        };
        let me = &self.identity.as_ref()?.name;
        (inviter.to_lowercase() == me.to_lowercase()).then_some(*conv)
    }

    /// Updates the session from a server message and returns the event the
    /// application should see, if any. `MESSAGE`, `HISTORY` and `CAPS`
    /// belong to the connection task (outbox, timeline, handshake) and
    /// give nothing here.
    pub fn apply(&mut self, message: ServerMessage) -> Option<Event> {
        match message {
            ServerMessage::OnlineUsers(users) => self.replace_online(users.into_iter().collect()),
            ServerMessage::Presence(changes) => self.apply_presence(changes),
            ServerMessage::Invitation { conv, inviter } => {
                Some(Event::Invitation { conv, inviter })
            }
            ServerMessage::Conversations(list) => Some(Event::Conversations(list)),
            ServerMessage::Users(found) => Some(Event::Users(found)),
            ServerMessage::Members { conv, members } => {
                self.note_members(conv, &members);
                Some(Event::Members { conv, members })
            }
            ServerMessage::Error(text) => {
                if let Some(conv) = lost_conversation(&text) {
                    self.memberships.remove(&conv);
                }
                Some(Event::ServerError(text))
            }
            ServerMessage::Unread(list) => Some(self.note_unread(list)),
            ServerMessage::Topic { conv, text, setter } => {
                Some(Event::Topic { conv, text, setter })
            }
            ServerMessage::Message { .. }
            | ServerMessage::History { .. }
            | ServerMessage::Caps(_) => None,
            // Accounts: not asked for by this library yet.
            ServerMessage::SignedUp(_)
            | ServerMessage::Session(_)
            | ServerMessage::PasswordChanged(_) => None,
        }
    }

    /// `UNREAD` lists the conversations the server has us in (after a
    /// server restart we are in them without a `JOIN`): the server's word.
    fn note_unread(&mut self, list: Vec<(ConvId, u64, u64)>) -> Event {
        let unread = list
            .into_iter()
            .map(|(conv, last_seq, last_read_seq)| {
                self.memberships.insert(conv);
                Unread {
                    conv,
                    last_seq,
                    last_read_seq,
                }
            })
            .collect();
        Event::Unread(unread)
    }

    fn replace_online(&mut self, users: OnlineUsers) -> Option<Event> {
        let changes = diff(&self.online, &users);
        let first = !self.have_snapshot;
        self.have_snapshot = true;
        self.online = users;
        (first || !changes.is_empty()).then(|| self.online_event(changes))
    }

    fn apply_presence(&mut self, changes: Vec<(String, Option<String>)>) -> Option<Event> {
        let mut applied = Vec::with_capacity(changes.len());
        for (name, status) in changes {
            let before = match &status {
                Some(status) => self.online.insert(name.clone(), status.clone()),
                None => self.online.remove(&name),
            };
            if before != status {
                applied.push((name, status));
            }
        }
        (!applied.is_empty()).then(|| self.online_event(applied))
    }

    fn online_event(&self, changes: Vec<(String, Option<String>)>) -> Event {
        Event::OnlineUsers {
            users: self.online.clone(),
            changes,
        }
    }

    /// `MEMBERS` tells us whether we are (still) in a conversation: it is
    /// the server's word and wins over what we asked for.
    fn note_members(&mut self, conv: ConvId, members: &[String]) {
        if self.identity.is_none() {
            return;
        }
        if members.iter().any(|member| self.is_me(member)) {
            self.memberships.insert(conv);
        } else {
            self.memberships.remove(&conv);
        }
    }
}

/// The conversation an `ERROR` says we are not in (it is gone, for
/// example after a server restart), so that it is not re-joined again.
pub fn lost_conversation(error_text: &str) -> Option<ConvId> {
    let id = error_text
        .strip_prefix("no conversation ")
        .or_else(|| error_text.strip_prefix("you are not a member of conversation "))?;
    id.trim().parse().ok()
}

/// What changed between two online lists: arrivals and status changes with
/// the new status, departures with `None`. Sorted by name.
fn diff(before: &OnlineUsers, after: &OnlineUsers) -> Vec<(String, Option<String>)> {
    let mut changes: Vec<(String, Option<String>)> = after
        .iter()
        .filter(|(name, status)| before.get(*name) != Some(status))
        .map(|(name, status)| (name.clone(), Some(status.clone())))
        .collect();
    changes.extend(
        before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .map(|name| (name.clone(), None)),
    );
    changes.sort();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect()
    }

    fn online_of(event: Option<Event>) -> (OnlineUsers, Vec<(String, Option<String>)>) {
        match event {
            Some(Event::OnlineUsers { users, changes }) => (users, changes),
            other => panic!("expected an online-users event, got {other:?}"),
        }
    }

    #[test]
    fn presence_deltas_keep_the_full_list() {
        let mut session = Session::default();
        session.apply(ServerMessage::OnlineUsers(users(&[("alice", "online")])));
        let (all, changes) = online_of(session.apply(ServerMessage::Presence(vec![
            ("bob".into(), Some("away".into())),
            ("carol".into(), Some("online".into())),
        ])));
        assert_eq!(all.len(), 3);
        assert_eq!(all["bob"], "away");
        assert_eq!(changes.len(), 2);

        let (all, changes) =
            online_of(session.apply(ServerMessage::Presence(vec![("bob".into(), None)])));
        assert_eq!(all.keys().collect::<Vec<_>>(), ["alice", "carol"]);
        assert_eq!(changes, vec![("bob".to_string(), None)]);
    }

    #[test]
    fn an_unchanged_snapshot_is_not_reported_twice() {
        let mut session = Session::default();
        let snapshot = users(&[("alice", "online")]);
        assert!(
            session
                .apply(ServerMessage::OnlineUsers(snapshot.clone()))
                .is_some()
        );
        assert_eq!(
            session.apply(ServerMessage::OnlineUsers(snapshot.clone())),
            None
        );
        session.expect_snapshot();
        assert!(
            session
                .apply(ServerMessage::OnlineUsers(snapshot))
                .is_some()
        );
    }

    #[test]
    fn a_snapshot_reports_who_left_and_who_changed() {
        let mut session = Session::default();
        session.apply(ServerMessage::OnlineUsers(users(&[
            ("alice", "online"),
            ("bob", "online"),
        ])));
        let (_, changes) = online_of(session.apply(ServerMessage::OnlineUsers(users(&[
            ("alice", "away"),
            ("carol", "online"),
        ]))));
        assert_eq!(
            changes,
            vec![
                ("alice".to_string(), Some("away".to_string())),
                ("bob".to_string(), None),
                ("carol".to_string(), Some("online".to_string())),
            ]
        );
    }

    #[test]
    fn memberships_follow_joins_leaves_and_the_servers_members_lists() {
        let mut session = Session::default();
        session.set_identity("Alice".into(), "online".into());
        session.note_sent(&Command::Join(3));
        session.note_sent(&Command::Join(4));
        session.note_sent(&Command::Leave(3));
        assert_eq!(session.memberships(), vec![4]);

        session.apply(ServerMessage::Members {
            conv: 7,
            members: vec!["alice".into(), "bob".into()],
        });
        session.apply(ServerMessage::Members {
            conv: 4,
            members: vec!["bob".into()],
        });
        assert_eq!(session.memberships(), vec![7]);
    }

    #[test]
    fn a_conversation_the_server_no_longer_has_is_not_re_joined() {
        let mut session = Session::default();
        session.note_sent(&Command::Join(3));
        session.note_sent(&Command::Join(4));
        session.apply(ServerMessage::Error("no conversation 3".into()));
        assert_eq!(session.memberships(), vec![4]);
        session.apply(ServerMessage::Error(
            "you are not a member of conversation 4".into(),
        ));
        assert!(session.memberships().is_empty());
    }

    #[test]
    fn our_own_invitation_is_a_conversation_we_created() {
        let mut session = Session::default();
        let invitation = |inviter: &str| ServerMessage::Invitation {
            conv: 3,
            inviter: inviter.into(),
        };
        assert_eq!(session.created_by_us(&invitation("alice")), None);
        session.set_identity("Alice".into(), "online".into());
        assert_eq!(session.created_by_us(&invitation("alice")), Some(3));
        assert_eq!(session.created_by_us(&invitation("bob")), None);
    }

    #[test]
    fn unread_after_a_server_restart_makes_us_a_member_to_re_join() {
        let mut session = Session::default();
        let event = session.apply(ServerMessage::Unread(vec![(3, 10, 7), (5, 0, 0)]));
        assert_eq!(
            event,
            Some(Event::Unread(vec![
                Unread {
                    conv: 3,
                    last_seq: 10,
                    last_read_seq: 7
                },
                Unread {
                    conv: 5,
                    last_seq: 0,
                    last_read_seq: 0
                },
            ]))
        );
        assert_eq!(session.memberships(), vec![3, 5]);
    }

    #[test]
    fn a_status_change_is_remembered_for_re_registering() {
        let mut session = Session::default();
        session.set_identity("alice".into(), "online".into());
        session.note_sent(&Command::Status("away".into()));
        assert_eq!(session.identity().unwrap().status, "away");
    }
}
