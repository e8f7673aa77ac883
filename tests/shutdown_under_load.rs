//! Graceful shutdown under load: SIGTERM to a real `natter serve` process
//! while 1,000 clients chat. Every client must get the shutdown ERROR and a
//! clean end of stream, and the process must exit within 5 s. The figures
//! are printed (run with `--no-capture` to see them), also as a
//! `FIGURES {json}` line that bench/reliability.sh collects for
//! docs/RELIABILITY.md.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use natter_proto::codec::encode_command;
use natter_proto::wire::Direction;
use natter_proto::{Command, Decoder, Encoding, Limits, ServerMessage};
use natter_server::SHUTDOWN_MESSAGE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Barrier, Semaphore};

const CLIENTS: usize = 1_000;
const CONVERSATIONS: usize = 100;
/// How long the clients chat before the signal.
const CHAT_TIME: Duration = Duration::from_secs(1);
/// What the issue allows for the whole shutdown.
const EXIT_WITHIN: Duration = Duration::from_secs(5);
/// Upper bound for any one step, so that a hang fails instead of stalling.
const PATIENCE: Duration = Duration::from_secs(20);

/// The server process; killed if the test fails before it exits.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let mut child = Process::new(env!("CARGO_BIN_EXE_natter"))
        .args([
            "serve",
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--no-web",
        ])
        .args(["--rate-limit", "0", "--max-connections-per-ip", "0"])
        .args(["--presence-interval", "0", "--presence-coalesce", "500"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("natter serve starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("natter serve printed its address")
            .unwrap();
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.trim().parse().expect("an address");
        }
    };
    Server { child, addr }
}

/// What a read gave: a message, the server's clean end of stream (FIN), or
/// an error such as a reset, which is not a clean end.
#[derive(Debug)]
enum Read {
    Message(ServerMessage),
    End,
    Broken(std::io::ErrorKind),
}

/// A minimal client over the protocol crate: connect, send, read typed
/// messages.
struct Client {
    reader: tokio::net::tcp::OwnedReadHalf,
    writer: OwnedWriteHalf,
    encoding: Encoding,
    decoder: Decoder,
    buf: BytesMut,
}

impl Client {
    async fn connect(addr: SocketAddr, encoding: Encoding) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let (reader, writer) = stream.into_split();
        Client {
            reader,
            writer,
            encoding,
            decoder: Decoder::new(encoding, Direction::ToClient, Limits::client_default()),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, command: Command) -> std::io::Result<()> {
        let mut bytes = BytesMut::new();
        encode_command(&command, self.encoding, &mut bytes);
        self.writer.write_all(&bytes).await
    }

    /// The next message, the end of the stream, or how reading broke.
    async fn recv(&mut self) -> Read {
        loop {
            if let Some(raw) = self
                .decoder
                .decode(&mut self.buf)
                .expect("valid bytes from the server")
            {
                return Read::Message(
                    ServerMessage::from_raw(raw).expect("a valid server message"),
                );
            }
            self.buf.reserve(16 * 1024);
            match self.reader.read_buf(&mut self.buf).await {
                // A partial message before the FIN is not a clean end either.
                Ok(0) if self.buf.is_empty() => return Read::End,
                Ok(0) => return Read::Broken(std::io::ErrorKind::UnexpectedEof),
                Err(error) => return Read::Broken(error.kind()),
                Ok(_) => {}
            }
        }
    }

    async fn expect(&mut self, mut pick: impl FnMut(&ServerMessage) -> bool) {
        let wait = async {
            loop {
                match self.recv().await {
                    Read::Message(m) if pick(&m) => return,
                    Read::Message(_) => {}
                    other => panic!("{other:?} while waiting"),
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("expected message");
    }

    /// REGISTER (with `presence-delta` unless classic, as a course client
    /// would not ask) and wait for the first presence message.
    async fn register(&mut self, name: &str) {
        if self.encoding != Encoding::Classic {
            self.send(Command::Caps(vec!["presence-delta".into()]))
                .await
                .unwrap();
        }
        let register = Command::Register {
            name: name.into(),
            status: "chatting".into(),
        };
        self.send(register).await.unwrap();
        self.expect(|m| matches!(m, ServerMessage::OnlineUsers(_)))
            .await;
    }
}

fn encoding_of(i: usize) -> Encoding {
    Encoding::ALL[i % Encoding::ALL.len()]
}

/// Two users that own the conversations: `host` invites `guest` to each,
/// and a conversation lives while an invitee is online.
async fn conversations(addr: SocketAddr) -> (Vec<u64>, Client, Client) {
    let mut host = Client::connect(addr, Encoding::Framed).await;
    host.register("host").await;
    let mut guest = Client::connect(addr, Encoding::Framed).await;
    guest.register("guest").await;
    let mut ids = Vec::new();
    for _ in 0..CONVERSATIONS {
        host.send(Command::Invite(vec!["guest".into()]))
            .await
            .unwrap();
        let mut id = 0;
        host.expect(|m| match m {
            ServerMessage::Invitation { conv, .. } => {
                id = *conv;
                true
            }
            _ => false,
        })
        .await;
        ids.push(id);
    }
    (ids, host, guest)
}

/// How a client's connection ended.
struct Ending {
    /// It read the shutdown ERROR.
    told: bool,
    /// How the stream ended: `None` for a clean end of stream, else why not.
    broken: Option<std::io::ErrorKind>,
    at: Instant,
}

/// One client's life: register, join, chat until the server goes, and
/// report whether it heard the shutdown ERROR, and when and how its stream
/// ended.
async fn chatter(
    addr: SocketAddr,
    i: usize,
    conv: u64,
    setup: Arc<Semaphore>,
    ready: Arc<Barrier>,
) -> Ending {
    let mut client = {
        let _permit = setup.acquire().await.unwrap();
        let mut client = Client::connect(addr, encoding_of(i)).await;
        let name = format!("load{i}");
        client.register(&name).await;
        client.send(Command::Join(conv)).await.unwrap();
        // The first message's echo proves the JOIN was applied.
        let text = format!("{name} joined");
        client
            .send(Command::SendMessage {
                conv,
                text: text.clone(),
                nonce: None,
            })
            .await
            .unwrap();
        client
            .expect(|m| matches!(m, ServerMessage::Message { text: t, .. } if *t == text))
            .await;
        client
    };
    ready.wait().await;
    // Chat: a message every 200 ms (staggered), reading everything.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis((i % 200) as u64),
        Duration::from_millis(200),
    );
    let mut sent = 0u64;
    let mut writing = true;
    let mut shutdown_error = false;
    loop {
        tokio::select! {
            _ = tick.tick(), if writing => {
                sent += 1;
                let say = Command::SendMessage { conv, text: format!("message {sent} from {i}"), nonce: None };
                writing = client.send(say).await.is_ok();
            }
            message = client.recv() => {
                let broken = match message {
                    Read::Message(ServerMessage::Error(text)) if text == SHUTDOWN_MESSAGE => {
                        shutdown_error = true;
                        writing = false;
                        continue;
                    }
                    Read::Message(_) => continue,
                    Read::End => None,
                    Read::Broken(kind) => Some(kind),
                };
                return Ending { told: shutdown_error, broken, at: Instant::now() };
            }
        }
    }
}

/// Waits for the SIGTERM'd process to exit; how long it took.
fn wait_for_exit(server: &mut Server, signalled: Instant) -> Duration {
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "natter serve exited with {status}");
            return signalled.elapsed();
        }
        assert!(signalled.elapsed() < PATIENCE, "natter serve did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_thousand_clients_chat_says_goodbye_to_each_and_exits_in_time() {
    let mut server = start_server();
    let addr = server.addr;
    let (convs, host, guest) = conversations(addr).await;

    let setup = Arc::new(Semaphore::new(100));
    let ready = Arc::new(Barrier::new(CLIENTS + 1));
    let started = Instant::now();
    let chatters: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(chatter(
                addr,
                i,
                convs[i % CONVERSATIONS],
                setup.clone(),
                ready.clone(),
            ))
        })
        .collect();
    tokio::time::timeout(PATIENCE, ready.wait())
        .await
        .expect("every client registered and joined");
    let ramp = started.elapsed();
    tokio::time::sleep(CHAT_TIME).await;

    let status = Process::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let signalled = Instant::now();
    let took = tokio::task::spawn_blocking(move || {
        let took = wait_for_exit(&mut server, signalled);
        (took, server)
    });
    let mut goodbyes = 0;
    let mut broken = Vec::new();
    let mut last_end = signalled;
    for chatter in chatters {
        let ending = tokio::time::timeout(PATIENCE, chatter)
            .await
            .expect("client ended")
            .unwrap();
        goodbyes += usize::from(ending.told);
        broken.extend(ending.broken);
        last_end = last_end.max(ending.at);
    }
    let clients_done = last_end - signalled;
    let (took, _server) = took.await.unwrap();
    for mut owner in [host, guest] {
        let mut told = false;
        loop {
            match tokio::time::timeout(PATIENCE, owner.recv()).await.unwrap() {
                Read::Message(m) => {
                    told |= matches!(&m, ServerMessage::Error(t) if t == SHUTDOWN_MESSAGE)
                }
                Read::End => break,
                Read::Broken(kind) => panic!("an idle client's stream ended with {kind:?}"),
            }
        }
        assert!(told, "an idle client missed the shutdown ERROR");
    }
    println!(
        "shutdown under load: {CLIENTS} clients ready in {ramp:.2?}; after SIGTERM the last \
         client saw its end of stream at {clients_done:.2?}, the process exited after {took:.2?}; \
         {goodbyes}/{CLIENTS} got \"{SHUTDOWN_MESSAGE}\""
    );
    let figures = serde_json::json!({
        "test": "shutdown", "clients": CLIENTS, "ready_s": ramp.as_secs_f64(),
        "last_end_s": clients_done.as_secs_f64(), "exit_s": took.as_secs_f64(),
        "told": goodbyes, "clean_ends": CLIENTS - broken.len(),
    });
    println!("FIGURES {figures}");
    assert_eq!(goodbyes, CLIENTS, "clients missed the shutdown ERROR");
    assert!(
        broken.is_empty(),
        "{} of {CLIENTS} streams did not end cleanly (a reset is not a goodbye): {:?}",
        broken.len(),
        &broken[..broken.len().min(10)]
    );
    assert!(took < EXIT_WITHIN, "exit took {took:?}");
}
