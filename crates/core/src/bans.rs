//! Bans: who an operator has shut out, until when, and why.
//!
//! A ban names either a user (by key, so `Bob` and `bob` are one ban) or an
//! address. A banned user may not REGISTER, log in or sign up under that
//! name: that is a chat rule, checked here by [`Chat`](crate::Chat). A
//! banned address may not connect at all: that is about sockets, so the
//! server's admission checks it; the type lives here because a store
//! keeps both kinds the same way ([`Fact::Banned`](crate::Fact::Banned)).
//!
//! An IPv6 address is banned by its /64 (a host is usually given a whole
//! /64 and may pick any address in it), an IPv4-mapped IPv6 address as its
//! IPv4 address: the same rule as the per-address connection limit.
//!
//! A ban with an end lapses on its own once the clock passes it; nothing
//! needs to remove it.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::facts::UnixMs;
use crate::users::user_key;

/// What a ban shuts out.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum BanTarget {
    /// A user key (see [`user_key`]).
    User(String),
    /// An IPv4 address or an IPv6 /64 (as [`address_key`] gives it).
    Address(IpAddr),
}

impl BanTarget {
    /// The target `text` names: an IP address if it parses as one (IPv6
    /// then counts by its /64), else a user name. `user:NAME` and
    /// `ip:ADDR` say which explicitly (a name such as `1.2.3.4` is a valid
    /// username too).
    pub fn parse(text: &str) -> Result<BanTarget, BadTarget> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix("user:") {
            return user_target(name);
        }
        if let Some(addr) = text.strip_prefix("ip:") {
            return addr
                .parse::<IpAddr>()
                .map(|ip| BanTarget::Address(address_key(ip)))
                .map_err(|_| BadTarget(text.to_owned()));
        }
        match text.parse::<IpAddr>() {
            Ok(ip) => Ok(BanTarget::Address(address_key(ip))),
            Err(_) => user_target(text),
        }
    }

    /// How a store writes it: `user:KEY` or `ip:ADDR`; [`BanTarget::parse`]
    /// reads it back.
    pub fn stored(&self) -> String {
        self.to_string()
    }
}

fn user_target(name: &str) -> Result<BanTarget, BadTarget> {
    let valid = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(BanTarget::User(user_key(name)))
    } else {
        Err(BadTarget(name.to_owned()))
    }
}

impl fmt::Display for BanTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanTarget::User(key) => write!(f, "user:{key}"),
            BanTarget::Address(IpAddr::V6(v6)) => write!(f, "ip:{v6}/64"),
            BanTarget::Address(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// Not a username nor an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a username nor an IP address")]
pub struct BadTarget(pub String);

/// What an address is banned (and counted) as: an IPv4 address (also when
/// it comes IPv4-mapped, `::ffff:a.b.c.d`), or an IPv6 /64.
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ban {
    pub target: BanTarget,
    /// When it lapses (`None`: never).
    pub until: Option<UnixMs>,
    /// What the operator gave as the reason (may be empty).
    pub reason: String,
    pub created: UnixMs,
}

impl Ban {
    /// Whether it still holds at `now`.
    pub fn holds_at(&self, now: UnixMs) -> bool {
        self.until.is_none_or(|until| now < until)
    }

    /// The words a refused client reads after "banned": how long, and why.
    pub fn describe(&self, now: UnixMs) -> String {
        let mut text = match self.until {
            None => "permanently".to_owned(),
            Some(until) => format!("for {} more", human_duration(until - now)),
        };
        if !self.reason.is_empty() {
            text.push_str(": ");
            text.push_str(&self.reason);
        }
        text
    }
}

/// How long a ban has left, in its two largest units (at least `1s`),
/// rounded up at the smaller one: `7d` minus a few seconds is still `7d`,
/// and `90061000` ms (1d 1h 1m 1s) is `1d 2h`.
pub fn human_duration(ms: i64) -> String {
    let secs = (ms.max(0) + 999) / 1000;
    let step = match secs {
        s if s > 86_400 => 3600,
        s if s > 3600 => 60,
        _ => 1,
    };
    let secs = (secs + step - 1) / step * step;
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .take(2)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if parts.is_empty() {
        "1s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// A duration as an operator types it: `30s`, `30m`, `2h`, `7d`, `1w`, or
/// `permanent` (`None`). A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Option<UnixMs>, BadDuration> {
    let text = text.trim();
    if matches!(text, "permanent" | "forever") {
        return Ok(None);
    }
    let bad = || BadDuration(text.to_owned());
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let unit_ms: i64 = match unit {
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    match number.checked_mul(unit_ms) {
        Some(ms) if ms > 0 && ms <= MAX_BAN_MS => Ok(Some(ms)),
        _ => Err(bad()),
    }
}

/// The longest ban with an end: ten years (longer is `permanent`).
const MAX_BAN_MS: i64 = 10 * 366 * 86_400_000;

/// Not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration: use e.g. 30m, 2h, 7d (at most ten years) or permanent")]
pub struct BadDuration(pub String);

/// The bans of one kind, by target; lapsed ones are skipped (and dropped
/// when next touched).
#[derive(Debug, Default, Clone)]
pub struct Bans {
    by_target: HashMap<BanTarget, Ban>,
}

impl Bans {
    /// Adds or replaces the ban on `ban.target`.
    pub fn insert(&mut self, ban: Ban) {
        self.by_target.insert(ban.target.clone(), ban);
    }

    /// Lifts the ban on `target`; gives it back if one held at `now`.
    pub fn remove(&mut self, target: &BanTarget, now: UnixMs) -> Option<Ban> {
        self.by_target
            .remove(target)
            .filter(|ban| ban.holds_at(now))
    }

    /// The ban on `target` that holds at `now`, if any.
    pub fn get(&mut self, target: &BanTarget, now: UnixMs) -> Option<&Ban> {
        if self.by_target.get(target).is_some_and(|b| !b.holds_at(now)) {
            self.by_target.remove(target);
        }
        self.by_target.get(target)
    }

    /// Every ban that holds at `now`, by target.
    pub fn list(&self, now: UnixMs) -> Vec<Ban> {
        let mut bans: Vec<Ban> = self
            .by_target
            .values()
            .filter(|b| b.holds_at(now))
            .cloned()
            .collect();
        bans.sort_by(|a, b| a.target.cmp(&b.target));
        bans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_addresses_when_they_parse_as_one() {
        assert_eq!(
            BanTarget::parse("Bob").unwrap(),
            BanTarget::User("bob".into())
        );
        assert_eq!(
            BanTarget::parse("10.0.0.7").unwrap(),
            BanTarget::Address("10.0.0.7".parse().unwrap())
        );
        assert_eq!(
            BanTarget::parse("user:10.0.0.7").unwrap(),
            BanTarget::User("10.0.0.7".into())
        );
        assert_eq!(
            BanTarget::parse("2001:db8:1:2:dead:beef::1").unwrap(),
            BanTarget::Address("2001:db8:1:2::".parse().unwrap())
        );
        assert_eq!(
            BanTarget::parse("::ffff:10.1.2.3").unwrap(),
            BanTarget::Address("10.1.2.3".parse().unwrap())
        );
        assert!(BanTarget::parse("no spaces").is_err());
        assert!(BanTarget::parse("ip:bob").is_err());
        assert!(BanTarget::parse("").is_err());
    }

    #[test]
    fn stored_targets_read_back() {
        for text in ["bob", "10.0.0.7", "2001:db8::9", "user:1.2.3.4"] {
            let target = BanTarget::parse(text).unwrap();
            let stored = target.stored();
            let back = stored.trim_end_matches("/64");
            assert_eq!(BanTarget::parse(back).unwrap(), target, "{stored}");
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30m"), Ok(Some(30 * 60_000)));
        assert_eq!(parse_duration("2h"), Ok(Some(7_200_000)));
        assert_eq!(parse_duration("7d"), Ok(Some(7 * 86_400_000)));
        assert_eq!(parse_duration("45"), Ok(Some(45_000)));
        assert_eq!(parse_duration("permanent"), Ok(None));
        for bad in ["", "0m", "-5m", "2x", "h", "99999999999999999d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ban_with_an_end_lapses() {
        let mut bans = Bans::default();
        let target = BanTarget::User("bob".into());
        bans.insert(Ban {
            target: target.clone(),
            until: Some(2_000),
            reason: "spam".into(),
            created: 0,
        });
        assert!(bans.get(&target, 1_999).is_some());
        assert_eq!(bans.list(1_999).len(), 1);
        assert!(bans.get(&target, 2_000).is_none());
        assert!(bans.list(2_000).is_empty());
        assert_eq!(
            human_duration(90_061_000),
            "1d 2h",
            "the two largest units, rounded up"
        );
        assert_eq!(human_duration(7 * 86_400_000 - 1_500), "7d");
        assert_eq!(human_duration(7_200_000 - 61_000), "1h 59m");
        assert_eq!(human_duration(90_500), "1m 31s");
        assert_eq!(human_duration(1), "1s");
    }
}
