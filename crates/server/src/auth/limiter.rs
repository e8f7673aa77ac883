//! Failed logins, limited per IP address and per account.
//!
//! A few failures are free (typos happen); after that each failure blocks
//! further password attempts from that address, or for that account, for
//! twice as long as the previous one, up to [`MAX_BLOCK`]. A blocked attempt
//! is refused at once, before any hashing, so a guessing client costs the
//! server almost nothing and learns nothing. The per-account limit applies
//! to passwords only: a session token cannot be guessed, so a device with a
//! token still gets in while someone hammers its account.
//!
//! Both tables are bounded: entries are forgotten [`FORGET_AFTER`] after
//! their last failure, and past [`MAX_ENTRIES`] new ones are not tracked
//! (the other table still limits them).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures allowed before blocking starts.
pub const FREE_FAILURES: u32 = 5;
/// The first block; each further failure doubles it.
pub const FIRST_BLOCK: Duration = Duration::from_secs(1);
/// The longest block.
pub const MAX_BLOCK: Duration = Duration::from_secs(15 * 60);
/// How long after its last failure an entry is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(30 * 60);
/// Most entries per table.
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    blocked_until: Instant,
    last_failure: Instant,
}

/// One table of strikes.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Strikes>,
}

impl<K: Hash + Eq> Table<K> {
    fn new() -> Self {
        Table {
            entries: HashMap::new(),
        }
    }

    fn blocked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let strikes = self.entries.get(key)?;
        (strikes.blocked_until > now).then(|| strikes.blocked_until - now)
    }

    fn fail(&mut self, key: K, now: Instant) {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, s| now.duration_since(s.last_failure) < FORGET_AFTER);
            if self.entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        let strikes = self.entries.entry(key).or_insert(Strikes {
            failures: 0,
            blocked_until: now,
            last_failure: now,
        });
        if now.duration_since(strikes.last_failure) >= FORGET_AFTER {
            strikes.failures = 0;
        }
        strikes.failures += 1;
        strikes.last_failure = now;
        if strikes.failures > FREE_FAILURES {
            strikes.blocked_until = now + block(strikes.failures - FREE_FAILURES);
        }
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

/// The block after `n` failures beyond the free ones: 1 s, 2 s, 4 s, ...
fn block(n: u32) -> Duration {
    let doublings = (n - 1).min(20);
    FIRST_BLOCK.saturating_mul(1 << doublings).min(MAX_BLOCK)
}

/// IPv6 clients usually own a whole /64: count them as one address.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// The two tables.
#[derive(Debug)]
pub struct Limiter {
    by_address: Table<IpAddr>,
    by_account: Table<String>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            by_address: Table::new(),
            by_account: Table::new(),
        }
    }
}

impl Limiter {
    /// How long an attempt from `ip` (for account `key`, when it is a
    /// password) must still wait, if it must.
    pub fn blocked_for(&self, ip: IpAddr, key: Option<&String>, now: Instant) -> Option<Duration> {
        let by_address = self.by_address.blocked_for(&address_key(ip), now);
        let by_account = key.and_then(|k| self.by_account.blocked_for(k, now));
        by_address.max(by_account)
    }

    /// A failed attempt from `ip` on account `key`.
    pub fn failed(&mut self, ip: IpAddr, key: Option<String>, now: Instant) {
        self.by_address.fail(address_key(ip), now);
        if let Some(key) = key {
            self.by_account.fail(key, now);
        }
    }

    /// The account's owner got in: its strikes are forgiven. The address's
    /// are not, or a guesser could reset them with an account of its own.
    pub fn succeeded(&mut self, key: &String) {
        self.by_account.clear(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_start_after_the_free_failures_and_double() {
        let mut limiter = Limiter::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(limiter.blocked_for(ip, None, now), None);
            limiter.failed(ip, None, now);
        }
        assert_eq!(limiter.blocked_for(ip, None, now), None);
        limiter.failed(ip, None, now);
        assert_eq!(limiter.blocked_for(ip, None, now), Some(FIRST_BLOCK));
        limiter.failed(ip, None, now);
        assert_eq!(limiter.blocked_for(ip, None, now), Some(2 * FIRST_BLOCK));
        let other: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(limiter.blocked_for(other, None, now), None);
        assert_eq!(block(100), MAX_BLOCK);
    }

    #[test]
    fn an_account_is_limited_across_addresses_until_its_owner_gets_in() {
        let mut limiter = Limiter::default();
        let key = "alice".to_string();
        let now = Instant::now();
        for i in 0..=FREE_FAILURES {
            limiter.failed([10, 0, 1, i as u8].into(), Some(key.clone()), now);
        }
        let fresh: IpAddr = [10, 0, 2, 1].into();
        assert!(limiter.blocked_for(fresh, Some(&key), now).is_some());
        assert_eq!(limiter.blocked_for(fresh, None, now), None);
        limiter.succeeded(&key);
        assert_eq!(limiter.blocked_for(fresh, Some(&key), now), None);
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_count_together() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
    }
}
