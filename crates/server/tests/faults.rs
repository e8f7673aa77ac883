//! Fault and load tests: what a hostile or broken network does to the
//! server, measured. Each test is bounded in time and count, uses loopback
//! only, and prints its figures (run with `--no-capture` to see them), once
//! for people and once as a `FIGURES {json}` line, which
//! `bench/reliability.sh` collects into `bench/results/reliability.jsonl`
//! for docs/RELIABILITY.md.
//!
//! The server runs inside the test process (nextest gives every test its
//! own process), so `/proc/self` shows its file descriptors and memory; the
//! test's own client sockets are counted too, which is why every check
//! happens after the clients have gone.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use natter_proto::codec::encode_command;
use natter_proto::{Command, Encoding, ServerMessage};
use natter_server::{HubStats, ServerHandle};
use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

// ---------- measuring ----------

/// File descriptors open in this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Sockets among them (both ends of every loopback connection are ours).
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Polls the hub until `done` holds; panics with the last figures after
/// `within`.
async fn wait_for_stats(
    server: &ServerHandle,
    within: Duration,
    done: impl Fn(&HubStats) -> bool,
) -> HubStats {
    let deadline = Instant::now() + within;
    loop {
        let stats = server.stats().await.expect("server running");
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "state did not settle: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until exactly `expected` sockets are open: closing both
/// ends of the connections that went takes a moment. Panics if they never
/// all close, which is a leak.
async fn wait_for_sockets(expected: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = open_sockets();
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sockets did not close: {now} open, {expected} expected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One `FIGURES {json}` line: what `test` measured, for bench/reliability.sh.
fn figures(test: &str, mut values: serde_json::Value) {
    values["test"] = test.into();
    println!("FIGURES {values}");
}

/// A duration in milliseconds, to 3 decimals.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty());
    samples.sort_unstable();
    let rank = ((samples.len() as f64) * p).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn encoding_of(i: usize) -> Encoding {
    Encoding::ALL[i % Encoding::ALL.len()]
}

/// Resets the connection (RST instead of FIN) when the socket is dropped.
fn reset_on_drop(stream: &TcpStream) {
    SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// A client that reads everything sent to it until told to stop, so that
/// it is never cut off as a slow consumer; gives the client back.
fn drain_in_background(
    mut client: TestClient,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<TestClient> {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            if let Some(Received::Closed) = client.try_recv(Duration::from_millis(50)).await {
                panic!("{}: closed while draining", client.name);
            }
        }
        client
    })
}

/// Sends one message and waits for its own echo; the round-trip time.
async fn round_trip(client: &mut TestClient, conv: u64, text: &str) -> Duration {
    let started = Instant::now();
    client.say(conv, text).await;
    let me = client.name.clone();
    client
        .expect(|m| match m {
            ServerMessage::Message {
                sender, text: t, ..
            } if *sender == me && t == text => Some(()),
            _ => None,
        })
        .await;
    started.elapsed()
}

/// `count` conversations, each with one permanent member ("host"), which
/// drains everything in the background. Returns the ids and the drain.
async fn host_conversations(
    server: &ServerHandle,
    count: usize,
    stop: CancellationToken,
) -> (Vec<u64>, tokio::task::JoinHandle<TestClient>) {
    let addr = server.local_addr();
    let mut host = TestClient::registered(addr, Encoding::Framed, "host").await;
    let mut guest = TestClient::registered(addr, Encoding::Framed, "guest").await;
    let mut convs = Vec::new();
    for _ in 0..count {
        let conv = host.invite(&["guest"]).await;
        host.join(conv).await;
        convs.push(conv);
    }
    guest.send(Command::Goodbye).await;
    guest.expect_closed().await;
    (convs, drain_in_background(host, stop))
}

// ---------- churn ----------

/// How a churn cycle ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Goodbye,
    /// FIN without a word.
    Close,
    /// RST (SO_LINGER 0).
    Reset,
    /// Half a command, then RST.
    ResetMidFrame,
}

const ENDINGS: [Ending; 4] = [
    Ending::Goodbye,
    Ending::Close,
    Ending::Reset,
    Ending::ResetMidFrame,
];

/// connect → register → join → send (and see the echo) → disconnect.
async fn churn_cycle(addr: std::net::SocketAddr, i: usize, conv: u64) {
    let encoding = encoding_of(i);
    let mut client = TestClient::registered(addr, encoding, &format!("churn{i}")).await;
    client.join(conv).await;
    round_trip(&mut client, conv, &format!("hello from {i}")).await;
    match ENDINGS[i % ENDINGS.len()] {
        Ending::Goodbye => {
            client.send(Command::Goodbye).await;
            client.expect_closed().await;
        }
        Ending::Close => drop(client),
        Ending::Reset => reset_on_drop(&client.stream),
        Ending::ResetMidFrame => {
            let mut bytes = BytesMut::new();
            let text = "cut short".to_string();
            encode_command(
                &Command::SendMessage {
                    conv,
                    text,
                    nonce: None,
                },
                encoding,
                &mut bytes,
            );
            client.send_raw(&bytes[..bytes.len() / 2]).await;
            reset_on_drop(&client.stream);
        }
    }
}

async fn churn(
    addr: std::net::SocketAddr,
    range: std::ops::Range<usize>,
    convs: &[u64],
    concurrency: usize,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut cycles = JoinSet::new();
    for i in range {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let conv = convs[i % convs.len()];
        cycles.spawn(async move {
            churn_cycle(addr, i, conv).await;
            drop(permit);
        });
        // Reap finished cycles as we go, so a panic surfaces early.
        while let Some(done) = cycles.try_join_next() {
            done.expect("churn cycle");
        }
    }
    while let Some(done) = cycles.join_next().await {
        done.expect("churn cycle");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_10000_sessions_leaves_no_descriptors_memory_or_state_behind() {
    const WARMUP: usize = 1_000;
    const CYCLES: usize = 10_000;
    const CONCURRENCY: usize = 100;
    let server = start().await;
    let listeners = open_sockets();
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    let (convs, host) = host_conversations(&server, 10, stop.clone()).await;
    let settled = |s: &HubStats| s.users == 1 && s.connections == 1 && s.peers == 1;
    // Once settled, the only connection left is the host's: its two ends.
    let host_only = listeners + 2;

    // Warm up allocator pools and the runtime's threads before measuring.
    churn(addr, 0..WARMUP, &convs, CONCURRENCY).await;
    wait_for_stats(&server, PATIENCE, settled).await;
    wait_for_sockets(host_only, PATIENCE).await;
    let fds_before = open_fds();
    let rss_before = rss_kib();

    let started = Instant::now();
    churn(addr, WARMUP..WARMUP + CYCLES, &convs, CONCURRENCY).await;
    let took = started.elapsed();
    let stats = wait_for_stats(&server, PATIENCE, settled).await;
    wait_for_sockets(host_only, PATIENCE).await;
    let fds_after = open_fds();
    let rss_after = rss_kib();
    println!(
        "churn: {CYCLES} cycles in {took:.2?} ({:.0}/s); fds {fds_before} -> {fds_after}; \
         RSS {rss_before} KiB -> {rss_after} KiB; state {stats:?}",
        CYCLES as f64 / took.as_secs_f64()
    );
    figures(
        "churn",
        serde_json::json!({
            "cycles": CYCLES, "seconds": took.as_secs_f64(),
            "per_second": CYCLES as f64 / took.as_secs_f64(),
            "fds_before": fds_before, "fds_after": fds_after,
            "rss_kib_before": rss_before, "rss_kib_after": rss_after,
            "connections": stats.connections, "users": stats.users,
            "conversations": stats.conversations, "peers": stats.peers,
        }),
    );
    assert_eq!(
        stats.conversations,
        convs.len(),
        "conversations leaked or lost"
    );
    assert!(
        fds_after <= fds_before + 2,
        "descriptors leaked: {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "memory grew by {} KiB over {CYCLES} cycles",
        rss_after.saturating_sub(rss_before)
    );

    // The permanent member saw everything and is still served.
    stop.cancel();
    let mut host = host.await.unwrap();
    round_trip(&mut host, convs[0], "still here").await;
}

// ---------- slow loris ----------

/// What a slow-loris connection trickles, one byte per second.
fn loris_bytes(encoding: Encoding, i: usize) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    let register = Command::Register {
        name: format!("loris{i}"),
        status: "z".repeat(60),
    };
    encode_command(&register, encoding, &mut bytes);
    bytes.to_vec()
}

/// 500 connections, each sending one byte a second, until `stop`; counts
/// in `trickling` those that have sent two bytes (so have been at it for a
/// second). Returns how many the server still had open at the end.
async fn slow_loris(
    addr: std::net::SocketAddr,
    count: usize,
    trickling: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> usize {
    let mut loris = Vec::with_capacity(count);
    for i in 0..count {
        let stream = TcpStream::connect(addr).await.expect("loris connects");
        let bytes = loris_bytes(encoding_of(i), i);
        loris.push((stream, bytes, 0usize));
    }
    // Ten groups, one every 100 ms: each connection sends a byte a second,
    // as independent attackers would, rather than all in the same instant.
    const GROUPS: usize = 10;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / GROUPS as u32);
    let mut open = vec![true; count];
    let mut group = 0;
    while !stop.is_cancelled() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        group = (group + 1) % GROUPS;
        for (i, (stream, bytes, sent)) in loris.iter_mut().enumerate() {
            if i % GROUPS != group {
                continue;
            }
            if *sent < bytes.len() && stream.try_write(&bytes[*sent..*sent + 1]).is_ok() {
                *sent += 1;
                if *sent == 2 {
                    trickling.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A peer that has closed reads as end-of-stream (or an error).
            let mut probe = [0u8; 256];
            open[i] = match stream.try_read(&mut probe) {
                Ok(0) => false,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                Ok(_) => true,
            };
        }
    }
    open.iter().filter(|&&o| o).count()
}

/// 50 chatters in 10 conversations of 5; each does `rounds` round trips
/// at once with the others. Returns every round-trip time.
async fn chat_phase(
    chatters: Vec<(TestClient, u64)>,
    rounds: usize,
    phase: &str,
) -> (Vec<Duration>, Vec<(TestClient, u64)>) {
    let mut tasks = JoinSet::new();
    for (mut client, conv) in chatters {
        let phase = phase.to_string();
        tasks.spawn(async move {
            let mut times = Vec::with_capacity(rounds);
            for k in 0..rounds {
                let text = format!("{phase} {k} from {}", client.name);
                times.push(round_trip(&mut client, conv, &text).await);
            }
            (times, client, conv)
        });
    }
    let mut all = Vec::new();
    let mut back = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (times, client, conv) = done.expect("chatter");
        all.extend(times);
        back.push((client, conv));
    }
    (all, back)
}

async fn fifty_chatters(addr: std::net::SocketAddr) -> Vec<(TestClient, u64)> {
    let mut chatters = Vec::new();
    for group in 0..10 {
        let names: Vec<String> = (0..5).map(|m| format!("chat{group}x{m}")).collect();
        let mut members = Vec::new();
        for (m, name) in names.iter().enumerate() {
            members.push(TestClient::registered(addr, encoding_of(m), name).await);
        }
        let others: Vec<&str> = names[1..].iter().map(String::as_str).collect();
        let conv = members[0].invite(&others).await;
        for member in &mut members {
            member.join(conv).await;
        }
        chatters.extend(members.into_iter().map(|c| (c, conv)));
    }
    chatters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slow_loris_connections_do_not_slow_fifty_chatters() {
    const LORIS: usize = 500;
    const ROUNDS: usize = 40;
    let server = start().await;
    let addr = server.local_addr();
    let chatters = fifty_chatters(addr).await;

    // Warm-up, then the baseline.
    let (_, chatters) = chat_phase(chatters, 5, "warm-up").await;
    let (mut quiet, chatters) = chat_phase(chatters, ROUNDS, "quiet").await;

    let stop = CancellationToken::new();
    let trickling = Arc::new(AtomicUsize::new(0));
    let loris = tokio::spawn(slow_loris(addr, LORIS, trickling.clone(), stop.clone()));
    // Every loris has connected, and has been trickling for a second.
    wait_for_stats(&server, PATIENCE * 2, |s| s.peers >= 50 + LORIS).await;
    let deadline = Instant::now() + PATIENCE;
    while trickling.load(Ordering::Relaxed) < LORIS {
        assert!(Instant::now() < deadline, "the loris did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bound =
        |quiet: Duration| (quiet * 3 + Duration::from_millis(10)).max(Duration::from_millis(50));
    let p99_quiet = percentile(&mut quiet, 0.99);
    // The machine is shared (builds, other tests): a phase that misses the
    // bound is measured again, at most twice, before the test gives up.
    let (mut under_attack, mut chatters) = chat_phase(chatters, ROUNDS, "loris").await;
    let mut measured_again = 0;
    for retry in 1..=2 {
        if percentile(&mut under_attack, 0.99) < bound(p99_quiet) {
            break;
        }
        measured_again = retry;
        println!(
            "slow loris: p99 {:.2?} over the bound, measuring again",
            percentile(&mut under_attack, 0.99)
        );
        (under_attack, chatters) = chat_phase(chatters, ROUNDS, &format!("loris{retry}")).await;
    }
    drop(chatters);
    stop.cancel();
    let still_open = loris.await.unwrap();

    let p50_quiet = percentile(&mut quiet, 0.5);
    let (p50_loris, p99_loris) = (
        percentile(&mut under_attack, 0.5),
        percentile(&mut under_attack, 0.99),
    );
    println!(
        "slow loris: {} round trips each phase; p50/p99 without {p50_quiet:.2?}/{p99_quiet:.2?}, \
         with {LORIS} loris {p50_loris:.2?}/{p99_loris:.2?}; {still_open} loris still open",
        quiet.len()
    );
    figures(
        "slow_loris",
        serde_json::json!({
            "loris": LORIS, "round_trips": quiet.len(),
            "p50_ms_quiet": ms(p50_quiet), "p99_ms_quiet": ms(p99_quiet),
            "p50_ms_loris": ms(p50_loris), "p99_ms_loris": ms(p99_loris),
            "still_open": still_open, "measured_again": measured_again,
        }),
    );
    assert!(
        p99_loris < bound(p99_quiet),
        "p99 {p99_loris:?} with loris, {p99_quiet:?} without"
    );
    // Slow is not dead: the server cut none of them off.
    assert_eq!(still_open, LORIS, "loris disconnected by the server");
}

// ---------- broken connections ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_frame_disconnects_and_resets_leave_the_others_chatting() {
    const EACH: usize = 30;
    let server = start().await;
    let addr = server.local_addr();
    let mut alice = TestClient::registered(addr, Encoding::Classic, "alice").await;
    let mut bob = TestClient::registered(addr, Encoding::Json, "bob").await;
    let conv = alice.invite(&["bob"]).await;
    alice.join(conv).await;
    bob.join(conv).await;
    let fds_before = open_fds();
    let sockets_before = open_sockets();

    let mut breakers = JoinSet::new();
    for i in 0..EACH * 4 {
        breakers.spawn(async move {
            let encoding = encoding_of(i);
            let mut bytes = BytesMut::new();
            let text = "x".repeat(100);
            encode_command(
                &Command::SendMessage {
                    conv,
                    text,
                    nonce: None,
                },
                encoding,
                &mut bytes,
            );
            let half = &bytes[..bytes.len() / 2];
            match i % 4 {
                // Half a first command, then FIN.
                0 => {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    s.write_all(half).await.unwrap();
                }
                // Half a first command, then RST.
                1 => {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    s.write_all(half).await.unwrap();
                    reset_on_drop(&s);
                }
                // Registered and in the conversation, then RST mid-frame.
                2 => {
                    let mut c = TestClient::registered(addr, encoding, &format!("broken{i}")).await;
                    c.join(conv).await;
                    c.send_raw(half).await;
                    reset_on_drop(&c.stream);
                }
                // Connect and reset without a byte.
                _ => reset_on_drop(&TcpStream::connect(addr).await.unwrap()),
            }
        });
    }
    while let Some(done) = breakers.join_next().await {
        done.unwrap();
    }
    let stats = wait_for_stats(&server, PATIENCE, |s| s.users == 2 && s.peers == 2).await;
    let latency = round_trip(&mut alice, conv, "still there?").await;
    assert_eq!(bob.expect_message().await.2, "still there?");
    wait_for_sockets(sockets_before, PATIENCE).await;
    let fds_after = open_fds();
    println!(
        "broken connections: {} broken; after: {stats:?}, fds {fds_before} -> {fds_after}, alice's round trip {latency:.2?}",
        EACH * 4
    );
    figures(
        "broken_connections",
        serde_json::json!({
            "broken": EACH * 4, "users": stats.users, "conversations": stats.conversations,
            "peers": stats.peers, "fds_before": fds_before, "fds_after": fds_after,
            "round_trip_ms": ms(latency),
        }),
    );
    assert!(
        fds_after <= fds_before,
        "descriptors leaked: {fds_before} -> {fds_after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_while_the_others_keep_chatting() {
    let mut config = test_config();
    config.send_queue = 256 * 1024;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let mut alice = TestClient::registered(addr, Encoding::Framed, "alice").await;
    let bob = TestClient::registered(addr, Encoding::Classic, "bob").await;
    let mut sloth = TestClient::connect_small_buffer(addr, Encoding::Json).await;
    sloth.register("sloth", "zzz").await;
    let conv = alice.invite(&["bob", "sloth"]).await;
    alice.join(conv).await;
    let mut bob = bob;
    bob.join(conv).await;
    sloth.join(conv).await;
    let stop = CancellationToken::new();
    let bob = drain_in_background(bob, stop.clone());

    // 8 KB messages until the sloth's queue (256 KiB here) overflows; alice
    // measures her own round trips meanwhile.
    let text = "s".repeat(8000);
    let mut times = Vec::new();
    let started = Instant::now();
    let mut cut_off_after = None;
    for k in 0..3000 {
        times.push(round_trip(&mut alice, conv, &format!("{k} {text}")).await);
        if k % 20 == 0 && server.stats().await.unwrap().users == 2 {
            cut_off_after = Some((k, started.elapsed()));
            break;
        }
    }
    let (messages, when) = cut_off_after.expect("the sloth was never cut off");
    stop.cancel();
    let _bob = bob.await.unwrap(); // stays connected and a member
    let p99 = percentile(&mut times, 0.99);
    println!(
        "slow consumer: cut off after {messages} messages of 8 KB ({when:.2?}); alice's p99 round trip {p99:.2?}"
    );
    figures(
        "slow_consumer",
        serde_json::json!({
            "messages": messages, "seconds": when.as_secs_f64(), "p99_ms": ms(p99),
        }),
    );
    assert!(
        p99 < Duration::from_millis(100),
        "alice slowed down: p99 {p99:?}"
    );
    let convs = {
        alice.send(Command::ListConversations).await;
        alice
            .expect(|m| match m {
                ServerMessage::Conversations(c) => Some(c.clone()),
                _ => None,
            })
            .await
    };
    assert_eq!(
        convs,
        vec![(conv, vec!["alice".to_string(), "bob".to_string()])]
    );
}

/// Counts the MESSAGEs a reader gets, checking they come in sending order,
/// until it has `want` of them; an error says what went wrong instead.
async fn read_in_order(mut reader: ClientReader, want: usize) -> Result<usize, String> {
    let mut seen = 0;
    while seen < want {
        match reader.recv().await {
            Received::Closed => return Err(format!("{}: cut off after {seen}", reader.name)),
            Received::Message(ServerMessage::Message { text, .. }) => {
                let number = text.split(' ').next().unwrap_or_default();
                if number != seen.to_string() {
                    return Err(format!("{}: message {number} came as #{seen}", reader.name));
                }
                seen += 1;
            }
            Received::Message(ServerMessage::Error(text)) => {
                return Err(format!("{}: ERROR {text}", reader.name));
            }
            Received::Message(_) => {}
        }
    }
    Ok(seen)
}

/// The outside testers' scenario (issue 15): a 64 KiB send queue, three
/// members, one never reads; one of the two readers sends 640 messages of
/// 8,000 bytes, 16 at a time with 5 ms pauses (about 25 MB/s). The queue
/// limit must count only what the kernel refused, so both readers get
/// every message and only the one that never reads is cut off; with and
/// without write coalescing. One thread, as `natter serve` runs by default.
#[tokio::test]
async fn a_burst_of_large_messages_cuts_off_only_the_slow_consumer() {
    for write_coalesce in [
        Duration::ZERO,
        natter_server::Config::default().write_coalesce,
    ] {
        let mut config = test_config();
        config.send_queue = 65536;
        config.write_coalesce = write_coalesce;
        let server = start_with(config).await;
        let addr = server.local_addr();
        let mut sender = TestClient::registered(addr, Encoding::Framed, "sender").await;
        let mut reader = TestClient::registered(addr, Encoding::Framed, "reader").await;
        let mut sloth = TestClient::registered(addr, Encoding::Framed, "sloth").await;
        let conv = conversation(&mut [&mut sender, &mut reader, &mut sloth]).await;
        let (sender_in, mut sender_out) = sender.split();
        let (reader_in, _reader_out) = reader.split();
        let readers = [
            tokio::spawn(read_in_order(sender_in, 640)),
            tokio::spawn(read_in_order(reader_in, 640)),
        ];
        let text = "x".repeat(7990);
        let started = Instant::now();
        for burst in 0..40 {
            let mut out = BytesMut::new();
            for k in 0..16 {
                let text = format!("{} {text}", burst * 16 + k);
                encode_command(
                    &Command::SendMessage {
                        conv,
                        text,
                        nonce: None,
                    },
                    Encoding::Framed,
                    &mut out,
                );
            }
            if sender_out.write_all(&out).await.is_err() {
                break; // cut off: the readers say when
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for reader in readers {
            let got = tokio::time::timeout(Duration::from_secs(20), reader)
                .await
                .expect("readers finish in time")
                .unwrap();
            assert_eq!(got, Ok(640), "write coalescing {write_coalesce:?}");
        }
        let took = started.elapsed();
        println!(
            "burst: 640 x 8 KB to 2 readers in {took:.2?} (write coalescing {write_coalesce:?})"
        );
        figures(
            "burst",
            serde_json::json!({
                "messages": 640, "seconds": took.as_secs_f64(),
                "write_coalesce_ms": ms(write_coalesce),
            }),
        );
        // The limit still works: the member that never reads is cut off.
        wait_for_stats(&server, PATIENCE, |s| s.users == 2).await;
        drop(sloth);
    }
}

// ---------- flooding ----------

/// A flooder writes SEND_MESSAGE to a conversation as fast as its socket
/// takes them, while five others chat there under the limit (one message
/// every 150 ms each) and time their round trips. The server reads the
/// flooder at its rate (TCP pushes back), so the others never wait on it,
/// and cuts it off once it has stayed over its limit for the flood window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_cut_off_while_the_others_round_trips_stay_under_50_ms() {
    let defaults = natter_server::Config::default();
    let mut config = test_config();
    config.rate_limit = defaults.rate_limit;
    config.rate_burst = defaults.rate_burst;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let mut flooder = TestClient::registered(addr, Encoding::Framed, "flooder").await;
    let mut calm = Vec::new();
    for i in 0..5 {
        calm.push(TestClient::registered(addr, encoding_of(i), &format!("calm{i}")).await);
    }
    let conv = {
        let mut members: Vec<&mut TestClient> = vec![&mut flooder];
        members.extend(calm.iter_mut());
        conversation(&mut members).await
    };
    let (mut flooder_in, mut flooder_out) = flooder.split();
    let started = Instant::now();
    let flood = tokio::spawn(async move {
        let mut burst = BytesMut::new();
        for k in 0..100 {
            let text = format!("flood {k}");
            encode_command(
                &Command::SendMessage {
                    conv,
                    text,
                    nonce: None,
                },
                Encoding::Framed,
                &mut burst,
            );
        }
        // Bounded: 10,000 bursts, far more than the flood window lets in.
        for _ in 0..10_000 {
            if flooder_out.write_all(&burst).await.is_err() {
                break;
            }
        }
    });
    let cut_off = tokio::spawn(async move {
        let mut last_error = None;
        loop {
            match flooder_in.recv().await {
                Received::Closed => return (started.elapsed(), last_error),
                Received::Message(ServerMessage::Error(text)) => last_error = Some(text),
                Received::Message(_) => {}
            }
        }
    });
    let stop = CancellationToken::new();
    let mut chatters = JoinSet::new();
    for (i, mut client) in calm.into_iter().enumerate() {
        let stop = stop.clone();
        chatters.spawn(async move {
            let mut times = Vec::new();
            for k in 0.. {
                if stop.is_cancelled() {
                    break;
                }
                times.push(round_trip(&mut client, conv, &format!("calm {i} {k}")).await);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            times
        });
    }
    let (after, error) = tokio::time::timeout(Duration::from_secs(10), cut_off)
        .await
        .expect("the flooder is cut off within 10 s")
        .unwrap();
    stop.cancel();
    flood.abort();
    let mut times = Vec::new();
    while let Some(samples) = chatters.join_next().await {
        times.extend(samples.unwrap());
    }
    let worst = *times.iter().max().unwrap();
    let p50 = percentile(&mut times, 0.5);
    println!(
        "flood: cut off after {after:.2?} ({error:?}); {} round trips of the others, p50 {p50:.2?}, max {worst:.2?}",
        times.len()
    );
    figures(
        "flood",
        serde_json::json!({
            "cut_off_s": after.as_secs_f64(), "round_trips": times.len(),
            "p50_ms": ms(p50), "max_ms": ms(worst),
        }),
    );
    assert_eq!(
        error.as_deref(),
        Some("flooding: over the rate limit for 5 s, disconnecting")
    );
    assert!(after >= Duration::from_secs(5), "cut off after {after:?}");
    assert!(times.len() >= 100, "only {} round trips", times.len());
    assert!(
        worst < Duration::from_millis(50),
        "a round trip took {worst:?}"
    );
}

// ---------- 100 MB of garbage ----------

const GARBAGE: usize = 100 * 1024 * 1024;

/// How each encoding's garbage starts: the prefix that makes the server
/// buffer as much as it ever will before giving up.
fn garbage_prefix(encoding: Encoding) -> Vec<u8> {
    match encoding {
        // A length over the limit: closed at once.
        Encoding::Framed => vec![0x00, 0xff, 0xff, 0xff],
        // A protocol-0 string that never ends: refused at the frame limit.
        Encoding::Classic => b"SEND_MESSAGE V".to_vec(),
        // A line that never ends: refused at the frame limit.
        Encoding::Json => b"{\"command\":\"SEND_MESSAGE\",\"args\":[1,\"".to_vec(),
    }
}

/// What one garbage connection came to.
struct Spewed {
    /// Bytes written when the server's end of stream arrived.
    written_at_close: usize,
    /// Time from connecting to the server's end of stream.
    closed_after: Duration,
    /// The server said why before closing.
    got_error: bool,
}

/// Writes up to 100 MB of garbage while reading what the server answers,
/// until the server ends the stream.
async fn spew(addr: std::net::SocketAddr, encoding: Encoding) -> Spewed {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let written = Arc::new(AtomicUsize::new(0));
    let reader = {
        let written = written.clone();
        tokio::spawn(async move {
            let mut answer = Vec::new();
            let mut sink = vec![0u8; 4096];
            loop {
                match tokio::time::timeout(PATIENCE, rd.read(&mut sink)).await {
                    Ok(Ok(0) | Err(_)) => break,
                    Ok(Ok(n)) => answer.extend_from_slice(&sink[..n]),
                    Err(_) => panic!("{encoding:?}: connection still open after the garbage"),
                }
            }
            Spewed {
                written_at_close: written.load(Ordering::SeqCst),
                closed_after: started.elapsed(),
                got_error: answer.windows(5).any(|w| w == b"ERROR"),
            }
        })
    };
    // Pseudo-random letters: no newline, no pickle STOP.
    let mut chunk = vec![0u8; 64 * 1024];
    let mut x: u32 = 2_463_534_242;
    for b in chunk.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = b'a' + (x % 26) as u8;
    }
    if wr.write_all(&garbage_prefix(encoding)).await.is_ok() {
        while written.load(Ordering::SeqCst) < GARBAGE && !reader.is_finished() {
            match wr.write_all(&chunk).await {
                Ok(()) => written.fetch_add(chunk.len(), Ordering::SeqCst),
                Err(_) => break,
            };
        }
    }
    reader.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_of_garbage_closes_the_connection_without_buffering_it() {
    let server = start().await;
    let addr = server.local_addr();
    let mut alice = TestClient::registered(addr, Encoding::Framed, "alice").await;
    let mut bob = TestClient::registered(addr, Encoding::Json, "bob").await;
    let conv = alice.invite(&["bob"]).await;
    alice.join(conv).await;
    bob.join(conv).await;

    // Sample RSS while the garbage flows.
    let rss_before = rss_kib();
    let stop = CancellationToken::new();
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.is_cancelled() {
                peak = peak.max(rss_kib());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        })
    };
    for encoding in Encoding::ALL {
        let spewed = spew(addr, encoding).await;
        let latency = round_trip(&mut alice, conv, &format!("after {encoding:?} garbage")).await;
        bob.expect_message().await;
        println!(
            "garbage {encoding:?}: ERROR {} and end of stream after {:.2?}, {:.1} MB written by then; \
             alice's next round trip {latency:.2?}",
            if spewed.got_error { "received" } else { "lost" },
            spewed.closed_after,
            spewed.written_at_close as f64 / 1e6,
        );
        figures(
            "garbage",
            serde_json::json!({
                "encoding": format!("{encoding:?}"), "error": spewed.got_error,
                "closed_ms": ms(spewed.closed_after),
                "mb_written": spewed.written_at_close as f64 / 1e6,
                "round_trip_ms": ms(latency),
            }),
        );
        assert!(
            spewed.written_at_close < GARBAGE,
            "{encoding:?}: the server read all the garbage before closing"
        );
        assert!(spewed.got_error, "{encoding:?}: no ERROR before the close");
    }
    stop.cancel();
    let peak = sampler.await.unwrap();
    println!("garbage: RSS {rss_before} KiB before, peak {peak} KiB");
    figures(
        "garbage_memory",
        serde_json::json!({ "rss_kib_before": rss_before, "rss_kib_peak": peak }),
    );
    assert!(
        peak < rss_before + 32 * 1024,
        "RSS ballooned: {rss_before} KiB -> peak {peak} KiB"
    );
    let stats = wait_for_stats(&server, PATIENCE, |s| s.peers == 2).await;
    assert_eq!(stats.users, 2);
}

/// Write coalescing with a window far longer than any test wait (2 s): a
/// flood of small messages loads the hub, so the window opens and clients'
/// writes wait for it; every message must still arrive, in order, none
/// held back once the flood stops. After a quiet half second the window
/// must have closed: a lone message arrives well within the 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_write_window_opens_under_load_and_closes_when_it_is_gone() {
    /// Bounds of the flood: as long as it takes to see the window open,
    /// within these.
    const BURST: usize = 100;
    const MAX_BURSTS: usize = 1000;
    const MIN_FLOOD: Duration = Duration::from_millis(500);
    const MAX_FLOOD: Duration = Duration::from_secs(10);
    let mut config = test_config();
    config.write_coalesce = Duration::from_secs(2);
    let server = Arc::new(start_with(config).await);
    let addr = server.local_addr();
    let mut sender = TestClient::registered(addr, Encoding::Framed, "sender").await;
    let mut reader = TestClient::registered(addr, Encoding::Framed, "reader").await;
    let conv = conversation(&mut [&mut sender, &mut reader]).await;
    let (sender_in, mut sender_out) = sender.split();
    let (reader_in, _reader_out) = reader.split();
    // Read as they come (a reader that waited would be a slow consumer).
    let mut numbers = read_numbers(reader_in);
    // The sender's own copies are read and counted, so its socket never
    // fills up.
    let echoed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let echoes = tokio::spawn({
        let echoed = echoed.clone();
        async move {
            let mut sender_in = sender_in;
            while let Received::Message(_) = sender_in.recv().await {
                echoed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let say = |numbers: std::ops::Range<usize>| {
        let mut out = BytesMut::new();
        for n in numbers {
            let command = Command::SendMessage {
                conv,
                text: format!("{n} flood"),
                nonce: None,
            };
            encode_command(&command, Encoding::Framed, &mut out);
        }
        out
    };
    let watching = CancellationToken::new();
    let watcher = tokio::spawn({
        let (server, watching) = (server.clone(), watching.clone());
        async move {
            let mut widest = Duration::ZERO;
            while !watching.is_cancelled() {
                if let Some(stats) = server.stats().await {
                    widest = widest.max(stats.write_window);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            widest
        }
    });
    let flood_started = Instant::now();
    let mut sent = 0;
    while sent < MAX_BURSTS * BURST
        && (flood_started.elapsed() < MIN_FLOOD
            || flood_started.elapsed() < MAX_FLOOD && watcher_sees_nothing(&server).await)
    {
        sender_out
            .write_all(&say(sent..sent + BURST))
            .await
            .unwrap();
        sent += BURST;
    }
    for n in 0..sent {
        let got = tokio::time::timeout(Duration::from_secs(60), numbers.recv())
            .await
            .expect("the flood is delivered in time");
        assert_eq!(got, Some(n), "the flood, in order");
    }
    watching.cancel();
    let widest = watcher.await.unwrap();
    println!("flood of {sent} messages: widest write window {widest:?}");
    assert!(
        widest > Duration::ZERO,
        "the flood never opened the write window"
    );
    // The sender's copies too: until they are written the hub is still
    // busy with the flood, however quiet the clients are.
    let drained = Instant::now() + Duration::from_secs(60);
    while echoed.load(std::sync::atomic::Ordering::Relaxed) < sent {
        assert!(
            Instant::now() < drained,
            "the sender's copies arrive in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Quiet: the hub's demand decays, and with it the window. (A second,
    // and 1.5 s below: room for a loaded machine, still short of the 2 s a
    // window left open makes a lone message wait.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    sender_out.write_all(&say(sent..sent + 1)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), numbers.recv())
        .await
        .expect("the last message is delivered");
    assert_eq!(got, Some(sent));
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "a message after a quiet time took {took:?}: the 2 s window stayed open"
    );
    echoes.abort();
}

/// Whether the hub's write window is still closed.
async fn watcher_sees_nothing(server: &ServerHandle) -> bool {
    server
        .stats()
        .await
        .is_none_or(|stats| stats.write_window.is_zero())
}

/// The numbers of the chat lines `reader` gets, in arrival order.
fn read_numbers(mut reader: ClientReader) -> tokio::sync::mpsc::UnboundedReceiver<usize> {
    let (numbers, arrivals) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Received::Message(message) = reader.recv().await {
            if let ServerMessage::Message { text, .. } = message {
                let number = text.split(' ').next().unwrap_or_default().parse();
                if numbers.send(number.unwrap_or(usize::MAX)).is_err() {
                    break;
                }
            }
        }
    });
    arrivals
}
