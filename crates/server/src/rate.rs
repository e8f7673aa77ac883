//! Per-connection rate limiting: a token bucket, and the rule that turns a
//! sustained flood into a disconnect.
//!
//! Pure logic with time passed in, so it is tested without sleeping.

use std::time::{Duration, Instant};

/// How long a client may keep sending over its limit before it is cut off.
pub const FLOOD_GRACE: Duration = Duration::from_secs(5);

/// A pause in refusals this long ends a flood. Allowed commands alone do not:
/// a flooder gets a token back now and then, and is still flooding.
pub const FLOOD_GAP: Duration = Duration::from_secs(1);

/// What the limiter says about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: refuse this command with an ERROR.
    Refuse,
    /// Over the limit for [`FLOOD_GRACE`] without pause: disconnect.
    Disconnect,
}

/// A token bucket of `burst` tokens refilled at `per_sec`.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// When the current run of refusals began, and the latest refusal.
    flood: Option<(Instant, Instant)>,
}

impl RateLimiter {
    /// `None` when `per_sec` is zero, which turns limiting off.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Option<RateLimiter> {
        (per_sec > 0).then(|| RateLimiter {
            per_sec: per_sec as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            last: now,
            flood: None,
        })
    }

    /// Accounts for one command arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        let since = match self.flood {
            Some((since, last)) if now.saturating_duration_since(last) <= FLOOD_GAP => since,
            _ => now,
        };
        self.flood = Some((since, now));
        if now.saturating_duration_since(since) >= FLOOD_GRACE {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

/// The rate limit as a connection applies it, whatever its transport:
/// every command (valid or not) is counted, and one over the limit is
/// answered with the ERROR this gives instead of being run.
#[derive(Debug, Clone)]
pub struct CommandGate {
    /// `None` when rate limiting is off.
    limiter: Option<RateLimiter>,
    per_sec: u32,
    burst: u32,
}

/// A command refused by the gate: the ERROR text, and whether the
/// connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: String,
    pub fatal: bool,
}

impl CommandGate {
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        CommandGate {
            limiter: RateLimiter::new(per_sec, burst, now),
            per_sec,
            burst,
        }
    }

    /// Counts one command arriving at `now`.
    pub fn admit(&mut self, now: Instant) -> Result<(), Refusal> {
        let Some(limiter) = &mut self.limiter else {
            return Ok(());
        };
        match limiter.check(now) {
            Verdict::Allow => Ok(()),
            Verdict::Refuse => Err(Refusal {
                error: format!(
                    "rate limit: at most {} commands per second (burst {}); command ignored",
                    self.per_sec, self.burst
                ),
                fatal: false,
            }),
            Verdict::Disconnect => Err(Refusal {
                error: "flooding: over the rate limit for 5 s, disconnecting".to_string(),
                fatal: true,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn zero_rate_turns_limiting_off() {
        assert!(RateLimiter::new(0, 20, Instant::now()).is_none());
    }

    #[test]
    fn a_burst_is_allowed_then_refused() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 20, t0).unwrap();
        for _ in 0..20 {
            assert_eq!(limiter.check(t0), Verdict::Allow);
        }
        assert_eq!(limiter.check(t0), Verdict::Refuse);
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 1, t0).unwrap();
        assert_eq!(limiter.check(t0), Verdict::Allow);
        assert_eq!(limiter.check(t0 + ms(50)), Verdict::Refuse);
        assert_eq!(limiter.check(t0 + ms(160)), Verdict::Allow);
    }

    #[test]
    fn a_steady_client_at_the_limit_is_never_refused() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 20, t0).unwrap();
        for i in 0..1000 {
            assert_eq!(limiter.check(t0 + ms(100 * i)), Verdict::Allow);
        }
    }

    #[test]
    fn five_seconds_of_flooding_disconnects() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1, 1, t0).unwrap();
        assert_eq!(limiter.check(t0), Verdict::Allow);
        let mut verdict = Verdict::Allow;
        let mut t = t0;
        // 100 commands a second, far over the limit of 1.
        while verdict != Verdict::Disconnect {
            t += ms(10);
            verdict = limiter.check(t);
            assert!(t - t0 <= FLOOD_GRACE + ms(1100), "never disconnected");
        }
        assert!(t - t0 >= FLOOD_GRACE);
    }

    #[test]
    fn pausing_ends_a_flood() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1, 1, t0).unwrap();
        limiter.check(t0);
        assert_eq!(limiter.check(t0 + ms(10)), Verdict::Refuse);
        assert_eq!(limiter.check(t0 + ms(1100)), Verdict::Allow);
        assert_eq!(limiter.check(t0 + ms(1110)), Verdict::Refuse);
        assert_eq!(limiter.check(t0 + ms(4000)), Verdict::Allow);
        assert_eq!(limiter.check(t0 + ms(5500)), Verdict::Allow);
    }
}
