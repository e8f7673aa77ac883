//! What the generator counts while it runs: sends, deliveries, latency and
//! its own lateness against the schedule.
//!
//! Every client task of the (single-threaded) generator records into one
//! shared [`Recorder`]. Only messages *sent* inside the measured window
//! count towards sent / expected / delivered and the latency histogram, so
//! warm-up traffic and the drain after the window never skew them; raw
//! arrivals inside the window give the throughput.

use hdrhistogram::Histogram;

/// Latencies above this (in µs) are recorded as this.
const MAX_MICROS: u64 = 120_000_000;

/// The measured window, in nanoseconds since the generator's epoch.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    pub fn contains(&self, ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ns)
    }
}

/// Counters and histograms of one run.
pub struct Recorder {
    pub window: Window,
    /// Messages sent in the window.
    pub sent: u64,
    /// Deliveries the sent messages owe: one per other group member.
    pub expected: u64,
    /// Deliveries of messages sent in the window, to members other than the
    /// sender.
    pub delivered: u64,
    /// Copies of its own messages a sender got back (natter echoes them).
    pub echoes: u64,
    /// Deliveries of any message that arrived inside the window.
    pub arrivals_in_window: u64,
    /// Everything sent and delivered since the start, for progress lines.
    pub sent_total: u64,
    pub delivered_total: u64,
    /// `ERROR`s (natter) or error numerics (IRC) the server sent during the
    /// run.
    pub server_errors: u64,
    /// Sends that failed because the server had closed the connection.
    pub send_failures: u64,
    /// Connections the server closed during the run.
    pub disconnects: u64,
    /// Delivery latency of window messages, in µs.
    pub latency: Histogram<u64>,
    /// How late the generator sent each window message, in µs.
    pub lateness: Histogram<u64>,
    /// Latency since the last progress line.
    pub recent_latency: Histogram<u64>,
    /// Worst lateness since the last progress line, in µs.
    pub recent_lateness_max: u64,
}

impl Recorder {
    pub fn new(window: Window) -> Recorder {
        Recorder {
            window,
            sent: 0,
            expected: 0,
            delivered: 0,
            echoes: 0,
            arrivals_in_window: 0,
            sent_total: 0,
            delivered_total: 0,
            server_errors: 0,
            send_failures: 0,
            disconnects: 0,
            latency: histogram(),
            lateness: histogram(),
            recent_latency: histogram(),
            recent_lateness_max: 0,
        }
    }

    /// A message left at `sent_ns`, `late_ns` after its scheduled time, and
    /// owes `owed` deliveries.
    pub fn sent(&mut self, sent_ns: u64, late_ns: u64, owed: u64) {
        self.sent_total += 1;
        self.recent_lateness_max = self.recent_lateness_max.max(late_ns / 1000);
        if self.window.contains(sent_ns) {
            self.sent += 1;
            self.expected += owed;
            self.lateness.saturating_record(late_ns / 1000);
        }
    }

    /// A message recorded by [`Recorder::sent`] could not be written after
    /// all.
    pub fn retract(&mut self, sent_ns: u64, owed: u64) {
        self.sent_total -= 1;
        self.send_failures += 1;
        if self.window.contains(sent_ns) {
            self.sent -= 1;
            self.expected -= owed;
        }
    }

    /// A message sent at `sent_ns` arrived at `now_ns`; `echo` when the
    /// receiver is its sender.
    pub fn delivered(&mut self, sent_ns: u64, now_ns: u64, echo: bool) {
        if echo {
            if self.window.contains(sent_ns) {
                self.echoes += 1;
            }
            return;
        }
        self.delivered_total += 1;
        if self.window.contains(now_ns) {
            self.arrivals_in_window += 1;
        }
        let micros = now_ns.saturating_sub(sent_ns) / 1000;
        self.recent_latency.saturating_record(micros);
        if self.window.contains(sent_ns) {
            self.delivered += 1;
            self.latency.saturating_record(micros);
        }
    }

    /// Every window message has reached every member it owes.
    pub fn complete(&self) -> bool {
        self.delivered >= self.expected
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// p50 / p99 / p99.9 / max of a histogram, in µs (zeros when empty).
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: histogram.value_at_quantile(0.5),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "p50": self.p50, "p99": self.p99, "p999": self.p999, "max": self.max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> Recorder {
        Recorder::new(Window {
            start_ns: 1_000,
            end_ns: 2_000_000,
        })
    }

    #[test]
    fn only_window_messages_count() {
        let mut stats = recorder();
        stats.sent(500, 0, 9); // warm-up
        stats.sent(5_000, 0, 9);
        stats.delivered(500, 600_000, false);
        stats.delivered(5_000, 1_005_000, false);
        assert_eq!((stats.sent, stats.expected, stats.delivered), (1, 9, 1));
        assert_eq!(stats.delivered_total, 2);
        assert_eq!(Percentiles::of(&stats.latency).p50, 1000);
        assert!(!stats.complete());
    }

    #[test]
    fn echoes_are_counted_apart() {
        let mut stats = recorder();
        stats.sent(5_000, 0, 1);
        stats.delivered(5_000, 6_000, true);
        assert_eq!((stats.delivered, stats.echoes), (0, 1));
        stats.delivered(5_000, 6_000, false);
        assert!(stats.complete());
    }
}
