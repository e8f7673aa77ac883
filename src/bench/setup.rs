//! Bringing all C clients online before anything is measured: connect,
//! register, join the group, and wait for the server's acknowledgement of
//! each step, a bounded number of connections at a time.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;

use super::net;
use super::phases::Phases;
use super::plan::Plan;
use super::procfs::Process;
use super::{BenchArgs, Proto, irc_wire, natter_wire};

/// A client ready for the workload.
pub struct Client {
    pub index: u32,
    pub stream: Rc<net::Link>,
    pub target: Target,
    pub inbox: Inbox,
}

/// Where a client's messages go.
pub enum Target {
    Conv(natter_proto::ConvId),
    Channel(String),
}

/// Bytes from the server and how to split them.
pub enum Inbox {
    // Boxed: the decoder is large and IRC clients need none.
    Natter(Box<natter_wire::Inbox>),
    Irc(irc_wire::Inbox),
}

impl Inbox {
    pub fn buf(&mut self) -> &mut bytes::BytesMut {
        match self {
            Inbox::Natter(inbox) => inbox.buf(),
            Inbox::Irc(inbox) => inbox.buf(),
        }
    }

    /// Every chat text in the buffer to `on_text`; PING answers to
    /// `replies`; server errors counted in `errors`.
    pub fn drain(
        &mut self,
        on_text: impl FnMut(&[u8]),
        replies: &mut Vec<u8>,
        errors: &mut u64,
    ) -> anyhow::Result<()> {
        match self {
            Inbox::Natter(inbox) => inbox.drain(on_text, errors),
            Inbox::Irc(inbox) => inbox.drain(on_text, replies, errors),
        }
    }
}

/// How long setup took, and where the time went.
pub struct SetupTime {
    pub total: Duration,
    pub phases: Phases,
}

/// Connects every client of `plan`; fails if any one fails or the whole
/// setup takes longer than `--setup-timeout`.
pub async fn connect_all(
    args: &BenchArgs,
    plan: &Plan,
) -> anyhow::Result<(Vec<Client>, SetupTime)> {
    let started = Instant::now();
    let phases = Rc::new(Phases::start(
        plan.clients,
        args.server_pid.map(Process::pid),
    ));
    let ready = Rc::new(Cell::new(0u32));
    let progress = (!args.quiet)
        .then(|| tokio::task::spawn_local(report_progress(ready.clone(), plan.clients)));
    let limit = Duration::from_secs_f64(args.setup_timeout);
    let result = tokio::time::timeout(limit, spawn_and_collect(args, plan, &ready, &phases))
        .await
        .map_err(|_| {
            anyhow!(
                "setup did not finish within {limit:?} ({} of {} clients ready)",
                ready.get(),
                plan.clients
            )
        })
        .and_then(|clients| clients);
    if let Some(progress) = progress {
        progress.abort();
    }
    let total = started.elapsed();
    let clients = result?;
    let phases = Rc::try_unwrap(phases).map_err(|_| anyhow!("a setup task outlived setup"))?;
    Ok((clients, SetupTime { total, phases }))
}

async fn spawn_and_collect(
    args: &BenchArgs,
    plan: &Plan,
    ready: &Rc<Cell<u32>>,
    phases: &Rc<Phases>,
) -> anyhow::Result<Vec<Client>> {
    let connecting = Rc::new(Semaphore::new(args.connect_concurrency));
    let registered = Rc::new(Barrier::new(plan.clients as usize));
    let mut tasks = JoinSet::new();
    let endpoint = args.endpoint()?;
    for index in 0..plan.clients {
        let (endpoint, plan, proto, scope) =
            (endpoint.clone(), plan.clone(), args.proto, args.scope);
        let (connecting, registered, ready, phases) = (
            connecting.clone(),
            registered.clone(),
            ready.clone(),
            phases.clone(),
        );
        tasks.spawn_local(async move {
            let client = match proto {
                Proto::Natter => {
                    let joined = natter_wire::setup(
                        &endpoint,
                        &plan,
                        index,
                        scope,
                        &connecting,
                        &registered,
                        &phases,
                    )
                    .await?;
                    Client {
                        index,
                        stream: joined.stream,
                        target: Target::Conv(joined.conv),
                        inbox: Inbox::Natter(Box::new(joined.inbox)),
                    }
                }
                Proto::Irc => {
                    let joined =
                        irc_wire::setup(&endpoint, &plan, index, &connecting, &phases).await?;
                    Client {
                        index,
                        stream: joined.stream,
                        target: Target::Channel(joined.channel),
                        inbox: Inbox::Irc(joined.inbox),
                    }
                }
            };
            ready.set(ready.get() + 1);
            anyhow::Ok(client)
        });
    }
    let mut clients = Vec::with_capacity(plan.clients as usize);
    while let Some(joined) = tasks.join_next().await {
        clients.push(joined.context("a setup task panicked")??);
    }
    clients.sort_by_key(|client| client.index);
    Ok(clients)
}

async fn report_progress(ready: Rc<Cell<u32>>, total: u32) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!(
            "[{:>4.0}s] setup: {}/{total} clients registered and joined",
            started.elapsed().as_secs_f64(),
            ready.get()
        );
    }
}
