//! The terminal client driven by scripted events and keys, drawn on
//! ratatui's `TestBackend`: what a user would see and what would be sent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::NaiveTime;
use natter_client::{Command, ConnectionState, Event, Nonce};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
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
    let buffer = draw(app, width, height);
    (0..height)
        .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect())
        .collect()
}

/// The screen's cells, styles and all.
fn draw(app: &App, width: u16, height: u16) -> Buffer {
    let mut app = app.clone();
    app.screen = (width, height);
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| ui::draw(&app, frame)).unwrap();
    terminal.backend().buffer().clone()
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
    let asked = app.on_event(Event::Invitation {
        conv: 4,
        inviter: "carol".into(),
    });
    assert_eq!(asked, Some(Action::Send(Command::ListConversations)));
    app.on_event(Event::Conversations(vec![
        (3, vec!["alice".into(), "bob".into()]),
        (4, vec!["carol".into()]),
    ]));
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
    // All of it on an 80×24 screen.
    let rows = screen(&app, 80, 24);
    for text in [
        "/invite NAME...",
        "/quit",
        "Tab / Shift-Tab",
        "Ctrl-C",
        "any key closes this",
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
fn a_conversation_the_server_lost_goes_away_instead_of_staying_not_joined() {
    let mut app = scripted_session();
    app.on_event(Event::ServerError("no conversation 5".into()));
    let rows = screen(&app, 110, 30);
    assert!(!shows(&rows, "#5 carol"), "{}", rows.join("\n"));
    assert!(!shows(&rows, "not joined"));
    assert_shows(&rows, "#5 is gone: the server no longer has it");
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

fn connected() -> Event {
    Event::State(ConnectionState::Connected {
        addr: "127.0.0.1:6666".into(),
    })
}

fn reconnecting() -> Event {
    Event::State(ConnectionState::Reconnecting {
        attempt: 1,
        delay: Duration::from_secs(2),
        reason: "connection refused".into(),
    })
}

fn alt_enter() -> KeyEvent {
    KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)
}

#[test]
fn a_new_conversation_under_an_old_id_starts_empty() {
    // A server without a store forgets #3 when it restarts and hands the
    // id out again: what was said in the old #3 is not the new one's.
    let mut app = scripted_session();
    app.on_event(Event::ServerError("no conversation 3".into()));
    app.on_event(Event::Invitation {
        conv: 3,
        inviter: "carol".into(),
    });
    app.on_key(ctrl('x'));
    assert_eq!(app.on_key(ctrl('y')), Some(Action::Send(Command::Join(3))));
    app.on_event(members(3, &["alice", "carol"]));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "#3 · carol");
    assert!(!shows(&rows, "hello alice"), "{}", rows.join("\n"));
    assert_shows(&rows, "No messages in #3 yet");

    // Also when no error said the old one was gone.
    let mut app = scripted_session();
    app.on_event(Event::Invitation {
        conv: 3,
        inviter: "carol".into(),
    });
    app.on_event(members(3, &["alice", "carol"]));
    let rows = screen(&app, 110, 30);
    assert!(!shows(&rows, "hello alice"), "{}", rows.join("\n"));
}

#[test]
fn old_errors_leave_the_status_bar_while_connected() {
    let mut app = scripted_session();
    app.now = Instant::now();
    assert_shows(&screen(&app, 110, 30), "error: cannot invite dave");
    app.now += Duration::from_secs(11);
    let rows = screen(&app, 110, 30);
    assert!(!shows(&rows, "error:"), "{}", rows.join("\n"));
    assert_shows(&rows, "connected to 127.0.0.1:6666");

    // Nor do notices stay for good.
    assert_shows(&rows, "carol invites you to #4");
    app.now += Duration::from_secs(30);
    assert!(!shows(&screen(&app, 110, 30), "carol invites you"));

    // The shutdown notice neither: the countdown goes on without it.
    app.on_event(Event::ServerError("server shutting down".into()));
    app.on_event(reconnecting());
    app.now = Instant::now();
    assert_shows(&screen(&app, 110, 30), "server shutting down");
    app.now += Duration::from_secs(11);
    let rows = screen(&app, 110, 30);
    assert!(!shows(&rows, "shutting down"), "{}", rows.join("\n"));
}

#[test]
fn a_multi_line_paste_is_one_message_sent_after_a_confirmation() {
    let mut app = scripted_session();
    app.on_paste("fn main() {\r\n    println!(\"hi\");\r\n}\r\n// end");
    assert_eq!(app.input.lines(), 4);
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "fn main() {");
    assert_shows(&rows, "4 lines");
    // The first Enter asks, the second sends all of it as one message.
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
    assert_shows(
        &screen(&app, 110, 30),
        "send these 4 lines as one message? Enter sends",
    );
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::Send(Command::SendMessage {
            conv: 3,
            text: "fn main() {\n    println!(\"hi\");\n}\n// end".into(),
            nonce: None,
        }))
    );
    assert_eq!(app.input.text, "");

    // A short paste goes at once; Esc at the question keeps nothing.
    app.on_paste("two\nlines");
    assert!(matches!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::Send(Command::SendMessage { text, .. })) if text == "two\nlines"
    ));
    app.on_paste("a\nb\nc\nd\ne");
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.input.text, "");
}

#[test]
fn alt_enter_composes_a_multi_line_message() {
    let mut app = scripted_session();
    for c in "first".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(alt_enter());
    app.on_key(ctrl('j'));
    for c in "third".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "› first");
    assert_shows(&rows, "  third");
    assert!(matches!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::Send(Command::SendMessage { text, .. })) if text == "first\n\nthird"
    ));
}

#[test]
fn up_and_down_recall_inputs_and_ctrl_w_home_end_edit() {
    let mut app = scripted_session();
    type_line(&mut app, "hello");
    type_line(&mut app, "/status away");
    for c in "draft".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.input.text, "/status away");
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.input.text, "hello");
    app.on_key(key(KeyCode::Down));
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.input.text, "draft", "back to what was being typed");

    app.on_key(key(KeyCode::Char(' ')));
    for c in "two words".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(ctrl('w'));
    assert_eq!(app.input.text, "draft two ");
    app.on_key(key(KeyCode::Home));
    app.on_key(key(KeyCode::Char('>')));
    app.on_key(key(KeyCode::End));
    app.on_key(key(KeyCode::Char('!')));
    assert_eq!(app.input.text, ">draft two !");
    app.on_key(ctrl('a'));
    app.on_key(key(KeyCode::Delete));
    app.on_key(ctrl('e'));
    app.on_key(key(KeyCode::Backspace));
    assert_eq!(app.input.text, "draft two ");
    // ↑ no longer scrolls the messages; Shift-↑ does.
    assert_eq!(app.scroll, 0);
    for i in 0..30 {
        app.on_event(message(3, "bob", &format!("filler {i}")));
    }
    app.screen = (110, 30);
    app.on_key(KeyEvent::new(KeyCode::Up, KeyModifiers::SHIFT));
    assert_eq!(app.scroll, 1);
    app.on_key(KeyEvent::new(KeyCode::Down, KeyModifiers::SHIFT));
    assert_eq!(app.scroll, 0);
}

#[test]
fn a_scrolled_up_view_stays_put_when_messages_arrive() {
    let mut app = App::new("127.0.0.1:6666", "alice");
    app.screen = (80, 24);
    app.on_event(members(1, &["alice", "bob"]));
    for i in 0..60 {
        app.on_event_at(message(1, "bob", &format!("line {i}")), at(9, 1));
    }
    app.on_key(key(KeyCode::PageUp));
    app.on_key(key(KeyCode::PageUp));
    let before = screen(&app, 80, 24);
    assert_shows(&before, "line 30");
    let long = "and this one wraps over several lines ".repeat(5);
    app.on_event_at(message(1, "bob", &long), at(9, 2));
    app.on_event_at(message(1, "bob", "line 61"), at(9, 2));
    let after = screen(&app, 80, 24);
    let chat = |rows: &[String]| -> Vec<String> {
        rows[1..18]
            .iter()
            .map(|r| r.chars().skip(27).collect())
            .collect()
    };
    assert_eq!(
        chat(&before)
            .iter()
            .filter(|r| r.contains("line"))
            .collect::<Vec<_>>(),
        chat(&after)
            .iter()
            .filter(|r| r.contains("line"))
            .collect::<Vec<_>>(),
        "the lines being read moved:\n{}",
        after.join("\n")
    );
    // Down at the bottom shows the new ones.
    for _ in 0..10 {
        app.on_key(key(KeyCode::PageDown));
    }
    assert_shows(&screen(&app, 80, 24), "line 61");
}

/// The style of the first cell showing `text`.
fn style_of(buffer: &Buffer, text: &str) -> ratatui::style::Style {
    let area = buffer.area;
    for y in 0..area.height {
        let row: String = (0..area.width).map(|x| buffer[(x, y)].symbol()).collect();
        if let Some(byte) = row.find(text) {
            let column = row[..byte].chars().count() as u16;
            return buffer[(column, y)].style();
        }
    }
    panic!("{text:?} not on screen");
}

#[test]
fn mentions_and_other_conversations_ring_the_bell_and_stand_out() {
    let mut app = scripted_session();
    app.take_bell();
    app.on_event(message(3, "bob", "nothing special"));
    assert!(
        !app.take_bell(),
        "the conversation being read does not ring"
    );
    app.on_event(message(3, "bob", "Alice: lunch?"));
    assert!(app.take_bell(), "a mention rings");
    let buffer = draw(&app, 110, 30);
    assert_eq!(
        style_of(&buffer, "Alice: lunch?").bg,
        Some(ratatui::style::Color::LightYellow),
        "a mention is highlighted"
    );
    assert_ne!(
        style_of(&buffer, "nothing special").bg,
        Some(ratatui::style::Color::LightYellow)
    );
    app.on_event(message(5, "carol", "over here"));
    assert!(app.take_bell(), "a message elsewhere rings");
    app.on_event(message(5, "carol", "@alice look"));
    let rows = screen(&app, 110, 30);
    let row = rows.iter().find(|r| r.contains("#5 carol")).unwrap();
    assert!(row.contains("@ 4 "), "a mention's badge: {row}");
    assert!(!mentions_in("malice"), "a name inside a word is no mention");

    app.notify = super::app::Notify::Mentions;
    app.take_bell();
    app.on_event(message(5, "carol", "elsewhere again"));
    assert!(!app.take_bell());
    app.on_event(message(5, "carol", "alice?"));
    assert!(app.take_bell());
    app.notify = super::app::Notify::Off;
    app.on_event(message(5, "carol", "alice!"));
    assert!(!app.take_bell());
    app.on_event(message(5, "alice", "alice here"));
    assert!(!app.take_bell(), "our own messages never ring");
}

fn mentions_in(text: &str) -> bool {
    super::app::mentions(text, "alice")
}

#[test]
fn topics_name_conversations_and_two_with_the_same_person_differ() {
    let mut app = scripted_session();
    app.on_event(members(6, &["alice", "bob"]));
    app.on_event_at(message(6, "bob", "the trip"), at(13, 0));
    let rows = screen(&app, 110, 30);
    let first = rows.iter().find(|r| r.contains("#3 bob")).unwrap();
    let second = rows.iter().find(|r| r.contains("#6 bob")).unwrap();
    assert!(first.contains("“hi bob”"), "{first}");
    assert!(second.contains("“the trip”"), "{second}");

    assert_eq!(
        type_line(&mut app, "/topic friday lunch"),
        Some(Action::Send(Command::Topic {
            conv: 3,
            text: "friday lunch".into()
        }))
    );
    app.on_event_at(
        Event::Topic {
            conv: 3,
            text: "friday lunch".into(),
            setter: "alice".into(),
        },
        at(13, 1),
    );
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "#3 friday lunch");
    assert_shows(&rows, "#3 · friday lunch · bob");
    assert_shows(
        &rows,
        "13:01 * alice named the conversation \"friday lunch\"",
    );
    // Sent again on every (re-)join: one line only.
    app.on_event(Event::Topic {
        conv: 3,
        text: "friday lunch".into(),
        setter: "alice".into(),
    });
    let rows = screen(&app, 110, 30);
    assert_eq!(rows.iter().filter(|r| r.contains("named the")).count(), 1);
}

#[test]
fn an_invitation_says_which_conversation_and_who_is_in_it() {
    let mut app = scripted_session();
    let asked = app.on_event(Event::Invitation {
        conv: 8,
        inviter: "dave".into(),
    });
    assert_eq!(asked, Some(Action::Send(Command::ListConversations)));
    assert!(app.take_bell());
    app.on_event(Event::Conversations(vec![
        (3, vec!["alice".into(), "bob".into()]),
        (8, vec!["dave".into(), "erin".into()]),
    ]));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "#8 from dave, with erin");
    assert_shows(&rows, "dave invites you to #8: Ctrl-Y joins");
    assert!(
        !shows(&rows, "Conversations on the server"),
        "a quiet listing"
    );
}

#[test]
fn joins_and_leaves_show_as_lines() {
    let mut app = scripted_session();
    app.on_event_at(members(3, &["alice", "bob", "carol"]), at(14, 0));
    app.on_event_at(members(3, &["alice", "carol"]), at(14, 5));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "14:00 * carol joined");
    assert_shows(&rows, "14:05 * bob left");
    assert_shows(&rows, "#3 · carol");
}

#[test]
fn list_shows_each_conversation_its_members_and_how_to_join() {
    let mut app = scripted_session();
    assert_eq!(
        type_line(&mut app, "/list"),
        Some(Action::Send(Command::ListConversations))
    );
    app.on_event(Event::Conversations(vec![
        (3, vec!["alice".into(), "bob".into()]),
        (7, vec!["dave".into()]),
        (9, vec![]),
    ]));
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "Conversations on the server");
    assert_shows(&rows, "#3   alice, bob  (joined)");
    assert_shows(&rows, "#7   dave  /join 7");
    assert_shows(&rows, "#9   nobody yet  /join 9");
    app.on_key(key(KeyCode::Char('q')));
    assert!(!shows(
        &screen(&app, 110, 30),
        "Conversations on the server"
    ));
}

#[test]
fn the_online_count_matches_the_list_and_nobody_is_online_while_disconnected() {
    let mut app = scripted_session();
    let rows = screen(&app, 110, 30);
    let dots = rows.iter().filter(|r| r.starts_with("│●")).count();
    assert_shows(&rows, &format!("Online ({dots})"));
    assert_eq!(dots, 3);

    app.on_event(reconnecting());
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "not connected");
    assert!(
        !rows.iter().any(|r| r.starts_with("│●")),
        "{}",
        rows.join("\n")
    );
    assert!(!shows(&rows, "bob   away"));
}

#[test]
fn a_long_status_can_be_read_in_full() {
    let mut app = scripted_session();
    app.on_event(online(&[
        ("alice", "online"),
        ("bob", "in a meeting until three, then at the dentist"),
    ]));
    let rows = screen(&app, 110, 30);
    let online: String = rows[1..8]
        .iter()
        .map(|r| r.chars().skip(1).take(30).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<&str> = online.split_whitespace().collect();
    assert!(
        words
            .join(" ")
            .contains("in a meeting until three, then at the dentist"),
        "{}",
        rows.join("\n")
    );
}

#[test]
fn skin_tone_emoji_keep_their_tone() {
    let mut app = scripted_session();
    app.on_event(message(3, "bob", "great 👍🏽 see you"));
    let buffer = draw(&app, 110, 30);
    let cells: Vec<&str> = buffer.content().iter().map(|c| c.symbol()).collect();
    assert!(cells.contains(&"👍🏽"), "the emoji and its tone share a cell");
    assert_shows(&screen(&app, 110, 30), "see you");
}

#[test]
fn everything_fits_at_80_by_24() {
    let app = scripted_session();
    let rows = screen(&app, 80, 24);
    for text in [
        "Online (3)",
        "carol online",
        "#3 bob",
        "#5 carol",
        "#4 from carol",
        "12:34 bob    hello alice",
        "alice → #3",
        "connected to 127.0.0.1:6666",
    ] {
        assert_shows(&rows, text);
    }
}

fn entry(seq: u64, sender: &str, text: &str) -> natter_client::HistoryEntry {
    natter_client::HistoryEntry {
        seq,
        ts: 1_764_601_200_000 + seq as i64 * 1000,
        sender: sender.into(),
        text: text.into(),
    }
}

fn with_history() -> App {
    let mut app = App::new("127.0.0.1:6666", "alice");
    app.screen = (110, 30);
    app.on_event(Event::Capabilities(vec!["history".into()]));
    app.on_event(connected());
    app
}

#[test]
fn scrolling_to_the_top_loads_older_messages() {
    let mut app = with_history();
    app.on_event(members(3, &["alice", "bob"]));
    assert_eq!(
        app.take_commands(),
        vec![Command::History {
            conv: 3,
            before_seq: 0,
            limit: 50
        }],
        "joining fetches the newest page"
    );
    app.on_event(Event::History {
        conv: 3,
        entries: (51..=100)
            .map(|s| entry(s, "bob", &format!("message {s}")))
            .collect(),
    });
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "message 100");
    assert_eq!(
        app.take_commands(),
        vec![Command::Read { conv: 3, seq: 100 }],
        "what is on screen is read"
    );
    let mut asked = false;
    for _ in 0..20 {
        app.on_key(key(KeyCode::PageUp));
        if !app.take_commands().is_empty() {
            asked = true;
            break;
        }
    }
    assert!(
        asked,
        "the top was reached without asking for older messages"
    );
    assert_shows(&screen(&app, 110, 30), "loading older messages");
    app.on_key(key(KeyCode::PageUp));
    assert_eq!(app.take_commands(), vec![], "one page at a time");
    app.conversations.get_mut(&3).unwrap().loading = false;
    app.on_key(key(KeyCode::PageUp));
    assert_eq!(
        app.take_commands(),
        vec![Command::History {
            conv: 3,
            before_seq: 51,
            limit: 50
        }]
    );
    app.on_event(Event::History {
        conv: 3,
        entries: (1..=50)
            .map(|s| entry(s, "bob", &format!("message {s}")))
            .collect(),
    });
    for _ in 0..20 {
        app.on_key(key(KeyCode::PageUp));
    }
    let rows = screen(&app, 110, 30);
    assert_shows(&rows, "message 1 ");
    assert!(!shows(&rows, "older messages"), "seq 1 is the first");
    assert_eq!(app.take_commands(), vec![]);
}

#[test]
fn unread_counts_come_from_the_server_and_reading_is_told_back() {
    let mut app = with_history();
    app.on_event(Event::Unread(vec![
        natter_client::Unread {
            conv: 3,
            last_seq: 10,
            last_read_seq: 10,
        },
        natter_client::Unread {
            conv: 5,
            last_seq: 12,
            last_read_seq: 7,
        },
    ]));
    app.on_event(members(3, &["alice", "bob"]));
    app.on_event(members(5, &["alice", "carol"]));
    app.take_commands();
    let rows = screen(&app, 110, 30);
    let row = rows.iter().find(|r| r.contains("#5 carol")).unwrap();
    assert!(row.contains(" 5 "), "five unread in #5: {row}");

    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.active, Some(5));
    app.on_event(Event::History {
        conv: 5,
        entries: (1..=12)
            .map(|s| entry(s, "carol", &format!("note {s}")))
            .collect(),
    });
    let rows = screen(&app, 110, 30);
    let marker = rows
        .iter()
        .position(|r| r.contains("unread since here"))
        .unwrap();
    assert!(rows[marker + 1].contains("note 8"), "{}", rows.join("\n"));
    assert_eq!(
        app.take_commands(),
        vec![Command::Read { conv: 5, seq: 12 }]
    );
    // A busy conversation: one READ per READ_EVERY, the last one on a tick.
    for s in 13..=40 {
        app.on_event(Event::Message {
            conv: 5,
            sender: "carol".into(),
            text: format!("note {s}"),
            info: Some(natter_client::MessageInfo {
                seq: s,
                ts: 1_764_601_200_000,
                nonce: None,
                catch_up: false,
            }),
        });
    }
    assert_eq!(app.take_commands(), vec![], "held back");
    app.now += super::app::READ_EVERY;
    app.on_tick();
    assert_eq!(
        app.take_commands(),
        vec![Command::Read { conv: 5, seq: 40 }]
    );
}

#[test]
fn messages_that_came_while_away_are_marked_and_ctrl_g_jumps_there() {
    let mut app = scripted_session();
    app.screen = (80, 24);
    for i in 0..30 {
        app.on_event_at(message(5, "carol", &format!("news {i}")), at(13, 0));
    }
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.active, Some(5));
    let rows = screen(&app, 80, 24);
    assert!(!shows(&rows, "unread since here"), "above the view");
    app.on_key(ctrl('g'));
    let rows = screen(&app, 80, 24);
    let marker = rows
        .iter()
        .position(|r| r.contains("unread since here"))
        .unwrap();
    assert!(rows[marker + 1].contains("psst"), "{}", rows.join("\n"));

    // From a conversation with nothing unread, Ctrl-G goes to the one
    // with news, straight to its unread line.
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.active, Some(3));
    for i in 0..30 {
        app.on_event_at(message(5, "carol", &format!("more {i}")), at(13, 5));
    }
    app.on_key(ctrl('g'));
    assert_eq!(app.active, Some(5));
    let rows = screen(&app, 80, 24);
    let marker = rows
        .iter()
        .position(|r| r.contains("unread since here"))
        .unwrap();
    assert!(rows[marker + 1].contains("more 0"), "{}", rows.join("\n"));
    // Leaving and coming back: read, no marker.
    app.on_key(key(KeyCode::Tab));
    app.on_key(key(KeyCode::Tab));
    assert!(!shows(&screen(&app, 80, 24), "unread since here"));
}

#[test]
fn what_the_library_could_not_catch_up_is_fetched_page_by_page() {
    let mut app = with_history();
    app.on_event(members(3, &["alice", "bob"]));
    app.on_event(Event::History {
        conv: 3,
        entries: (1..=10)
            .map(|s| entry(s, "bob", &format!("before {s}")))
            .collect(),
    });
    app.take_commands();
    // Away: 120 messages said, the newest live ones delivered, the rest
    // (11..=110) missed.
    for s in 111..=130 {
        app.on_event(Event::Message {
            conv: 3,
            sender: "bob".into(),
            text: format!("after {s}"),
            info: Some(natter_client::MessageInfo {
                seq: s,
                ts: 1_764_601_200_000,
                nonce: None,
                catch_up: true,
            }),
        });
    }
    app.take_commands();
    app.on_event(Event::Missed {
        conv: 3,
        after_seq: 10,
        before_seq: Some(111),
    });
    assert_eq!(
        app.take_commands(),
        vec![Command::History {
            conv: 3,
            before_seq: 111,
            limit: 50
        }]
    );
    app.on_event(Event::History {
        conv: 3,
        entries: (61..=110)
            .map(|s| entry(s, "bob", &format!("gap {s}")))
            .collect(),
    });
    assert_eq!(
        app.take_commands(),
        vec![Command::History {
            conv: 3,
            before_seq: 61,
            limit: 50
        }],
        "the hole goes on"
    );
    app.on_event(Event::History {
        conv: 3,
        entries: (11..=60)
            .map(|s| entry(s, "bob", &format!("gap {s}")))
            .collect(),
    });
    assert_eq!(app.take_commands(), vec![], "the hole is filled");
    let seqs: Vec<u64> = app.conversations[&3]
        .messages
        .iter()
        .filter_map(|m| m.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=130).collect::<Vec<_>>(),
        "every message once, in order"
    );
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
