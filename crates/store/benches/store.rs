//! What durability costs, on a real disk (the data files go under Cargo's
//! target dir, or `NATTER_BENCH_DIR`; never a tmpfs, which has no fsync).
//!
//! - `commit/N`: one durable transaction of N 64-byte messages spread over
//!   100 conversations (fsync included); throughput in messages/s.
//! - `worker/16`: the writer thread fed batches of 16 messages as fast as
//!   it confirms them, so group commit decides the transaction size, as it
//!   does under the hub.
//! - `worker_latency/alone`: one batch of 10 from send to `Committed`;
//!   printed before it: the same under a steady 10,000 messages/s.
//! - `history/100`: `HISTORY` of 100 at a random point of a conversation
//!   with 1,000,000 stored messages.
//! - `startup/1M`: `Store::open` + `load_snapshot` with 1,000,000 messages
//!   stored (all of them carrying nonces within the last 24 hours: the
//!   worst case, every one comes back) and 10,000 conversations.
//!
//! Criterion reports means; the targets are about tails, so `history` and
//! `startup` also print percentiles from their own timed runs, each also as
//! one `FIGURE {json}` line that `bench/store.sh` collects.
//!
//! A `--measurement-time` on the command line replaces the longer times
//! some groups set for themselves (`bench/store.sh` runs it short).

use std::cell::OnceCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use natter_store::worker::{self, Batch, Reply, WorkerOptions};
use natter_store::{Fact, Reader, Store, StoredMessage};
use tokio::sync::mpsc;

const BODY: &str = "64 bytes of chat, which is about what people type in one line...";
const CONVERSATIONS: u64 = 100;
/// Messages in the large store.
const MILLION: u64 = 1_000_000;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// `secs`, unless the command line gave `--measurement-time` (which then
/// applies to every group, as criterion's default does).
fn measurement_time(secs: u64) -> Option<Duration> {
    let given = std::env::args().any(|arg| arg.starts_with("--measurement-time"));
    (!given).then(|| Duration::from_secs(secs))
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("NATTER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn message(conv: u64, seq: u64, ts: i64, nonce: Option<String>) -> Fact {
    Fact::MessageAccepted(Arc::new(StoredMessage {
        conv,
        seq,
        ts,
        sender_key: "alice".into(),
        sender: "Alice".into(),
        text: BODY.into(),
        nonce,
    }))
}

/// Conversations `first..first + count`, each with 5 members.
fn conversations(first: u64, count: u64) -> Vec<Fact> {
    let mut facts = Vec::new();
    for conv in first..first + count {
        let invited: Vec<_> = (0..5)
            .map(|n| (format!("user{n}"), format!("User{n}")))
            .collect();
        for (key, display) in &invited {
            facts.push(Fact::Joined {
                conv,
                key: key.clone(),
                display: display.clone(),
            });
        }
        facts.insert(
            facts.len() - invited.len(),
            Fact::ConversationCreated {
                conv,
                ts: 0,
                invited,
            },
        );
    }
    facts
}

/// Hands out seqs round-robin over the conversations.
struct Messages {
    next_seq: Vec<u64>,
    turn: usize,
}

impl Messages {
    fn new() -> Messages {
        Messages::with_conversations(CONVERSATIONS)
    }

    fn with_conversations(count: u64) -> Messages {
        Messages {
            next_seq: vec![1; count as usize],
            turn: 0,
        }
    }

    fn batch(&mut self, n: usize) -> Vec<Fact> {
        (0..n)
            .map(|_| {
                self.turn = (self.turn + 1) % self.next_seq.len();
                let seq = self.next_seq[self.turn];
                self.next_seq[self.turn] += 1;
                message(self.turn as u64 + 1, seq, 1, None)
            })
            .collect()
    }
}

fn commit(c: &mut Criterion) {
    let dir = bench_dir();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&conversations(1, CONVERSATIONS)).unwrap();
    let mut messages = Messages::new();
    let mut group = c.benchmark_group("commit");
    group.sample_size(20);
    if let Some(time) = measurement_time(10) {
        group.measurement_time(time);
    }
    for size in [256usize, 1024] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let facts = messages.batch(size);
                    let started = Instant::now();
                    store.commit(&facts).unwrap();
                    spent += started.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

/// Batches of `size` through the writer thread: the time from the first
/// send to the confirmation of the last.
fn worker(c: &mut Criterion) {
    let dir = bench_dir();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&conversations(1, CONVERSATIONS)).unwrap();
    let (tx, mut replies) = mpsc::channel(worker::BATCH_QUEUE);
    let worker = worker::spawn(store, WorkerOptions::default(), tx).unwrap();
    let mut messages = Messages::new();
    let mut ticket = 0;
    let size = 16;
    let mut group = c.benchmark_group("worker");
    group.sample_size(20);
    if let Some(time) = measurement_time(10) {
        group.measurement_time(time);
    }
    group.throughput(Throughput::Elements(size as u64));
    group.bench_function(BenchmarkId::from_parameter(size), |b| {
        b.iter_custom(|iters| {
            let batches: Vec<_> = (0..iters).map(|_| messages.batch(size)).collect();
            let started = Instant::now();
            for facts in batches {
                ticket += 1;
                worker
                    .batches
                    .blocking_send(Batch { ticket, facts })
                    .unwrap();
            }
            loop {
                match replies.blocking_recv() {
                    Some(Reply::Committed { up_to }) if up_to == ticket => break,
                    Some(Reply::Committed { .. }) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            started.elapsed()
        })
    });
    group.finish();
    worker.shutdown();
}

/// `worker_latency/alone`: one batch of 10 through the writer, from send
/// to `Committed` (an fsync and a little). Before it, printed: the same
/// latency under a steady 10,000 messages/s (a batch of 10 every
/// millisecond over 1,000 conversations), what the hub's deliveries wait.
fn worker_latency(c: &mut Criterion) {
    let dir = bench_dir();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&conversations(1, 1_000)).unwrap();
    let (tx, mut replies) = mpsc::channel(worker::BATCH_QUEUE);
    let worker = worker::spawn(store, WorkerOptions::default(), tx).unwrap();
    let mut messages = Messages::with_conversations(1_000);
    let mut ticket = 0;
    let mut printed = false;
    let mut group = c.benchmark_group("worker_latency");
    group.sample_size(50);
    group.bench_function("alone", |b| {
        if !std::mem::replace(&mut printed, true) {
            steady_load(&worker, &mut replies, &mut messages, &mut ticket);
        }
        b.iter(|| {
            ticket += 1;
            let facts = messages.batch(10);
            worker
                .batches
                .blocking_send(Batch { ticket, facts })
                .unwrap();
            match replies.blocking_recv() {
                Some(Reply::Committed { up_to }) if up_to == ticket => {}
                other => panic!("unexpected {other:?}"),
            }
        })
    });
    group.finish();
    worker.shutdown();
}

fn steady_load(
    worker: &worker::Worker,
    replies: &mut mpsc::Receiver<Reply>,
    messages: &mut Messages,
    ticket: &mut u64,
) {
    let mut waiting = std::collections::VecDeque::new();
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    let mut next_send = started;
    let first = *ticket + 1;
    while started.elapsed() < Duration::from_secs(5) || !waiting.is_empty() {
        let now = Instant::now();
        if now >= next_send && started.elapsed() < Duration::from_secs(5) {
            *ticket += 1;
            let facts = messages.batch(10);
            worker
                .batches
                .blocking_send(Batch {
                    ticket: *ticket,
                    facts,
                })
                .unwrap();
            waiting.push_back((*ticket, now));
            next_send += Duration::from_millis(1);
        }
        while let Ok(reply) = replies.try_recv() {
            let Reply::Committed { up_to } = reply else {
                panic!("unexpected {reply:?}")
            };
            let done = Instant::now();
            while waiting.front().is_some_and(|(t, _)| *t <= up_to) {
                let (_, sent) = waiting.pop_front().unwrap();
                latencies.record((done - sent).as_nanos() as u64).unwrap();
            }
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    print_latencies(
        "worker_latency/steady_10k",
        &format!(
            "worker at 10,000 msg/s, batches of 10, 1,000 conversations ({} batches): send -> Committed",
            *ticket + 1 - first
        ),
        &latencies,
    );
}

/// A store with [`MILLION`] messages in conversation 1, spread evenly over
/// one day ending at the returned time, every one with a nonce, and
/// 10,000 conversations of 5 members.
fn large_store() -> (tempfile::TempDir, i64) {
    let dir = bench_dir();
    let started = Instant::now();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&conversations(1, 10_000)).unwrap();
    let end: i64 = 1_800_000_000_000;
    let chunk = 10_000;
    for first in (1..=MILLION).step_by(chunk) {
        let facts: Vec<_> = (first..first + chunk as u64)
            .map(|seq| {
                let ts = end - DAY_MS + (seq as i64 * DAY_MS) / MILLION as i64;
                message(1, seq, ts, Some(format!("nonce-{seq}")))
            })
            .collect();
        store.commit(&facts).unwrap();
    }
    let size = std::fs::metadata(store.path()).unwrap().len();
    println!(
        "large store: {MILLION} messages, {:.0} MB, built in {:.1?}",
        size as f64 / 1e6,
        started.elapsed()
    );
    println!(
        r#"FIGURE {{"id":"large_store","messages":{MILLION},"conversations":10000,"bytes":{size},"build_ms":{}}}"#,
        started.elapsed().as_millis()
    );
    (dir, end)
}

/// [`large_store`], built the first time a benchmark that needs it runs
/// (so that `cargo bench -- commit` does not build it).
struct Large {
    store: OnceCell<(tempfile::TempDir, i64)>,
}

impl Large {
    fn get(&self) -> &(tempfile::TempDir, i64) {
        self.store.get_or_init(large_store)
    }
}

fn history(c: &mut Criterion, large: &Large) {
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut random_before = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        101 + rng % (MILLION - 100)
    };
    let mut reader = None;
    let mut group = c.benchmark_group("history");
    group.bench_function(BenchmarkId::from_parameter(100), |b| {
        let reader = reader.get_or_insert_with(|| {
            let reader = Store::open(large.get().0.path()).unwrap().reader().unwrap();
            print_history_percentiles(&reader, &mut random_before);
            reader
        });
        b.iter(|| reader.history(1, random_before(), 100).unwrap())
    });
    group.finish();
}

/// 20,000 `HISTORY` of 100, one in ten of the newest page.
fn print_history_percentiles(reader: &Reader, random_before: &mut impl FnMut() -> u64) {
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    for n in 0..20_000 {
        let before = if n % 10 == 0 { 0 } else { random_before() };
        let started = Instant::now();
        let page = reader.history(1, before, 100).unwrap();
        latencies
            .record(started.elapsed().as_nanos() as u64)
            .unwrap();
        assert_eq!(page.len(), 100);
    }
    print_latencies(
        "history/100",
        "history/100 of 1M (20,000 calls)",
        &latencies,
    );
}

fn startup(c: &mut Criterion, large: &Large) {
    let open_and_load = |now| {
        let store = Store::open(large.get().0.path()).unwrap();
        store.load_snapshot(now).unwrap()
    };
    let mut printed = false;
    let mut group = c.benchmark_group("startup");
    group.sample_size(10);
    if let Some(time) = measurement_time(20) {
        group.measurement_time(time);
    }
    group.bench_function("1M_all_nonces_recent", |b| {
        let end = large.get().1;
        if !std::mem::replace(&mut printed, true) {
            let mut times = Histogram::<u64>::new(3).unwrap();
            for _ in 0..10 {
                let started = Instant::now();
                let snapshot = open_and_load(end);
                times.record(started.elapsed().as_nanos() as u64).unwrap();
                assert_eq!(snapshot.recent_nonces.len() as u64, MILLION);
                assert_eq!(snapshot.conversations.len(), 10_000);
            }
            print_latencies(
                "startup/1M_all_nonces_recent",
                "startup, 1M stored, all 1M nonces in the window (10 runs)",
                &times,
            );
        }
        b.iter(|| open_and_load(end))
    });
    // A day later no nonce is recent: what start-up costs without them.
    group.bench_function("1M_no_nonce_recent", |b| {
        let later = large.get().1 + 2 * DAY_MS;
        b.iter(|| open_and_load(later))
    });
    group.finish();
}

/// Prints the percentiles for people, then as a `FIGURE` line (JSON, in
/// nanoseconds) for `bench/store.sh`.
fn print_latencies(id: &str, what: &str, h: &Histogram<u64>) {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    println!(
        "{what}: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1e6
    );
    println!(
        r#"FIGURE {{"id":"{id}","what":"{what}","count":{},"p50_ns":{},"p99_ns":{},"p999_ns":{},"max_ns":{}}}"#,
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

fn large(c: &mut Criterion) {
    let large = Large {
        store: OnceCell::new(),
    };
    history(c, &large);
    startup(c, &large);
}

criterion_group!(benches, commit, worker, worker_latency, large);
criterion_main!(benches);
