//! Out of file descriptors, the accept loop backs off instead of spinning,
//! and never stops. A real `natter serve` runs with its descriptor limit
//! lowered by the shell's `ulimit -n`; more clients connect than it can
//! accept (the kernel completes their handshakes and queues them). Checked:
//! the failed accepts are logged with a pause doubling from 1 ms to 1 s,
//! the process burns almost no CPU while it cannot accept, and once the
//! first clients leave, every client that waited in the queue is served.
//! And a client whose socket fills while the server is out of descriptors
//! (waiting for it to drain needs one more) is cut off, not forgotten with
//! its queue.

mod process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use natter_proto::codec::encode_command;
use natter_proto::{Command, Encoding};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// The server's descriptor limit: about a dozen go to the runtime, stdio
/// and the listener, the rest to clients.
const FD_LIMIT: u32 = 48;
/// More clients than that.
const CLIENTS: usize = 60;
/// Messages of 4,000 bytes the talker sends the sloth.
const FLOOD: usize = 1500;
/// Upper bound for any one step.
const PATIENCE: Duration = Duration::from_secs(20);

/// The server process, killed when dropped, and what it has logged.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts it with `extra` arguments.
    fn start_with(extra: &[&str]) -> Server {
        let mut child = Process::new("sh")
            .args(["-c", &format!("ulimit -n {FD_LIMIT} && exec \"$@\""), "sh"])
            .arg(env!("CARGO_BIN_EXE_natter"))
            // No store: its files would count against the limit, and the
            // test would leave a data directory behind.
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-web",
                "--ephemeral",
            ])
            .args(["--rate-limit", "0", "--max-connections-per-ip", "0"])
            .args(["--presence-interval", "0"])
            .args(extra)
            .env("RUST_LOG", "natter_server=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("natter serve starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("natter serve printed its address");
            if let Some(addr) = line.unwrap().strip_prefix("listening on ") {
                break addr.trim().parse().expect("an address");
            }
        };
        Server { child, addr, log }
    }

    /// Whether any line logged so far contains `text`.
    fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }

    /// The pauses logged after failed accepts so far, in order.
    fn backoffs(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|line| line.contains("accept failed"))
            .map(|line| {
                let (_, pause) = line.rsplit_once("backoff=").expect("a logged pause");
                pause.trim().to_string()
            })
            .collect()
    }

    /// CPU time (user + system) the process has used.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // Linux reports these in USER_HZ, 100 a second.
        Duration::from_millis(ticks * 10)
    }
}

/// One client: connects, registers, reports on `served` when the server
/// answers, then stays until `leave`.
async fn client(
    addr: SocketAddr,
    i: usize,
    served: mpsc::UnboundedSender<usize>,
    mut leave: watch::Receiver<bool>,
) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut register = BytesMut::new();
    let command = Command::Register {
        name: format!("c{i}"),
        status: "waiting".into(),
    };
    encode_command(&command, Encoding::Framed, &mut register);
    stream.write_all(&register).await.expect("send REGISTER");
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(PATIENCE * 2, stream.read(&mut first)).await;
    assert!(matches!(read, Ok(Ok(1))), "client {i}: no answer: {read:?}");
    served.send(i).unwrap();
    let _ = leave.wait_for(|&go| go).await;
}

/// Waits (bounded) until `done` holds.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    let server = Server::start();
    let (tx, mut served) = mpsc::unbounded_channel();
    let (leave, told_to_leave) = watch::channel(false);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client(server.addr, i, tx.clone(), told_to_leave.clone())))
        .collect();

    // The accept loop has failed for about a second: its pause doubled
    // from 1 ms up to the 1 s cap.
    wait_until("a 1 s back-off", || {
        server.backoffs().iter().any(|pause| pause == "1s")
    })
    .await;
    let doubling: Vec<String> = (0..10)
        .map(|k| format!("{}ms", 1 << k))
        .chain(["1s".to_string()])
        .collect();
    let pauses = server.backoffs();
    assert_eq!(pauses[..doubling.len()], doubling[..], "{pauses:?}");

    // While it cannot accept, it waits rather than spins: over a second,
    // a few accept attempts and almost no CPU.
    let (cpu_before, logged_before) = (server.cpu(), pauses.len());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = server.cpu() - cpu_before;
    let attempts = server.backoffs().len() - logged_before;
    assert!(attempts <= 3, "{attempts} failed accepts in a second");
    assert!(
        cpu < Duration::from_millis(200),
        "{cpu:?} of CPU in a second"
    );

    // Some were served, the others still wait in the kernel's queue.
    let mut answered = 0;
    while served.try_recv().is_ok() {
        answered += 1;
    }
    assert!(
        answered > 0 && answered < CLIENTS,
        "{answered} of {CLIENTS} served before anyone left"
    );

    // The first ones leave, freeing descriptors: the loop, which never
    // stopped, accepts everyone who waited.
    leave.send(true).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while answered < CLIENTS {
        let next = tokio::time::timeout_at(deadline, served.recv()).await;
        assert!(
            matches!(next, Ok(Some(_))),
            "only {answered} of {CLIENTS} served after descriptors freed up"
        );
        answered += 1;
    }
    for client in clients {
        client.await.expect("client");
    }
}

/// A JSON-lines client whose receive buffer is tiny, so that the server's
/// writes to it block soon after it stops reading.
async fn small_buffer_client(addr: SocketAddr) -> process::JsonClient<std::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(addr)
        .await
        .expect("connect")
        .into_std()
        .unwrap();
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    process::JsonClient::over(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_socket_the_server_cannot_wait_on_is_cut_off_not_forgotten() {
    // A send queue longer than the kernel's largest socket buffer (4 MiB
    // by default), so that the socket fills before the queue does.
    let server = Server::start_with(&["--send-queue", "16777216"]);
    let mut sloth = small_buffer_client(server.addr).await;
    sloth.register("sloth");
    let talker_stream = std::net::TcpStream::connect(server.addr).expect("connect");
    talker_stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut flood = talker_stream.try_clone().unwrap();
    let mut drain = talker_stream.try_clone().unwrap();
    let mut talker = process::JsonClient::over(talker_stream);
    talker.register("talker");
    let conv = talker.own_conversation("sloth");
    sloth.expect("INVITATION");
    sloth.send(&format!(r#"{{"command":"JOIN","args":[{conv}]}}"#));
    sloth.send(r#"{"command":"LIST_CONVERSATIONS","args":[]}"#);
    sloth.expect("CONVERSATIONS");
    // The talker reads its own copies back, so that only the sloth's
    // socket fills.
    std::thread::spawn(move || {
        let mut chunk = [0u8; 65536];
        while matches!(drain.read(&mut chunk), Ok(n) if n > 0) {}
    });

    // Registered clients take the remaining descriptors, until the accept
    // loop fails for want of one.
    let mut fillers = Vec::new();
    while server.backoffs().is_empty() {
        assert!(fillers.len() < 100, "{FD_LIMIT} descriptors never ran out");
        let mut filler = std::net::TcpStream::connect(server.addr).expect("connect");
        let name = format!("f{}", fillers.len());
        let register = format!(r#"{{"command":"REGISTER","args":["{name}","idle"]}}"#);
        filler
            .write_all(format!("{register}\n").as_bytes())
            .unwrap();
        fillers.push(filler);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The flood (6 MB) fills the sloth's socket (it does not read), well
    // within its send queue. Waiting for the socket to drain needs a duplicate of
    // its descriptor, and there is none to be had.
    let line = format!(
        r#"{{"command":"SEND_MESSAGE","args":[{conv},"{}"]}}"#,
        "z".repeat(4000)
    );
    for _ in 0..FLOOD {
        flood.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    wait_until("the server to give up on the sloth's socket", || {
        server.logged("cannot wait for a full socket to drain")
    })
    .await;

    // So it is cut off: what reached its socket is there to read, then the
    // end, rather than a connection that never hears from the server again.
    let mut lines = 0;
    while sloth.recv().is_some() {
        lines += 1;
    }
    assert!(
        lines < FLOOD,
        "all {lines} messages arrived: the socket never filled"
    );
    drop(fillers);
}
