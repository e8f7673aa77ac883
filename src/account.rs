//! `natter account add|passwd|remove|list --data-dir DIR`: the operator's
//! account tool.
//!
//! It opens the store itself, so it runs while the server is stopped (the
//! data-dir lock says so if not). A cluster node's data dir is refused:
//! a cluster's accounts live in its log. A password never comes from the command
//! line, where `ps` and shell history would show it: it is read from a
//! prompt without echo, or from the first line of stdin with
//! `--password-stdin` for scripts.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};
use natter_core::user_key;
use natter_proto::Limits;
use natter_proto::command::{MAX_PASSWORD, MIN_PASSWORD, validate_name};
use natter_server::auth::secrets::hash_password;
use natter_store::Store;

/// What a cluster node keeps in its data dir (its store, a cache of the
/// cluster's log).
const CLUSTER_CACHE: &str = "cluster-cache";

#[derive(clap::Args, Debug)]
pub struct AccountArgs {
    #[command(subcommand)]
    action: Action,
    /// The server's data dir.
    #[arg(long, global = true, default_value = "natter-data", value_name = "DIR")]
    data_dir: PathBuf,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Create an account.
    Add(WithPassword),
    /// Set an account's password (its sessions end).
    Passwd(WithPassword),
    /// Delete an account and its sessions.
    Remove { username: String },
    /// List the accounts.
    List,
}

#[derive(clap::Args, Debug)]
struct WithPassword {
    username: String,
    /// Read the password from the first line of stdin instead of a prompt.
    #[arg(long)]
    password_stdin: bool,
}

pub fn run(args: AccountArgs) -> anyhow::Result<()> {
    if args.data_dir.join(CLUSTER_CACHE).is_dir() {
        // Its accounts are in the cluster's log; what this tool wrote
        // here no node would ever read.
        bail!(
            "{} is a cluster node's data dir (--nats): its accounts are kept in the \
             cluster's log, not here; make accounts with SIGNUP or on the web page, \
             change a password with PASSWORD",
            args.data_dir.display()
        );
    }
    let mut store = Store::open(&args.data_dir)
        .with_context(|| format!("opening {}", args.data_dir.display()))?;
    match args.action {
        Action::Add(who) => {
            validate_name(&who.username, &Limits::server_default())?;
            let phc = hash_password(&read_password(&who)?)
                .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
            let now = chrono::Utc::now().timestamp_millis();
            if !store.add_account(&user_key(&who.username), &who.username, &phc, now)? {
                bail!("account {} exists already", who.username);
            }
            println!("added {}", who.username);
        }
        Action::Passwd(who) => {
            let key = user_key(&who.username);
            if !store.has_account(&key)? {
                bail!("no account {}", who.username);
            }
            let phc = hash_password(&read_password(&who)?)
                .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
            store.set_password(&key, &phc)?;
            println!("password of {} changed; its sessions ended", who.username);
        }
        Action::Remove { username } => {
            if !store.remove_account(&user_key(&username))? {
                bail!("no account {username}");
            }
            println!("removed {username}");
        }
        Action::List => {
            for account in store.list_accounts()? {
                println!("{}\t{} sessions", account.display, account.sessions);
            }
        }
    }
    Ok(())
}

/// The password from stdin or a no-echo prompt (asked twice), checked
/// against the contract's length rule.
fn read_password(who: &WithPassword) -> anyhow::Result<String> {
    let password = if who.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let first = rpassword::prompt_password(format!("password for {}: ", who.username))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            bail!("the passwords differ");
        }
        first
    };
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()) {
        bail!("a password is {MIN_PASSWORD} to {MAX_PASSWORD} bytes");
    }
    Ok(password)
}
