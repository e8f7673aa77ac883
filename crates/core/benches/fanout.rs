//! What one chat message and one presence snapshot cost inside the core.
//!
//! `send_message/N`: `Chat::handle` of one SEND_MESSAGE in a conversation
//! of N members, outputs included (one `Arc` and one recipient list).
//! `online_users/10000`: the full snapshot for 10,000 users, rebuilt after a
//! status change (uncached) and reused (cached), plus the periodic snapshot
//! output built from the cache.

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use natter_core::{Chat, Config, ConnId, Outputs};
use natter_proto::Command;

fn registered(users: u64, caps: &[&str]) -> Chat {
    let mut chat = Chat::new(Config::default());
    let mut out = Outputs::new();
    for n in 1..=users {
        let conn = ConnId(n);
        chat.connect(conn);
        if !caps.is_empty() {
            let caps = caps.iter().map(|c| c.to_string()).collect();
            chat.handle(conn, Command::Caps(caps), &mut out);
        }
        let register = Command::Register {
            name: format!("user{n:05}"),
            status: "here".into(),
        };
        chat.handle(conn, register, &mut out);
    }
    chat.flush_presence(&mut out);
    chat
}

fn send_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_message");
    for members in [10u64, 100, 1_000] {
        let mut chat = registered(members, &[]);
        let mut out = Outputs::new();
        let others = (2..=members).map(|n| format!("user{n:05}")).collect();
        chat.handle(ConnId(1), Command::Invite(others), &mut out);
        for n in 1..=members {
            chat.handle(ConnId(n), Command::Join(1), &mut out);
        }
        out.clear();
        let text = "x".repeat(100);
        group.bench_function(BenchmarkId::from_parameter(members), |b| {
            b.iter_batched(
                || Command::SendMessage {
                    conv: 1,
                    text: text.clone(),
                    nonce: None,
                },
                |cmd| {
                    chat.handle(ConnId(1), cmd, &mut out);
                    out.clear();
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn online_users(c: &mut Criterion) {
    let mut group = c.benchmark_group("online_users");
    let users = 10_000;
    let mut chat = registered(users, &[]);
    let mut out = Outputs::new();
    let mut flip = false;
    group.bench_function(BenchmarkId::new("uncached", users), |b| {
        b.iter(|| {
            flip = !flip;
            let status = if flip { "away" } else { "here" };
            chat.handle(ConnId(1), Command::Status(status.into()), &mut out);
            chat.online_users()
        })
    });
    group.bench_function(BenchmarkId::new("cached", users), |b| {
        b.iter(|| chat.online_users())
    });
    group.bench_function(BenchmarkId::new("periodic_snapshot_cached", users), |b| {
        b.iter(|| {
            chat.presence_snapshot(&mut out);
            out.clear();
        })
    });
    group.finish();
}

criterion_group!(benches, send_message, online_users);
criterion_main!(benches);
