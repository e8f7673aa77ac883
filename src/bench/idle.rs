//! `natter bench --idle`: what a connection costs the server when it does
//! nothing. C clients connect, register and join their groups, then hold;
//! the server's RSS before and after, divided by C, is the cost of one
//! idle registered connection.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::BenchArgs;
use super::load::read_deliveries;
use super::plan::Plan;
use super::procfs::{Process, Sample};
use super::setup::{self, SetupTime};
use super::stats::{Recorder, Window};

pub struct IdleOutcome {
    pub setup: SetupTime,
    pub before: Option<Sample>,
    pub after_setup: Option<Sample>,
    /// After holding for `--duration`: what an idle connection keeps.
    pub held: Option<Sample>,
    pub disconnects: u64,
}

pub async fn run(args: &BenchArgs, plan: &Plan) -> anyhow::Result<IdleOutcome> {
    let server = args.server_pid.map(Process::pid);
    let sample = || server.as_ref().and_then(|p| p.sample().ok());
    let before = sample();
    let (clients, setup) = setup::connect_all(args, plan).await?;
    let after_setup = sample();
    if !args.quiet {
        eprintln!(
            "setup of {} clients took {:.2} s; holding for {} s",
            clients.len(),
            setup.total.as_secs_f64(),
            args.duration
        );
    }
    // Readers keep draining presence updates and answering PINGs, as a
    // live but quiet client would.
    let recorder = Rc::new(RefCell::new(Recorder::new(Window {
        start_ns: 0,
        end_ns: 0,
    })));
    let epoch = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::task::spawn_local(read_deliveries(
                c.index,
                c.stream,
                c.inbox,
                recorder.clone(),
                epoch,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let held = sample();
    for reader in &readers {
        reader.abort();
    }
    let disconnects = recorder.borrow().disconnects;
    Ok(IdleOutcome {
        setup,
        before,
        after_setup,
        held,
        disconnects,
    })
}
