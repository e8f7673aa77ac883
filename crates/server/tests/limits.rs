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

/// Reads a raw connection to its end (bounded); what the server said.
async fn read_to_end(stream: &mut tokio::net::TcpStream) -> String {
    let mut said = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut said))
        .await
        .expect("the server closes the connection")
        .expect("a clean close");
    String::from_utf8_lossy(&said).into_owned()
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_at_the_register_deadline() {
    let mut config = test_config();
    config.register_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut silent = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let connected = tokio::time::Instant::now();
    // Its encoding is unknown, so the ERROR comes in JSON.
    let said = read_to_end(&mut silent).await;
    assert!(
        said.starts_with(r#"{"command":"ERROR","args":"not registered within"#),
        "{said:?}"
    );
    assert!(connected.elapsed() >= Duration::from_millis(300));
    let stats = server.stats().await.unwrap();
    assert_eq!((stats.connections, stats.peers), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn the_register_deadline_counts_from_the_connect_not_the_first_byte() {
    let mut config = test_config();
    config.register_timeout = Duration::from_millis(600);
    let server = start_with(config).await;
    let mut late = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    let connected = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    late.send(Command::Caps(vec![])).await;
    let error = late
        .expect(|m| match m {
            ServerMessage::Error(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert!(error.contains("not registered within"), "{error}");
    late.expect_closed().await;
    // Counted from the first byte it would have been 1.1 s.
    let took = connected.elapsed();
    assert!(took < Duration::from_millis(1000), "closed after {took:?}");
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

/// A person pastes 30 lines: with the default limits (10 a second, burst
/// 20) the last ones wait their turn instead of being refused, and every
/// line arrives, in order, with no ERROR.
#[tokio::test]
async fn a_paste_of_thirty_lines_is_delivered_whole_and_in_order() {
    let defaults = natter_server::Config::default();
    let mut config = test_config();
    config.rate_limit = defaults.rate_limit;
    config.rate_burst = defaults.rate_burst;
    let server = start_with(config).await;
    let mut alice = TestClient::registered(server.local_addr(), Encoding::Json, "alice").await;
    let mut bob = TestClient::registered(server.local_addr(), Encoding::Classic, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    let mut paste = bytes::BytesMut::new();
    for line in 0..30 {
        let text = format!("line {line}");
        natter_proto::codec::encode_command(
            &Command::SendMessage {
                conv,
                text,
                nonce: None,
            },
            Encoding::Json,
            &mut paste,
        );
    }
    let started = tokio::time::Instant::now();
    alice.send_raw(&paste).await;
    for line in 0..30 {
        for client in [&mut alice, &mut bob] {
            match client.recv_msg().await {
                ServerMessage::Message { sender, text, .. } => {
                    assert_eq!((sender.as_str(), text), ("alice", format!("line {line}")));
                }
                other => panic!("{}: {other:?} instead of line {line}", client.name),
            }
        }
    }
    // The setup used a few of the 20 tokens, and 10 come back a second.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "not paced: {took:?}");
    alice.sync().await;
}

/// A frame that does not decode costs the server an ERROR like any other,
/// so it takes its turn under the rate limit too.
#[tokio::test]
async fn frames_that_do_not_decode_count_against_the_rate_limit() {
    let mut config = test_config();
    config.rate_limit = 20;
    config.rate_burst = 5;
    let server = start_with(config).await;
    let mut client = TestClient::registered(server.local_addr(), Encoding::Framed, "bad").await;
    // A whole frame holding a pickle that does not load: ERROR, and the
    // connection stays.
    let body = b"STATUS \xff\xff";
    let mut frames = Vec::new();
    for _ in 0..25 {
        frames.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frames.extend_from_slice(body);
    }
    let started = tokio::time::Instant::now();
    client.send_raw(&frames).await;
    for _ in 0..25 {
        client.expect_error().await;
    }
    // Five in the burst (less the REGISTER), then twenty at 20 a second.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "not counted: {took:?}");
    client.sync().await;
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

/// Over IPv6 (on ::1, the one IPv6 address a test may use) the limit holds
/// as well; `admission`'s unit tests show that it counts a whole /64.
#[tokio::test]
async fn ipv6_connections_over_the_per_address_limit_are_refused() {
    let mut config = test_config();
    config.listen = "[::1]:0".parse().unwrap();
    config.max_connections_per_ip = 2;
    let server = start_with(config).await;
    assert!(server.local_addr().is_ipv6());
    let _a = TestClient::registered(server.local_addr(), Encoding::Json, "a").await;
    let _b = TestClient::registered(server.local_addr(), Encoding::Json, "b").await;
    let mut refused = TestClient::connect(server.local_addr(), Encoding::Json).await;
    refused
        .send(Command::Register {
            name: "c".into(),
            status: "on".into(),
        })
        .await;
    assert!(
        refused
            .expect_error()
            .await
            .contains("too many connections")
    );
    refused.expect_closed().await;
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
