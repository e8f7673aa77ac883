//! `natter chat`: the terminal client, full-screen or `--plain`.
//!
//! - [`app`]: the client's state, changed by events and keys (no I/O).
//! - [`ui`]: draws the screen from that state.
//! - [`tui`]: the terminal and the event loop around them.
//! - [`plain`]: one line per event on stdout, commands from stdin.
//! - [`input`]: what a typed line means (shared by both modes).

mod app;
mod input;
mod plain;
mod text;
mod tui;
mod ui;

#[cfg(test)]
mod tests;

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use natter_client::{Client, ClientError};

/// Arguments of `natter chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The server to talk to.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:6666")]
    pub server: String,
    /// Your user name (asked for when missing, except with --plain).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Your status, shown next to your name.
    #[arg(long, value_name = "TEXT", default_value = "online")]
    pub status: String,
    /// No full-screen UI: commands from stdin, one line per event on stdout.
    #[arg(long)]
    pub plain: bool,
}

pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        if args.plain {
            let name = args
                .name
                .context("--plain needs --name NAME (there is no prompt in plain mode)")?;
            plain::run(args.server, name, args.status).await
        } else {
            interactive(args).await
        }
    });
    // A stdin read may still be blocked on its thread; do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

/// How many names the prompt asks for before giving up.
const NAME_TRIES: usize = 5;

/// Asks for the name first and connects only once it is known: the server
/// closes a connection that has not registered within its deadline, and a
/// person may take longer than that to type.
async fn interactive(args: ChatArgs) -> anyhow::Result<()> {
    let mut name = match args.name {
        Some(name) => name,
        None => ask("Your name: ")?,
    };
    for _ in 0..NAME_TRIES {
        let (client, events) = Client::connect(args.server.clone()).await?;
        match client.register(&name, &args.status).await {
            Ok(()) => {
                let app = app::App::new(&args.server, &name);
                return tui::run(client, events, app).await;
            }
            Err(err @ (ClientError::NameTaken(_) | ClientError::Rejected(_))) => {
                // Not connected while the next name is typed, either.
                drop((client, events));
                name = ask(&format!("{err}. Another name: "))?;
            }
            Err(err) => return Err(err.into()),
        }
    }
    bail!("no name accepted after {NAME_TRIES} tries")
}

/// Asks a question on the terminal before the full-screen UI starts.
fn ask(question: &str) -> anyhow::Result<String> {
    let mut out = std::io::stderr();
    write!(out, "{question}")?;
    out.flush()?;
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer)? == 0 {
        bail!("no name given");
    }
    let answer = answer.trim().to_string();
    if answer.is_empty() {
        bail!("no name given");
    }
    Ok(answer)
}
