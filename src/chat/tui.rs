//! The full-screen client: terminal setup and the event loop that merges
//! key presses, client events and a clock tick into [`App`] updates.
//!
//! The terminal is restored however the loop ends: normally, on an error
//! (a guard's `Drop`), on Ctrl-C (a key in raw mode, SIGINT/SIGTERM from
//! outside) and on panic (`ratatui::init` installs a hook that restores
//! before the panic message is printed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use natter_client::{Client, Events};
use ratatui::crossterm::event::{
    self as term, DisableBracketedPaste, EnableBracketedPaste, Event as TermEvent,
};
use tokio::sync::mpsc;

use super::app::{Action, App};
use super::ui;

/// Key presses waiting for the loop; typing faster than this is not human.
const KEY_QUEUE: usize = 256;
/// Client events applied before the screen is drawn again.
const EVENT_BATCH: usize = 256;
/// How long quitting waits for the server to acknowledge GOODBYE.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// Restores the terminal when dropped.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = ratatui::crossterm::execute!(std::io::stdout(), DisableBracketedPaste);
        ratatui::restore();
    }
}

pub async fn run(client: Client, events: Events, app: App) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let guard = TerminalGuard;
    super::text::set_joined_wide(joined_emoji_are_wide());
    // A paste arrives as one piece (so it becomes one message), not as
    // keys with an Enter after each line.
    ratatui::crossterm::execute!(std::io::stdout(), EnableBracketedPaste)?;
    let stop_input = Arc::new(AtomicBool::new(false));
    let (key_tx, key_rx) = mpsc::channel(KEY_QUEUE);
    let reader = std::thread::spawn({
        let stop = stop_input.clone();
        move || read_terminal(key_tx, stop)
    });
    let result = event_loop(&mut terminal, &client, events, key_rx, app).await;
    stop_input.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(GOODBYE_WAIT, client.goodbye()).await;
    drop(guard);
    let _ = reader.join();
    result
}

/// Reads terminal events on a thread of its own (crossterm's reads block).
fn read_terminal(keys: mpsc::Sender<TermEvent>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match term::poll(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        match term::read() {
            Ok(event) => {
                if keys.blocking_send(event).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    client: &Client,
    mut events: Events,
    mut keys: mpsc::Receiver<TermEvent>,
    mut app: App,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut events_open = true;
    let mut terminate = terminate_signal()?;
    loop {
        app.now = Instant::now();
        let size = terminal.size()?;
        app.screen = (size.width, size.height);
        terminal.draw(|frame| ui::draw(&app, frame))?;
        if app.take_bell() {
            ring_bell();
        }
        let action = tokio::select! {
            key = keys.recv() => match key {
                Some(TermEvent::Key(key)) => app.on_key(key),
                Some(TermEvent::Paste(text)) => {
                    app.on_paste(&text);
                    None
                }
                Some(_) => None, // a resize: the next draw adapts
                None => Some(Action::Quit),
            },
            event = events.recv(), if events_open => match event {
                Some(event) => {
                    let mut action = app.on_event(event);
                    for _ in 0..EVENT_BATCH {
                        let Some(more) = events.try_recv() else { break };
                        action = app.on_event(more).or(action);
                    }
                    action
                }
                None => {
                    events_open = false;
                    None
                }
            },
            _ = tick.tick() => {
                app.now = Instant::now();
                app.on_tick();
                None
            }
            _ = tokio::signal::ctrl_c() => Some(Action::Quit),
            _ = terminate.recv() => Some(Action::Quit),
        };
        let mut commands = match action {
            Some(Action::Quit) => return Ok(()),
            Some(Action::Send(command)) => vec![command],
            None => Vec::new(),
        };
        commands.extend(app.take_commands());
        for command in commands {
            if let Err(err) = client.send(command).await {
                app.notice = Some(super::app::Notice {
                    text: err.to_string(),
                    is_problem: true,
                    at: Instant::now(),
                });
            }
        }
    }
}

/// Asks the terminal how far the cursor moves over 👍🏽: two columns in
/// most terminals, four in tmux (see [`super::text`]). Drawn on the
/// alternate screen before anything else and cleared again.
fn joined_emoji_are_wide() -> bool {
    use ratatui::crossterm::{cursor, terminal};
    let probe = || -> std::io::Result<u16> {
        ratatui::crossterm::execute!(
            std::io::stdout(),
            cursor::MoveTo(0, 0),
            ratatui::crossterm::style::Print("👍🏽")
        )?;
        let (column, _) = cursor::position()?;
        ratatui::crossterm::execute!(std::io::stdout(), terminal::Clear(terminal::ClearType::All))?;
        Ok(column)
    };
    probe().is_ok_and(|column| column >= 4)
}

/// BEL: the terminal beeps or flags the window, as its user set it up.
fn ring_bell() {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\x07");
    let _ = out.flush();
}

fn terminate_signal() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
}
