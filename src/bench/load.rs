//! The fan-out workload: an open-loop schedule of sends, one reader per
//! client, a progress line per second, and the figures of the measured
//! window.
//!
//! Open loop means the schedule never waits for the server: message n of
//! the run is due at n / R seconds and is sent by client n mod C, so each
//! client sends every C / R seconds and the total is R per second however
//! the server copes. When the generator itself cannot keep up, its
//! lateness against the schedule grows and the report shows it.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;

use super::pace::Pacer;
use super::payload::{self, Stamp};
use super::plan::Plan;
use super::procfs::{Process, Sample};
use super::setup::{Client, Inbox, Target};
use super::stats::{Recorder, Window};
use super::{BenchArgs, irc_wire, natter_wire, net};

/// Sends in a row before the sender lets the readers run, when it is
/// behind schedule and never sleeps.
const SENDS_PER_YIELD: u32 = 64;

/// What one run measured, for the report.
pub struct Outcome {
    pub recorder: Recorder,
    /// Server and generator counters at the start and end of the window,
    /// and the server's RSS 10 s into it (when the window is that long).
    pub server: Option<WindowSamples>,
    pub generator: WindowSamples,
}

#[derive(Default, Clone)]
pub struct WindowSamples {
    pub start: Option<Sample>,
    pub at_10s: Option<Sample>,
    pub end: Option<Sample>,
}

/// One client as the sender sees it.
struct Outlet {
    index: u32,
    stream: Rc<net::Link>,
    target: Target,
    owed: u64,
    seq: u64,
    dead: bool,
}

pub async fn run(args: &BenchArgs, plan: &Plan, clients: Vec<Client>) -> anyhow::Result<Outcome> {
    let epoch = Instant::now();
    let window = Window {
        start_ns: secs_to_ns(args.warmup),
        end_ns: secs_to_ns(args.warmup + args.duration),
    };
    let recorder = Rc::new(RefCell::new(Recorder::new(window)));
    let server = args.server_pid.map(Process::pid);
    let mut outlets = Vec::with_capacity(clients.len());
    let mut background = Vec::new();
    let mut clients: Vec<Option<Client>> = clients.into_iter().map(Some).collect();
    for index in plan.send_order() {
        let client = clients[index as usize]
            .take()
            .expect("send order is a permutation");
        outlets.push(Outlet {
            index: client.index,
            stream: client.stream.clone(),
            target: client.target,
            owed: plan.owed(client.index),
            seq: 0,
            dead: false,
        });
        let reader = read_deliveries(
            client.index,
            client.stream,
            client.inbox,
            recorder.clone(),
            epoch,
        );
        background.push(tokio::task::spawn_local(reader));
    }
    let server_samples = Rc::new(RefCell::new(WindowSamples::default()));
    let own_samples = Rc::new(RefCell::new(WindowSamples::default()));
    if let Some(server) = &server {
        background.push(tokio::task::spawn_local(sample_window(
            server.clone(),
            epoch,
            window,
            server_samples.clone(),
        )));
    }
    background.push(tokio::task::spawn_local(sample_window(
        Process::this(),
        epoch,
        window,
        own_samples.clone(),
    )));
    if !args.quiet {
        background.push(tokio::task::spawn_local(report_progress(
            recorder.clone(),
            epoch,
            window,
            server.clone(),
        )));
    }

    let schedule = Schedule {
        interval_ns: 1e9 / f64::from(args.rate),
        end_ns: window.end_ns,
        payload: args.payload,
    };
    let pacer = Pacer::new(args.pace, epoch).context("the sender's timer")?;
    send_on_schedule(&mut outlets, &schedule, epoch, &pacer, &recorder).await?;
    // The schedule ends with the window: its counters close it.
    if let Some(server) = &server {
        server_samples.borrow_mut().end = server.sample().ok();
    }
    own_samples.borrow_mut().end = Process::this().sample().ok();
    let drain_until =
        epoch + Duration::from_nanos(window.end_ns) + Duration::from_secs_f64(args.drain);
    while !recorder.borrow().complete() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for task in &background {
        task.abort();
    }
    let server = server.map(|_| server_samples.borrow().clone());
    let generator = own_samples.borrow().clone();
    let recorder = recorder.replace(Recorder::new(window));
    Ok(Outcome {
        recorder,
        server,
        generator,
    })
}

struct Schedule {
    interval_ns: f64,
    end_ns: u64,
    payload: usize,
}

async fn send_on_schedule(
    outlets: &mut [Outlet],
    schedule: &Schedule,
    epoch: Instant,
    pacer: &Pacer,
    recorder: &RefCell<Recorder>,
) -> anyhow::Result<()> {
    let mut text = String::with_capacity(schedule.payload + 32);
    let mut out = BytesMut::with_capacity(1024);
    let mut unslept = 0;
    for n in 0u64.. {
        let due_ns = (n as f64 * schedule.interval_ns) as u64;
        if due_ns >= schedule.end_ns {
            return Ok(());
        }
        let mut now_ns = elapsed_ns(epoch);
        if due_ns > now_ns {
            pacer
                .sleep_until(due_ns)
                .await
                .context("the sender's timer")?;
            now_ns = elapsed_ns(epoch);
            unslept = 0;
        } else if unslept >= SENDS_PER_YIELD {
            tokio::task::yield_now().await;
            now_ns = elapsed_ns(epoch);
            unslept = 0;
        }
        unslept += 1;
        let turn = (n % outlets.len() as u64) as usize;
        let outlet = &mut outlets[turn];
        if outlet.dead {
            continue;
        }
        let stamp = Stamp {
            sender: outlet.index,
            seq: outlet.seq,
            sent_ns: now_ns,
        };
        payload::write(stamp, schedule.payload, &mut text);
        outlet.seq += 1;
        out.clear();
        match &outlet.target {
            Target::Conv(conv) => natter_wire::encode_send(*conv, &mut text, &mut out),
            Target::Channel(channel) => irc_wire::encode_send(channel, &text, &mut out),
        }
        // Recorded before the write: a write that waits lets readers run,
        // and they may see deliveries of this very message.
        recorder
            .borrow_mut()
            .sent(now_ns, now_ns.saturating_sub(due_ns), outlet.owed);
        if net::write_all(&outlet.stream, &out).await.is_err() {
            outlet.dead = true;
            recorder.borrow_mut().retract(now_ns, outlet.owed);
        }
    }
    Ok(())
}

/// Reads one client's socket until the run ends, recording deliveries.
pub async fn read_deliveries(
    index: u32,
    stream: Rc<net::Link>,
    mut inbox: Inbox,
    recorder: Rc<RefCell<Recorder>>,
    epoch: Instant,
) {
    let mut replies = Vec::new();
    let mut errors = 0;
    loop {
        // What was left from setup is drained before the first read.
        let now_ns = elapsed_ns(epoch);
        let drained = {
            let mut recorder = recorder.borrow_mut();
            let result = inbox.drain(
                |text| {
                    if let Some(stamp) = payload::parse(text) {
                        recorder.delivered(stamp.sent_ns, now_ns, stamp.sender == index);
                    }
                },
                &mut replies,
                &mut errors,
            );
            recorder.server_errors += std::mem::take(&mut errors);
            result
        };
        let replied = if replies.is_empty() {
            Ok(())
        } else {
            let written = net::write_all(&stream, &replies).await;
            replies.clear();
            written
        };
        let alive = drained.is_ok()
            && replied.is_ok()
            && matches!(net::read_more(&stream, inbox.buf()).await, Ok(n) if n > 0);
        if !alive {
            recorder.borrow_mut().disconnects += 1;
            return;
        }
    }
}

/// Takes `process`'s counters as the window opens and 10 s into it.
async fn sample_window(
    process: Process,
    epoch: Instant,
    window: Window,
    into: Rc<RefCell<WindowSamples>>,
) {
    let at = |ns: u64| tokio::time::sleep_until((epoch + Duration::from_nanos(ns)).into());
    at(window.start_ns).await;
    into.borrow_mut().start = process.sample().ok();
    let ten_seconds = window.start_ns + 10_000_000_000;
    if ten_seconds <= window.end_ns {
        at(ten_seconds).await;
        into.borrow_mut().at_10s = process.sample().ok();
    }
}

/// One line a second on stderr: phase, send and delivery rates, recent
/// latency, the generator's worst lateness, the server's CPU and RSS.
async fn report_progress(
    recorder: Rc<RefCell<Recorder>>,
    epoch: Instant,
    window: Window,
    server: Option<Process>,
) {
    let mut ticker = tokio::time::interval_at(
        (epoch + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let (mut last_sent, mut last_delivered) = (0, 0);
    let mut last_cpu = server
        .as_ref()
        .and_then(|p| p.sample().ok())
        .map(|s| s.cpu_seconds);
    loop {
        ticker.tick().await;
        let now_ns = elapsed_ns(epoch);
        let phase = if now_ns < window.start_ns {
            "warmup"
        } else if now_ns < window.end_ns {
            "measure"
        } else {
            "drain"
        };
        let mut line = {
            let mut r = recorder.borrow_mut();
            let line = format!(
                "[{:>4.0}s] {phase:<7} sent/s {:>7} delivered/s {:>8} p50 {:>7.2} ms p99 {:>7.2} ms late max {:>7.2} ms errors {}",
                now_ns as f64 / 1e9,
                r.sent_total - last_sent,
                r.delivered_total - last_delivered,
                r.recent_latency.value_at_quantile(0.5) as f64 / 1000.0,
                r.recent_latency.value_at_quantile(0.99) as f64 / 1000.0,
                r.recent_lateness_max as f64 / 1000.0,
                r.server_errors + r.disconnects + r.send_failures,
            );
            (last_sent, last_delivered) = (r.sent_total, r.delivered_total);
            r.recent_latency.reset();
            r.recent_lateness_max = 0;
            line
        };
        if let Some(sample) = server.as_ref().and_then(|p| p.sample().ok()) {
            let cores = last_cpu.map_or(0.0, |last| sample.cpu_seconds - last);
            last_cpu = Some(sample.cpu_seconds);
            line.push_str(&format!(
                " | server {cores:.2} cores, {} MiB",
                sample.rss_kib / 1024
            ));
        }
        eprintln!("{line}");
    }
}

fn secs_to_ns(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

fn elapsed_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}
