//! Per-connection rate limiting, the way IRC servers do it: a connection
//! over its limit is read more slowly, not refused.
//!
//! Every frame a client sends takes a token from a bucket, whatever it holds
//! (a command, a frame that does not decode, a WebSocket binary frame): each
//! costs the hub an answer. With no token left, the frame waits until one
//! comes back, and the connection reads nothing more meanwhile, so its
//! commands keep their order, none is lost, and TCP pushes back on the
//! sender. A person who pastes thirty lines sees them all go out, a little
//! more slowly. Only a connection that stays over the limit for
//! [`FLOOD_WINDOW`] is cut off.
//!
//! Pure logic with time passed in, so it is tested without sleeping.

use std::time::{Duration, Instant};

/// How long a connection may stay over its limit before it is cut off.
pub const FLOOD_WINDOW: Duration = Duration::from_secs(5);

/// What the limiter says about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle it now.
    Allow,
    /// Over the limit: handle it after this long (its token is reserved),
    /// and read nothing else meanwhile.
    Wait(Duration),
    /// Over the limit for [`FLOOD_WINDOW`] without a break: disconnect.
    Disconnect,
}

/// A token bucket of `burst` tokens refilled at `per_sec`.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    /// Below zero while a reserved token is still being waited for.
    tokens: f64,
    last: Instant,
    /// When the connection went over its limit, while it stays there.
    over_since: Option<Instant>,
}

impl RateLimiter {
    /// `None` when `per_sec` is zero, which turns limiting off.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Option<RateLimiter> {
        (per_sec > 0).then(|| RateLimiter {
            per_sec: per_sec as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            last: now,
            over_since: None,
        })
    }

    /// Accounts for one frame arriving at `now`. The caller waits as told
    /// before it asks about the next one.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            // A token was waiting for this frame: the connection is within
            // its limit again, whatever it did before.
            self.tokens -= 1.0;
            self.over_since = None;
            return Verdict::Allow;
        }
        let since = *self.over_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= FLOOD_WINDOW {
            return Verdict::Disconnect;
        }
        let wait = (1.0 - self.tokens) / self.per_sec;
        self.tokens -= 1.0;
        Verdict::Wait(Duration::from_secs_f64(wait))
    }
}

/// The rate limit as a connection applies it, whatever its transport.
#[derive(Debug, Clone)]
pub struct FrameGate {
    /// `None` when rate limiting is off.
    limiter: Option<RateLimiter>,
}

/// The connection stayed over its limit for the flood window. `Display` is
/// the ERROR it gets before the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("flooding: over the rate limit for {} s, disconnecting", FLOOD_WINDOW.as_secs())]
pub struct Flooding;

impl FrameGate {
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        FrameGate {
            limiter: RateLimiter::new(per_sec, burst, now),
        }
    }

    /// Counts one frame arriving at `now`: how long to hold it back first
    /// (zero within the limit), or the verdict that ends the connection.
    pub fn admit(&mut self, now: Instant) -> Result<Duration, Flooding> {
        let Some(limiter) = &mut self.limiter else {
            return Ok(Duration::ZERO);
        };
        match limiter.check(now) {
            Verdict::Allow => Ok(Duration::ZERO),
            Verdict::Wait(wait) => Ok(wait),
            Verdict::Disconnect => Err(Flooding),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends `count` frames as fast as the limiter lets them through,
    /// starting at `t`; returns when the last one went, or `None` when the
    /// connection was cut off.
    fn paste(limiter: &mut RateLimiter, mut t: Instant, count: usize) -> Option<Instant> {
        for _ in 0..count {
            match limiter.check(t) {
                Verdict::Allow => {}
                Verdict::Wait(wait) => t += wait,
                Verdict::Disconnect => return None,
            }
        }
        Some(t)
    }

    #[test]
    fn zero_rate_turns_limiting_off() {
        assert!(RateLimiter::new(0, 20, Instant::now()).is_none());
        let mut gate = FrameGate::new(0, 20, Instant::now());
        assert_eq!(gate.admit(Instant::now()), Ok(Duration::ZERO));
    }

    #[test]
    fn a_burst_goes_at_once_and_the_rest_waits_its_turn() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 20, t0).unwrap();
        for _ in 0..20 {
            assert_eq!(limiter.check(t0), Verdict::Allow);
        }
        assert_waits(limiter.check(t0), ms(100));
        // The next one, right after that wait, waits another tenth.
        assert_waits(limiter.check(t0 + ms(100)), ms(100));
    }

    fn assert_waits(verdict: Verdict, expected: Duration) {
        let Verdict::Wait(wait) = verdict else {
            panic!("{verdict:?}, expected a wait of {expected:?}");
        };
        let error = wait.abs_diff(expected);
        assert!(
            error < Duration::from_micros(1),
            "{wait:?} for {expected:?}"
        );
    }

    #[test]
    fn a_paste_of_thirty_lines_goes_out_in_a_second_without_a_cut_off() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 20, t0).unwrap();
        let done = paste(&mut limiter, t0, 30).expect("not cut off");
        let took = done - t0;
        assert!(took >= ms(999) && took <= ms(1001), "{took:?}");
    }

    #[test]
    fn a_steady_client_at_the_limit_never_waits() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 20, t0).unwrap();
        for i in 0..1000 {
            assert_eq!(limiter.check(t0 + ms(100 * i)), Verdict::Allow);
        }
    }

    #[test]
    fn staying_over_the_limit_for_the_flood_window_disconnects() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 20, t0).unwrap();
        // 20 at once, then 50 a second for FLOOD_WINDOW: cut off at the end.
        assert!(paste(&mut limiter, t0, 70).is_some());
        assert_eq!(paste(&mut limiter, t0 + FLOOD_WINDOW, 1), None);
    }

    #[test]
    fn a_pause_that_lets_a_token_come_back_ends_the_flood() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 20, t0).unwrap();
        let mut t = paste(&mut limiter, t0, 60).expect("4 s over the limit");
        for _ in 0..10 {
            // A breath long enough for one token, then another long paste.
            t = paste(&mut limiter, t + ms(150), 40).expect("the pause ended the flood");
        }
    }

    #[test]
    fn the_gate_says_why_it_disconnects() {
        let t0 = Instant::now();
        let mut gate = FrameGate::new(1, 1, t0);
        assert_eq!(gate.admit(t0), Ok(Duration::ZERO));
        for second in 0..5 {
            assert_eq!(gate.admit(t0 + ms(1000 * second)), Ok(ms(1000)));
        }
        assert_eq!(gate.admit(t0 + FLOOD_WINDOW), Err(Flooding));
        assert_eq!(
            Flooding.to_string(),
            "flooding: over the rate limit for 5 s, disconnecting"
        );
    }
}
