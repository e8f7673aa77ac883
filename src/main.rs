//! The `natter` command: the server (`serve`), the terminal client (`chat`),
//! the load generator (`bench`) and the online backup (`backup`).

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => serve::run(args),
        Commands::Chat(args) => chat::run(args),
        Commands::Bench(args) => bench::run(args),
        Commands::Backup(args) => backup::run(args),
    }
}
