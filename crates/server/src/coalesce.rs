//! Write coalescing under load.
//!
//! Every write to a socket costs the server a few microseconds of kernel
//! time, almost whatever its size. The hub's batches already merge messages
//! that arrive together, but at tens of thousands of messages a second a
//! client in a busy conversation still gets one message every few
//! milliseconds, each in its own write. So while the hub is busy, a client
//! that was written to less than a window ago waits for the window to end,
//! and what piled up for it leaves in one write.
//!
//! Waiting costs latency, so it happens only while the hub is busy (then
//! latency is set by queueing anyway) and never for longer than the window.
//! Pure logic with time passed in, so it is tested without sleeping.

use std::time::{Duration, Instant};

/// How often the hub's load is assessed.
const MEASURE_PERIOD: Duration = Duration::from_millis(20);

/// The hub counts as busy when it worked at least this share of a period.
const BUSY_SHARE: f64 = 0.5;

/// Decides, per client, whether a flush should wait.
#[derive(Debug)]
pub struct Coalescer {
    /// The longest a client's bytes wait; zero turns coalescing off.
    window: Duration,
    period_start: Instant,
    worked: Duration,
    /// The verdict of the last whole period.
    busy: bool,
}

impl Coalescer {
    pub fn new(window: Duration, now: Instant) -> Self {
        Coalescer {
            window,
            period_start: now,
            worked: Duration::ZERO,
            busy: false,
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// A new window (a reload); zero turns coalescing off.
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Records that the hub worked from `start` to `end`.
    pub fn record_work(&mut self, start: Instant, end: Instant) {
        self.worked += end.saturating_duration_since(start);
        let elapsed = end.saturating_duration_since(self.period_start);
        if elapsed >= MEASURE_PERIOD {
            self.busy = self.worked.as_secs_f64() >= BUSY_SHARE * elapsed.as_secs_f64();
            self.period_start = end;
            self.worked = Duration::ZERO;
        }
    }

    /// Whether a client last written at `last_write` should wait until the
    /// window after that write ends.
    pub fn should_wait(&self, last_write: Instant, now: Instant) -> bool {
        self.busy && !self.window.is_zero() && now < last_write + self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A hub that works `share` of every millisecond for `total`.
    fn load(coalescer: &mut Coalescer, from: Instant, total: Duration, share: f64) -> Instant {
        let mut t = from;
        while t < from + total {
            let work = Duration::from_secs_f64(0.001 * share);
            coalescer.record_work(t, t + work);
            t += ms(1);
        }
        t
    }

    #[test]
    fn an_idle_hub_writes_at_once() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(WINDOW, t0);
        let now = load(&mut coalescer, t0, ms(100), 0.1);
        assert!(!coalescer.should_wait(now - ms(1), now));
    }

    #[test]
    fn a_busy_hub_lets_a_recently_written_client_wait() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(WINDOW, t0);
        let now = load(&mut coalescer, t0, ms(100), 0.8);
        assert!(coalescer.should_wait(now - ms(1), now));
        // ...but not one whose last write is older than the window.
        assert!(!coalescer.should_wait(now - ms(3), now));
    }

    #[test]
    fn busy_ends_when_the_load_drops() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(WINDOW, t0);
        let t1 = load(&mut coalescer, t0, ms(100), 0.9);
        let now = load(&mut coalescer, t1, ms(100), 0.05);
        assert!(!coalescer.should_wait(now - ms(1), now));
    }

    #[test]
    fn a_zero_window_never_waits() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(Duration::ZERO, t0);
        let now = load(&mut coalescer, t0, ms(100), 1.0);
        assert!(!coalescer.should_wait(now, now));
    }
}
