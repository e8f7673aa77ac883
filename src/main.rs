//! The `natter` command: the server (`serve`), the terminal client (`chat`),
//! the load generator (`bench`), the online backup (`backup`) and the
//! operator's account tool (`account`).

mod account;
mod backup;
mod bench;
mod chat;
mod serve;

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
    /// Run the chat server.
    Serve(serve::ServeArgs),
    /// Chat from the terminal (or, with --plain, from scripts).
    Chat(chat::ChatArgs),
    /// Measure a running server (natter or IRC) under load.
    Bench(bench::BenchArgs),
    /// Copy a data dir consistently, while its server runs.
    Backup(backup::BackupArgs),
    /// Manage accounts in a data dir while the server is stopped.
    Account(account::AccountArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => serve::run(args),
        Commands::Chat(args) => chat::run(args),
        Commands::Bench(args) => bench::run(args),
        Commands::Backup(args) => backup::run(args),
        Commands::Account(args) => account::run(args),
    }
}
