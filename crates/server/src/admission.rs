//! Who may connect: the server-wide and per-address connection limits.
//!
//! A [`Ticket`] is held by each connection's task for its whole life and
//! gives its place back when dropped, however the task ends.
//!
//! The per-address limit counts an IPv6 client by its /64: a host is
//! usually given a whole /64 and may use any of its 2^64 addresses, so
//! counting full addresses would be no limit at all. Address bans
//! ([`AddressBans`], set by an operator) count the same way.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use natter_core::bans::{Ban, BanTarget, Bans, address_key};

/// Why a connection was refused. `Display` is the ERROR text it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("server full: {0} connections already, try again later")]
    ServerFull(usize),
    #[error("too many connections from your address (limit {0})")]
    AddressFull(usize),
    /// `how` says for how long and why ([`Ban::describe`]).
    #[error("your address is banned from this server {how}")]
    Banned { how: String },
}

/// The addresses an operator banned: checked by every admission (TCP and
/// WebSocket clients), changed by the hub when an operator bans or
/// unbans, loaded from the store at start-up.
#[derive(Default)]
pub struct AddressBans {
    bans: Mutex<Bans>,
}

impl AddressBans {
    fn lock(&self) -> std::sync::MutexGuard<'_, Bans> {
        self.bans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses `address` while a ban on it (or its /64) holds.
    pub fn check(&self, address: IpAddr) -> Result<(), Refusal> {
        let now = crate::hub::unix_ms();
        let target = BanTarget::Address(address_key(address));
        match self.lock().get(&target, now) {
            None => Ok(()),
            Some(ban) => Err(Refusal::Banned {
                how: ban.describe(now),
            }),
        }
    }

    /// Adds (or replaces) an address ban; other targets are ignored.
    pub fn insert(&self, ban: Ban) {
        if matches!(ban.target, BanTarget::Address(_)) {
            self.lock().insert(ban);
        }
    }

    /// Lifts a ban; gives it back if one held.
    pub fn remove(&self, target: &BanTarget) -> Option<Ban> {
        self.lock().remove(target, crate::hub::unix_ms())
    }

    /// The address bans that hold now.
    pub fn list(&self) -> Vec<Ban> {
        self.lock().list(crate::hub::unix_ms())
    }
}

/// The limits live with the counts, under one lock, so that a reload
/// changes them between two admissions, never during one.
#[derive(Default)]
struct Counts {
    max_total: usize,
    max_per_address: usize,
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Connection limits; zero means "no limit".
pub struct Admission {
    counts: Mutex<Counts>,
    bans: Arc<AddressBans>,
}

/// One admitted connection's place.
pub struct Ticket {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Admission {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Admission> {
        Self::with_bans(max_total, max_per_address, Arc::default())
    }

    /// Limits that also refuse the addresses in `bans`.
    pub fn with_bans(
        max_total: usize,
        max_per_address: usize,
        bans: Arc<AddressBans>,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            counts: Mutex::new(Counts {
                max_total,
                max_per_address,
                ..Counts::default()
            }),
            bans,
        })
    }

    /// New limits (a reload). Connections already admitted stay, even
    /// above them; new ones wait until there is room under them.
    pub fn set_limits(&self, max_total: usize, max_per_address: usize) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.max_total = max_total;
        counts.max_per_address = max_per_address;
    }

    /// Takes a place for a connection from `address`, if one is free and
    /// the address is not banned.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refusal> {
        self.bans.check(address)?;
        let address = counted_as(address);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.max_total > 0 && counts.total >= counts.max_total {
            return Err(Refusal::ServerFull(counts.max_total));
        }
        let from_address = counts.per_address.get(&address).copied().unwrap_or(0);
        if counts.max_per_address > 0 && from_address >= counts.max_per_address {
            return Err(Refusal::AddressFull(counts.max_per_address));
        }
        counts.total += 1;
        *counts.per_address.entry(address).or_insert(0) += 1;
        Ok(Ticket {
            admission: self.clone(),
            address,
        })
    }

    /// Connections currently admitted.
    pub fn connections(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// What the per-address limit counts `address` as: an IPv4 address (also
/// when it comes IPv4-mapped, `::ffff:a.b.c.d`), or an IPv6 /64.
pub fn counted_as(address: IpAddr) -> IpAddr {
    address_key(address)
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                counts.per_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn the_server_limit_counts_every_address() {
        let admission = Admission::new(2, 0);
        let _a = admission.admit(A).unwrap();
        let _b = admission.admit(B).unwrap();
        assert_eq!(admission.admit(A).err(), Some(Refusal::ServerFull(2)));
    }

    #[test]
    fn the_address_limit_counts_one_address() {
        let admission = Admission::new(0, 1);
        let first = admission.admit(A).unwrap();
        assert_eq!(admission.admit(A).err(), Some(Refusal::AddressFull(1)));
        assert!(admission.admit(B).is_ok());
        drop(first);
        assert!(admission.admit(A).is_ok());
    }

    #[test]
    fn new_limits_apply_to_the_next_admission_and_keep_who_is_in() {
        let admission = Admission::new(3, 0);
        let a = admission.admit(A).unwrap();
        let _b = admission.admit(B).unwrap();
        admission.set_limits(1, 0);
        assert_eq!(admission.admit(A).err(), Some(Refusal::ServerFull(1)));
        assert_eq!(admission.connections(), 2, "nobody already in is dropped");
        admission.set_limits(0, 1);
        assert_eq!(admission.admit(A).err(), Some(Refusal::AddressFull(1)));
        drop(a);
        assert!(admission.admit(A).is_ok());
    }

    fn v6(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let admission = Admission::new(0, 2);
        let _a = admission.admit(v6("2001:db8:1:2::1")).unwrap();
        let _b = admission
            .admit(v6("2001:db8:1:2:ffff:ffff:ffff:ffff"))
            .unwrap();
        assert_eq!(
            admission.admit(v6("2001:db8:1:2:dead:beef:0:7")).err(),
            Some(Refusal::AddressFull(2))
        );
        // The next /64 is someone else.
        assert!(admission.admit(v6("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        let admission = Admission::new(0, 1);
        let _a = admission.admit(A).unwrap();
        assert_eq!(
            admission.admit(v6("::ffff:127.0.0.1")).err(),
            Some(Refusal::AddressFull(1))
        );
        assert_eq!(
            counted_as(v6("::ffff:10.1.2.3")),
            v6("::ffff:10.1.2.3").to_canonical()
        );
        assert_eq!(counted_as(v6("fe80::1:2:3:4")), v6("fe80::"));
    }

    #[test]
    fn a_banned_address_and_its_64_are_refused_until_unbanned() {
        let bans = Arc::new(AddressBans::default());
        let admission = Admission::with_bans(0, 0, bans.clone());
        let target = BanTarget::Address(address_key(v6("2001:db8:1:2::1")));
        bans.insert(Ban {
            target: target.clone(),
            until: None,
            reason: "spam".into(),
            created: 0,
        });
        let refused = admission.admit(v6("2001:db8:1:2:aaaa::9")).err();
        assert_eq!(
            refused.map(|r| r.to_string()).as_deref(),
            Some("your address is banned from this server permanently: spam")
        );
        assert!(admission.admit(v6("2001:db8:1:3::1")).is_ok());
        assert!(admission.admit(A).is_ok());
        assert!(bans.remove(&target).is_some());
        assert!(admission.admit(v6("2001:db8:1:2::1")).is_ok());
    }

    #[test]
    fn places_come_back_when_tickets_drop() {
        let admission = Admission::new(1, 1);
        for _ in 0..3 {
            let ticket = admission.admit(A).unwrap();
            assert_eq!(admission.connections(), 1);
            drop(ticket);
        }
        assert_eq!(admission.connections(), 0);
    }
}
