//! kill -9 under load: the real `natter serve` on a real data dir, killed
//! with SIGKILL at a random moment while clients chat at thousands of
//! messages a second, then restarted on the same dir. Whatever any client
//! was shown must be in `HISTORY` with the same seq, in the same order;
//! history holds nothing that nobody sent; and chat goes on after the
//! restart with the next seq. Twenty rounds on one data dir, so that
//! crashes also follow crashes.
//!
//! The kill moments come from a seed printed at the start; to replay a
//! failure with the same moments, run with `NATTER_CRASH_SEED=<seed>`.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Client, PATIENCE, Reader, Server, Writer};
use natter_proto::{Command, Encoding, HistoryEntry, ServerMessage};
use tokio::sync::watch;

/// Kills, each followed by a restart that checks the round before it.
const ROUNDS: usize = 20;
const CLIENTS: usize = 6;
/// Who is in which conversation (client indices), the inviter first.
/// Clients 2 and 3 are in both, so their messages interleave.
const MEMBERS: [&[usize]; 2] = [&[0, 1, 2, 3], &[4, 5, 2, 3]];
/// A member of every conversation, who reads the history back.
const VERIFIER: usize = 2;
/// Every client sends `PER_TICK` messages every `TICK`: 6 × 7 × 100/s =
/// 4,200 messages/s offered in total, well above `MIN_RATE`, so that a busy
/// machine still delivers enough.
const PER_TICK: usize = 7;
const TICK: Duration = Duration::from_millis(10);
/// The load: messages/s, in total, that the server must have
/// stored and delivered while the clients chat (averaged over the rounds).
const MIN_RATE: f64 = 2_000.0;
/// How long after the load starts the server is killed, in ms.
const KILL_AFTER_MS: std::ops::Range<u64> = 100..600;

/// A MESSAGE as one client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    conv: u64,
    seq: u64,
    sender: String,
    text: String,
}

/// What the test knows to be true of the data dir so far.
#[derive(Default)]
struct Ledger {
    /// Every text any client sent (or tried to): its conversation and sender.
    sent: HashMap<String, (u64, String)>,
    /// History as read back and checked, per conversation, oldest first.
    history: HashMap<u64, Vec<HistoryEntry>>,
    /// Texts found in history (each unique, so each may be there once).
    stored: HashSet<String>,
}

impl Ledger {
    fn last_seq(&self, conv: u64) -> u64 {
        self.history
            .get(&conv)
            .and_then(|h| h.last())
            .map_or(0, |e| e.seq)
    }

    /// After a restart: reads what history gained since the last check and
    /// holds it against what the clients sent and saw before the kill.
    async fn check_round(&mut self, verifier: &mut Client, convs: &[u64], seen: &[Vec<Seen>]) {
        for &conv in convs {
            let known = self.last_seq(conv);
            let new = verifier.history_after(conv, known).await;
            self.check_new_history(conv, known, &new);
            for (client, seen) in seen.iter().enumerate() {
                let seen: Vec<&Seen> = seen.iter().filter(|s| s.conv == conv).collect();
                check_client_saw_history(client, conv, &seen, &new);
            }
            self.history.entry(conv).or_default().extend(new);
        }
    }

    /// Seqs strictly increase from where the last check ended, and every
    /// entry is a message a client sent, stored once.
    fn check_new_history(&mut self, conv: u64, known: u64, new: &[HistoryEntry]) {
        let mut last = known;
        for entry in new {
            assert!(
                entry.seq > last,
                "conversation {conv}: history seq {} after {last}",
                entry.seq
            );
            last = entry.seq;
            match self.sent.get(&entry.text) {
                Some((c, sender)) if *c == conv && *sender == entry.sender => {}
                other => panic!(
                    "conversation {conv}: history holds {entry:?}, which nobody sent there \
                     (sent: {other:?})"
                ),
            }
            assert!(
                self.stored.insert(entry.text.clone()),
                "conversation {conv}: {:?} is stored twice",
                entry.text
            );
        }
    }
}

/// A client that was a member from the round's first message on saw, in
/// order, exactly the first messages history gained in the round: a
/// prefix (what it had received when the server died), with the same
/// seqs, senders and texts, no gap and nothing history does not have.
fn check_client_saw_history(client: usize, conv: u64, seen: &[&Seen], history: &[HistoryEntry]) {
    for pair in seen.windows(2) {
        assert!(
            pair[0].seq < pair[1].seq,
            "client {client} received seq {} after {} in conversation {conv}",
            pair[1].seq,
            pair[0].seq
        );
    }
    for (i, seen) in seen.iter().enumerate() {
        let stored = history.get(i).unwrap_or_else(|| {
            panic!(
                "client {client} received {seen:?}, which is not in the history of \
                 conversation {conv} (history gained {} messages)",
                history.len()
            )
        });
        assert!(
            (stored.seq, &stored.sender, &stored.text) == (seen.seq, &seen.sender, &seen.text),
            "client {client} received {seen:?} where history has {stored:?}"
        );
    }
}

/// The kill moments: a seed from the environment (to replay) or the clock.
struct Moments(u64);

impl Moments {
    fn seeded() -> Moments {
        let seed = std::env::var("NATTER_CRASH_SEED")
            .ok()
            .map(|s| s.parse().expect("NATTER_CRASH_SEED is a number"))
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("kill moments from seed {seed} (replay: NATTER_CRASH_SEED={seed})");
        Moments(seed)
    }

    /// splitmix64: small, and the same sequence on every machine.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn kill_after(&mut self) -> Duration {
        let span = KILL_AFTER_MS.end - KILL_AFTER_MS.start;
        Duration::from_millis(KILL_AFTER_MS.start + self.next() % span)
    }
}

fn start(dir: &Path) -> Server {
    let dir = dir.to_str().expect("a UTF-8 temp dir");
    Server::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-web",
            "--data-dir",
            dir,
            "--rate-limit",
            "0",
            "--max-connections-per-ip",
            "0",
            "--presence-coalesce",
            "10",
        ],
        Path::new("."),
    )
}

fn name(client: usize) -> String {
    format!("c{client}")
}

/// The conversations `client` is in (indices into MEMBERS).
fn conversations_of(client: usize) -> Vec<usize> {
    (0..MEMBERS.len())
        .filter(|&c| MEMBERS[c].contains(&client))
        .collect()
}

/// Every client, registered with `history`; encodings turn with the round.
async fn connect_all(addr: SocketAddr, round: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let encoding = Encoding::ALL[(i + round) % Encoding::ALL.len()];
        clients.push(Client::with_history(addr, encoding, &name(i)).await);
    }
    clients
}

/// The first round's conversations: the inviter of each invites the
/// others and everyone joins.
async fn create_conversations(clients: &mut [Client]) -> Vec<u64> {
    let mut convs = Vec::new();
    for members in MEMBERS {
        let (inviter, others) = members.split_first().unwrap();
        let names: Vec<String> = others.iter().map(|&i| name(i)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let conv = clients[*inviter].invite(&names).await;
        clients[*inviter].join(conv).await;
        for &other in others {
            assert_eq!(clients[other].expect_invitation().await, conv);
            clients[other].join(conv).await;
        }
        convs.push(conv);
    }
    convs
}

/// Each conversation's inviter says one message; every member must get
/// it with the seq after the last one stored (so chat works after the
/// restart). Returns what each client saw, the round's first entries.
async fn probe(
    clients: &mut [Client],
    convs: &[u64],
    ledger: &mut Ledger,
    round: usize,
) -> Vec<Vec<Seen>> {
    for (c, &conv) in convs.iter().enumerate() {
        let inviter = MEMBERS[c][0];
        let text = format!("probe r{round} in {conv}");
        ledger.sent.insert(text.clone(), (conv, name(inviter)));
        clients[inviter].say(conv, &text).await;
    }
    let mut seen = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let mine = conversations_of(i);
        let mut got = Vec::new();
        while got.len() < mine.len() {
            got.push(next_message(&mut client.reader).await);
        }
        for s in &got {
            let expected = ledger.last_seq(s.conv) + 1;
            assert_eq!(
                (s.seq, s.text.as_str()),
                (expected, format!("probe r{round} in {}", s.conv).as_str()),
                "client {i}: the first message after the restart"
            );
        }
        seen.push(got);
    }
    seen
}

async fn next_message(reader: &mut Reader) -> Seen {
    reader
        .expect(|m| match m {
            ServerMessage::Message {
                conv,
                sender,
                text,
                meta,
            } => {
                let meta = meta.as_ref().expect("history clients get seqs");
                Some(Seen {
                    conv: *conv,
                    seq: meta.seq,
                    sender: sender.clone(),
                    text: text.clone(),
                })
            }
            ServerMessage::Error(text) => panic!("ERROR {text:?}"),
            _ => None,
        })
        .await
}

/// Records every MESSAGE until the connection ends; ERRORs fail the test
/// (nothing here should be refused).
async fn record(mut reader: Reader, mut seen: Vec<Seen>) -> Vec<Seen> {
    loop {
        let next = tokio::time::timeout(PATIENCE, reader.recv()).await;
        let message = next.unwrap_or_else(|_| panic!("{}: the stream went quiet", reader.name));
        match message {
            None => return seen,
            Some(ServerMessage::Message {
                conv,
                sender,
                text,
                meta,
            }) => {
                let seq = meta.expect("history clients get seqs").seq;
                seen.push(Seen {
                    conv,
                    seq,
                    sender,
                    text,
                });
            }
            Some(ServerMessage::Error(text)) => panic!("{}: ERROR {text:?}", reader.name),
            Some(_) => {}
        }
    }
}

/// Sends `PER_TICK` messages every `TICK` to the client's conversations
/// in turn until told to stop or the connection breaks; returns every
/// text it wrote (or tried to) and where.
async fn chat(
    mut writer: Writer,
    client: usize,
    convs: Vec<u64>,
    round: usize,
    mut stop: watch::Receiver<bool>,
) -> Vec<(String, u64)> {
    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.changed() => return sent,
            _ = tick.tick() => {}
        }
        for _ in 0..PER_TICK {
            let conv = convs[sent.len() % convs.len()];
            let text = format!("c{client} r{round} #{}", sent.len());
            writer.queue(&Command::SendMessage {
                conv,
                text: text.clone(),
                nonce: None,
            });
            sent.push((text, conv));
        }
        if writer.flush().await.is_err() {
            return sent;
        }
    }
}

/// What one round of load did.
struct Load {
    seen: Vec<Vec<Seen>>,
    sent: usize,
    /// Distinct messages some client received (so: stored).
    delivered: usize,
}

/// Everyone chats; after `kill_after` the server gets SIGKILL. Returns
/// what each client saw and sent.
async fn chat_then_kill(
    server: Server,
    clients: Vec<Client>,
    seen: Vec<Vec<Seen>>,
    convs: &[u64],
    round: usize,
    kill_after: Duration,
    ledger: &mut Ledger,
) -> Load {
    let (stop, stopped) = watch::channel(false);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (i, (client, seen)) in clients.into_iter().zip(seen).enumerate() {
        let mine = conversations_of(i).into_iter().map(|c| convs[c]).collect();
        readers.push(tokio::spawn(record(client.reader, seen)));
        writers.push(tokio::spawn(chat(
            client.writer,
            i,
            mine,
            round,
            stopped.clone(),
        )));
    }
    tokio::time::sleep(kill_after).await;
    tokio::task::block_in_place(|| server.kill_9());
    let _ = stop.send(true);
    let mut sent = 0;
    for (i, writer) in writers.into_iter().enumerate() {
        for (text, conv) in writer.await.expect("writer task") {
            ledger.sent.insert(text, (conv, name(i)));
            sent += 1;
        }
    }
    let mut seen = Vec::new();
    for reader in readers {
        seen.push(reader.await.expect("reader task"));
    }
    let delivered: HashSet<(u64, u64)> = seen.iter().flatten().map(|s| (s.conv, s.seq)).collect();
    Load {
        seen,
        sent,
        delivered: delivered.len(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_any_client_saw() {
    let started = Instant::now();
    let mut moments = Moments::seeded();
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::default();
    let mut convs = Vec::new();
    let mut last_seen: Vec<Vec<Seen>> = Vec::new();
    let (mut load_time, mut sent, mut delivered) = (Duration::ZERO, 0, 0);
    for round in 0..=ROUNDS {
        let server = start(dir.path());
        let mut clients = connect_all(server.addr, round).await;
        if round == 0 {
            convs = create_conversations(&mut clients).await;
        } else {
            ledger
                .check_round(&mut clients[VERIFIER], &convs, &last_seen)
                .await;
        }
        let seen = probe(&mut clients, &convs, &mut ledger, round).await;
        if round == ROUNDS {
            check_whole_history(&mut clients[VERIFIER], &convs, &ledger).await;
            common::stop(server, clients).await;
            break;
        }
        let kill_after = moments.kill_after();
        let load = chat_then_kill(
            server,
            clients,
            seen,
            &convs,
            round,
            kill_after,
            &mut ledger,
        )
        .await;
        println!(
            "round {round}: killed after {kill_after:?}: {} sent, {} delivered",
            load.sent, load.delivered
        );
        load_time += kill_after;
        sent += load.sent;
        delivered += load.delivered;
        last_seen = load.seen;
    }
    let rate = delivered as f64 / load_time.as_secs_f64();
    println!(
        "{ROUNDS} kills in {:.1?}: {sent} messages sent, {delivered} delivered \
         ({rate:.0}/s while chatting)",
        started.elapsed()
    );
    assert!(
        rate >= MIN_RATE,
        "the load was {rate:.0} messages/s, below {MIN_RATE}"
    );
}

/// After the last restart: the whole history, paged back from the newest,
/// is exactly what the rounds checked piece by piece (nothing changed
/// under later crashes), plus the last probe.
async fn check_whole_history(verifier: &mut Client, convs: &[u64], ledger: &Ledger) {
    for &conv in convs {
        let whole = verifier.history_after(conv, 0).await;
        let checked = &ledger.history[&conv];
        let probe = whole.last().expect("the last probe is stored");
        assert_eq!(probe.seq, ledger.last_seq(conv) + 1);
        assert_eq!(
            &whole[..whole.len() - 1],
            &checked[..],
            "conversation {conv}: history changed after it was checked"
        );
    }
}
