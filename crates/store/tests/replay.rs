//! Facts are a complete record: a chat state driven by random sessions,
//! with every fact it emits committed to a real store, comes back from the
//! store's snapshot with exactly the same conversations, members, read
//! markers, invitations, topics and message counters, at every point.
//!
//! This is what makes a restart invisible: if the core changed durable
//! state without a fact (or the store mis-applied one), the restored view
//! would differ from the live one.

use natter_core::{Chat, Config, ConnId, Output, Outputs, Snapshot};
use natter_proto::Command;
use natter_store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NAMES: &[&str] = &["alice", "bob", "carol", "dave", "Eve"];
const SEEDS: u64 = 12;
const STEPS: usize = 400;

fn config() -> Config {
    Config {
        durable: true,
        ..Config::default()
    }
}

/// A random command from one of the users (most of them valid enough to
/// change something).
fn random_command(rng: &mut impl Rng, max_conv: u64) -> Command {
    let conv = rng.random_range(1..=max_conv.max(1));
    let name = NAMES[rng.random_range(0..NAMES.len())].to_string();
    match rng.random_range(0..10) {
        0 | 1 => Command::Invite(vec![name]),
        2 | 3 => Command::Join(conv),
        4 => Command::Leave(conv),
        5 | 6 => Command::SendMessage {
            conv,
            text: format!("m{}", rng.random::<u16>()),
            nonce: rng
                .random_bool(0.3)
                .then(|| format!("n{}", rng.random_range(0..5))),
        },
        7 => Command::Topic {
            conv,
            text: format!("t{}", rng.random::<u8>()),
        },
        8 => Command::Read {
            conv,
            seq: rng.random_range(0..20),
        },
        _ => Command::Status("busy".into()),
    }
}

struct Replay {
    chat: Chat,
    store: Store,
    conns: Vec<Option<ConnId>>,
    next_conn: u64,
    now: i64,
}

impl Replay {
    fn apply(&mut self, out: Outputs) {
        let facts: Vec<_> = out
            .into_iter()
            .filter_map(|o| match o {
                Output::Fact(fact) => Some(fact),
                _ => None,
            })
            .collect();
        self.store.commit(&facts).expect("commit");
    }

    fn ensure_online(&mut self, user: usize) -> ConnId {
        if let Some(conn) = self.conns[user] {
            return conn;
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.chat.connect(conn);
        let mut out = Outputs::new();
        self.chat
            .handle(conn, Command::Caps(vec!["history".into()]), &mut out);
        let register = Command::Register {
            name: NAMES[user].into(),
            status: "here".into(),
        };
        self.chat.handle(conn, register, &mut out);
        self.apply(out);
        self.conns[user] = Some(conn);
        conn
    }

    fn step(&mut self, rng: &mut StdRng) {
        self.now += rng.random_range(1..1_000);
        self.chat.set_time(self.now);
        let user = rng.random_range(0..NAMES.len());
        if rng.random_bool(0.1) {
            if let Some(conn) = self.conns[user].take() {
                let mut out = Outputs::new();
                self.chat.disconnect(conn, &mut out);
                self.apply(out);
            }
            return;
        }
        let conn = self.ensure_online(user);
        let max_conv = self.chat.conversation_ids().last().copied().unwrap_or(1) + 1;
        let mut out = Outputs::new();
        self.chat
            .handle(conn, random_command(rng, max_conv), &mut out);
        self.apply(out);
    }

    /// A restart: everything offline, the state rebuilt from the store.
    fn restart(&mut self) {
        let snapshot: Snapshot = self.store.load_snapshot(self.now).expect("snapshot");
        let restored = Chat::restore(config(), snapshot);
        restored.check_invariants().expect("restored invariants");
        assert_eq!(
            restored.durable_view(),
            self.chat.durable_view(),
            "restored state differs from the live one"
        );
        self.chat = restored;
        self.conns.iter_mut().for_each(|c| *c = None);
    }
}

#[test]
fn a_restored_chat_equals_the_live_one_after_random_sessions() {
    for seed in 0..SEEDS {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut replay = Replay {
            chat: Chat::new(config()),
            store: Store::open(dir.path()).unwrap(),
            conns: vec![None; NAMES.len()],
            next_conn: 1,
            now: 1_000,
        };
        for step in 0..STEPS {
            replay.step(&mut rng);
            replay
                .chat
                .check_invariants()
                .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
            if step % 50 == 49 {
                replay.restart();
            }
        }
        // After the grace, absent users leave on both sides alike.
        let mut out = Outputs::new();
        replay.chat.end_rejoin_grace(&mut out);
        replay.apply(out);
        replay.restart();
    }
}
