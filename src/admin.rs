//! `natter admin COMMAND`: the operator's tool for a running server.
//!
//! It talks to the server over its admin socket (`DATA_DIR/admin.sock`,
//! or the `--admin-socket` the server was started with): one JSON request
//! line, one JSON answer line (see `natter_server::admin`), shown as text,
//! or as the JSON itself with `--json`. Only the user the server runs as
//! (and root) may open the socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::TimeZone;
use serde_json::{Value, json};

/// How long the server has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    /// The server's data dir: its admin socket is DIR/admin.sock.
    #[arg(long, global = true, default_value = "natter-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// The admin socket itself, for a server started with --admin-socket
    /// (e.g. one running with --ephemeral).
    #[arg(long, global = true, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Print the server's answer as JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum AdminCommand {
    /// Connections, users online, conversations, messages, uptime.
    Stats,
    /// Online users with their status, addresses and devices.
    Users,
    /// Disconnect a user (every device), telling it an operator did, and why.
    Kick {
        name: String,
        /// Why (shown to the user).
        #[arg(trailing_var_arg = true)]
        reason: Vec<String>,
    },
    /// Ban a username or an IP address (an IPv6 address bans its /64);
    /// whoever it matches online is disconnected at once.
    Ban {
        /// A username, an IP address, or user:NAME / ip:ADDR to be explicit.
        target: String,
        /// How long: 30m, 2h, 7d, 1w, or permanent (the default).
        duration: Option<String>,
        /// Why (shown to whoever is refused).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Lift a ban.
    Unban { target: String },
    /// List the bans in force.
    Bans,
    /// Send every online user a notice (a MESSAGE in conversation 0 from *server*).
    Broadcast {
        #[arg(required = true, trailing_var_arg = true)]
        text: Vec<String>,
    },
    /// Stop accepting clients, tell everyone, and stop the server once all
    /// have left or after the timeout.
    Drain {
        /// Seconds to wait for clients to leave.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
    },
}

pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let socket = args
        .admin_socket
        .clone()
        .unwrap_or_else(|| args.data_dir.join(natter_server::admin::SOCKET_NAME));
    let request = request(&args.command);
    let answer = exchange(&socket, &request)?;
    if args.json {
        println!("{answer}");
    }
    if answer["ok"] != json!(true) {
        let error = answer["error"].as_str().unwrap_or("no reason given");
        bail!("the server refused: {error}");
    }
    if !args.json {
        show(&args.command, &answer["result"]);
    }
    Ok(())
}

fn request(command: &AdminCommand) -> Value {
    match command {
        AdminCommand::Stats => json!({ "command": "stats" }),
        AdminCommand::Users => json!({ "command": "users" }),
        AdminCommand::Kick { name, reason } => {
            json!({ "command": "kick", "name": name, "reason": reason.join(" ") })
        }
        AdminCommand::Ban {
            target,
            duration,
            reason,
        } => json!({
            "command": "ban",
            "target": target,
            "duration": duration,
            "reason": reason.clone().unwrap_or_default(),
        }),
        AdminCommand::Unban { target } => json!({ "command": "unban", "target": target }),
        AdminCommand::Bans => json!({ "command": "bans" }),
        AdminCommand::Broadcast { text } => {
            json!({ "command": "broadcast", "text": text.join(" ") })
        }
        AdminCommand::Drain { timeout } => json!({ "command": "drain", "timeout_secs": timeout }),
    }
}

/// Sends one request line and reads one answer line.
fn exchange(socket: &std::path::Path, request: &Value) -> anyhow::Result<Value> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the server's admin socket {} (is natter serve running with this \
             data dir? started with --admin-socket, give the same path)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    writeln!(stream, "{request}").context("sending the request")?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .context("reading the answer")?;
    if line.is_empty() {
        bail!("the server closed the admin connection without answering");
    }
    serde_json::from_str(&line).context("the server's answer is not JSON")
}

/// Prints an answer for a person.
fn show(command: &AdminCommand, result: &Value) {
    let n = |key: &str| result[key].as_u64().unwrap_or(0);
    match command {
        AdminCommand::Stats => {
            println!("uptime:        {}", uptime(n("uptime_secs")));
            println!("connections:   {}", n("connections"));
            println!(
                "users online:  {} ({} devices)",
                n("users_online"),
                n("devices")
            );
            println!("conversations: {}", n("conversations"));
            println!("messages:      {} since start", n("messages_since_start"));
            println!("accounts:      {}", n("accounts"));
            println!("bans:          {}", n("bans"));
            if result["draining"] == json!(true) {
                println!("draining:      yes");
            }
        }
        AdminCommand::Users => show_users(result),
        AdminCommand::Kick { name, .. } => {
            println!("kicked {name} ({})", connections(n("closed")));
        }
        AdminCommand::Ban { .. } => {
            let ban = &result["ban"];
            println!(
                "banned {} {} ({} closed)",
                text(&ban["target"]),
                how_long(ban),
                connections(n("closed"))
            );
        }
        AdminCommand::Unban { .. } => println!("unbanned {}", text(&result["lifted"]["target"])),
        AdminCommand::Bans => show_bans(result),
        AdminCommand::Broadcast { .. } => println!("sent to {}", connections(n("sent"))),
        AdminCommand::Drain { .. } => println!(
            "draining: not accepting clients; {} still connected; the server stops when \
             they have left, or in {} s",
            n("connections"),
            n("timeout_secs")
        ),
    }
}

fn show_users(result: &Value) {
    let users = result["users"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if users.is_empty() {
        println!("nobody is online");
    }
    for user in users {
        let kind = if user["account"] == json!(true) {
            "account"
        } else {
            "guest"
        };
        let devices: Vec<String> = user["devices"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|d| {
                format!(
                    "{} ({} {}, conn {})",
                    text(&d["address"]),
                    text(&d["transport"]),
                    text(&d["encoding"]),
                    d["conn"]
                )
            })
            .collect();
        println!(
            "{} [{}] {kind}: {}",
            text(&user["name"]),
            text(&user["status"]),
            devices.join(", ")
        );
    }
}

fn show_bans(result: &Value) {
    let bans = result["bans"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if bans.is_empty() {
        println!("no bans");
    }
    for ban in bans {
        let reason = text(&ban["reason"]);
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        };
        println!("{} {}{reason}", text(&ban["target"]), how_long(ban));
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn how_long(ban: &Value) -> String {
    match ban["until_ms"].as_i64() {
        None => "permanently".to_owned(),
        Some(until) => {
            let at = chrono::Utc
                .timestamp_millis_opt(until)
                .single()
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default();
            format!("until {at}")
        }
    }
}

fn connections(n: u64) -> String {
    match n {
        1 => "1 connection".to_owned(),
        n => format!("{n} connections"),
    }
}

fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else {
        format!("{h}h {m}m {s}s")
    }
}
