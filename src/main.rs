//! The `natter` command: the server (`serve`), the terminal client (`chat`),
//! the load generator (`bench`), the online backup (`backup`), the
//! operator's account tool (`account`), the operator's tool for a running
//! server (`admin`), a certificate for trying TLS out (`cert`), and the
//! server's config file (`config`).

mod account;
mod admin;
mod backup;
mod bench;
mod cert;
mod chat;
mod config;
mod serve;
mod settings;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "natter",
    version,
    about = "An instant-messaging server and its clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the chat server (`natter serve --help` lists its settings).
    Serve(RawArgs),
    /// Chat from the terminal (or, with --plain, from scripts).
    Chat(chat::ChatArgs),
    /// Measure a running server (natter or IRC) under load.
    Bench(bench::BenchArgs),
    /// Copy a data dir consistently, while its server runs.
    Backup(backup::BackupArgs),
    /// Manage accounts in a data dir while the server is stopped.
    Account(account::AccountArgs),
    /// Make a certificate for trying TLS out (--self-signed).
    Cert(cert::CertArgs),
    /// Operate a running server: stats, users, kick, ban, broadcast, drain.
    Admin(admin::AdminArgs),
    /// The server's config file (--print-defaults).
    Config(config::ConfigArgs),
}

/// `natter serve`'s arguments as given: its settings come from the flags,
/// the environment and a config file together, which `serve` puts together
/// itself (and again on SIGHUP).
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
struct RawArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<std::ffi::OsString>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(raw) => serve::main(raw.args),
        Commands::Chat(args) => chat::run(args),
        Commands::Bench(args) => bench::run(args),
        Commands::Backup(args) => backup::run(args),
        Commands::Account(args) => account::run(args),
        Commands::Cert(args) => cert::run(args),
        Commands::Config(args) => config::run(args),
        Commands::Admin(args) => admin::run(args),
    }
}
