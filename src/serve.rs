//! `natter serve`: the command line of the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use natter_core::{AccountsMode, Policy};
use natter_proto::limits::MAX_FRAME_CEILING;
use natter_server::tls::Plaintext;

/// Arguments of `natter serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to accept TCP clients on.
    #[arg(long, default_value_t = defaults().listen)]
    listen: SocketAddr,
    /// Address of the web chat page and its WebSocket gateway (/ws).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    web: SocketAddr,
    /// Serve no web page (and no WebSocket gateway).
    #[arg(long, conflicts_with = "web")]
    no_web: bool,
    /// Serve the Prometheus metrics (GET /metrics) on this address alone,
    /// and not on the web page's (for when the web page is off or public).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Seconds between full ONLINE_USERS snapshots to classic clients (0: never).
    #[arg(long, default_value_t = defaults().presence_interval.as_secs(), value_name = "SECS")]
    presence_interval: u64,
    /// Presence coalescing window in milliseconds (0: send every change at once).
    #[arg(long, default_value_t = millis(defaults().presence_coalesce), value_name = "MS")]
    presence_coalesce: u64,
    /// Who may join conversations.
    #[arg(long, value_enum, default_value_t = defaults().policy.into())]
    conversations: PolicyArg,
    /// Largest accepted frame (or JSON line, or classic message), in bytes.
    #[arg(long, default_value_t = defaults().limits.max_frame as u32, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(16..=MAX_FRAME_CEILING as i64))]
    max_frame: u32,
    /// Largest chat message, in bytes of UTF-8.
    #[arg(long, default_value_t = defaults().limits.max_message, value_name = "BYTES")]
    max_message: usize,
    /// Bytes that may wait for one client before it is cut off as a slow consumer.
    #[arg(long, default_value_t = defaults().send_queue, value_name = "BYTES")]
    send_queue: usize,
    /// Under load, a client written to less than this many milliseconds ago
    /// waits for the rest of that time so its messages leave in one write
    /// (0: write at once, always).
    #[arg(long, default_value_t = millis(defaults().write_coalesce), value_name = "MS")]
    write_coalesce: u64,
    /// Seconds from connecting a new connection has to REGISTER before it
    /// is closed (0: forever).
    #[arg(long, default_value_t = defaults().register_timeout.as_secs(), value_name = "SECS")]
    register_timeout: u64,
    /// Idle seconds before TCP keepalive probes start; a peer that answers
    /// none is dropped (0: no keepalive).
    #[arg(long, default_value_t = defaults().tcp_keepalive.as_secs(), value_name = "SECS")]
    tcp_keepalive: u64,
    /// Close connections silent for this many seconds (0: never, for course
    /// clients that sit quietly for hours).
    #[arg(long, default_value_t = defaults().idle_timeout.as_secs(), value_name = "SECS")]
    idle_timeout: u64,
    /// Commands (frames) per second per connection, on average; a client
    /// over it is read more slowly, and cut off after 5 s over it (0: no
    /// limit).
    #[arg(long, default_value_t = defaults().rate_limit, value_name = "PER_SEC")]
    rate_limit: u32,
    /// Commands a connection may send in one burst above the rate.
    #[arg(long, default_value_t = defaults().rate_burst, value_name = "N")]
    rate_burst: u32,
    /// Most connections at once.
    #[arg(long, default_value_t = defaults().max_connections, value_name = "N")]
    max_connections: usize,
    /// Worker threads. One thread (the default) runs every connection and
    /// the hub without any cross-thread hand-off, which is the cheapest way
    /// to serve on one core; more threads spread decoding over cores.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Most connections from one IP address, an IPv6 /64 counting as one
    /// (0: no limit).
    #[arg(long, default_value_t = defaults().max_connections_per_ip, value_name = "N")]
    max_connections_per_ip: usize,
    /// Most HTTP connections to the web page at once (0: no limit).
    #[arg(long, default_value_t = defaults().max_web_connections, value_name = "N")]
    max_web_connections: usize,
    /// Seconds an HTTP client has to send a request's headers.
    #[arg(long, default_value_t = defaults().web_header_timeout.as_secs(), value_name = "SECS")]
    web_header_timeout: u64,
    /// Where conversations and their history are kept (created on first start).
    #[arg(long, default_value = "natter-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Keep nothing on disk: conversations and messages live only in memory.
    #[arg(long, conflicts_with = "data_dir")]
    ephemeral: bool,
    /// Days of messages to keep (0: forever).
    #[arg(long, default_value_t = defaults().history_days, value_name = "DAYS")]
    history_days: u32,
    /// After a restart, seconds a guest has to register again before it
    /// leaves its conversations.
    #[arg(long, default_value_t = defaults().rejoin_grace.as_secs(), value_name = "SECS")]
    rejoin_grace: u64,
    /// off: names are first come, first served; optional: an account's name
    /// needs its password, other names are free for guests; required: no
    /// guests.
    #[arg(long, value_enum, default_value_t = AccountsArg::Optional)]
    accounts: AccountsArg,
    /// Whether clients may create accounts with SIGNUP.
    #[arg(long, value_enum, default_value_t = SignupArg::Open)]
    signup: SignupArg,
    /// TLS certificate chain (PEM): clients whose first byte is a TLS
    /// handshake get TLS on the same port, and the web page HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse plaintext clients except from loopback (127.0.0.0/8, ::1),
    /// with an ERROR that says why.
    #[arg(long, requires = "tls_cert")]
    require_tls: bool,
    /// Seconds a TLS handshake may take before its connection is dropped.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    tls_handshake_timeout: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AccountsArg {
    Off,
    Optional,
    Required,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SignupArg {
    Open,
    Closed,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PolicyArg {
    /// Anyone registered may join any conversation.
    Open,
    /// Joining needs an invitation.
    InviteOnly,
}

impl From<Policy> for PolicyArg {
    fn from(policy: Policy) -> Self {
        match policy {
            Policy::Open => PolicyArg::Open,
            Policy::InviteOnly => PolicyArg::InviteOnly,
        }
    }
}

/// The library's defaults (`natter_server::Config`, whose frame and
/// message sizes come from `natter_proto::Limits`): the one place they are
/// written, so `--help` shows what the server does.
fn defaults() -> &'static natter_server::Config {
    static DEFAULTS: OnceLock<natter_server::Config> = OnceLock::new();
    DEFAULTS.get_or_init(natter_server::Config::default)
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<natter_server::Config> {
        let mut config = natter_server::Config {
            listen: self.listen,
            web: (!self.no_web).then_some(self.web),
            metrics: self.metrics,
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
            max_web_connections: self.max_web_connections,
            web_header_timeout: Duration::from_secs(self.web_header_timeout),
            data_dir: (!self.ephemeral).then(|| self.data_dir.clone()),
            history_days: self.history_days,
            rejoin_grace: Duration::from_secs(self.rejoin_grace),
            accounts: match self.accounts {
                AccountsArg::Off => AccountsMode::Off,
                AccountsArg::Optional => AccountsMode::Optional,
                AccountsArg::Required => AccountsMode::Required,
            },
            signup_open: matches!(self.signup, SignupArg::Open),
            tls: self.tls()?,
            tls_handshake_timeout: Duration::from_secs(self.tls_handshake_timeout),
            plaintext: if self.require_tls {
                Plaintext::Loopback
            } else {
                Plaintext::Anywhere
            },
            ..Default::default()
        };
        config.limits.max_frame = self.max_frame as usize;
        config.limits.max_message = self.max_message;
        Ok(config)
    }

    /// The certificate and key, loaded, when both are given.
    fn tls(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let config = natter_server::tls::load_server_config(cert, key)
            .with_context(|| format!("cannot use {} and {}", cert.display(), key.display()))?;
        Ok(Some(Arc::new(config)))
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
    let config = args.config()?;
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
        let scheme = if args.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        println!("web on {scheme}://{web}");
    }
    if let Some(metrics) = server.metrics_addr() {
        println!("metrics on http://{metrics}/metrics");
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// What `natter serve` with no flags must run: the library's defaults,
    /// plus the two things only the binary decides (a web page, a data dir).
    fn expected() -> natter_server::Config {
        natter_server::Config {
            web: Some("127.0.0.1:8080".parse().unwrap()),
            data_dir: Some("natter-data".into()),
            ..natter_server::Config::default()
        }
    }

    /// Every default `--help` shows, given back as a flag, configures the
    /// server exactly as the library's default does: the help cannot
    /// disagree with the behaviour.
    #[test]
    fn the_defaults_help_shows_are_the_ones_the_server_uses() {
        let command = Cli::command();
        let mut argv = vec!["serve".to_string()];
        let mut shown = 0;
        for arg in command.get_arguments() {
            let (Some(long), [default]) = (arg.get_long(), arg.get_default_values()) else {
                continue;
            };
            argv.push(format!("--{long}={}", default.to_string_lossy()));
            shown += 1;
        }
        assert!(shown >= 20, "only {shown} defaults shown");
        let given = Cli::try_parse_from(&argv).expect("the shown defaults parse");
        assert_eq!(
            format!(
                "{:?}",
                given
                    .serve
                    .config()
                    .expect("the defaults configure a server")
            ),
            format!("{:?}", expected()),
            "{argv:?}"
        );
        let plain = Cli::try_parse_from(["serve"]).unwrap();
        assert_eq!(
            format!(
                "{:?}",
                plain.serve.config().expect("no flags configure a server")
            ),
            format!("{:?}", expected())
        );
    }

    #[test]
    fn help_lists_every_limit_with_its_default() {
        let help = Cli::command().render_long_help().to_string();
        let defaults = natter_server::Config::default();
        for (flag, default) in [
            ("--rate-limit", defaults.rate_limit.to_string()),
            ("--max-frame", defaults.limits.max_frame.to_string()),
            ("--send-queue", defaults.send_queue.to_string()),
            (
                "--register-timeout",
                defaults.register_timeout.as_secs().to_string(),
            ),
            (
                "--max-web-connections",
                defaults.max_web_connections.to_string(),
            ),
        ] {
            let at = help
                .find(flag)
                .unwrap_or_else(|| panic!("{flag} not in --help"));
            let rest = &help[at..];
            let shown = rest[rest.find("[default: ").expect("a default") + 10..]
                .split(']')
                .next()
                .unwrap();
            assert_eq!(shown, default, "{flag}");
        }
    }
}
