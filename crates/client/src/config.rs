//! How a client connects, waits and reconnects. Every bound in one place.

use std::time::Duration;

use crate::pace::Pace;

/// Settings for [`crate::Client::connect_with`]. `ClientConfig::new(addr)`
/// gives the defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `HOST:PORT` of the server; resolved again on every reconnect.
    pub addr: String,
    /// How long one TCP connect may take.
    pub connect_timeout: Duration,
    /// How long the server may take to answer `REGISTER`, to close the
    /// connection after `GOODBYE`, and to confirm a message sent (after
    /// which it is sent again on a server with `history`, at most three
    /// times in all, or given up as [`crate::Event::NotSent`]).
    pub reply_timeout: Duration,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// Events buffered for the application. When it stops reading, the
    /// client stops reading the socket (and a server drops a client that
    /// does not read): nothing grows without bound.
    pub event_capacity: usize,
    /// Commands buffered towards the connection task; callers wait when it
    /// is full.
    pub command_capacity: usize,
    /// Messages sent but not yet confirmed by the server, kept to be sent
    /// again after a reconnect. When it is full, `send_message` fails with
    /// [`crate::ClientError::OutboxFull`].
    pub outbox_capacity: usize,
    /// Most messages fetched per conversation to catch up after a
    /// reconnect (at most 500, the protocol's limit); older missed ones
    /// are reported as [`crate::Event::Missed`].
    pub catch_up_limit: usize,
    /// How fast commands go out (`None`: as fast as they come). The
    /// default stays under the server's default rate limit, so that a
    /// backlog resent after a reconnect is not refused.
    pub pace: Option<Pace>,
}

impl ClientConfig {
    pub fn new(addr: impl Into<String>) -> Self {
        ClientConfig {
            addr: addr.into(),
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            event_capacity: 1024,
            command_capacity: 64,
            outbox_capacity: 256,
            catch_up_limit: 500,
            pace: Some(Pace::default()),
        }
    }
}

/// Exponential backoff with jitter: attempt 1 waits about `base`, each next
/// attempt twice as long, never more than `max`. Jitter (±20 %) keeps many
/// clients that lost the same server from reconnecting in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (1-based). `jitter` is a number in
    /// `[0, 1)`, drawn at random by the caller (a parameter so the schedule
    /// can be tested).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let nominal = self.base.saturating_mul(1u32 << doublings).min(self.max);
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        nominal.mul_f64(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_from_one_second_up_to_thirty() {
        let backoff = Backoff::default();
        let nominal: Vec<u64> = (1..=7).map(|n| backoff.delay(n, 0.5).as_secs()).collect();
        assert_eq!(nominal, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.delay(1000, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_under_the_cap() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(3, 0.0), Duration::from_millis(3200));
        assert!(backoff.delay(3, 0.999) < Duration::from_millis(4800));
        assert_eq!(backoff.delay(6, 0.999), Duration::from_secs(30));
    }
}
