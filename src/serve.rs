//! `natter serve`: the command line of the server, where its settings come
//! from ([`crate::settings`]: flags, environment, config file), its life
//! under a service manager (systemd's readiness and watchdog
//! notifications), and reloading its settings on SIGHUP.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use clap::{Args as _, FromArgMatches as _, ValueEnum};
use natter_core::{AccountsMode, Policy};
use natter_proto::limits::MAX_FRAME_CEILING;
use natter_server::cluster::ClusterConfig;
use natter_server::tls::Plaintext;
use sd_notify::NotifyState;

use crate::settings::{self, SettingsError};

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
    /// The longest a client's message waits under load for others to leave
    /// with it in one write, in milliseconds; the wait grows with the
    /// server's load from zero (0: write at once, always).
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
    /// Connections the kernel queues for the server to accept (the listen
    /// backlog, capped by net.core.somaxconn); a larger burst of connects
    /// waits for SYN retries.
    #[arg(long, default_value_t = defaults().listen_backlog, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    listen_backlog: u32,
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
    /// The operator's socket for `natter admin` (owner-only). Default:
    /// DATA_DIR/admin.sock; with --ephemeral there is none unless given.
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
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
    /// Log lines as text (for people) or as JSON objects, one a line (for
    /// log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// A TOML file of settings: each key is one of these flags, without
    /// its dashes in front (`max-connections = 5000`). Flags win over
    /// NATTER_* environment variables, which win over the file. SIGHUP
    /// reads it again. `natter config --print-defaults` writes one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run as one node of a cluster: the NATS servers (comma-separated
    /// URLs) whose JetStream keeps the log every node applies
    /// (docs/CLUSTER.md).
    #[arg(
        long,
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        requires = "node"
    )]
    nats: Vec<String>,
    /// This node's name in the cluster (for logs and operators).
    #[arg(long, value_name = "NAME", requires = "nats")]
    node: Option<String>,
    /// Copies JetStream keeps of the log (3 survives losing one NATS
    /// server; used with --nats).
    #[arg(long, default_value_t = 3, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=5))]
    nats_replicas: u16,
    /// With --nats: the oldest node writes a snapshot of the chat state
    /// every N log entries; a starting node loads the newest and replays
    /// only the log after it (docs/CLUSTER.md).
    #[arg(long, default_value_t = natter_server::cluster::snapshot::DEFAULT_EVERY,
          value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
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

/// The settings a reload applies without a restart (see
/// `natter_server::Config::reloaded`); any other key that changed is
/// logged as needing one. A flag added later needs a restart until it is
/// listed here (and the test below checks the list against the server).
const LIVE_KEYS: &[&str] = &[
    "presence-interval",
    "presence-coalesce",
    "conversations",
    "max-frame",
    "max-message",
    "send-queue",
    "write-coalesce",
    "register-timeout",
    "tcp-keepalive",
    "idle-timeout",
    "rate-limit",
    "rate-burst",
    "max-connections",
    "max-connections-per-ip",
    "max-web-connections",
    "web-header-timeout",
    "signup",
    "tls-cert",
    "tls-key",
    "require-tls",
    "tls-handshake-timeout",
];

/// The keys that turn TLS on or off: live only while TLS stays on.
const TLS_KEYS: &[&str] = &["tls-cert", "tls-key", "require-tls"];

impl ServeArgs {
    /// The admin socket's name in the data dir: a cluster node's has the
    /// node's name in it, since several nodes may share a data dir (each
    /// keeps its store apart, under `cluster-cache/NODE`).
    fn admin_socket_name(&self) -> String {
        match &self.node {
            None => natter_server::admin::SOCKET_NAME.to_string(),
            Some(node) => format!("admin-{}.sock", natter_server::node_file_name(node)),
        }
    }

    fn config(&self) -> anyhow::Result<natter_server::Config> {
        let config = self.config_with(self.tls()?);
        Ok(config)
    }

    /// The server's settings, with the TLS settings already loaded.
    fn config_with(&self, tls: Option<Arc<rustls::ServerConfig>>) -> natter_server::Config {
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
            listen_backlog: self.listen_backlog,
            max_connections_per_ip: self.max_connections_per_ip,
            max_web_connections: self.max_web_connections,
            web_header_timeout: Duration::from_secs(self.web_header_timeout),
            data_dir: (!self.ephemeral).then(|| self.data_dir.clone()),
            admin_socket: self.admin_socket.clone().or_else(|| {
                (!self.ephemeral).then(|| self.data_dir.join(self.admin_socket_name()))
            }),
            history_days: self.history_days,
            rejoin_grace: Duration::from_secs(self.rejoin_grace),
            accounts: match self.accounts {
                AccountsArg::Off => AccountsMode::Off,
                AccountsArg::Optional => AccountsMode::Optional,
                AccountsArg::Required => AccountsMode::Required,
            },
            signup_open: matches!(self.signup, SignupArg::Open),
            tls,
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
        if let Some(node) = &self.node {
            let mut cluster = ClusterConfig::new(self.nats.clone(), node.clone());
            cluster.replicas = self.nats_replicas.into();
            cluster.snapshot_every = self.snapshot_every;
            config.cluster = Some(cluster);
        }
        config
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

/// `natter serve` as a command of its own, its flags' defaults the
/// library's.
pub fn command() -> clap::Command {
    ServeArgs::augment_args(clap::Command::new("serve"))
        .bin_name("natter serve")
        .about("Run the chat server.")
}

/// Each setting's value as it would be written on the command line, by
/// key: what a reload compares.
type Values = BTreeMap<String, String>;

/// The settings from the command line (`argv`, "serve" first), the
/// environment and the config file.
fn load(argv: &[OsString]) -> Result<(ServeArgs, Values), SettingsError> {
    load_with(argv, &|name| std::env::var_os(name))
}

fn load_with(
    argv: &[OsString],
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<(ServeArgs, Values), SettingsError> {
    let command = command();
    let matches = settings::resolve(command.clone(), argv, env)?;
    let args = ServeArgs::from_arg_matches(&matches)?;
    let mut values = Values::new();
    for arg in command.get_arguments() {
        let (Some(long), Some(raw)) = (arg.get_long(), matches.get_raw(arg.get_id().as_str()))
        else {
            continue;
        };
        let raw: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        values.insert(long.to_string(), raw.join(","));
    }
    Ok((args, values))
}

/// `natter serve ARGS`: the settings, then the server until a signal.
pub fn main(raw: Vec<OsString>) -> anyhow::Result<()> {
    let mut argv = vec![OsString::from("serve")];
    argv.extend(raw);
    let (args, values) = match load(&argv) {
        Ok(loaded) => loaded,
        // Help, version and command-line errors, as clap prints them.
        Err(SettingsError::Clap(error)) => error.exit(),
        Err(error) => return Err(error.into()),
    };
    run(args, Loaded { argv, values })
}

/// What the settings were loaded from, to load them again on SIGHUP.
struct Loaded {
    argv: Vec<OsString>,
    values: Values,
}

fn run(args: ServeArgs, loaded: Loaded) -> anyhow::Result<()> {
    init_logging(args.log_format);
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
    runtime.block_on(serve(args, loaded))
}

async fn serve(args: ServeArgs, mut loaded: Loaded) -> anyhow::Result<()> {
    // Listened to before anyone can know our address: a SIGHUP must never
    // find its default action (ending the process) in place.
    let mut signals = Signals::new()?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let config = args.config()?;
    let server = natter_server::spawn(config).await.with_context(|| {
        if let Some(node) = &args.node {
            return format!(
                "cannot start node {node} of the cluster at {}",
                args.nats.join(",")
            );
        }
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
    if let Some(catch_up) = server.catch_up() {
        match catch_up.snapshot {
            Some(seq) => println!(
                "caught up from the snapshot at log entry {seq}, then {} entries",
                catch_up.replayed
            ),
            None => println!(
                "caught up from the log's start: {} entries",
                catch_up.replayed
            ),
        }
    }
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
    // Every listener listens: `systemctl start` may return.
    notify(&[NotifyState::Ready]);
    let mut watchdog = Watchdog::from_env();
    // A failed hub serves no one: stop, and exit non-zero so that systemd
    // (or whatever supervises us) starts a fresh server. A finished drain
    // (`natter admin drain`) is a clean stop.
    let failed = loop {
        tokio::select! {
            _ = signals.stop() => break false,
            _ = server.stop_requested() => break false,
            _ = server.failed() => break true,
            _ = hangup.recv() => reload(&server, &mut loaded).await,
            _ = watchdog.tick() => watchdog.pet(&server).await,
        }
    };
    notify(&[NotifyState::Stopping]);
    tracing::info!("shutting down");
    server.shutdown().await;
    if failed {
        anyhow::bail!("the hub failed; the server stopped");
    }
    Ok(())
}

/// SIGHUP: loads the settings again (flags, environment, file) and
/// applies what can change live; says what changed, and which changes
/// wait for a restart. Bad settings change nothing; a certificate that
/// cannot be loaded keeps the one in use.
async fn reload(server: &natter_server::ServerHandle, loaded: &mut Loaded) {
    let mut reloading = vec![NotifyState::Reloading];
    reloading.extend(NotifyState::monotonic_usec_now().ok());
    notify(&reloading);
    tracing::info!("reloading the settings");
    match load(&loaded.argv) {
        Err(error) => {
            tracing::error!(%error, "reload failed: the settings stay as they were");
        }
        Ok((args, values)) => {
            let running = server.config();
            let tls = match args.tls() {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "reload: the TLS certificate stays the one in use"
                    );
                    running.tls.clone()
                }
            };
            let tls_was_on = running.tls.is_some();
            if server.reload(args.config_with(tls)).await.is_none() {
                tracing::error!("reload: the hub is gone");
                return;
            }
            let restart = |key: &str| {
                !LIVE_KEYS.contains(&key)
                    || (TLS_KEYS.contains(&key) && tls_was_on != args.tls_cert.is_some())
            };
            report_changes(&loaded.values, &values, restart);
            loaded.values = values;
        }
    }
    notify(&[NotifyState::Ready]);
}

/// Logs each setting that changed, and whether it took effect.
fn report_changes(old: &Values, new: &Values, restart: impl Fn(&str) -> bool) {
    let mut changed = 0;
    for (key, value) in new {
        let before = old.get(key).map_or("", String::as_str);
        if before == value {
            continue;
        }
        changed += 1;
        if restart(key) {
            tracing::warn!(key, from = %before, to = %value, "setting changed: takes effect after a restart");
        } else {
            tracing::info!(key, from = %before, to = %value, "setting changed");
        }
    }
    tracing::info!(changed, "settings reloaded");
}

/// Tells the service manager (`NOTIFY_SOCKET`) how we are; nothing when
/// there is none.
fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify the service manager");
    }
}

/// systemd's watchdog (`WATCHDOG_USEC`): a keep-alive at half the interval,
/// sent only while the hub answers, so a hub that hangs gets the process
/// restarted.
struct Watchdog {
    every: Option<tokio::time::Interval>,
}

impl Watchdog {
    fn from_env() -> Watchdog {
        let every = sd_notify::watchdog_enabled().map(|timeout| {
            let half = (timeout / 2).max(Duration::from_millis(1));
            let mut every = tokio::time::interval(half);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every
        });
        Watchdog { every }
    }

    async fn tick(&mut self) {
        match &mut self.every {
            Some(every) => {
                every.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Sends the keep-alive if the hub answers within the interval.
    async fn pet(&self, server: &natter_server::ServerHandle) {
        let Some(every) = &self.every else { return };
        if let Ok(Some(_)) = tokio::time::timeout(every.period(), server.stats()).await {
            notify(&[NotifyState::Watchdog]);
        } else {
            tracing::warn!("the hub did not answer: no watchdog keep-alive");
        }
    }
}

/// The signals the server obeys, listened to from the start (so that one
/// arriving during a reload is not missed).
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Ctrl-C or SIGTERM.
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: info): as text,
/// coloured only when stderr is a terminal (a file or a journal gets plain
/// text), or as JSON lines.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
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
            admin_socket: Some("natter-data/admin.sock".into()),
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

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("serve")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// Loads with `env` as the whole environment.
    fn load_in(args: &[&str], env: &[(&str, &str)]) -> Result<(ServeArgs, Values), SettingsError> {
        let env: BTreeMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        load_with(&argv(args), &|name| env.get(name).cloned())
    }

    fn config_of(loaded: Result<(ServeArgs, Values), SettingsError>) -> natter_server::Config {
        loaded.expect("settings load").0.config().expect("a config")
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn every_flag_of_natter_serve_has_a_key_in_the_defaults_file() {
        let text = settings::defaults_file(&command());
        let mut keys = 0;
        for arg in command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == settings::CONFIG_FLAG {
                continue;
            }
            let set = text.lines().any(|line| {
                line.trim_start_matches("# ")
                    .starts_with(&format!("{long} = "))
            });
            assert!(set, "--{long} has no key in:\n{text}");
            let env = format!("environment {}.", settings::env_name(long));
            assert!(text.contains(&env), "--{long}: {env} not said");
            keys += 1;
        }
        assert!(keys >= 30, "only {keys} keys");
    }

    /// The file `natter config --print-defaults` writes, given back
    /// unchanged, configures the server exactly as no file does.
    #[test]
    fn the_defaults_file_configures_the_server_as_no_file_does() {
        let defaults = file(&settings::defaults_file(&command()));
        let path = defaults.path().to_str().unwrap();
        let (with_file, with_file_values) = load_in(&["--config", path], &[]).unwrap();
        let (without, without_values) = load_in(&[], &[]).unwrap();
        assert_eq!(
            format!("{:?}", with_file.config().unwrap()),
            format!("{:?}", expected())
        );
        assert_eq!(
            format!("{:?}", without.config().unwrap()),
            format!("{:?}", expected())
        );
        let mut with_file_values = with_file_values;
        with_file_values.remove("config");
        assert_eq!(with_file_values, without_values);
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_file() {
        let settings = file("rate-limit = 5\nrate-burst = 6\nmax-connections = 7\n");
        let path = settings.path().to_str().unwrap();
        let env = [
            ("NATTER_RATE_BURST", "60"),
            ("NATTER_MAX_CONNECTIONS", "70"),
        ];
        let config = config_of(load_in(
            &["--config", path, "--max-connections", "700"],
            &env,
        ));
        assert_eq!(config.rate_limit, 5, "from the file");
        assert_eq!(config.rate_burst, 60, "from the environment");
        assert_eq!(config.max_connections, 700, "from the flag");
        assert_eq!(config.send_queue, expected().send_queue, "the default");
        // NATTER_CONFIG names the file when --config does not.
        let config = config_of(load_in(&[], &[("NATTER_CONFIG", path)]));
        assert_eq!(config.rate_limit, 5);
    }

    #[test]
    fn switches_and_choices_come_from_the_file_too() {
        let settings = file("no-web = true\nephemeral = true\nconversations = \"invite-only\"\n");
        let path = settings.path().to_str().unwrap();
        let config = config_of(load_in(&["--config", path], &[]));
        assert_eq!(config.web, None);
        assert_eq!(config.data_dir, None);
        assert_eq!(config.policy, Policy::InviteOnly);
        // A flag that conflicts with the file's setting wins over it.
        let config = config_of(load_in(&["--config", path, "--web", "127.0.0.1:9"], &[]));
        assert_eq!(config.web, Some("127.0.0.1:9".parse().unwrap()));
    }

    fn error_of(loaded: Result<(ServeArgs, Values), SettingsError>) -> String {
        match loaded {
            Ok(_) => panic!("bad settings were accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_the_key_the_file_and_the_line() {
        let settings = file("rate-limit = 5\n\nmax-conections = 3\n");
        let path = settings.path().to_str().unwrap();
        let error = error_of(load_in(&["--config", path], &[]));
        assert!(error.contains(&format!("{path}:3")), "{error}");
        assert!(error.contains("unknown key `max-conections`"), "{error}");
        // The file may not name another file.
        let nested = file("config = \"other.toml\"\n");
        let nested_path = nested.path().to_str().unwrap();
        let error = error_of(load_in(&["--config", nested_path], &[]));
        assert!(error.contains("unknown key `config`"), "{error}");
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_key_and_where_it_came_from() {
        let settings = file("rate-limit = 5\nmax-connections = \"lots\"\n");
        let path = settings.path().to_str().unwrap();
        let error = error_of(load_in(&["--config", path], &[]));
        assert!(error.contains(&format!("{path}:2")), "{error}");
        assert!(error.contains("`max-connections`"), "{error}");
        assert!(error.contains("'lots'"), "{error}");
        for (text, key) in [
            ("conversations = \"closed\"", "conversations"),
            ("no-web = 1", "no-web"),
            ("max-frame = 3", "max-frame"),
            ("rate-limit = [1, 2]", "rate-limit"),
        ] {
            let settings = file(&format!("{text}\n"));
            let path = settings.path().to_str().unwrap();
            let error = error_of(load_in(&["--config", path], &[]));
            assert!(error.contains(&format!("{path}:1")), "{text}: {error}");
            assert!(error.contains(&format!("`{key}`")), "{text}: {error}");
        }
        let error = error_of(load_in(&[], &[("NATTER_RATE_LIMIT", "fast")]));
        assert!(error.contains("NATTER_RATE_LIMIT=fast"), "{error}");
        assert!(error.contains("`rate-limit`"), "{error}");
        let broken = file("rate-limit = \n");
        let path = broken.path().to_str().unwrap();
        let error = error_of(load_in(&["--config", path], &[]));
        assert!(error.contains(path) && error.contains("line 1"), "{error}");
    }

    /// A setting from the file still obeys the rules between flags.
    #[test]
    fn a_certificate_without_its_key_is_refused_wherever_it_comes_from() {
        let settings = file("tls-cert = \"cert.pem\"\n");
        let path = settings.path().to_str().unwrap();
        let error = error_of(load_in(&["--config", path], &[]));
        assert!(error.contains("--tls-key"), "{error}");
    }

    /// An alternative to a flag's default, for the test below.
    fn another_value(arg: &clap::Arg) -> Option<String> {
        let default = arg
            .get_default_values()
            .first()?
            .to_string_lossy()
            .into_owned();
        if let Some(other) = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .find(|v| *v != default)
        {
            return Some(other);
        }
        let n: u64 = default.parse().ok()?;
        Some((n + 1).to_string())
    }

    /// LIVE_KEYS says which changes a reload applies: each one it lists
    /// changes what the server runs with, and each other one does not.
    #[test]
    fn the_keys_said_to_change_live_are_the_ones_the_server_changes() {
        let base = expected();
        let mut command = command();
        command.build();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let (Some(long), Some(value)) = (arg.get_long(), another_value(arg)) else {
                continue;
            };
            let changed = config_of(load_in(&[&format!("--{long}={value}")], &[]));
            let applied = format!("{:?}", base.reloaded(&changed));
            let live = applied != format!("{base:?}");
            assert_eq!(
                live,
                LIVE_KEYS.contains(&long),
                "--{long}={value}: applied live: {live}"
            );
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} flags checked");
    }
}
