//! Draws the screen: a pure function of [`App`].
//!
//! ```text
//! ┌ Online (3) ─────┐┌ #3 · bob, carol ──────────────────────────┐
//! │● alice (you)    ││12:01 bob    hello                          │
//! ├ Conversations ──┤│12:02 alice  hi bob, long lines wrap under  │
//! │▸ #3 bob, carol 2││             the text column                │
//! ├ Invitations ────┤│                                            │
//! └─────────────────┘└────────────────────────────────────────────┘
//! ┌ alice → #3 ───────────────────────────────────────────────────┐
//! │> typing here_                                                  │
//! └───────────────────────────────────────────────────────────────┘
//!  ● connected to 127.0.0.1:6666 · error: …         Tab switch · /help
//! ```

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};

use natter_client::{ConnectionState, ConvId};

use super::app::{App, Conversation, LineKind, Overlay};
use super::input::HELP;
use super::text::{clean, fit, mark_reserved, width, wrap};

const SIDEBAR_MAX: u16 = 32;
/// Most rows the input grows to (a multi-line compose or paste).
const INPUT_ROWS: usize = 5;
const KEYS: &[(&str, &str)] = &[
    ("Tab / Shift-Tab, ^N / ^P", "next / previous conversation"),
    (
        "PgUp / PgDn, Shift-↑ / ↓",
        "scroll (at the top: older messages)",
    ),
    ("Ctrl-G", "first unread message (again: next conversation)"),
    ("↑ / ↓", "earlier inputs (or lines of the input)"),
    ("Alt-Enter / Ctrl-J", "line break (multi-line message)"),
    ("Ctrl-W", "delete the word before the cursor"),
    ("Home / End, ^A / ^E", "start / end of the line"),
    ("Ctrl-Y / Ctrl-X", "accept / dismiss the oldest invitation"),
    ("Esc / Ctrl-U", "clear the input"),
    ("Ctrl-C", "quit"),
];
const ACCENT: Color = Color::Cyan;
const MARKER: &str = "unread since here";

/// The screen's parts: sidebar, messages, input, status bar.
struct Areas {
    sidebar: Rect,
    chat: Rect,
    input: Rect,
    status: Rect,
}

fn areas(app: &App, area: Rect) -> Areas {
    let input_rows = app.input.lines().clamp(1, INPUT_ROWS) as u16;
    let [main, input, status] = Layout::vertical([
        Constraint::Min(6),
        Constraint::Length(input_rows + 2),
        Constraint::Length(1),
    ])
    .areas(area);
    let sidebar_width = SIDEBAR_MAX.min(main.width / 3);
    let [sidebar, chat] =
        Layout::horizontal([Constraint::Length(sidebar_width), Constraint::Min(10)]).areas(main);
    Areas {
        sidebar,
        chat,
        input,
        status,
    }
}

/// The width and height of the message text on a screen of `size`.
pub fn message_area(app: &App, size: (u16, u16)) -> (usize, usize) {
    let chat = areas(app, Rect::new(0, 0, size.0, size.1)).chat;
    (
        chat.width.saturating_sub(2) as usize,
        chat.height.saturating_sub(2) as usize,
    )
}

pub fn draw(app: &App, frame: &mut Frame) {
    let parts = areas(app, frame.area());
    draw_sidebar(app, frame, parts.sidebar);
    draw_messages(app, frame, parts.chat);
    draw_input(app, frame, parts.input);
    draw_status(app, frame, parts.status);
    match &app.overlay {
        Some(Overlay::Help) => draw_help(frame),
        Some(Overlay::Conversations(list)) => draw_listing(app, list, frame),
        None => {}
    }
    mark_reserved(frame.buffer_mut());
}

fn panel(title: impl Into<Line<'static>>) -> Block<'static> {
    Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(Style::new().dark_gray())
        .title(title.into().bold())
}

fn draw_sidebar(app: &App, frame: &mut Frame, area: Rect) {
    let conversations = app.joined().len().clamp(1, 10) as u16 + 2;
    let invitations = if app.invitations.is_empty() {
        3
    } else {
        app.invitations.len().min(5) as u16 + 3
    };
    let [online, convs, invites] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(conversations),
        Constraint::Length(invitations),
    ])
    .areas(area);
    draw_online(app, frame, online);
    draw_conversations(app, frame, convs);
    draw_invitations(app, frame, invites);
}

/// A stable colour per name, so each sender is easy to follow.
fn name_color(name: &str) -> Color {
    const PALETTE: [Color; 8] = [
        Color::LightCyan,
        Color::LightGreen,
        Color::LightYellow,
        Color::LightMagenta,
        Color::LightBlue,
        Color::LightRed,
        Color::Cyan,
        Color::Green,
    ];
    let hash = name
        .to_lowercase()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    PALETTE[hash as usize % PALETTE.len()]
}

fn status_color(status: &str) -> Color {
    match status.to_lowercase().as_str() {
        "online" | "available" | "here" => Color::Green,
        "away" | "busy" | "brb" | "dnd" => Color::Yellow,
        _ => Color::Blue,
    }
}

/// Lines a long status may take in the Online panel.
const STATUS_LINES: usize = 5;

fn draw_online(app: &App, frame: &mut Frame, area: Rect) {
    if !app.connected() {
        // Who is online is unknown until the reconnect brings a list.
        let lines = vec![Line::from("not connected".dark_gray())];
        frame.render_widget(Paragraph::new(lines).block(panel(" Online (–) ")), area);
        return;
    }
    let inner_width = area.width.saturating_sub(2) as usize;
    let room = area.height.saturating_sub(2) as usize;
    let name_width = app
        .online
        .keys()
        .map(|name| width(name))
        .max()
        .unwrap_or(0)
        .min(inner_width / 2);
    let mut lines: Vec<Line> = Vec::new();
    for (shown_users, (name, status)) in app.online.iter().enumerate() {
        let left = app.online.len() - shown_users;
        if lines.len() + 1 >= room && left > 1 {
            lines.push(Line::from(format!("  … and {left} more").dark_gray()));
            break;
        }
        let me = name.eq_ignore_ascii_case(&app.me);
        let shown = format!("{:<name_width$}", fit(&clean(name), name_width));
        let name_style = Style::new().fg(name_color(name));
        let name_style = if me { name_style.bold() } else { name_style };
        let room_for_status = inner_width.saturating_sub(name_width + 3).max(1);
        let mut parts = wrap(status, room_for_status);
        if parts.len() > STATUS_LINES {
            parts.truncate(STATUS_LINES);
            let last = parts.pop().unwrap_or_default();
            parts.push(fit(&format!("{last} …"), room_for_status.saturating_sub(1)));
        }
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 && lines.len() + 1 >= room {
                break;
            }
            let lead = if i == 0 {
                vec![
                    Span::styled("● ", Style::new().fg(status_color(status))),
                    Span::styled(shown.clone(), name_style),
                    Span::raw(" "),
                ]
            } else {
                vec![Span::raw(" ".repeat(name_width + 3))]
            };
            let mut spans = lead;
            spans.push(Span::styled(part, Style::new().dark_gray()));
            lines.push(Line::from(spans));
        }
    }
    if lines.is_empty() {
        lines.push(Line::from("nobody yet".dark_gray()));
    }
    let title = format!(" Online ({}) ", app.online.len());
    frame.render_widget(Paragraph::new(lines).block(panel(title)), area);
}

/// How a conversation is named in the sidebar: its topic or the others'
/// names; when two read the same, its last message tells them apart.
fn conversation_label(app: &App, id: ConvId, conversation: &Conversation) -> String {
    let label = clean(&conversation.label(&app.me));
    let twin = app
        .conversations
        .iter()
        .any(|(other, c)| *other != id && c.label(&app.me) == conversation.label(&app.me));
    if !twin || conversation.topic.is_some() {
        return label;
    }
    let last = conversation
        .messages
        .iter()
        .rev()
        .find(|m| m.kind == LineKind::Message)
        .map_or("no messages yet".to_string(), |m| {
            format!("“{}”", m.text.replace('\n', " "))
        });
    format!("{label} · {}", clean(&last))
}

fn draw_conversations(app: &App, frame: &mut Frame, area: Rect) {
    let inner_width = area.width.saturating_sub(2) as usize;
    let mut lines: Vec<Line> = Vec::new();
    for (id, conversation) in app.conversations.iter().filter(|(_, c)| c.joined) {
        let active = app.active == Some(*id);
        let who = conversation_label(app, *id, conversation);
        let badge = match conversation.unread {
            0 => String::new(),
            n if n > 99 => " 99+ ".into(),
            n => format!(" {n} "),
        };
        let badge = if conversation.mentioned {
            format!("@{badge}")
        } else {
            badge
        };
        let id_label = format!("#{id} ");
        let room = inner_width.saturating_sub(2 + width(&id_label) + width(&badge) + 1);
        let who = format!("{:<room$}", fit(&who, room));
        let mut style = Style::new();
        if active {
            style = style.bg(Color::DarkGray).bold();
        } else if conversation.unread > 0 {
            // News: the whole line stands out.
            style = style.fg(Color::White).bold();
        }
        let badge_style = if conversation.mentioned {
            Style::new().bg(Color::Red).fg(Color::White).bold()
        } else {
            Style::new().bg(Color::Magenta).fg(Color::White).bold()
        };
        lines.push(
            Line::from(vec![
                Span::styled(if active { "▸ " } else { "  " }, style.fg(ACCENT)),
                Span::styled(id_label, style.fg(ACCENT)),
                Span::styled(who, style),
                Span::raw(" "),
                Span::styled(badge, badge_style),
            ])
            .style(style),
        );
    }
    if lines.is_empty() {
        lines.push(Line::from("none yet: /invite NAME".dark_gray()));
    }
    frame.render_widget(Paragraph::new(lines).block(panel(" Conversations ")), area);
}

fn draw_invitations(app: &App, frame: &mut Frame, area: Rect) {
    let inner_width = area.width.saturating_sub(2) as usize;
    let mut block = panel(format!(" Invitations ({}) ", app.invitations.len()));
    let mut lines: Vec<Line> = Vec::new();
    if app.invitations.is_empty() {
        lines.push(Line::from("none".dark_gray()));
    } else {
        block = block.border_style(Style::new().yellow());
        for (i, (conv, inviter)) in app.invitations.iter().take(5).enumerate() {
            let marker = if i == 0 { "▸ " } else { "  " };
            let mut text = format!("{marker}#{conv} from {}", clean(inviter));
            // Who else is in it, once the listing asked for it came back.
            if let Some(members) = app.invited_to.get(conv) {
                let others: Vec<&str> = members
                    .iter()
                    .filter(|m| {
                        !m.eq_ignore_ascii_case(&app.me) && !m.eq_ignore_ascii_case(inviter)
                    })
                    .map(|m| m.as_str())
                    .collect();
                if !others.is_empty() {
                    text.push_str(&format!(", with {}", clean(&others.join(", "))));
                }
            }
            let style = if i == 0 {
                Style::new().yellow().bold()
            } else {
                Style::new()
            };
            lines.push(Line::styled(fit(&text, inner_width), style));
        }
        lines.push(Line::from(
            fit("^Y join  ^X dismiss", inner_width).dark_gray(),
        ));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_messages(app: &App, frame: &mut Frame, area: Rect) {
    let Some((id, conversation)) = app
        .active
        .and_then(|id| app.conversations.get(&id).map(|c| (id, c)))
    else {
        draw_welcome(app, frame, area);
        return;
    };
    let others = conversation.others(&app.me);
    let mut title = format!(" #{id} ");
    if let Some(topic) = &conversation.topic {
        title.push_str(&format!("· {} ", clean(topic)));
    }
    if !others.is_empty() {
        title.push_str(&format!("· {} ", clean(&others.join(", "))));
    }
    let inner = Rect {
        width: area.width.saturating_sub(2),
        height: area.height.saturating_sub(2),
        ..area
    };
    let (lines, _) = message_lines(app, conversation, inner.width as usize);
    let height = inner.height as usize;
    let scroll = app.scroll.min(lines.len().saturating_sub(height));
    let end = lines.len() - scroll;
    let start = end.saturating_sub(height);
    let mut block = panel(fit(&title, inner.width as usize));
    if scroll > 0 {
        block = block.title(
            Line::from(format!(" ↓ {scroll} more lines (PgDn) "))
                .yellow()
                .right_aligned(),
        );
    }
    let body: Vec<Line> = if lines.is_empty() {
        vec![Line::from(
            format!("No messages in #{id} yet. Say hello!").dark_gray(),
        )]
    } else {
        lines[start..end].to_vec()
    };
    // At the top of what is shown: more can come from the server.
    if start == 0 && !lines.is_empty() {
        let hint = if conversation.loading {
            Some(" loading older messages… ")
        } else if app.history && conversation.joined && conversation.has_older() {
            Some(" PgUp: older messages ")
        } else {
            None
        };
        if let Some(hint) = hint {
            block = block.title_bottom(Line::from(hint.dark_gray().italic()).centered());
        }
    }
    frame.render_widget(Paragraph::new(body).block(block), area);
}

/// Every line of the conversation on screen at the current screen size.
pub fn conversation_lines(app: &App, conversation: &Conversation) -> Vec<Line<'static>> {
    let (width, _) = message_area(app, app.screen);
    message_lines(app, conversation, width).0
}

/// The screen line where message `index` starts (its "unread since here"
/// line when it has one), at the current screen size.
pub fn line_of_message(app: &App, conversation: &Conversation, index: usize) -> usize {
    let (width, _) = message_area(app, app.screen);
    let (lines, starts) = message_lines(app, conversation, width);
    starts.get(index).copied().unwrap_or(lines.len())
}

/// Every message as screen lines: `HH:MM sender  text`, the text wrapped
/// under its own column; and where each message starts.
fn message_lines(
    app: &App,
    conversation: &Conversation,
    width_available: usize,
) -> (Vec<Line<'static>>, Vec<usize>) {
    let sender_width = conversation
        .messages
        .iter()
        .map(|m| width(&m.sender))
        .max()
        .unwrap_or(0)
        .min(14);
    let indent = 6 + sender_width + 2;
    let text_width = width_available.saturating_sub(indent).max(10);
    let mut lines = Vec::new();
    let mut starts = Vec::with_capacity(conversation.messages.len());
    for (index, message) in conversation.messages.iter().enumerate() {
        starts.push(lines.len());
        if conversation.marker == Some(index) {
            let rule = "─".repeat(width_available.saturating_sub(width(MARKER) + 2) / 2);
            lines.push(
                Line::from(format!("{rule} {MARKER} {rule}"))
                    .style(Style::new().fg(Color::LightRed)),
            );
        }
        let time = match message.pending {
            // A message waiting for the connection has no time yet.
            Some(_) => "--:-- ".to_string(),
            None => message.at.format("%H:%M ").to_string(),
        };
        if message.kind == LineKind::Event {
            let text = fit(
                &format!("* {}", clean(&message.text)),
                width_available.saturating_sub(6),
            );
            lines.push(Line::from(vec![
                Span::styled(time, Style::new().dark_gray()),
                Span::styled(text, Style::new().dark_gray().italic()),
            ]));
            continue;
        }
        let me = message.sender.eq_ignore_ascii_case(&app.me);
        let mut sender_style = Style::new().fg(name_color(&message.sender)).bold();
        if me {
            sender_style = sender_style.add_modifier(Modifier::DIM);
        }
        let sender = format!(
            "{:<sender_width$}",
            fit(&clean(&message.sender), sender_width)
        );
        let text_style = if message.pending.is_some() {
            Style::new().dark_gray()
        } else if message.mention {
            Style::new().fg(Color::Black).bg(Color::LightYellow)
        } else {
            Style::new()
        };
        for (i, part) in wrap(&message.text, text_width).into_iter().enumerate() {
            let mut spans = if i == 0 {
                vec![
                    Span::styled(time.clone(), Style::new().dark_gray()),
                    Span::styled(sender.clone(), sender_style),
                    Span::raw("  "),
                ]
            } else {
                vec![Span::raw(" ".repeat(indent))]
            };
            spans.push(Span::styled(part, text_style));
            lines.push(Line::from(spans));
        }
    }
    (lines, starts)
}

fn draw_welcome(app: &App, frame: &mut Frame, area: Rect) {
    let mut lines = vec![
        Line::from(vec![
            Span::raw("Welcome to natter, "),
            Span::styled(clean(&app.me), Style::new().fg(name_color(&app.me)).bold()),
            Span::raw("!"),
        ]),
        Line::raw(""),
    ];
    for (keys, what) in [
        ("/invite NAME", "start a conversation"),
        ("/join ID", "join one (/list shows them)"),
        ("Ctrl-Y", "accept an invitation"),
        ("/help", "every command and key"),
    ] {
        lines.push(Line::from(vec![
            Span::styled(format!("{keys:<14}"), Style::new().fg(ACCENT)),
            Span::raw(what),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).block(panel(" natter ")), area);
}

fn draw_input(app: &App, frame: &mut Frame, area: Rect) {
    let target = match app.active {
        Some(id) => format!(" {} → #{id} ", clean(&app.me)),
        None => format!(" {} ", clean(&app.me)),
    };
    let mut block = panel(target).border_style(Style::new().fg(ACCENT));
    let rows = app.input.lines();
    if rows > 1 {
        block = block.title(Line::from(format!(" {rows} lines ")).right_aligned());
    }
    if let Some(notice) = app.notice() {
        let style = if notice.is_problem {
            Style::new().red()
        } else {
            Style::new().green()
        };
        let text = fit(
            &format!(" {} ", clean(&notice.text)),
            area.width.saturating_sub(4) as usize,
        );
        block = block.title_bottom(Line::styled(text, style).right_aligned());
    }
    let room = area.width.saturating_sub(4).max(1) as usize;
    let height = area.height.saturating_sub(2).max(1) as usize;
    let (cursor_row, cursor_column) = app.input.position();
    let input_lines: Vec<&str> = app.input.text.split('\n').collect();
    // The rows shown: those around the cursor's.
    let first = (cursor_row + 1).saturating_sub(height);
    let mut lines = Vec::new();
    let mut cursor_x = 0;
    for (row, text) in input_lines.iter().enumerate().skip(first).take(height) {
        let chars: Vec<char> = text.chars().collect();
        let prompt = if row == 0 { "› " } else { "  " };
        let shown = if row == cursor_row {
            // Keep the cursor in view: show the end of long lines.
            let cursor = cursor_column.min(chars.len());
            let mut start = 0;
            while width(&chars[start..cursor].iter().collect::<String>()) >= room {
                start += 1;
            }
            cursor_x = width(&clean(&chars[start..cursor].iter().collect::<String>()));
            clean(&chars[start..].iter().collect::<String>())
        } else {
            fit(&clean(text), room)
        };
        lines.push(Line::from(vec![
            Span::styled(prompt, Style::new().fg(ACCENT)),
            Span::raw(shown),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
    let x = area.x + 3 + cursor_x as u16;
    let y = area.y + 1 + (cursor_row - first) as u16;
    frame.set_cursor_position((x.min(area.right().saturating_sub(2)), y));
}

fn draw_status(app: &App, frame: &mut Frame, area: Rect) {
    let (symbol, text, color) = match &app.connection {
        ConnectionState::Connected { addr } => ("●", format!("connected to {addr}"), Color::Green),
        ConnectionState::Connecting { addr } => {
            ("◌", format!("connecting to {addr}…"), Color::Yellow)
        }
        ConnectionState::Reconnecting { reason, .. } => {
            let secs = app
                .reconnect_in()
                .map_or(0, |d| d.as_secs_f64().ceil() as u64);
            (
                "◌",
                format!("reconnecting in {secs} s: {}", clean(reason)),
                Color::Yellow,
            )
        }
        ConnectionState::Disconnected { reason } => {
            ("✕", format!("disconnected: {}", clean(reason)), Color::Red)
        }
    };
    let mut spans = vec![
        Span::styled(format!(" {symbol} "), Style::new().fg(color)),
        Span::styled(text, Style::new().fg(color)),
    ];
    let waiting: usize = app
        .conversations
        .values()
        .map(|c| c.messages.iter().filter(|m| m.pending.is_some()).count())
        .sum();
    if waiting > 0 {
        spans.push(Span::styled(
            format!(" · {waiting} to send"),
            Style::new().yellow(),
        ));
    }
    if let Some(error) = app.error() {
        spans.push(Span::styled(" · error: ", Style::new().red()));
        spans.push(Span::styled(clean(error), Style::new().red().bold()));
    }
    let status = Line::from(spans);
    // The hint gives way to what the server said.
    let hint = "Tab switch · ^Y accept · /help ";
    if status.width() + width(hint) + 1 > area.width as usize {
        frame.render_widget(Paragraph::new(status), area);
        return;
    }
    let [left, right] =
        Layout::horizontal([Constraint::Min(10), Constraint::Length(width(hint) as u16)])
            .areas(area);
    frame.render_widget(Paragraph::new(status), left);
    frame.render_widget(
        Paragraph::new(Line::from(hint.dark_gray())).alignment(Alignment::Right),
        right,
    );
}

/// A window in the middle of the screen.
fn popup(frame: &mut Frame, title: &'static str, lines: Vec<Line<'static>>, max_width: u16) {
    let area = frame.area();
    let width = max_width.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    let block = panel(title)
        .border_style(Style::new().fg(ACCENT))
        .title_bottom(Line::from(" any key closes this ".dark_gray()).centered());
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

fn draw_help(frame: &mut Frame) {
    // One screen at 80×24: commands, a blank line, keys.
    let entry = |usage: &str, what: &str| {
        Line::from(vec![
            Span::styled(format!(" {usage:<25}"), Style::new().fg(ACCENT)),
            Span::raw(what.to_string()),
        ])
    };
    let mut lines: Vec<Line> = HELP.iter().map(|(u, w)| entry(u, w)).collect();
    lines.push(Line::raw(""));
    lines.extend(KEYS.iter().map(|(k, w)| entry(k, w)));
    popup(frame, " Help: commands and keys ", lines, 76);
}

/// `/list`: each conversation, who is in it, whether we are.
fn draw_listing(app: &App, list: &[(ConvId, Vec<String>)], frame: &mut Frame) {
    let room = (frame.area().height as usize).saturating_sub(5).max(1);
    let mut lines = Vec::new();
    if list.is_empty() {
        lines.push(Line::from(
            "no conversations yet: /invite NAME starts one".dark_gray(),
        ));
    }
    for (shown, (id, members)) in list.iter().enumerate() {
        if shown + 1 == room && list.len() > room {
            lines.push(Line::from(
                format!("… and {} more", list.len() - shown).dark_gray(),
            ));
            break;
        }
        let ours = app.conversations.get(id);
        let joined = ours.is_some_and(|c| c.joined);
        let topic = ours
            .and_then(|c| c.topic.clone())
            .map(|t| format!("“{}” ", clean(&t)))
            .unwrap_or_default();
        let who = if members.is_empty() {
            "nobody yet".to_string()
        } else {
            clean(&members.join(", "))
        };
        let mut spans = vec![
            Span::styled(format!("  #{id:<4}"), Style::new().fg(ACCENT)),
            Span::styled(topic, Style::new().bold()),
            Span::raw(who),
        ];
        spans.push(if joined {
            Span::styled("  (joined)", Style::new().green())
        } else {
            Span::styled(format!("  /join {id}"), Style::new().dark_gray())
        });
        lines.push(Line::from(spans));
    }
    let title = " Conversations on the server ";
    popup(frame, title, lines, 70);
}
