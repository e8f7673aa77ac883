//! The terminal client driven by scripted events and keys, drawn on
//! ratatui's `TestBackend`: what a user would see and what would be sent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::NaiveTime;
use natter_client::{Command, ConnectionState, Event, Nonce};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::app::{Action, App};
use super::ui;

fn online(pairs: &[(&str, &str)]) -> Event {
    let users: BTreeMap<String, String> = pairs
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    Event::OnlineUsers {
        users,
        changes: vec![],
    }
}

fn message(conv: u64, sender: &str, text: &str) -> Event {
    Event::Message {
        conv,
        sender: sender.into(),
        text: text.into(),
        info: None,
    }
}

fn members(conv: u64, names: &[&str]) -> Event {
    Event::Members {
        conv,
        members: names.iter().map(|n| n.to_string()).collect(),
    }
}

fn at(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

/// The screen as text, one string per row.
fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| ui::draw(app, frame)).unwrap();
    let buffer = terminal.backend().buffer();
    (0..height)
        .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect())
        .collect()
}

fn shows(rows: &[String], text: &str) -> bool {
    rows.iter().any(|row| row.contains(text))
}

fn assert_shows(rows: &[String], text: &str) {
    assert!(
        shows(rows, text),
        "{text:?} not on screen:\n{}",
        rows.join("\n")
    );
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn type_line(app: &mut App, line: &str) -> Option<Action> {
    for c in line.chars() {
        assert_eq!(app.on_key(key(KeyCode::Char(c))), None);
    }
    app.on_key(key(KeyCode::Enter))
}

/// Alice chats with bob in #3; carol writes twice in #5 and invites her to
/// #4 meanwhile.
fn scripted_session() -> App {
    let mut app = App::new("127.0.0.1:6666", "alice");
    app.on_event(Event::State(ConnectionState::Connected {
        addr: "127.0.0.1:6666".into(),
    }));
    app.on_event(online(&[
        ("alice", "online"),
        ("bob", "away"),
        ("carol", "online"),
    ]));
    let joined = app.on_event(Event::Invitation {
        conv: 3,
        inviter: "alice".into(),
    });
    assert_eq!(joined, None, "the client library joins our own invitations");
    assert_eq!(app.active, Some(3), "and the new conversation is shown");
    app.on_event(members(3, &["alice", "bob"]));
    app.on_event_at(message(3, "bob", "hello alice"), at(12, 34));
    app.on_event_at(message(3, "alice", "hi bob"), at(12, 35));
    app.on_event(Event::Invitation {
        conv: 4,
        inviter: "carol".into(),
    });
    app.on_event(members(5, &["alice", "carol"]));
    app.on_event_at(message(5, "carol", "psst"), at(12, 40));
    app.on_event_at(message(5, "carol", "are you there?"), at(12, 41));
    app.on_event(Event::ServerError("cannot invite dave: not online".into()));
    app
}

#[test]
fn the_screen_shows_users_conversations_invitations_messages_and_state() {
    let app = scripted_session();
    let rows = screen(&app, 110, 30);
    for text in [
        "Online (3)",
        "alice",
        "bob   away",
        "carol online",
        "#3 bob",
        "#5 carol",
        "#4 from carol",
        "^Y join",
        "#3 · bob",
        "12:34 bob    hello alice",
        "12:35 alice  hi bob",
        "connected to 127.0.0.1:6666",
        "error: cannot invite dave: not online",
        "alice → #3",
    ] {
        assert_shows(&rows, text);
    }
    let badge_row = rows.iter().find(|row| row.contains("#5 carol")).unwrap();
    assert!(
        badge_row.contains(" 2 "),
        "unread badge for #5: {badge_row}"
    );
    assert!(!shows(&rows, "psst"), "#5 is not the active conversation");
}

#[test]
fn switching_conversations_shows_their_messages_and_clears_the_badge() {
    let mut app = scripted_session();
    assert_eq!(app.on_key(key(KeyCode::Tab)), None);
    assert_eq!(app.active, Some(5));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "12:40 carol  psst");
    assert_shows(&rows, "12:41 carol  are you there?");
    let row = rows.iter().find(|row| row.contains("#5 carol")).unwrap();
    assert!(!row.contains(" 2 "), "badge cleared: {row}");

    app.on_key(ctrl('p'));
    assert_eq!(app.active, Some(3));
    app.on_key(ctrl('n'));
    assert_eq!(app.active, Some(5));
}

#[test]
fn typed_lines_become_commands_for_the_active_conversation() {
    let mut app = scripted_session();
    assert_eq!(
        type_line(&mut app, "see you at 5"),
        Some(Action::Send(Command::SendMessage {
            conv: 3,
            text: "see you at 5".into(),
            nonce: None,
        }))
    );
    assert_eq!(app.input.text, "", "the input line is cleared");
    assert_eq!(
        type_line(&mut app, "/invite bob carol"),
        Some(Action::Send(Command::Invite(vec![
            "bob".into(),
            "carol".into()
        ])))
    );
    assert_eq!(
        type_line(&mut app, "/status lunch"),
        Some(Action::Send(Command::Status("lunch".into())))
    );
    assert_eq!(
        type_line(&mut app, "/list"),
        Some(Action::Send(Command::ListConversations))
    );
    assert_eq!(
        type_line(&mut app, "/leave"),
        Some(Action::Send(Command::Leave(3)))
    );
    assert_eq!(app.active, Some(5), "leaving shows the next conversation");
    assert_eq!(type_line(&mut app, "/quit"), Some(Action::Quit));
    assert_eq!(app.on_key(ctrl('c')), Some(Action::Quit));
}

#[test]
fn a_mistyped_command_is_explained_and_kept_for_fixing() {
    let mut app = scripted_session();
    assert_eq!(type_line(&mut app, "/jion 4"), None);
    assert_eq!(app.input.text, "/jion 4");
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "unknown command /jion: /help lists them");
}

#[test]
fn one_key_accepts_an_invitation_and_another_dismisses() {
    let mut app = scripted_session();
    app.on_event(Event::Invitation {
        conv: 6,
        inviter: "bob".into(),
    });
    assert_eq!(app.on_key(ctrl('y')), Some(Action::Send(Command::Join(4))));
    assert_eq!(app.active, Some(4));
    app.on_event(members(4, &["alice", "carol"]));
    let rows = screen(&app, 110, 30);
    assert!(
        !shows(&rows, "#4 from carol"),
        "accepted invitations go away"
    );
    assert_shows(&rows, "#6 from bob");

    assert_eq!(app.on_key(ctrl('x')), None);
    let rows = screen(&app, 110, 30);
    assert!(!shows(&rows, "#6 from bob"));
    assert_shows(&rows, "Invitations (0)");
}

#[test]
fn long_messages_wrap_under_the_text_and_page_up_scrolls_back() {
    let mut app = App::new("127.0.0.1:6666", "alice");
    app.on_event(members(1, &["alice", "bob"]));
    let long = "word ".repeat(40);
    app.on_event_at(message(1, "bob", &format!("first {long}")), at(9, 0));
    for i in 0..40 {
        app.on_event_at(message(1, "bob", &format!("line {i}")), at(9, 1));
    }
    let rows = screen(&app, 80, 24);
    assert_shows(&rows, "line 39");
    assert!(
        !shows(&rows, "first word"),
        "old messages are above the view"
    );

    for _ in 0..4 {
        app.on_key(key(KeyCode::PageUp));
    }
    let rows = screen(&app, 80, 24);
    assert_shows(&rows, "09:00 bob  first word");
    assert_shows(&rows, "more lines (PgDn)");
    assert!(!shows(&rows, "line 39"));
    // The wrapped part starts under the text column, not under the time.
    let wrapped = rows
        .iter()
        .position(|row| row.contains("first word"))
        .map(|i| &rows[i + 1])
        .unwrap();
    let column = rows
        .iter()
        .find(|r| r.contains("first word"))
        .unwrap()
        .find("first")
        .unwrap();
    assert_eq!(wrapped.find("word"), Some(column), "{wrapped}");

    for _ in 0..10 {
        app.on_key(key(KeyCode::PageDown));
    }
    assert_shows(&screen(&app, 80, 24), "line 39");
}

#[test]
fn the_status_bar_counts_down_to_the_next_reconnect() {
    let mut app = scripted_session();
    app.on_event(Event::ServerError("server shutting down".into()));
    app.on_event(Event::State(ConnectionState::Reconnecting {
        attempt: 3,
        delay: Duration::from_secs(4),
        reason: "connection refused".into(),
    }));
    app.now = Instant::now();
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "reconnecting in 4 s: connection refused");
    assert_shows(&rows, "error: server shutting down");

    app.now += Duration::from_millis(2500);
    assert_shows(
        &screen(&app, 110, 30),
        "reconnecting in 2 s: connection refused",
    );

    app.on_event(Event::State(ConnectionState::Connected {
        addr: "127.0.0.1:6666".into(),
    }));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "connected to 127.0.0.1:6666");
    assert!(
        !shows(&rows, "server shutting down"),
        "stale errors are cleared"
    );
}

#[test]
fn help_lists_every_command_and_any_key_closes_it() {
    let mut app = scripted_session();
    assert_eq!(type_line(&mut app, "/help"), None);
    let rows = screen(&app, 110, 30);
    for text in [
        "/invite NAME...",
        "/join ID",
        "/leave [ID]",
        "/status TEXT",
        "/list",
        "/quit",
        "Ctrl-Y",
    ] {
        assert_shows(&rows, text);
    }
    app.on_key(key(KeyCode::Char('q')));
    assert!(!shows(&screen(&app, 110, 30), "any key closes this"));
    assert_eq!(app.input.text, "", "the closing key is not typed");
}

#[test]
fn hostile_text_cannot_send_escape_sequences_to_the_terminal() {
    let mut app = scripted_session();
    app.on_event(message(3, "bob", "\u{1b}[2J\u{1b}]0;pwned\u{7}gotcha"));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "gotcha");
    assert!(
        rows.iter()
            .all(|row| !row.contains('\u{1b}') && !row.contains('\u{7}'))
    );
}

#[test]
fn a_tiny_terminal_still_shows_where_to_type_and_the_connection() {
    let app = scripted_session();
    // What must survive shrinking: the input line (its prompt near the
    // bottom) and the status bar saying whether we are connected.
    for (w, h) in [(20, 10), (40, 12)] {
        let rows = screen(&app, w, h);
        let (status, above) = rows.split_last().unwrap();
        assert!(
            status.contains("connected"),
            "{w}x{h}: status bar {status:?}"
        );
        assert_shows(&above[above.len() - 3..], "›");
    }
    // With 40 columns the conversation's latest message still fits.
    assert_shows(&screen(&app, 40, 12), "hi bob");
    // A 1×1 terminal gets one clipped cell instead of a panic.
    assert_eq!(screen(&app, 1, 1).concat().chars().count(), 1);
}

#[test]
fn a_conversation_the_server_lost_is_shown_as_not_joined() {
    let mut app = scripted_session();
    app.on_event(Event::ServerError("no conversation 5".into()));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "#5 not joined");
    assert_shows(&rows, "error: no conversation 5");
}

#[test]
fn text_typed_while_disconnected_shows_as_pending_until_the_server_confirms_it() {
    let mut app = scripted_session();
    app.on_event(Event::State(ConnectionState::Reconnecting {
        attempt: 1,
        delay: Duration::from_secs(2),
        reason: "connection refused".into(),
    }));
    // Handed to the client, which keeps it in its outbox.
    let action = type_line(&mut app, "still there?");
    assert!(
        matches!(
            &action,
            Some(Action::Send(Command::SendMessage { conv: 3, text, .. })) if text == "still there?"
        ),
        "{action:?}"
    );
    let nonce = Nonce::new("n-1").unwrap();
    let queued = Event::Queued {
        conv: 3,
        nonce: nonce.clone(),
        text: "still there?".into(),
    };
    app.on_event_at(queued.clone(), at(12, 50));
    app.on_event_at(queued, at(12, 52));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "--:-- alice  still there?");
    assert_eq!(
        rows.iter()
            .filter(|row| row.contains("still there?"))
            .count(),
        1,
        "queued again after another lost connection: shown once"
    );

    app.on_event(Event::Sent {
        conv: 3,
        nonce,
        seq: Some(3),
    });
    app.on_event_at(message(3, "alice", "still there?"), at(12, 55));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "12:55 alice  still there?");
    assert!(!shows(&rows, "--:--"), "{}", rows.join("\n"));
}

#[test]
fn a_pending_message_the_server_refused_is_taken_back_and_explained() {
    let mut app = scripted_session();
    let nonce = Nonce::new("n-2").unwrap();
    app.on_event(Event::Queued {
        conv: 3,
        nonce: nonce.clone(),
        text: "too late".into(),
    });
    app.on_event(Event::NotSent {
        command: Command::SendMessage {
            conv: 3,
            text: "too late".into(),
            nonce: Some(nonce.to_string()),
        },
        reason: "you are not a member of conversation 3".into(),
    });
    let rows = screen(&app, 110, 30);
    assert!(!shows(&rows, "too late"), "{}", rows.join("\n"));
    assert_shows(&rows, "SEND_MESSAGE not sent: you are not a member");
}

/// An operator's broadcast (a MESSAGE in conversation 0 from `*server*`)
/// is shown as a notice, not as a conversation one could write to.
#[test]
fn an_operator_notice_is_shown_as_a_notice_not_a_conversation() {
    let mut app = scripted_session();
    app.on_event(message(0, "*server*", "maintenance at 22:00"));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "server notice: maintenance at 22:00");
    assert!(!shows(&rows, "#0"), "no conversation #0: {rows:#?}");
    assert_eq!(app.active, Some(3), "the open conversation stays open");
}
