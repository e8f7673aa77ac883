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

use natter_client::ConnectionState;

use super::app::App;
use super::input::HELP;
use super::text::{clean, fit, width, wrap};

const SIDEBAR_MAX: u16 = 32;
const KEYS: &[(&str, &str)] = &[
    ("Tab / Ctrl-N", "next conversation"),
    ("Shift-Tab / Ctrl-P", "previous conversation"),
    ("PgUp / PgDn, ↑ / ↓", "scroll messages"),
    ("Ctrl-Y", "accept the oldest invitation"),
    ("Ctrl-X", "dismiss it"),
    ("Esc / Ctrl-U", "clear the input line"),
    ("Ctrl-C", "quit"),
];
const ACCENT: Color = Color::Cyan;

pub fn draw(app: &App, frame: &mut Frame) {
    let [main, input, status] = Layout::vertical([
        Constraint::Min(6),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let sidebar_width = SIDEBAR_MAX.min(main.width / 3);
    let [sidebar, chat] =
        Layout::horizontal([Constraint::Length(sidebar_width), Constraint::Min(10)]).areas(main);
    draw_sidebar(app, frame, sidebar);
    draw_messages(app, frame, chat);
    draw_input(app, frame, input);
    draw_status(app, frame, status);
    if app.show_help {
        draw_help(frame);
    }
}

fn panel(title: impl Into<Line<'static>>) -> Block<'static> {
    Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(Style::new().dark_gray())
        .title(title.into().bold())
}

fn draw_sidebar(app: &App, frame: &mut Frame, area: Rect) {
    let conversations = app.conversations.len().clamp(1, 10) as u16 + 2;
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

fn draw_online(app: &App, frame: &mut Frame, area: Rect) {
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
    for (name, status) in &app.online {
        if lines.len() + 1 == room && app.online.len() > room {
            let more = app.online.len() - lines.len();
            lines.push(Line::from(format!("  … and {more} more").dark_gray()));
            break;
        }
        let me = name.eq_ignore_ascii_case(&app.me);
        let shown = format!("{:<name_width$}", fit(&clean(name), name_width));
        let name_style = Style::new().fg(name_color(name));
        let name_style = if me { name_style.bold() } else { name_style };
        let room_for_status = inner_width.saturating_sub(name_width + 3);
        lines.push(Line::from(vec![
            Span::styled("● ", Style::new().fg(status_color(status))),
            Span::styled(shown, name_style),
            Span::raw(" "),
            Span::styled(
                fit(&clean(status), room_for_status),
                Style::new().dark_gray(),
            ),
        ]));
    }
    if lines.is_empty() {
        lines.push(Line::from("nobody yet".dark_gray()));
    }
    let title = format!(" Online ({}) ", app.online.len());
    frame.render_widget(Paragraph::new(lines).block(panel(title)), area);
}

fn draw_conversations(app: &App, frame: &mut Frame, area: Rect) {
    let inner_width = area.width.saturating_sub(2) as usize;
    let mut lines: Vec<Line> = Vec::new();
    for (id, conversation) in &app.conversations {
        let active = app.active == Some(*id);
        let others: Vec<String> = conversation
            .members
            .iter()
            .filter(|m| !m.eq_ignore_ascii_case(&app.me))
            .map(|m| clean(m))
            .collect();
        let who = if !conversation.joined {
            format!("not joined · {}", others.join(", "))
        } else if others.is_empty() {
            "just you".to_string()
        } else {
            others.join(", ")
        };
        let badge = match conversation.unread {
            0 => String::new(),
            n if n > 99 => " 99+ ".into(),
            n => format!(" {n} "),
        };
        let label = format!("#{id} ");
        let room = inner_width.saturating_sub(2 + width(&label) + width(&badge) + 1);
        let who = format!("{:<room$}", fit(&who, room));
        let mut style = Style::new();
        if active {
            style = style.bg(Color::DarkGray).bold();
        } else if !conversation.joined {
            style = style.dark_gray();
        }
        lines.push(
            Line::from(vec![
                Span::styled(if active { "▸ " } else { "  " }, style.fg(ACCENT)),
                Span::styled(label, style.fg(ACCENT)),
                Span::styled(who, style),
                Span::raw(" "),
                Span::styled(
                    badge,
                    Style::new().bg(Color::Magenta).fg(Color::White).bold(),
                ),
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
            let text = format!("{marker}#{conv} from {}", clean(inviter));
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
    let others: Vec<String> = conversation
        .members
        .iter()
        .filter(|m| !m.eq_ignore_ascii_case(&app.me))
        .map(|m| clean(m))
        .collect();
    let title = if others.is_empty() {
        format!(" #{id} ")
    } else {
        format!(" #{id} · {} ", others.join(", "))
    };
    let inner = Rect {
        width: area.width.saturating_sub(2),
        height: area.height.saturating_sub(2),
        ..area
    };
    let lines = message_lines(app, conversation, inner.width as usize);
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
    frame.render_widget(Paragraph::new(body).block(block), area);
}

/// Every message as screen lines: `HH:MM sender  text`, the text wrapped
/// under its own column.
fn message_lines(
    app: &App,
    conversation: &super::app::Conversation,
    width_available: usize,
) -> Vec<Line<'static>> {
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
    for message in &conversation.messages {
        let me = message.sender.eq_ignore_ascii_case(&app.me);
        let mut sender_style = Style::new().fg(name_color(&message.sender)).bold();
        if me {
            sender_style = sender_style.add_modifier(Modifier::DIM);
        }
        let sender = format!(
            "{:<sender_width$}",
            fit(&clean(&message.sender), sender_width)
        );
        // A message waiting for the connection has no time yet.
        let time = match message.pending {
            Some(_) => "--:-- ".to_string(),
            None => message.at.format("%H:%M ").to_string(),
        };
        for (i, part) in wrap(&message.text, text_width).into_iter().enumerate() {
            let lead = if i == 0 {
                vec![
                    Span::styled(time.clone(), Style::new().dark_gray()),
                    Span::styled(sender.clone(), sender_style),
                    Span::raw("  "),
                ]
            } else {
                vec![Span::raw(" ".repeat(indent))]
            };
            let mut spans = lead;
            match message.pending {
                Some(_) => spans.push(Span::styled(part, Style::new().dark_gray())),
                None => spans.push(Span::raw(part)),
            }
            lines.push(Line::from(spans));
        }
    }
    lines
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
    if let Some(notice) = &app.notice {
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
    // Keep the cursor in view: show the end of long lines.
    let room = area.width.saturating_sub(4).max(1) as usize;
    let chars: Vec<char> = app.input.text.chars().collect();
    let cursor = app.input.cursor.min(chars.len());
    let mut start = 0;
    while width(&chars[start..cursor].iter().collect::<String>()) >= room {
        start += 1;
    }
    let visible: String = clean(&chars[start..].iter().collect::<String>());
    let line = Line::from(vec![
        Span::styled("› ", Style::new().fg(ACCENT)),
        Span::raw(visible),
    ]);
    frame.render_widget(Paragraph::new(line).block(block), area);
    let before: String = chars[start..cursor].iter().collect();
    let x = area.x + 3 + width(&before) as u16;
    frame.set_cursor_position((x.min(area.right().saturating_sub(2)), area.y + 1));
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
    if let Some(error) = &app.last_error {
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

fn draw_help(frame: &mut Frame) {
    let mut lines = vec![Line::from("Commands".bold())];
    for (usage, what) in HELP {
        lines.push(Line::from(vec![
            Span::styled(format!("  {usage:<20}"), Style::new().fg(ACCENT)),
            Span::raw(*what),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::from("Keys".bold()));
    for (keys, what) in KEYS {
        lines.push(Line::from(vec![
            Span::styled(format!("  {keys:<20}"), Style::new().fg(ACCENT)),
            Span::raw(*what),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::from("any key closes this".dark_gray()).centered());
    let area = frame.area();
    let width = 66.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(panel(" Help ").border_style(Style::new().fg(ACCENT))),
        popup,
    );
}
