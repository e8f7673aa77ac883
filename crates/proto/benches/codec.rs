//! The protocol's hot paths: decoding a chat line (SEND_MESSAGE) and
//! encoding one (MESSAGE) in each encoding, a full ONLINE_USERS for 10,000
//! users, and serde-pickle reading the same pickle for comparison.
//!
//! Run: `cargo bench -p natter-proto --bench codec`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use natter_proto::codec::{encode_command, encode_message};
use natter_proto::wire::Direction;
use natter_proto::{Command, Decoder, Encoding, Limits, ServerMessage};

/// A chat line whose pickle is about 64 bytes.
fn send_message() -> Command {
    Command::SendMessage {
        conv: 3,
        text: "hello world, this is a chat line of typical length!".into(),
        nonce: None,
    }
}

fn decode_send_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode SEND_MESSAGE");
    let limits = Limits::server_default();
    for encoding in Encoding::ALL {
        let mut wire = BytesMut::new();
        encode_command(&send_message(), encoding, &mut wire);
        let mut decoder = Decoder::new(encoding, Direction::ToServer, limits.clone());
        let mut buf = BytesMut::with_capacity(4096);
        group.bench_function(format!("{encoding:?}"), |b| {
            b.iter(|| {
                buf.extend_from_slice(black_box(&wire));
                let raw = decoder.decode(&mut buf).unwrap().unwrap();
                black_box(Command::from_raw(raw, &limits).unwrap())
            })
        });
    }
    for encoding in Encoding::ALL {
        let mut wire = BytesMut::new();
        encode_command(&send_message(), encoding, &mut wire);
        let mut decoder = Decoder::new(encoding, Direction::ToServer, limits.clone());
        let mut buf = BytesMut::with_capacity(4096);
        group.bench_function(format!("{encoding:?} decode_command"), |b| {
            b.iter(|| {
                buf.extend_from_slice(black_box(&wire));
                black_box(decoder.decode_command(&mut buf).unwrap().unwrap().unwrap())
            })
        });
    }
    let mut wire = BytesMut::new();
    encode_command(&send_message(), Encoding::Classic, &mut wire);
    let pickle = wire[b"SEND_MESSAGE ".len()..].to_vec();
    group.bench_function("serde-pickle value_from_slice (pickle only)", |b| {
        b.iter(|| {
            serde_pickle::value_from_slice(black_box(&pickle), serde_pickle::DeOptions::new())
                .unwrap()
        })
    });
    group.bench_function("natter pickle::decode (pickle only)", |b| {
        b.iter(|| natter_proto::pickle::decode(black_box(&pickle), 32, 16 * 1024).unwrap())
    });
    group.finish();
}

fn encode_chat_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode MESSAGE");
    let msg = ServerMessage::Message {
        conv: 3,
        sender: "alice".into(),
        text: "hello world, this is a chat line of typical length!".into(),
        meta: None,
    };
    for encoding in Encoding::ALL {
        group.bench_function(format!("{encoding:?}"), |b| {
            b.iter(|| encode_message(black_box(&msg), encoding))
        });
    }
    group.finish();
}

fn encode_online_users(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode ONLINE_USERS 10k");
    let users: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("user{i:05}"), "online".to_owned()))
        .collect();
    let msg = ServerMessage::OnlineUsers(users);
    for encoding in Encoding::ALL {
        group.bench_function(format!("{encoding:?}"), |b| {
            b.iter(|| encode_message(black_box(&msg), encoding))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    decode_send_message,
    encode_chat_message,
    encode_online_users
);
criterion_main!(benches);
