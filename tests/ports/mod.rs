//! Loopback ports for tests whose processes need a port number before they
//! start (a nats-server's routes, a page that must reconnect to the same
//! address after a restart), shared by path by those test targets.
//!
//! A port that `bind(0)` hands out comes from the kernel's ephemeral range,
//! and until the server binds it, any test's outgoing connection may take
//! it (the server then fails to start). So these ports come from below that
//! range, where nothing picks ports by itself; each user has a slice of its
//! own, so two test binaries running at once never pick the same one.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Who picks: each gets its own slice of the ports below the ephemeral range.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // each test target names only its own
pub enum Slice {
    Cluster = 0,
    Browser = 1,
}

const SLICES: u32 = 2;

/// A loopback port in `slice`, free right now.
pub fn free_port(slice: Slice) -> u16 {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(10_000).min(12_000) / SLICES;
    assert!(
        span > 500,
        "no room below the ephemeral ports ({ephemeral_low})"
    );
    let first = ephemeral_low - span * (SLICES - slice as u32);
    for _ in 0..span {
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let port = first + (std::process::id().wrapping_mul(7919) + call) % span;
        let port = u16::try_from(port).expect("a port number");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {slice:?}'s slice below {ephemeral_low}");
}
