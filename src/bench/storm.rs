//! `natter bench --login-storm N`: N password logins within one second,
//! on top of the fan-out load, to show what a storm of logins (a class
//! arriving at once, a reconnect wave after an outage) does to chat.
//!
//! Before the load starts, [`prepare`] creates the storm's accounts with
//! `SIGNUP` (a few at a time, so their hashing is not the storm). When the
//! measured window opens, [`run`] opens one connection per login, spread
//! evenly over one second, each sending `REGISTER [name, status,
//! password]`, and records how long each waited for its answer. Meanwhile
//! the server's RSS is sampled, because the hashing pool is what must keep
//! memory bounded: argon2id takes 19 MiB per hash in flight.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use natter_proto::Command;
use natter_proto::command::Secret;

use super::natter_wire::{self, Answer};
use super::net;
use super::procfs::Process;
use super::stats;
use hdrhistogram::Histogram;

/// The storm's accounts share one password (it is loopback test data).
const PASSWORD: &str = "storm password";
/// Accounts created at once before the storm.
const PREPARE_CONCURRENCY: usize = 8;
/// How often the server's memory is read during the storm.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// How long after its send a login may wait for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// What the storm saw.
pub struct StormOutcome {
    pub logins: u32,
    pub accepted: u64,
    /// Refused because the hashing pool's queue was full ("busy").
    pub busy: u64,
    /// Refused for another reason, or no answer; the first reason is kept.
    pub failed: u64,
    pub first_failure: Option<String>,
    /// From each login's send to its answer, in microseconds.
    pub answer_us: Histogram<u64>,
    /// From the storm's start to its last answer.
    pub all_answered: Duration,
    pub rss_kib_before: Option<u64>,
    pub rss_kib_peak: Option<u64>,
}

impl StormOutcome {
    fn new(logins: u32) -> StormOutcome {
        StormOutcome {
            logins,
            accepted: 0,
            busy: 0,
            failed: 0,
            first_failure: None,
            answer_us: stats::histogram(),
            all_answered: Duration::ZERO,
            rss_kib_before: None,
            rss_kib_peak: None,
        }
    }
}

/// The name of storm account `i`.
fn storm_name(i: u32) -> String {
    format!("storm{i}")
}

/// Creates the `n` storm accounts (an account that already exists, from an
/// earlier run against the same data dir, is fine).
pub async fn prepare(endpoint: &net::Endpoint, n: u32) -> anyhow::Result<()> {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(PREPARE_CONCURRENCY));
    let mut signups = Vec::with_capacity(n as usize);
    for i in 0..n {
        let permit = slots.clone().acquire_owned().await?;
        let endpoint = endpoint.clone();
        signups.push(tokio::task::spawn_local(async move {
            let _permit = permit;
            signup(&endpoint, storm_name(i)).await
        }));
    }
    for signup in signups {
        signup
            .await?
            .context("creating the login storm's accounts (does the server allow SIGNUP?)")?;
    }
    Ok(())
}

async fn signup(endpoint: &net::Endpoint, name: String) -> anyhow::Result<()> {
    let link = net::connect(endpoint).await?;
    let command = Command::Signup {
        name: name.clone(),
        password: Secret::new(PASSWORD),
    };
    match natter_wire::account_command(&link, &command).await? {
        Answer::Accepted => Ok(()),
        Answer::Refused(text) if text.contains("is taken") => Ok(()),
        Answer::Refused(text) => anyhow::bail!("SIGNUP {name} refused: {text}"),
    }
}

/// Waits `delay`, then logs in `n` times within one second.
pub async fn run(
    endpoint: net::Endpoint,
    n: u32,
    delay: Duration,
    server: Option<Process>,
) -> StormOutcome {
    tokio::time::sleep(delay).await;
    let mut outcome = StormOutcome::new(n);
    outcome.rss_kib_before = server
        .as_ref()
        .and_then(|p| p.sample().ok())
        .map(|s| s.rss_kib);
    let outcome = Rc::new(RefCell::new(outcome));
    let start = Instant::now();
    let sampler = server.map(|p| tokio::task::spawn_local(sample_peak(p, outcome.clone())));
    let mut logins = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(f64::from(i) / f64::from(n));
        tokio::time::sleep_until(due.into()).await;
        logins.push(tokio::task::spawn_local(login(
            endpoint.clone(),
            i,
            outcome.clone(),
        )));
    }
    for login in logins {
        let _ = login.await;
    }
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    let all_answered = start.elapsed();
    // Every login is done; the aborted sampler may still hold a handle.
    let mut outcome = outcome.replace(StormOutcome::new(n));
    outcome.all_answered = all_answered;
    outcome
}

/// One login: connect, `REGISTER` with the password, wait for the answer,
/// then hang up.
async fn login(endpoint: net::Endpoint, i: u32, outcome: Rc<RefCell<StormOutcome>>) {
    let sent = Instant::now();
    let attempt = async {
        let link = net::connect(&endpoint).await?;
        let command = Command::Login {
            name: storm_name(i),
            status: "storm".to_string(),
            secret: Secret::new(PASSWORD),
        };
        natter_wire::account_command(&link, &command).await
    };
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, attempt).await;
    let mut outcome = outcome.borrow_mut();
    let failure = match answer {
        Ok(Ok(Answer::Accepted)) => {
            outcome.accepted += 1;
            outcome
                .answer_us
                .saturating_record(sent.elapsed().as_micros() as u64);
            return;
        }
        Ok(Ok(Answer::Refused(text))) if text.contains("busy") => {
            outcome.busy += 1;
            return;
        }
        Ok(Ok(Answer::Refused(text))) => text,
        Ok(Err(error)) => format!("{error:#}"),
        Err(_) => "no answer".to_string(),
    };
    outcome.failed += 1;
    outcome.first_failure.get_or_insert(failure);
}

/// Keeps the highest RSS seen until aborted.
async fn sample_peak(server: Process, outcome: Rc<RefCell<StormOutcome>>) {
    loop {
        if let Ok(sample) = server.sample() {
            let mut outcome = outcome.borrow_mut();
            let peak = outcome.rss_kib_peak.get_or_insert(0);
            *peak = (*peak).max(sample.rss_kib);
        }
        tokio::time::sleep(RSS_EVERY).await;
    }
}
