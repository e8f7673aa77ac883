//! The abuse limits a public server needs: registration deadline, idle
//! timeout, rate limit, connection limits, the cap on refusals being
//! answered, TCP keepalive. (The accept loop's back-off when descriptors
//! run out is in tests/descriptor_exhaustion.rs, on a real process.)

mod common;

use std::time::Duration;

use common::*;
use natter_proto::{Command, Encoding, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_connection_that_never_registers_is_closed() {
    let mut config = test_config();
    config.register_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    // alice connects first and registers in time; the lurker comes after.
    let mut alice = TestClient::registered(server.local_addr(), Encoding::Framed, "alice").await;
    let mut lurker = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    lurker.send(Command::Caps(vec![])).await; // picks the encoding, no REGISTER
    let error = lurker
        .expect(|m| match m {
            ServerMessage::Error(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert!(error.contains("not registered within"), "{error}");
    lurker.expect_closed().await;
    // alice's deadline passed before the lurker's did: she is still served.
    alice.sync().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_when_an_idle_timeout_is_set() {
    let mut config = test_config();
    config.idle_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut talker = TestClient::registered(server.local_addr(), Encoding::Json, "talker").await;
    let mut quiet = TestClient::registered(server.local_addr(), Encoding::Json, "quiet").await;
    // The talker speaks every 100 ms until the quiet one is told to go.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let error = loop {
        assert!(tokio::time::Instant::now() < deadline, "quiet never closed");
        talker.sync().await;
        match quiet.try_recv(Duration::from_millis(100)).await {
            Some(Received::Message(ServerMessage::Error(text))) => break text,
            Some(Received::Closed) => panic!("closed without an ERROR"),
            Some(Received::Message(_)) | None => {}
        }
    };
    assert!(error.contains("idle"), "{error}");
    quiet.expect_closed().await;
    // The talker, connected before the quiet one, is still served.
    talker.sync().await;
}

#[tokio::test]
async fn quiet_clients_stay_without_an_idle_timeout() {
    let server = start().await; // idle timeout off by default
    let mut quiet = TestClient::registered(server.local_addr(), Encoding::Classic, "quiet").await;
    // A client of a server with a 300 ms idle timeout, connected after
    // `quiet`, being closed shows that `quiet` has been silent longer.
    let mut config = test_config();
    config.idle_timeout = Duration::from_millis(300);
    let strict = start_with(config).await;
    let mut witness = TestClient::registered(strict.local_addr(), Encoding::Classic, "w").await;
    witness.expect_closed().await;
    quiet.sync().await;
}

#[tokio::test]
async fn commands_over_the_rate_limit_get_errors_and_others_are_unaffected() {
    let mut config = test_config();
    config.rate_limit = 5;
    config.rate_burst = 5;
    let server = start_with(config).await;
    let mut flooder =
        TestClient::registered(server.local_addr(), Encoding::Framed, "flooder").await;
    let mut calm = TestClient::registered(server.local_addr(), Encoding::Framed, "calm").await;
    for _ in 0..20 {
        flooder.send(Command::ListConversations).await;
    }
    let (mut answered, mut refused) = (0, 0);
    while answered + refused < 20 {
        match flooder.recv_msg().await {
            ServerMessage::Conversations(_) => answered += 1,
            ServerMessage::Error(text) => {
                assert!(text.contains("rate limit"), "{text}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The registration used one token of the burst of five.
    assert!((3..=5).contains(&answered), "{answered} answered");
    assert_eq!(refused, 20 - answered);
    calm.sync().await;
}

#[tokio::test]
async fn a_sustained_flood_is_disconnected() {
    let mut config = test_config();
    config.rate_limit = 2;
    config.rate_burst = 2;
    let server = start_with(config).await;
    let mut flooder = TestClient::registered(server.local_addr(), Encoding::Json, "flooder").await;
    let started = tokio::time::Instant::now();
    let mut status = bytes::BytesMut::new();
    natter_proto::codec::encode_command(
        &Command::Status("spam".into()),
        Encoding::Json,
        &mut status,
    );
    // 50 commands a second, 25 times the limit, until the server hangs up.
    let closed = tokio::time::timeout(Duration::from_secs(9), async {
        loop {
            if flooder.stream.write_all(&status).await.is_err() {
                return;
            }
            if let Some(Received::Closed) = flooder.try_recv(Duration::from_millis(20)).await {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "flooder still connected");
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test]
async fn connections_over_the_per_address_limit_are_refused_with_an_error() {
    let mut config = test_config();
    config.max_connections_per_ip = 3;
    let server = start_with(config).await;
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(
            TestClient::registered(server.local_addr(), Encoding::Framed, &format!("k{i}")).await,
        );
    }
    let mut refused = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    refused
        .send(Command::Register {
            name: "extra".into(),
            status: "on".into(),
        })
        .await;
    let error = refused.expect_error().await;
    assert!(error.contains("too many connections"), "{error}");
    refused.expect_closed().await;
    // A place frees up when someone leaves, as soon as the server has
    // seen the close: until then a newcomer is refused, so try until
    // admitted (bounded).
    kept.pop();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut again = TestClient::connect(server.local_addr(), Encoding::Framed).await;
        again
            .send(Command::Register {
                name: "again".into(),
                status: "on".into(),
            })
            .await;
        match again.recv().await {
            Received::Message(ServerMessage::OnlineUsers(_)) => break,
            Received::Message(ServerMessage::Error(error))
                if error.contains("too many connections") =>
            {
                assert!(tokio::time::Instant::now() < deadline, "no place freed up");
                again.expect_closed().await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn connections_over_the_server_limit_are_refused_with_an_error() {
    let mut config = test_config();
    config.max_connections = 2;
    let server = start_with(config).await;
    let _a = TestClient::registered(server.local_addr(), Encoding::Classic, "a").await;
    let _b = TestClient::registered(server.local_addr(), Encoding::Classic, "b").await;
    let mut refused = TestClient::connect(server.local_addr(), Encoding::Classic).await;
    refused
        .send(Command::Register {
            name: "c".into(),
            status: "on".into(),
        })
        .await;
    assert!(refused.expect_error().await.contains("server full"));
    refused.expect_closed().await;
}

/// At most 64 refusals are answered at once (each may wait a second for
/// the client's first byte, to answer in its encoding); beyond that a
/// refused connection is closed without a word, so that a flood of
/// connections over the limit costs the server little.
#[tokio::test]
async fn refusals_beyond_the_cap_are_closed_without_a_word() {
    /// `MAX_REFUSALS_IN_FLIGHT` in listener.rs, as docs/RELIABILITY.md says.
    const CAP: usize = 64;
    let mut config = test_config();
    config.max_connections = 1;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let _holder = TestClient::registered(addr, Encoding::Json, "holder").await;

    // CAP refused clients that have not said a word yet: each holds one
    // refusal task, waiting for its first byte.
    let mut waiting = Vec::new();
    for _ in 0..CAP {
        waiting.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Accepted after them (the backlog is first in, first out), the next
    // ones find every task busy: closed at once, nothing written.
    for _ in 0..4 {
        let mut extra = TcpStream::connect(addr).await.expect("connect");
        let mut said = Vec::new();
        tokio::time::timeout(PATIENCE, extra.read_to_end(&mut said))
            .await
            .expect("closed within the patience")
            .expect("a clean close, not a reset");
        assert!(said.is_empty(), "a refusal beyond the cap was answered");
    }
    // The ones within the cap are answered: a refusal task always writes
    // its ERROR (in JSON, theirs, whether they spoke in time or not).
    for mut stream in waiting {
        stream.write_all(b"{").await.unwrap();
        let mut said = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut said))
            .await
            .expect("answered within the patience")
            .expect("read the answer");
        let said = String::from_utf8_lossy(&said);
        assert!(said.contains("server full"), "{said}");
    }
    // Their tasks end once they are answered: the cap frees up again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut late = TcpStream::connect(addr).await.expect("connect");
        late.write_all(b"{").await.unwrap();
        let mut said = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, late.read_to_end(&mut said)).await;
        if String::from_utf8_lossy(&said).contains("server full") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cap never freed"
        );
    }
}

/// `--tcp-keepalive`: the server's end of a client connection has
/// keepalive on with the configured idle time, as the kernel's own table
/// of TCP sockets shows (`/proc/net/tcp`: timer 2 is the keepalive timer,
/// with the time left in 1/100 s), and none when it is 0. (The probe
/// interval and count are checked in listener.rs's unit test; loopback
/// cannot make a peer stop answering probes.)
#[tokio::test]
async fn the_server_end_of_a_connection_has_the_configured_keepalive() {
    for (idle, expected) in [(Duration::from_secs(7), Some(7)), (Duration::ZERO, None)] {
        let mut config = test_config();
        config.tcp_keepalive = idle;
        let server = start_with(config).await;
        let client = TestClient::registered(server.local_addr(), Encoding::Framed, "k").await;
        let server_end = (server.local_addr(), client.stream.local_addr().unwrap());
        let (timer, seconds_left) = tcp_timer(server_end.0, server_end.1)
            .unwrap_or_else(|| panic!("{server_end:?} not in /proc/net/tcp"));
        match expected {
            Some(secs) => {
                assert_eq!(timer, 2, "no keepalive timer with --tcp-keepalive {secs}");
                // Armed for the configured idle time, not the kernel's
                // default of two hours; a little may have passed already.
                assert!(
                    seconds_left <= secs as f64 && seconds_left > secs as f64 - 3.0,
                    "keepalive due in {seconds_left} s, {secs} s configured"
                );
            }
            None => assert_eq!(timer, 0, "a timer with --tcp-keepalive 0"),
        }
    }
}

/// The timer of the IPv4 socket `local` ↔ `remote` in /proc/net/tcp: its
/// kind (0 none, 1 retransmit, 2 keepalive, ...) and seconds left.
fn tcp_timer(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<(u32, f64)> {
    // Addresses are written as the IPv4 word in host order, in hex, then
    // the port: 127.0.0.1:6666 is 0100007F:1A0A on little-endian machines.
    let hex = |addr: std::net::SocketAddr| {
        let std::net::IpAddr::V4(ip) = addr.ip() else {
            panic!("loopback IPv4 expected")
        };
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(ip.octets()),
            addr.port()
        )
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields[1] != local || fields[2] != remote {
            return None;
        }
        let (kind, left) = fields[5].split_once(':')?;
        let kind = u32::from_str_radix(kind, 16).ok()?;
        let ticks = u64::from_str_radix(left, 16).ok()?;
        Some((kind, ticks as f64 / 100.0))
    })
}
