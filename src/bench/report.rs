//! The result of a run, as one JSON line (`--json`, for scripts) or as a
//! short human summary.
//!
//! Derived figures are computed here once: deliveries per second, the
//! delivery ratio, the server's share of a core and its CPU per delivery.
//! A "delivery" is one message reaching one member other than its sender;
//! natter's echo to the sender is reported apart so that natter and IRC
//! (which does not echo) are compared on the same work.

use serde_json::{Value, json};

use super::idle::IdleOutcome;
use super::load::{Outcome, WindowSamples};
use super::setup::SetupTime;
use super::stats::Percentiles;
use super::storm::StormOutcome;
use super::{BenchArgs, Proto};

pub fn load(args: &BenchArgs, setup: &SetupTime, outcome: &Outcome, storm: Option<&StormOutcome>) {
    let r = &outcome.recorder;
    let window = args.duration;
    let ratio = if r.expected == 0 {
        0.0
    } else {
        r.delivered as f64 / r.expected as f64
    };
    let latency = Percentiles::of(&r.latency);
    let lateness = Percentiles::of(&r.lateness);
    let server = outcome
        .server
        .as_ref()
        .map(|s| usage(s, window, r.arrivals_in_window));
    let generator = usage(&outcome.generator, window, r.arrivals_in_window);
    let result = json!({
        "mode": "load",
        "proto": proto_name(args.proto),
        "scope": args.scope,
        "clients": args.clients,
        "group": args.group,
        "rate": args.rate,
        "payload": args.payload,
        "warmup_s": args.warmup,
        "duration_s": window,
        "setup_s": round(setup.total.as_secs_f64(), 3),
        "setup_phases": setup.phases.to_json(),
        "sent": r.sent,
        "expected": r.expected,
        "delivered": r.delivered,
        "delivery_ratio": round(ratio, 5),
        "echoes": r.echoes,
        "delivered_per_s": round(r.arrivals_in_window as f64 / window, 1),
        "latency_us": latency.to_json(),
        "lateness_us": lateness.to_json(),
        "server_errors": r.server_errors,
        "send_failures": r.send_failures,
        "disconnects": r.disconnects,
        "server": server,
        "generator": generator,
        "login_storm": storm.map(storm_json),
    });
    if args.json {
        println!("{result}");
        return;
    }
    println!(
        "{} C={} K={} R={}/s B={}: sent {} expected {} delivered {} ({:.3}%), {:.0} deliveries/s",
        proto_name(args.proto),
        args.clients,
        args.group,
        args.rate,
        args.payload,
        r.sent,
        r.expected,
        r.delivered,
        ratio * 100.0,
        r.arrivals_in_window as f64 / window
    );
    println!(
        "latency ms: p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}; generator lateness ms: p50 {:.3} p99 {:.3} max {:.3}",
        ms(latency.p50),
        ms(latency.p99),
        ms(latency.p999),
        ms(latency.max),
        ms(lateness.p50),
        ms(lateness.p99),
        ms(lateness.max)
    );
    if let Some(server) = &result["server"].as_object() {
        println!(
            "server: {} cores, {} µs CPU per delivery, RSS {} → {} KiB",
            server["cpu_cores"],
            server["cpu_us_per_delivery"],
            server["rss_kib_start"],
            server["rss_kib_end"]
        );
    }
    println!(
        "generator: {} cores; server errors {}, send failures {}, disconnects {}",
        result["generator"]["cpu_cores"], r.server_errors, r.send_failures, r.disconnects
    );
    if let Some(storm) = storm {
        let answer = Percentiles::of(&storm.answer_us);
        println!(
            "login storm: {} logins in 1 s: {} accepted (answer p50 {:.0} ms, p99 {:.0} ms), {} busy, {} failed{}; all answered after {:.1} s; server RSS {} → peak {} KiB",
            storm.logins,
            storm.accepted,
            ms(answer.p50),
            ms(answer.p99),
            storm.busy,
            storm.failed,
            storm
                .first_failure
                .as_deref()
                .map_or(String::new(), |f| format!(" (first: {f})")),
            storm.all_answered.as_secs_f64(),
            storm
                .rss_kib_before
                .map_or("?".to_string(), |k| k.to_string()),
            storm
                .rss_kib_peak
                .map_or("?".to_string(), |k| k.to_string()),
        );
    }
}

fn storm_json(storm: &StormOutcome) -> Value {
    json!({
        "logins": storm.logins,
        "accepted": storm.accepted,
        "busy": storm.busy,
        "failed": storm.failed,
        "first_failure": storm.first_failure,
        "answer_us": Percentiles::of(&storm.answer_us).to_json(),
        "all_answered_s": round(storm.all_answered.as_secs_f64(), 3),
        "rss_kib_before": storm.rss_kib_before,
        "rss_kib_peak": storm.rss_kib_peak,
    })
}

/// CPU and memory of one process over the window.
fn usage(samples: &WindowSamples, window: f64, deliveries: u64) -> Value {
    let (Some(start), Some(end)) = (samples.start, samples.end) else {
        return Value::Null;
    };
    let cpu = end.cpu_seconds - start.cpu_seconds;
    let per_delivery = if deliveries == 0 {
        0.0
    } else {
        cpu * 1e6 / deliveries as f64
    };
    json!({
        "cpu_s": round(cpu, 3),
        "cpu_cores": round(cpu / window, 3),
        "cpu_us_per_delivery": round(per_delivery, 3),
        "rss_kib_start": start.rss_kib,
        "rss_kib_10s": samples.at_10s.map(|s| s.rss_kib),
        "rss_kib_end": end.rss_kib,
    })
}

pub fn idle(args: &BenchArgs, outcome: &IdleOutcome) {
    let per_connection = match (outcome.before, outcome.held) {
        (Some(before), Some(held)) => {
            Some((held.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / f64::from(args.clients))
        }
        _ => None,
    };
    let setup_cpu = match (outcome.before, outcome.after_setup) {
        (Some(before), Some(after)) => Some(round(after.cpu_seconds - before.cpu_seconds, 3)),
        _ => None,
    };
    let result = json!({
        "mode": "idle",
        "proto": proto_name(args.proto),
        "scope": args.scope,
        "clients": args.clients,
        "group": args.group,
        "setup_s": round(outcome.setup.total.as_secs_f64(), 3),
        // Where the setup time went: see `phases.rs`.
        "setup_phases": outcome.setup.phases.to_json(),
        "held_s": args.duration,
        "disconnects": outcome.disconnects,
        "server": {
            "rss_kib_before": outcome.before.map(|s| s.rss_kib),
            "rss_kib_after_setup": outcome.after_setup.map(|s| s.rss_kib),
            "rss_kib_held": outcome.held.map(|s| s.rss_kib),
            "rss_bytes_per_connection": per_connection.map(|b| round(b, 0)),
            "setup_cpu_s": setup_cpu,
        },
    });
    if args.json {
        println!("{result}");
        return;
    }
    println!(
        "{} idle: {} clients set up in {:.2} s; server RSS per connection: {}",
        proto_name(args.proto),
        args.clients,
        outcome.setup.total.as_secs_f64(),
        per_connection.map_or("unknown (no --server-pid)".to_string(), |b| format!(
            "{:.2} KiB",
            b / 1024.0
        ))
    );
    println!("setup, {}", outcome.setup.phases.summary());
}

fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::Natter => "natter",
        Proto::Irc => "irc",
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}
