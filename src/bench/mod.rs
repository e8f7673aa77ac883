//! `natter bench`: a load generator that measures a running chat server,
//! natter or IRC, from the outside.
//!
//! The workload is fan-out: C clients in groups of K, an open-loop total
//! send rate R, payloads of B bytes carrying their send time. It reports
//! what a user of the server would notice (every message delivered to
//! every other member, how fast) and what the operator pays (the server's
//! CPU and memory, read from /proc). `--idle` measures what a quiet
//! connection costs instead. The generator runs on one thread so that,
//! pinned to its own core, it never competes with the server for CPU.
//!
//! Modules: [`plan`] (names and groups), [`natter_wire`] and [`irc_wire`]
//! (each protocol's setup, send and receive), [`setup`] (bringing clients
//! online; [`phases`] says where its time goes), [`load`] (the schedule, readers, progress), [`pace`] (the
//! sender's fine-grained clock), [`idle`], [`stats`]
//! (counters, histograms), [`procfs`] (server CPU/RSS), [`report`].

mod idle;
mod irc_wire;
mod load;
mod natter_wire;
mod net;
mod pace;
mod payload;
mod phases;
mod plan;
mod procfs;
mod report;
mod setup;
mod stats;
mod storm;

use std::net::SocketAddr;

use anyhow::{Context, bail};

/// Arguments of `natter bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The server to measure (loopback only).
    #[arg(long, default_value = "127.0.0.1:6666")]
    addr: SocketAddr,
    /// Number of clients (C).
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    /// Members per conversation / channel (K).
    #[arg(long, default_value_t = 10)]
    group: u32,
    /// Messages per second sent by all clients together (R), open loop.
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// How the sender waits for each message's due time: `tick` (tokio's
    /// 1 ms timer: the messages of a millisecond leave together) or `fine`
    /// (a timerfd per message: one by one, on schedule).
    #[arg(long, value_enum, default_value_t = pace::Pacing::Tick)]
    pace: pace::Pacing,
    /// Bytes of message text (B); it carries sender, sequence and send time.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    warmup: f64,
    /// Seconds of the measured window (with --idle: how long to hold).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    duration: f64,
    /// Seconds to wait after the window for its last deliveries.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    drain: f64,
    /// Seconds allowed for connecting, registering and joining everyone.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    setup_timeout: f64,
    /// Connections being set up at once. Some servers hold each new
    /// connection for a while before welcoming it (InspIRCd: about 1 s), so
    /// this bounds setup time as much as the server's speed does; 1,000
    /// stays within both servers' listen backlogs.
    #[arg(long, default_value_t = 1000)]
    connect_concurrency: usize,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the result as one JSON line on stdout.
    #[arg(long)]
    json: bool,
    /// The server's protocol.
    #[arg(long, value_enum, default_value_t = Proto::Natter)]
    proto: Proto,
    /// Connect, register, join and hold: measure setup time and memory per
    /// idle connection instead of load.
    #[arg(long)]
    idle: bool,
    /// natter clients ask for `presence-scope`: presence only for their
    /// own group, as a company-sized deployment would run.
    #[arg(long)]
    scope: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Connect over TLS (natter only), trusting the CA certificates in
    /// --ca-file (e.g. the cert.pem of `natter cert --self-signed`).
    #[arg(long, requires = "ca_file")]
    tls: bool,
    /// During the load, N password logins within one second, starting when
    /// the measured window opens (natter only; the server must allow
    /// SIGNUP: the accounts storm0.. are created before the load).
    #[arg(long, default_value_t = 0, value_name = "N")]
    login_storm: u32,
    /// PEM file of the CA certificates to trust with --tls.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// natter's framed encoding with CAPS presence-delta members.
    Natter,
    /// IRC: NICK/USER, JOIN, PRIVMSG.
    Irc,
}

impl BenchArgs {
    /// Where to connect, and how.
    fn endpoint(&self) -> anyhow::Result<net::Endpoint> {
        let tls = match &self.ca_file {
            Some(file) if self.tls => Some(client_tls(file)?),
            _ => None,
        };
        Ok(net::Endpoint {
            addr: self.addr,
            tls,
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        net::check_loopback(self.addr)?;
        if self.clients < 2 || self.group < 2 || self.group > self.clients {
            bail!("need at least 2 clients and 2 <= --group <= --clients");
        }
        if self.tls && self.proto != Proto::Natter {
            bail!("--tls is for natter only");
        }
        if self.login_storm > 0 && (self.proto != Proto::Natter || self.idle) {
            bail!("--login-storm is for natter, under load (not --idle)");
        }
        if self.scope && self.proto != Proto::Natter {
            bail!("--scope is a natter capability");
        }
        if !self.idle && self.rate == 0 {
            bail!("--rate must be positive");
        }
        let max_payload = match self.proto {
            Proto::Natter => 8 * 1024,
            Proto::Irc => 400, // a PRIVMSG line must fit in 512 bytes
        };
        if self.payload > max_payload {
            bail!(
                "--payload is at most {max_payload} bytes for {:?}",
                self.proto
            );
        }
        for (name, secs) in [
            ("warmup", self.warmup),
            ("duration", self.duration),
            ("drain", self.drain),
        ] {
            if !(0.0..=3600.0).contains(&secs) {
                bail!("--{name} must be between 0 and 3600 seconds");
            }
        }
        if self.duration <= 0.0 && !self.idle {
            bail!("--duration must be positive");
        }
        Ok(())
    }
}

/// A client config trusting only the CA certificates in `file`.
fn client_tls(file: &std::path::Path) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(file)
        .with_context(|| format!("cannot read {}", file.display()))?
    {
        roots.add(cert.with_context(|| format!("bad certificate in {}", file.display()))?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.validate()?;
    // One thread: the generator's cost stays on the one core it is given.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let plan = plan::Plan::new(args.clients, args.group);
        if args.idle {
            let outcome = idle::run(&args, &plan).await?;
            report::idle(&args, &outcome);
        } else {
            let endpoint = args.endpoint()?;
            if args.login_storm > 0 {
                storm::prepare(&endpoint, args.login_storm).await?;
            }
            let (clients, setup_time) = setup::connect_all(&args, &plan).await?;
            if !args.quiet {
                eprintln!(
                    "setup of {} clients took {:.2} s; {}",
                    clients.len(),
                    setup_time.total.as_secs_f64(),
                    setup_time.phases.summary()
                );
            }
            let storm = (args.login_storm > 0).then(|| {
                tokio::task::spawn_local(storm::run(
                    endpoint,
                    args.login_storm,
                    std::time::Duration::from_secs_f64(args.warmup),
                    args.server_pid.map(procfs::Process::pid),
                ))
            });
            let outcome = load::run(&args, &plan, clients).await?;
            let storm = match storm {
                Some(storm) => Some(storm.await.context("the login storm")?),
                None => None,
            };
            report::load(&args, &setup_time, &outcome, storm.as_ref());
        }
        Ok(())
    })
}
