//! Pacing: the client sends no faster than a server's rate limit allows.
//!
//! A server holds back or refuses commands over its limit (a refusal is an
//! `ERROR "rate limit: ..."` that cannot say which command it refused) and
//! cuts off a client that stays over it. A client that resends a backlog
//! from its outbox after a reconnect, on top of its `REGISTER`, `JOIN`s and
//! catch-up `HISTORY`s, would trip that limit, so the connection paces
//! itself with a token bucket that starts full on every connection, as the
//! server's does.

use std::time::{Duration, Instant};

/// Commands per second on average, and how many may go at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub per_sec: u32,
    pub burst: u32,
}

impl Default for Pace {
    /// Under `natter serve`'s default limit (10 per second, burst 20).
    fn default() -> Self {
        Pace {
            per_sec: 8,
            burst: 16,
        }
    }
}

/// One connection's bucket.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    per_sec: f64,
    burst: f64,
    /// May go below zero: commands already promised a later moment.
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(pace: Pace, now: Instant) -> Bucket {
        let burst = f64::from(pace.burst.max(1));
        Bucket {
            per_sec: f64::from(pace.per_sec.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// How long from `now` until a command could go without waiting.
    pub fn ready_in(&self, now: Instant) -> Duration {
        let tokens = self.refilled(now);
        if tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - tokens) / self.per_sec)
        }
    }

    fn refilled(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.per_sec).min(self.burst)
    }

    /// Takes a token for a command about to go at `now`; returns how long
    /// to wait first.
    pub fn take(&mut self, now: Instant) -> Duration {
        self.tokens = self.refilled(now) - 1.0;
        self.last = now;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_and_the_rest_at_the_rate() {
        let now = Instant::now();
        let mut bucket = Bucket::new(
            Pace {
                per_sec: 10,
                burst: 3,
            },
            now,
        );
        for _ in 0..3 {
            assert_eq!(bucket.take(now), Duration::ZERO);
        }
        assert_eq!(bucket.ready_in(now), Duration::from_millis(100));
        assert_eq!(bucket.take(now), Duration::from_millis(100));
        assert_eq!(bucket.take(now), Duration::from_millis(200));
        let later = now + Duration::from_millis(200);
        assert_eq!(bucket.ready_in(later), Duration::from_millis(100));
    }

    #[test]
    fn tokens_come_back_with_time_up_to_the_burst() {
        let now = Instant::now();
        let mut bucket = Bucket::new(
            Pace {
                per_sec: 10,
                burst: 2,
            },
            now,
        );
        bucket.take(now);
        bucket.take(now);
        let later = now + Duration::from_secs(60);
        assert_eq!(bucket.take(later), Duration::ZERO);
        assert_eq!(bucket.take(later), Duration::ZERO);
        assert!(
            bucket.take(later) > Duration::ZERO,
            "no more than the burst"
        );
    }

    #[test]
    fn the_default_stays_under_the_servers_default_limit() {
        let pace = Pace::default();
        assert!(pace.per_sec < 10 && pace.burst < 20);
    }
}
