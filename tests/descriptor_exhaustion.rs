//! Out of file descriptors, the accept loop backs off instead of spinning,
//! and never stops. A real `natter serve` runs with its descriptor limit
//! lowered by the shell's `ulimit -n`; more clients connect than it can
//! accept (the kernel completes their handshakes and queues them). Checked:
//! the failed accepts are logged with a pause doubling from 1 ms to 1 s,
//! the process burns almost no CPU while it cannot accept, and once the
//! first clients leave, every client that waited in the queue is served.

use std::io::{BufRead, BufReader};
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
