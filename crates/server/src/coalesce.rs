//! Write coalescing under load, with a window that follows the load.
//!
//! Every write to a socket costs the server a few microseconds of kernel
//! time, almost whatever its size. The hub's batches already merge messages
//! that arrive together, but at tens of thousands of messages a second a
//! client in a busy conversation still gets one message every few
//! milliseconds, each in its own write. So under load a client's first
//! queued message waits up to a window, and whatever else arrives for the
//! client meanwhile leaves with it in one write: with messages arriving at
//! a rate `λ` per client, a write carries `1 + λ·window` of them.
//!
//! Waiting costs latency, so the window follows the hub's *demand*: the
//! share of time it would work if it wrote every message on its own, that
//! is the time it worked plus the writes coalescing saved it (each valued
//! at what a write cost in the same period). Measuring the work alone would
//! feed back: a window saves work, the hub looks less busy, the window
//! shrinks, and the load comes back. The demand is smoothed over about
//! [`SMOOTHING`]; the window is zero below [`LOW_DEMAND`] (an idle or
//! lightly loaded server writes at once), grows linearly, and is the
//! configured maximum from [`HIGH_DEMAND`] on (where, without it, latency
//! would be set by queueing anyway).
//!
//! Pure logic with time passed in, so it is tested without sleeping.

use std::time::{Duration, Instant};

/// How often the demand is assessed.
const MEASURE_PERIOD: Duration = Duration::from_millis(20);

/// How long the demand takes to follow a change of load (the time constant
/// of its exponential smoothing): long enough that one slow pass does not
/// open the window, short enough that a burst is met within its first
/// tenth of a second, and that an idle gap closes the window at once.
const SMOOTHING: Duration = Duration::from_millis(100);

/// Below this demand (a share of the hub's time) clients are written at
/// once. Short of saturation, a window of a millisecond or two merges few
/// writes (a client that receives a hundred messages a second gets one
/// every 10 ms), so it costs latency and saves little: opened from 0.7, it
/// added milliseconds to the p50 of the benchmark at R = 10,000 and no CPU
/// saving that the run could measure.
const LOW_DEMAND: f64 = 0.85;

/// From this demand on, the window is the configured maximum.
const HIGH_DEMAND: f64 = 1.0;

/// A period's demand counts as at most this: with a long window a write
/// can carry hundreds of messages, and an unbounded estimate would keep
/// the window open long after the load is gone.
const MAX_DEMAND: f64 = 1.5;

/// Decides how long a client's first queued message may wait.
#[derive(Debug)]
pub struct Coalescer {
    /// The longest a client's bytes wait; zero turns coalescing off.
    max_window: Duration,
    /// The current window, from the smoothed demand.
    window: Duration,
    period_start: Instant,
    /// Time the hub worked in this period.
    worked: Duration,
    /// When the last recorded work ended.
    last_work_end: Instant,
    /// Time the writes coalescing saved in this period would have cost.
    saved: Duration,
    /// The smoothed demand, a share of the hub's time (may pass 1).
    demand: f64,
}

impl Coalescer {
    pub fn new(max_window: Duration, now: Instant) -> Self {
        Coalescer {
            max_window,
            window: Duration::ZERO,
            period_start: now,
            worked: Duration::ZERO,
            last_work_end: now,
            saved: Duration::ZERO,
            demand: 0.0,
        }
    }

    /// How long a client's first queued message may wait now.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The smoothed demand (for logs and tests).
    pub fn demand(&self) -> f64 {
        self.demand
    }

    /// A new maximum (a reload); zero turns coalescing off at once.
    pub fn set_max_window(&mut self, max_window: Duration) {
        self.max_window = max_window;
        self.window = window_for(self.demand, max_window);
    }

    /// Records that the hub flushed `flushes` clients in `spent`, and that
    /// `merged` messages left in a write with an earlier one: writes saved.
    pub fn record_flushes(&mut self, spent: Duration, flushes: u64, merged: u64) {
        if flushes > 0 && merged > 0 {
            let per_write = spent.as_secs_f64() / flushes as f64;
            self.saved += Duration::from_secs_f64(per_write * merged as f64);
        }
    }

    /// A pass begins at `now`: the time since the last one counts before
    /// the pass decides whom to write, so that after an idle gap the first
    /// message does not wait for a window the load before the gap opened.
    /// What the period before the gap gathered (a last flush may have saved
    /// thousands of writes) is assessed over its own span, not spread over
    /// the gap: spread, it could read as a full load however long the gap.
    pub fn pass_begins(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_work_end) >= MEASURE_PERIOD {
            let active_end = self.last_work_end.max(self.period_start);
            if active_end > self.period_start {
                self.assess(active_end);
            }
        }
        self.record_work(now, now);
    }

    /// Records that the hub worked from `start` to `end`; at the end of a
    /// period, updates the demand and the window, and returns true.
    pub fn record_work(&mut self, start: Instant, end: Instant) -> bool {
        self.worked += end.saturating_duration_since(start);
        if end > start {
            self.last_work_end = end;
        }
        if end.saturating_duration_since(self.period_start) < MEASURE_PERIOD {
            return false;
        }
        self.assess(end);
        true
    }

    /// Folds the period ending at `end` into the demand and the window.
    fn assess(&mut self, end: Instant) {
        let elapsed = end.saturating_duration_since(self.period_start);
        let sample =
            ((self.worked + self.saved).as_secs_f64() / elapsed.as_secs_f64()).min(MAX_DEMAND);
        // Weighted by the period's length: after an idle gap many times
        // SMOOTHING long, the old demand is forgotten.
        let weight = 1.0 - (-elapsed.as_secs_f64() / SMOOTHING.as_secs_f64()).exp();
        self.demand += weight * (sample - self.demand);
        self.window = window_for(self.demand, self.max_window);
        self.period_start = end;
        self.worked = Duration::ZERO;
        self.saved = Duration::ZERO;
    }

    /// Whether a client whose oldest unwritten message was queued at
    /// `queued` should wait longer at `now`.
    pub fn should_wait(&self, queued: Instant, now: Instant) -> bool {
        now < self.due(queued)
    }

    /// When a client whose oldest unwritten message was queued at `queued`
    /// is to be written.
    pub fn due(&self, queued: Instant) -> Instant {
        queued + self.window
    }
}

/// The window for a demand: zero up to [`LOW_DEMAND`], the maximum from
/// [`HIGH_DEMAND`], linear between.
fn window_for(demand: f64, max_window: Duration) -> Duration {
    let ramp = ((demand - LOW_DEMAND) / (HIGH_DEMAND - LOW_DEMAND)).clamp(0.0, 1.0);
    max_window.mul_f64(ramp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_millis(8);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A hub that works `share` of every millisecond for `total`, its
    /// flushes taking `flushing` of that work and merging `merged`
    /// messages into `flushes` writes each millisecond.
    fn load(coalescer: &mut Coalescer, from: Instant, total: Duration, share: f64) -> Instant {
        load_with_flushes(coalescer, from, total, share, 0, 0)
    }

    fn load_with_flushes(
        coalescer: &mut Coalescer,
        from: Instant,
        total: Duration,
        share: f64,
        flushes: u64,
        merged: u64,
    ) -> Instant {
        let mut t = from;
        while t < from + total {
            let work = Duration::from_secs_f64(0.001 * share);
            coalescer.record_flushes(work, flushes, merged);
            coalescer.record_work(t, t + work);
            t += ms(1);
        }
        t
    }

    #[test]
    fn a_lightly_loaded_hub_writes_at_once() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(MAX, t0);
        let now = load(&mut coalescer, t0, ms(1000), 0.5);
        assert_eq!(coalescer.window(), Duration::ZERO);
        assert!(!coalescer.should_wait(now, now));
    }

    #[test]
    fn the_window_grows_with_the_load() {
        let t0 = Instant::now();
        let mut windows = Vec::new();
        for share in [0.8, 0.9, 0.93, 0.96, 1.0] {
            let mut coalescer = Coalescer::new(MAX, t0);
            load(&mut coalescer, t0, ms(1000), share);
            windows.push(coalescer.window());
        }
        assert!(windows.windows(2).all(|w| w[0] < w[1]), "{windows:?}");
        assert!(windows[4] >= MAX.mul_f64(0.99), "{windows:?}");
    }

    #[test]
    fn a_saturated_hub_lets_a_client_wait_the_whole_window() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(MAX, t0);
        // Busy all the time, and a third of the messages merged: a demand
        // past what the hub can give.
        let now = load_with_flushes(&mut coalescer, t0, ms(1000), 1.0, 10, 5);
        assert_eq!(coalescer.window(), MAX);
        assert!(coalescer.should_wait(now - ms(7), now));
        assert!(!coalescer.should_wait(now - ms(8), now));
        assert_eq!(coalescer.due(now), now + MAX);
    }

    /// The writes coalescing saved count as demand: a hub that works 50%
    /// of the time only because half of its writes were merged keeps its
    /// window open instead of closing it and getting busy again.
    #[test]
    fn saved_writes_keep_the_window_open() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(MAX, t0);
        // Every millisecond: 0.5 ms of work, all of it 10 writes carrying
        // 20 messages: 10 writes saved, worth another 0.5 ms.
        load_with_flushes(&mut coalescer, t0, ms(1000), 0.5, 10, 10);
        assert!(
            (coalescer.demand() - 1.0).abs() < 0.01,
            "{}",
            coalescer.demand()
        );
        assert!(coalescer.window() >= MAX.mul_f64(0.99));
    }

    #[test]
    fn the_window_closes_when_the_load_drops() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(MAX, t0);
        let t1 = load(&mut coalescer, t0, ms(1000), 1.0);
        assert!(coalescer.window() >= MAX.mul_f64(0.99));
        let now = load(&mut coalescer, t1, ms(500), 0.1);
        assert_eq!(coalescer.window(), Duration::ZERO);
        assert!(!coalescer.should_wait(now, now));
    }

    /// After an idle gap, the first pass finds the window closed before it
    /// writes anything.
    #[test]
    fn an_idle_gap_closes_the_window_at_once() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(MAX, t0);
        let t1 = load(&mut coalescer, t0, ms(1000), 1.0);
        let later = t1 + ms(500);
        coalescer.pass_begins(later);
        assert_eq!(coalescer.window(), Duration::ZERO);
        assert!(!coalescer.should_wait(later, later));
    }

    /// However many writes a long window saved, the window closes within a
    /// fraction of a second of quiet.
    #[test]
    fn a_short_quiet_closes_even_a_wide_window() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(Duration::from_secs(2), t0);
        // Each millisecond, one write carrying 500 messages.
        let t1 = load_with_flushes(&mut coalescer, t0, ms(1000), 1.0, 1, 499);
        assert_eq!(coalescer.window(), Duration::from_secs(2));
        coalescer.pass_begins(t1 + ms(200));
        assert_eq!(coalescer.window(), Duration::ZERO);
    }

    /// A last flush that saved thousands of writes just before a quiet time
    /// (the load ends in the middle of a period) does not hold the window
    /// open after it: those savings count over the period they were made in.
    #[test]
    fn a_huge_last_flush_does_not_outlast_the_quiet() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(Duration::from_secs(2), t0);
        let t1 = load_with_flushes(&mut coalescer, t0, ms(1010), 1.0, 1, 5000);
        coalescer.pass_begins(t1 + ms(500));
        assert_eq!(coalescer.window(), Duration::ZERO);
    }

    /// One slow pass after a quiet time does not open the window.
    #[test]
    fn one_slow_pass_does_not_open_the_window() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(MAX, t0);
        let t1 = load(&mut coalescer, t0, ms(1000), 0.1);
        coalescer.record_work(t1, t1 + ms(20));
        assert!(coalescer.window() < MAX / 2, "{:?}", coalescer.window());
    }

    #[test]
    fn a_zero_maximum_never_waits() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(Duration::ZERO, t0);
        let now = load(&mut coalescer, t0, ms(1000), 1.0);
        assert!(!coalescer.should_wait(now, now));
    }

    #[test]
    fn a_reload_to_zero_closes_the_window_at_once() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(MAX, t0);
        let now = load(&mut coalescer, t0, ms(1000), 1.0);
        coalescer.set_max_window(Duration::ZERO);
        assert!(!coalescer.should_wait(now, now));
    }
}
