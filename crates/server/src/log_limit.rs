//! Rate limits for log lines that a client can cause.
//!
//! Every bad frame a client sends is answered with an ERROR and worth a log
//! line, so a client sending garbage (or a crowd of refused connections)
//! could otherwise fill the operator's log as fast as it fills the socket.
//! A few lines go out at once; after that one per [`LOG_PERIOD`], saying
//! how many were left out.
//!
//! Pure logic with time passed in, so it is tested without sleeping.

use std::time::{Duration, Instant};

/// Lines logged at once before the limit applies.
pub const LOG_BURST: u32 = 5;

/// After a burst, one line per this long.
pub const LOG_PERIOD: Duration = Duration::from_secs(10);

/// A token bucket for log lines.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    tokens: f64,
    last: Instant,
    /// Lines left out since the last one logged.
    skipped: u64,
}

impl LogLimiter {
    pub fn new(now: Instant) -> Self {
        LogLimiter {
            tokens: LOG_BURST as f64,
            last: now,
            skipped: 0,
        }
    }

    /// Whether a line may be logged at `now`: `Some(n)` with the number of
    /// lines left out before it, `None` when this one is left out too.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let refill = elapsed.as_secs_f64() / LOG_PERIOD.as_secs_f64();
        self.tokens = (self.tokens + refill).min(LOG_BURST as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.skipped))
        } else {
            self.skipped += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_then_one_line_a_period_with_the_count_left_out() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new(t0);
        for _ in 0..LOG_BURST {
            assert_eq!(limiter.allow(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(limiter.allow(t0), None);
        }
        assert_eq!(limiter.allow(t0 + LOG_PERIOD / 2), None);
        assert_eq!(limiter.allow(t0 + LOG_PERIOD), Some(1001));
        assert_eq!(limiter.allow(t0 + LOG_PERIOD), None);
    }

    #[test]
    fn a_quiet_client_is_always_logged() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new(t0);
        for i in 0..100 {
            assert_eq!(limiter.allow(t0 + LOG_PERIOD * i), Some(0));
        }
    }
}
