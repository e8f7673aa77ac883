//! `natter serve`: the command line of the server.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Address of the web chat page and its WebSocket gateway (/ws).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    web: SocketAddr,
    /// Serve no web page (and no WebSocket gateway).
    #[arg(long, conflicts_with = "web")]
    no_web: bool,
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
    /// Under load, a client written to less than this many milliseconds ago
    /// waits for the rest of that time so its messages leave in one write
    /// (0: write at once, always).
    #[arg(long, default_value_t = 5, value_name = "MS")]
    write_coalesce: u64,
    /// Seconds a new connection has to REGISTER before it is closed (0: forever).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    register_timeout: u64,
    /// Idle seconds before TCP keepalive probes start; a peer that answers
    /// none is dropped (0: no keepalive).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    tcp_keepalive: u64,
    /// Close connections silent for this many seconds (0: never, for course
    /// clients that sit quietly for hours).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    idle_timeout: u64,
    /// Commands per second per connection, on average (0: no limit).
    #[arg(long, default_value_t = 10, value_name = "PER_SEC")]
    rate_limit: u32,
    /// Commands a connection may send in one burst above the rate.
    #[arg(long, default_value_t = 20, value_name = "N")]
    rate_burst: u32,
    /// Most connections at once.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_connections: usize,
    /// Worker threads. One thread (the default) runs every connection and
    /// the hub without any cross-thread hand-off, which is the cheapest way
    /// to serve on one core; more threads spread decoding over cores.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Most connections from one IP address (0: no limit).
    #[arg(long, default_value_t = 100, value_name = "N")]
    max_connections_per_ip: usize,
    /// Where conversations and their history are kept (created on first start).
    #[arg(long, default_value = "natter-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Keep nothing on disk: conversations and messages live only in memory.
    #[arg(long, conflicts_with = "data_dir")]
    ephemeral: bool,
    /// Days of messages to keep (0: forever).
    #[arg(long, default_value_t = 0, value_name = "DAYS")]
    history_days: u32,
    /// After a restart, seconds a guest has to register again before it
    /// leaves its conversations.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    rejoin_grace: u64,
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
            web: (!self.no_web).then_some(self.web),
            presence_interval: Duration::from_secs(self.presence_interval),
            presence_coalesce: Duration::from_millis(self.presence_coalesce),
            policy: match self.conversations {
                PolicyArg::Open => Policy::Open,
                PolicyArg::InviteOnly => Policy::InviteOnly,
            },
            send_queue: self.send_queue,
            register_timeout: Duration::from_secs(self.register_timeout),
            write_coalesce: Duration::from_millis(self.write_coalesce),
            tcp_keepalive: Duration::from_secs(self.tcp_keepalive),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            rate_limit: self.rate_limit,
            rate_burst: self.rate_burst,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            data_dir: (!self.ephemeral).then(|| self.data_dir.clone()),
            history_days: self.history_days,
            rejoin_grace: Duration::from_secs(self.rejoin_grace),
            ..Default::default()
        };
        config.limits.max_frame = self.max_frame as usize;
        config.limits.max_message = self.max_message;
        config
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let runtime = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.into())
            .enable_all()
            .build(),
    }
    .context("starting the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config();
    let server = natter_server::spawn(config).await.with_context(|| {
        let listen = if args.no_web {
            format!("listen on {}", args.listen)
        } else {
            format!("listen on {} and {}", args.listen, args.web)
        };
        match (args.ephemeral, &args.data_dir) {
            (true, _) => format!("cannot {listen}"),
            (false, dir) => format!("cannot {listen} with data dir {}", dir.display()),
        }
    })?;
    println!("listening on {}", server.local_addr());
    if let Some(web) = server.web_addr() {
        println!("web on http://{web}");
    }
    // A failed hub serves no one: stop, and exit non-zero so that systemd
    // (or whatever supervises us) starts a fresh server.
    let failed = tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            false
        }
        _ = server.failed() => true,
    };
    tracing::info!("shutting down");
    server.shutdown().await;
    if failed {
        anyhow::bail!("the hub failed; the server stopped");
    }
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

/// Logs go to stderr, filtered by `RUST_LOG` (default: info), coloured
/// only when stderr is a terminal (a file or a journal gets plain text).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
