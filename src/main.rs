//! The `natter` command: the server (`serve`), the terminal client (`chat`)
//! and the load generator (`bench`).

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => serve::run(args),
        Commands::Chat(args) => chat::run(args),
        Commands::Bench(args) => bench::run(args),
    }
}
