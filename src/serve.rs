//! `natter serve`: the command line of the server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use natter_core::Policy;
use natter_proto::limits::MAX_FRAME_CEILING;

/// Arguments of `natter serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to accept TCP clients on.
    #[arg(long, default_value = "0.0.0.0:6666")]
    listen: SocketAddr,
    /// Seconds between full ONLINE_USERS snapshots to classic clients (0: never).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    presence_interval: u64,
    /// Presence coalescing window in milliseconds (0: send every change at once).
    #[arg(long, default_value_t = 100, value_name = "MS")]
    presence_coalesce: u64,
    /// Who may join conversations.
    #[arg(long, value_enum, default_value_t = PolicyArg::Open)]
    conversations: PolicyArg,
    /// Largest accepted frame (or JSON line, or classic message), in bytes.
    #[arg(long, default_value_t = 65536, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(16..=MAX_FRAME_CEILING as i64))]
    max_frame: u32,
    /// Largest chat message, in bytes of UTF-8.
    #[arg(long, default_value_t = 8192, value_name = "BYTES")]
    max_message: usize,
    /// Bytes that may wait for one client before it is cut off as a slow consumer.
    #[arg(long, default_value_t = 1048576, value_name = "BYTES")]
    send_queue: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PolicyArg {
    /// Anyone registered may join any conversation.
    Open,
    /// Joining needs an invitation.
    InviteOnly,
}

impl ServeArgs {
    fn config(&self) -> natter_server::Config {
        let mut config = natter_server::Config {
            listen: self.listen,
            presence_interval: Duration::from_secs(self.presence_interval),
            presence_coalesce: Duration::from_millis(self.presence_coalesce),
            policy: match self.conversations {
                PolicyArg::Open => Policy::Open,
                PolicyArg::InviteOnly => Policy::InviteOnly,
            },
            send_queue: self.send_queue,
            ..Default::default()
        };
        config.limits.max_frame = self.max_frame as usize;
        config.limits.max_message = self.max_message;
        config
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config();
    let server = natter_server::spawn(config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on {}", server.local_addr());
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
