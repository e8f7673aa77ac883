//! Shared by the tests that run `natter serve` as a real process: the
//! process itself (started, killed, stopped), and a client whose reading
//! and writing halves can live in different tasks, so that a test can keep
//! sending while it records everything it receives.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command as Process, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use natter_proto::codec::encode_command;
use natter_proto::command::MAX_HISTORY;
use natter_proto::wire::Direction;
use natter_proto::{Command, Decoder, Encoding, HistoryEntry, Limits, ServerMessage};
use natter_server::SHUTDOWN_MESSAGE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Upper bound for any one step, so that a hang fails instead of stalling.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A `natter serve` process; killed if the test ends while it runs.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Kept open: a server that prints after its address must not get
    /// EPIPE (which would make `println!` panic).
    _stdout: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `natter serve ARGS` in `cwd` and waits for "listening on".
    pub fn start(args: &[&str], cwd: &Path) -> Server {
        let mut child = Process::new(env!("CARGO_BIN_EXE_natter"))
            .arg("serve")
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("natter serve starts");
        let lines = read_lines(child.stdout.take().expect("piped stdout"));
        let addr = listening_address(&lines, &mut child);
        Server {
            child,
            addr,
            _stdout: lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and waits until the process is gone (so its lock on the
    /// data dir is released).
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM; waits (bounded) for the exit and returns its status.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Process::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "natter serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Server {
    /// Waits (bounded by `patience`) for the process to exit on its own.
    pub fn wait_exit(mut self, patience: Duration) -> ExitStatus {
        wait_for_exit(&mut self.child, patience)
    }
}

/// Waits (bounded by `patience`) for `child` to exit on its own.
pub fn wait_for_exit(child: &mut Child, patience: Duration) -> ExitStatus {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "natter serve did not exit within {patience:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM while `clients` are still connected (a disconnect would be a
/// departure, and a conversation everyone left ends): each must be told
/// the server is shutting down, and the process must exit cleanly.
pub async fn stop(server: Server, clients: Vec<Client>) {
    let goodbyes: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(c.until_closed()))
        .collect();
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "natter serve exited with {status}");
    for told in goodbyes {
        assert!(told.await.unwrap(), "a client missed the shutdown ERROR");
    }
}

/// The process's stdout, line by line, from a thread (so that waiting for
/// a line can time out).
fn read_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn listening_address(lines: &mpsc::Receiver<String>, child: &mut Child) -> SocketAddr {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr.trim().parse().expect("an address");
                }
            }
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                panic!("natter serve printed no address (exit status: {status:?})");
            }
        }
    }
}

/// The writing half of a client.
pub struct Writer {
    half: OwnedWriteHalf,
    encoding: Encoding,
    out: BytesMut,
}

impl Writer {
    pub async fn send(&mut self, command: &Command) -> std::io::Result<()> {
        self.queue(command);
        self.flush().await
    }

    /// Encodes `command` without writing it yet.
    pub fn queue(&mut self, command: &Command) {
        encode_command(command, self.encoding, &mut self.out);
    }

    /// Writes what was queued, in one go.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        let bytes = self.out.split();
        self.half.write_all(&bytes).await
    }
}

/// The reading half of a client.
pub struct Reader {
    half: OwnedReadHalf,
    decoder: Decoder,
    buf: BytesMut,
    /// For failure messages.
    pub name: String,
}

impl Reader {
    /// The next message; `None` at the end of the stream (or a reset).
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(raw)) => {
                    let message = ServerMessage::from_raw(raw).expect("a valid server message");
                    return Some(message);
                }
                Ok(None) => {}
                Err(e) => panic!("{}: undecodable bytes from the server: {e}", self.name),
            }
            self.buf.reserve(16 * 1024);
            match self.half.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Skips messages until `pick` chooses one; panics after [`PATIENCE`]
    /// or at the end of the stream.
    pub async fn expect<T>(&mut self, mut pick: impl FnMut(&ServerMessage) -> Option<T>) -> T {
        let name = self.name.clone();
        let wait = async {
            loop {
                match self.recv().await {
                    Some(message) => {
                        if let Some(found) = pick(&message) {
                            return found;
                        }
                    }
                    None => panic!("{name}: connection closed while waiting"),
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("{name}: expected message not received"))
    }
}

/// A connected client, both halves.
pub struct Client {
    pub reader: Reader,
    pub writer: Writer,
}

impl Client {
    pub async fn connect(addr: SocketAddr, encoding: Encoding, name: &str) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        Client {
            reader: Reader {
                half: read,
                decoder: Decoder::new(encoding, Direction::ToClient, Limits::client_default()),
                buf: BytesMut::new(),
                name: name.to_string(),
            },
            writer: Writer {
                half: write,
                encoding,
                out: BytesMut::new(),
            },
        }
    }

    /// Connects, asks for `history` and registers as `name`.
    pub async fn with_history(addr: SocketAddr, encoding: Encoding, name: &str) -> Client {
        let mut client = Client::connect(addr, encoding, name).await;
        client.send(Command::Caps(vec!["history".into()])).await;
        let caps = client
            .reader
            .expect(|m| match m {
                ServerMessage::Caps(names) => Some(names.clone()),
                _ => None,
            })
            .await;
        assert_eq!(caps, ["history"], "the server offers history");
        client.register(name).await;
        client
    }

    /// A course client: no capabilities, just REGISTER.
    pub async fn course(addr: SocketAddr, encoding: Encoding, name: &str) -> Client {
        let mut client = Client::connect(addr, encoding, name).await;
        client.register(name).await;
        client
    }

    async fn register(&mut self, name: &str) {
        self.send(Command::Register {
            name: name.into(),
            status: "online".into(),
        })
        .await;
        self.reader
            .expect(|m| matches!(m, ServerMessage::OnlineUsers(_)).then_some(()))
            .await;
    }

    pub async fn send(&mut self, command: Command) {
        self.writer.send(&command).await.expect("write");
    }

    pub async fn say(&mut self, conv: u64, text: &str) {
        self.send(Command::SendMessage {
            conv,
            text: text.into(),
            nonce: None,
        })
        .await;
    }

    /// Invites `others` and returns the new conversation's id.
    pub async fn invite(&mut self, others: &[&str]) -> u64 {
        let names = others.iter().map(|s| s.to_string()).collect();
        self.send(Command::Invite(names)).await;
        self.expect_invitation().await
    }

    pub async fn expect_invitation(&mut self) -> u64 {
        self.reader
            .expect(|m| match m {
                ServerMessage::Invitation { conv, .. } => Some(*conv),
                _ => None,
            })
            .await
    }

    /// JOIN, then a LIST_CONVERSATIONS round trip (classic clients get no
    /// acknowledgement of a JOIN).
    pub async fn join(&mut self, conv: u64) {
        self.send(Command::Join(conv)).await;
        self.conversations().await;
    }

    pub async fn conversations(&mut self) -> Vec<(u64, Vec<String>)> {
        self.send(Command::ListConversations).await;
        self.reader
            .expect(|m| match m {
                ServerMessage::Conversations(list) => Some(list.clone()),
                _ => None,
            })
            .await
    }

    /// One `HISTORY` page.
    pub async fn history_page(&mut self, conv: u64, before_seq: u64) -> Vec<HistoryEntry> {
        self.send(Command::History {
            conv,
            before_seq,
            limit: MAX_HISTORY,
        })
        .await;
        self.reader
            .expect(|m| match m {
                ServerMessage::History { conv: c, entries } if *c == conv => Some(entries.clone()),
                ServerMessage::Error(text) => panic!("HISTORY of {conv} refused: {text}"),
                _ => None,
            })
            .await
    }

    /// Every stored message of `conv` with a seq above `after`, oldest
    /// first, paging back with `before_seq`.
    pub async fn history_after(&mut self, conv: u64, after: u64) -> Vec<HistoryEntry> {
        let mut pages = Vec::new();
        let mut before = 0;
        loop {
            let page = self.history_page(conv, before).await;
            let full = page.len() == MAX_HISTORY;
            let Some(oldest) = page.first().map(|e| e.seq) else {
                break;
            };
            assert!(
                before == 0 || oldest < before,
                "HISTORY before {before} returned seq {oldest}"
            );
            pages.push(page);
            if !full || oldest <= after + 1 {
                break;
            }
            before = oldest;
        }
        let mut entries: Vec<HistoryEntry> = pages.into_iter().rev().flatten().collect();
        entries.retain(|e| e.seq > after);
        entries
    }

    /// Reads until the server closes the connection, then closes its own
    /// end; whether the server said it was shutting down first.
    pub async fn until_closed(mut self) -> bool {
        let mut told = false;
        let read = async {
            while let Some(message) = self.reader.recv().await {
                told |= matches!(&message, ServerMessage::Error(t) if t == SHUTDOWN_MESSAGE);
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .unwrap_or_else(|_| panic!("{}: the server did not close", self.reader.name));
        told
    }

    /// The next MESSAGE: `(conv, sender, text, seq)`; the seq is `None`
    /// for a client without `history`.
    pub async fn expect_message(&mut self) -> (u64, String, String, Option<u64>) {
        self.reader
            .expect(|m| match m {
                ServerMessage::Message {
                    conv,
                    sender,
                    text,
                    meta,
                } => Some((
                    *conv,
                    sender.clone(),
                    text.clone(),
                    meta.as_ref().map(|m| m.seq),
                )),
                _ => None,
            })
            .await
    }
}
