//! `natter chat`: the terminal client, full-screen or `--plain`.
//!
//! - [`app`]: the client's state, changed by events and keys (no I/O).
//! - [`ui`]: draws the screen from that state.
//! - [`tui`]: the terminal and the event loop around them.
//! - [`plain`]: one line per event on stdout, commands from stdin.
//! - [`input`]: what a typed line means (shared by both modes).
//! - [`edit`]: editing the input, recalling earlier inputs.
//! - [`text`]: text cleaned, measured and wrapped by grapheme.

mod app;
mod edit;
mod input;
mod login;
mod plain;
mod text;
mod tui;
mod ui;

#[cfg(test)]
mod tests;

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use natter_client::{Client, ClientConfig, ClientError, ClientTls};

/// Arguments of `natter chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The server to talk to.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:6666",
        env = "NATTER_SERVER"
    )]
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
    /// Connect with TLS, verifying the server's certificate (by the host
    /// in --server) against the public CAs, or against --ca-file.
    #[arg(long)]
    pub tls: bool,
    /// Trust only the CA certificates in this PEM file (e.g. the cert.pem
    /// of `natter cert --self-signed`).
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca_file: Option<PathBuf>,
    /// Sign in to your account with the password on the first line of
    /// this file. Once signed in, a session token is kept in your config
    /// directory and later runs need no password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Sign in to your account: asks for the password, without echo.
    /// (Without it, the password is asked for when the server says the
    /// name needs one.)
    #[arg(long, conflicts_with = "password_file")]
    pub password: bool,
    /// Create the account NAME first (the password is asked for twice,
    /// or read from --password-file).
    #[arg(long)]
    pub signup: bool,
    /// When to ring the terminal bell: `all` (mentions of your name,
    /// messages in conversations you are not looking at, invitations),
    /// `mentions`, or `off`.
    #[arg(long, value_enum, default_value = "all")]
    pub notify: app::Notify,
}

impl ChatArgs {
    /// The client library's settings for these arguments.
    fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::new(self.server.clone());
        config.tls = match (&self.ca_file, self.tls) {
            (Some(file), _) => Some(ClientTls::from_ca_file(file)?),
            (None, true) => Some(ClientTls::public_roots()),
            (None, false) => None,
        };
        Ok(config)
    }
}

pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        if args.plain {
            let config = args.client_config()?;
            let name = args
                .name
                .clone()
                .context("--plain needs --name NAME (there is no prompt in plain mode)")?;
            let login = login::Login::from_args(&args, &name, false)?;
            plain::run(config, name, args.status, login).await
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
    let mut name = match args.name.clone() {
        Some(name) => name,
        None => ask("Your name: ")?,
    };
    let mut login = login::Login::from_args(&args, &name, true)?;
    for _ in 0..NAME_TRIES {
        let (client, events) = Client::connect_with(args.client_config()?).await?;
        match login::register(&client, &login, &name, &args.status).await {
            Ok(()) => {
                let mut app = app::App::new(&args.server, &name);
                app.notify = args.notify;
                return tui::run(client, events, app).await;
            }
            Err(err @ (ClientError::NameTaken(_) | ClientError::Rejected(_))) => {
                // Not connected while the next name is typed, either.
                drop((client, events));
                name = ask(&format!("{err}. Another name: "))?;
            }
            Err(ClientError::AccountNeeded(text)) => {
                drop((client, events));
                eprintln!("{text}");
                if !login.ask_again(&name)? {
                    bail!("{text}");
                }
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
