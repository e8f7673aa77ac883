//! Where setup time goes: connecting, registering and joining, each
//! measured across all clients.
//!
//! Clients go through the phases concurrently (up to
//! `--connect-concurrency` connect and register at once, and everyone joins
//! after the last registration), so per-client durations alone do not add
//! up to the setup time. Each phase therefore records two things: how long
//! it took each client (a histogram), and when the *last* client got
//! through it, with the server's CPU time at that moment. The milestones
//! split the setup's wall time and the server's work into consecutive
//! spans: until every client is connected, until every one is registered,
//! until every one has joined.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::procfs::Process;
use super::stats::{Percentiles, histogram};

/// The three phases of bringing a client online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The TCP connection (and TLS handshake), once a connect slot is free.
    Connect,
    /// From sending the registration to the server's acknowledgement
    /// (`ONLINE_USERS`; IRC: the end of the MOTD).
    Register,
    /// natter: from the last client's registration to the `MEMBERS` list of
    /// the whole group (the leader's `INVITE`, the `JOIN`s). IRC: from
    /// `JOIN` to the end of `NAMES`.
    Join,
}

const STEPS: [Step; 3] = [Step::Connect, Step::Register, Step::Join];

/// One phase across all clients.
struct Phase {
    /// Time each client spent in it, in µs.
    per_client: Histogram<u64>,
    /// Clients through it so far.
    done: u32,
    /// When the last client got through, since setup began.
    all_done: Option<Duration>,
    /// The server's CPU time (s) at that moment, if it is being watched.
    server_cpu_s: Option<f64>,
}

/// The phases of one setup, shared by every client's setup task (the
/// generator runs on one thread).
pub struct Phases {
    started: Instant,
    clients: u32,
    server: Option<Process>,
    /// The server's CPU time when setup began.
    server_cpu_at_start: Option<f64>,
    phases: RefCell<[Phase; 3]>,
}

impl Phases {
    /// Starts the clock for `clients` clients; `server` is read for its CPU
    /// time at each milestone.
    pub fn start(clients: u32, server: Option<Process>) -> Phases {
        let cpu = |p: &Process| p.sample().ok().map(|s| s.cpu_seconds);
        Phases {
            started: Instant::now(),
            clients,
            server_cpu_at_start: server.as_ref().and_then(cpu),
            server,
            phases: RefCell::new(STEPS.map(|_| Phase {
                per_client: histogram(),
                done: 0,
                all_done: None,
                server_cpu_s: None,
            })),
        }
    }

    /// One client finished `step`, which it began at `began`.
    pub fn finished(&self, step: Step, began: Instant) {
        let now = Instant::now();
        let mut phases = self.phases.borrow_mut();
        let phase = &mut phases[index(step)];
        let micros = now.duration_since(began).as_micros();
        phase
            .per_client
            .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
        phase.done += 1;
        if phase.done == self.clients {
            phase.all_done = Some(now.duration_since(self.started));
            phase.server_cpu_s = self
                .server
                .as_ref()
                .and_then(|p| p.sample().ok())
                .map(|s| s.cpu_seconds);
        }
    }

    /// The report: per phase, when the last client finished it, the span
    /// since the previous milestone (wall time and server CPU), and the
    /// per-client durations in µs.
    pub fn to_json(&self) -> Value {
        let phases = self.phases.borrow();
        let mut previous = (Some(Duration::ZERO), self.server_cpu_at_start);
        let mut report = serde_json::Map::new();
        for step in STEPS {
            let phase = &phases[index(step)];
            let span = phase
                .all_done
                .zip(previous.0)
                .map(|(end, start)| round3(end.saturating_sub(start).as_secs_f64()));
            let server_cpu = phase
                .server_cpu_s
                .zip(previous.1)
                .map(|(end, start)| round3(end - start));
            report.insert(
                name(step).to_string(),
                json!({
                    "all_done_s": phase.all_done.map(|d| round3(d.as_secs_f64())),
                    "span_s": span,
                    "server_cpu_s": server_cpu,
                    "per_client_us": Percentiles::of(&phase.per_client).to_json(),
                }),
            );
            previous = (phase.all_done, phase.server_cpu_s);
        }
        Value::Object(report)
    }

    /// One line for people: the three spans, and what each client waited.
    pub fn summary(&self) -> String {
        let report = self.to_json();
        let parts: Vec<String> = STEPS
            .iter()
            .map(|&step| {
                let phase = &report[name(step)];
                let per_client = &phase["per_client_us"];
                let ms = |v: &Value| v.as_u64().unwrap_or(0) as f64 / 1000.0;
                let cpu = match phase["server_cpu_s"].as_f64() {
                    Some(cpu) => format!(", server CPU {cpu:.2} s"),
                    None => String::new(),
                };
                format!(
                    "{} {:.2} s{cpu} (each client p50 {:.1} ms, p99 {:.1} ms)",
                    name(step),
                    phase["span_s"].as_f64().unwrap_or(f64::NAN),
                    ms(&per_client["p50"]),
                    ms(&per_client["p99"]),
                )
            })
            .collect();
        format!(
            "until the last client finished each phase: {}",
            parts.join("; ")
        )
    }
}

fn index(step: Step) -> usize {
    match step {
        Step::Connect => 0,
        Step::Register => 1,
        Step::Join => 2,
    }
}

fn name(step: Step) -> &'static str {
    match step {
        Step::Connect => "connect",
        Step::Register => "register",
        Step::Join => "join",
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spans run from one milestone to the next, and a milestone is
    /// only set once every client is through the phase.
    #[test]
    fn milestones_split_the_setup_into_consecutive_spans() {
        let phases = Phases::start(2, Some(Process::this()));
        let began = Instant::now();
        phases.finished(Step::Connect, began);
        assert!(phases.to_json()["connect"]["all_done_s"].is_null());
        phases.finished(Step::Connect, began);
        std::thread::sleep(Duration::from_millis(20));
        phases.finished(Step::Register, began);
        phases.finished(Step::Register, began);
        let report = phases.to_json();
        let connect = report["connect"]["all_done_s"].as_f64().unwrap();
        let register = report["register"]["all_done_s"].as_f64().unwrap();
        assert!(register >= connect + 0.019, "{report}");
        let span = report["register"]["span_s"].as_f64().unwrap();
        assert!((span - (register - connect)).abs() < 0.002, "{report}");
        assert!(report["register"]["per_client_us"]["p50"].as_u64().unwrap() >= 20_000);
        assert!(report["register"]["server_cpu_s"].as_f64().unwrap() >= 0.0);
        assert!(report["join"]["all_done_s"].is_null());
        assert!(phases.summary().contains("register"));
    }
}
