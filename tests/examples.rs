//! The learner examples, run as a learner would run them: the echo programs
//! as separate processes talking over loopback, and the marshalling tour.
//!
//! Each test builds the examples (`cargo build --examples`), starts a server
//! example on port 0, reads the port from its `listening on ADDR` line, and
//! drives it with the `echo_client` example or with raw sockets. Every wait
//! is bounded, so a broken example fails a test instead of hanging it, and
//! every process started here is killed when its guard is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The longest any single step (start, connect, one read, one client run)
/// may take before the test gives up on it.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to watch for an echo that must not come (a queued client).
const SILENCE_WINDOW: Duration = Duration::from_millis(500);

/// The three servers; they differ in concurrency, not in what they echo.
const SERVERS: [&str; 3] = ["echo_server", "echo_threaded", "echo_tokio"];

const CONCURRENT_CLIENTS: usize = 50;
const LARGE_PAYLOAD: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Finding and running the example binaries
// ---------------------------------------------------------------------------

/// Builds the examples (debug profile) and returns the path of one.
fn example_path(name: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "natter", "--examples", "--quiet"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo can be run");
    assert!(status.success(), "building the examples failed: {status}");
    let path = target_dir().join("debug").join("examples").join(name);
    assert!(path.exists(), "no example binary at {}", path.display());
    path
}

/// `CARGO_TARGET_DIR` if set, else the target dir this test binary sits in
/// (`target/<profile>/deps/examples-<hash>`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir)
        };
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// A child process that is killed when the guard goes out of scope, even
/// when a test fails halfway.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KillOnDrop {
    /// Waits for the process to exit, killing it (and failing) after `limit`.
    fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process still running after {limit:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn is_running(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

/// A running server example and the address it reported.
struct Server {
    process: KillOnDrop,
    addr: SocketAddr,
}

impl Server {
    /// Starts `name` on port 0 and waits for its `listening on` line. The
    /// rest of its output is forwarded to this test's output, so it shows up
    /// when a test fails (and never fills the pipe and blocks the server).
    fn start(name: &str) -> Server {
        let child = Command::new(example_path(name))
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let mut process = KillOnDrop(child);
        let stdout = process.0.stdout.take().expect("piped stdout");
        let (first_line, rx) = mpsc::channel();
        let label = name.to_string();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = first_line.send(line);
            }
            for line in lines.map_while(Result::ok) {
                eprintln!("[{label}] {line}");
            }
        });
        let line = rx
            .recv_timeout(STEP_TIMEOUT)
            .unwrap_or_else(|_| panic!("{name} printed no `listening on` line"));
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("{name}'s first line is not `listening on ADDR`: {line:?}"));
        Server { process, addr }
    }

    fn assert_still_running(&mut self) {
        assert!(self.process.is_running(), "the server process exited");
    }
}

/// What an `echo_client` run printed, and how it exited.
struct ClientRun {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs the `echo_client` example with `args`, feeding it `stdin`.
fn run_client(args: &[&str], stdin: &[u8]) -> ClientRun {
    let child = Command::new(example_path("echo_client"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start echo_client");
    let mut process = KillOnDrop(child);
    let mut input = process.0.stdin.take().expect("piped stdin");
    let input_bytes = stdin.to_vec();
    // Writing stdin, reading stdout and reading stderr each on their own
    // thread, so no pipe fills up while we wait on another.
    thread::spawn(move || {
        let _ = input.write_all(&input_bytes);
    });
    let stdout = read_all_in_background(process.0.stdout.take().expect("piped stdout"));
    let stderr = read_all_in_background(process.0.stderr.take().expect("piped stderr"));
    let status = process.wait_for_exit(STEP_TIMEOUT);
    ClientRun {
        status,
        stdout: stdout.recv_timeout(STEP_TIMEOUT).expect("client stdout"),
        stderr: String::from_utf8_lossy(&stderr.recv_timeout(STEP_TIMEOUT).expect("client stderr"))
            .into_owned(),
    }
}

fn read_all_in_background(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

// ---------------------------------------------------------------------------
// Raw socket clients
// ---------------------------------------------------------------------------

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, STEP_TIMEOUT).expect("connect to the server");
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(STEP_TIMEOUT))
        .expect("write timeout");
    stream
}

/// Sends `message` and reads back exactly as many bytes.
fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).expect("send");
    let mut echo = vec![0; message.len()];
    stream.read_exact(&mut echo).expect("echo arrives in time");
    echo
}

/// Sends all of `payload` on one thread while reading on this one (a large
/// payload would otherwise deadlock: both sides blocked writing), then
/// closes the sending side and returns everything the server sent back.
fn send_all_and_read_echo(stream: TcpStream, payload: Vec<u8>) -> Vec<u8> {
    let mut writer = stream.try_clone().expect("clone socket");
    let sender = thread::spawn(move || {
        writer.write_all(&payload).expect("send payload");
        writer
            .shutdown(Shutdown::Write)
            .expect("close sending side");
    });
    let mut reader = stream;
    let mut echo = Vec::new();
    reader
        .read_to_end(&mut echo)
        .expect("read echo until the server closes");
    sender.join().expect("sender thread");
    echo
}

/// Bytes that differ for every client: its number in text, then every byte
/// value (so never valid UTF-8) in an order that depends on the client.
fn distinct_payload(client: usize, len: usize) -> Vec<u8> {
    let mut payload = format!("client {client}:").into_bytes();
    let bytes = (0..=255u8)
        .cycle()
        .map(|byte| byte.wrapping_mul(31).wrapping_add(client as u8));
    payload.extend(bytes.take(len.saturating_sub(payload.len())));
    payload
}

/// A port nothing listens on (just released by us).
fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------------------
// The client example against each server example
// ---------------------------------------------------------------------------

#[test]
fn client_prints_the_echo_of_its_arguments_from_every_server() {
    for name in SERVERS {
        let server = Server::start(name);
        let addr = server.addr.to_string();
        let run = run_client(&[&addr, "hello", "there,", "world"], b"");
        assert!(
            run.status.success(),
            "{name}: client failed: {}",
            run.stderr
        );
        assert_eq!(run.stdout, b"hello there, world\n", "{name}");
    }
}

#[test]
fn client_accepts_a_bare_port_for_localhost() {
    let server = Server::start("echo_tokio");
    let port = server.addr.port().to_string();
    let run = run_client(&[&port, "ping"], b"");
    assert!(run.status.success(), "client failed: {}", run.stderr);
    assert_eq!(run.stdout, b"ping\n");
}

#[test]
fn client_echoes_stdin_lines_until_a_close_line() {
    for name in SERVERS {
        let server = Server::start(name);
        let addr = server.addr.to_string();
        let run = run_client(&[&addr], b"one\ntwo words\nclose\nnever sent\n");
        assert!(
            run.status.success(),
            "{name}: client failed: {}",
            run.stderr
        );
        assert_eq!(run.stdout, b"one\ntwo words\n", "{name}");
    }
}

#[test]
fn client_echoes_binary_and_long_stdin_lines_exactly() {
    let server = Server::start("echo_threaded");
    let mut input = b"caf\xc3\xa9\n\x00\xff\xfe not utf-8\n".to_vec();
    input.extend(
        distinct_payload(7, 10_000)
            .iter()
            .filter(|&&byte| byte != b'\n'),
    );
    input.extend(b"\nlast line without newline");
    let run = run_client(&[&server.addr.to_string()], &input);
    assert!(run.status.success(), "client failed: {}", run.stderr);
    assert_eq!(run.stdout, input);
}

#[test]
fn client_reports_a_refused_connection_instead_of_panicking() {
    let addr = format!("127.0.0.1:{}", unused_port());
    let run = run_client(&[&addr, "anyone?"], b"");
    assert!(
        !run.status.success(),
        "client claimed success with no server"
    );
    assert!(
        run.stderr.contains("cannot connect"),
        "stderr: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "stderr: {}", run.stderr);
}

// ---------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------

/// Opens all clients first and gets one echo on each while all are still
/// connected (which a one-at-a-time server cannot do), then lets every
/// client send its own payload concurrently and checks it gets exactly its
/// own bytes back. Every tenth client sends 1 MiB.
fn serves_concurrent_clients(name: &str) {
    let mut server = Server::start(name);
    let mut streams = Vec::new();
    for client in 0..CONCURRENT_CLIENTS {
        let mut stream = connect(server.addr);
        let hello = format!("hello from {client}\n").into_bytes();
        assert_eq!(
            round_trip(&mut stream, &hello),
            hello,
            "{name}: client {client}"
        );
        streams.push(stream);
    }
    let clients: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(client, stream)| {
            let len = if client % 10 == 0 {
                LARGE_PAYLOAD
            } else {
                1000 + client * 37
            };
            thread::spawn(move || {
                let payload = distinct_payload(client, len);
                let echo = send_all_and_read_echo(stream, payload.clone());
                (client, echo == payload, echo.len(), payload.len())
            })
        })
        .collect();
    for handle in clients {
        let (client, same, got, sent) = handle.join().expect("client thread");
        assert!(
            same,
            "{name}: client {client} sent {sent} bytes, got {got} different bytes back"
        );
    }
    server.assert_still_running();
}

#[test]
fn threaded_server_echoes_fifty_concurrent_clients_their_own_bytes() {
    serves_concurrent_clients("echo_threaded");
}

#[test]
fn tokio_server_echoes_fifty_concurrent_clients_their_own_bytes() {
    serves_concurrent_clients("echo_tokio");
}

#[test]
fn one_at_a_time_server_serves_a_waiting_client_after_the_first_leaves() {
    let server = Server::start("echo_server");
    let mut first = connect(server.addr);
    assert_eq!(round_trip(&mut first, b"first\n"), b"first\n");

    // The second client's connection is queued by the OS, but nobody reads
    // from it while the first client is connected.
    let mut second = connect(server.addr);
    second.write_all(b"second\n").expect("send");
    second
        .set_read_timeout(Some(SILENCE_WINDOW))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    let early = second.read(&mut byte);
    assert!(
        early.is_err(),
        "second client was served while the first was connected: {early:?}"
    );

    drop(first);
    second
        .set_read_timeout(Some(STEP_TIMEOUT))
        .expect("read timeout");
    let mut echo = [0u8; 7];
    second
        .read_exact(&mut echo)
        .expect("second client served once the first left");
    assert_eq!(&echo, b"second\n");
}

#[test]
fn one_at_a_time_server_echoes_clients_in_sequence_including_a_large_binary_one() {
    let mut server = Server::start("echo_server");
    for client in 0..5 {
        let len = if client == 2 {
            LARGE_PAYLOAD
        } else {
            100 + client
        };
        let payload = distinct_payload(client, len);
        let echo = send_all_and_read_echo(connect(server.addr), payload.clone());
        assert!(
            echo == payload,
            "client {client}: {} bytes back for {len}",
            echo.len()
        );
    }
    server.assert_still_running();
}

// ---------------------------------------------------------------------------
// Misbehaving clients
// ---------------------------------------------------------------------------

/// A client that connects and closes, one that hangs up mid-line, and one
/// that sends a lot and leaves without reading the echo: afterwards the
/// server is still up and still serves the next client.
#[test]
fn misbehaving_clients_do_not_break_any_server() {
    for name in SERVERS {
        let mut server = Server::start(name);

        drop(connect(server.addr));

        let mut half_a_line = connect(server.addr);
        half_a_line
            .write_all(b"this line never ends")
            .expect("send");
        drop(half_a_line);

        let mut does_not_read = connect(server.addr);
        does_not_read
            .write_all(&distinct_payload(1, 50_000))
            .expect("send");
        drop(does_not_read);

        let addr = server.addr.to_string();
        let run = run_client(&[&addr, "still", "there?"], b"");
        assert!(
            run.status.success(),
            "{name}: later client failed: {}",
            run.stderr
        );
        assert_eq!(run.stdout, b"still there?\n", "{name}");
        server.assert_still_running();
    }
}

// ---------------------------------------------------------------------------
// The marshalling example
// ---------------------------------------------------------------------------

/// Runs `examples/marshalling.rs` and returns what it printed.
fn run_marshalling() -> String {
    let output = Command::new(example_path("marshalling"))
        .output()
        .expect("the marshalling example runs");
    assert!(
        output.status.success(),
        "marshalling failed: {}",
        output.status
    );
    String::from_utf8(output.stdout).expect("the example prints text")
}

#[test]
fn marshalling_round_trips_the_notes_dictionary() {
    let printed = run_marshalling();
    assert!(
        printed.contains("Same value as was sent: true"),
        "{printed}"
    );
    assert!(printed.contains("command = \"HELLO\""), "{printed}");
}

#[test]
fn marshalling_hex_loads_in_python_as_the_notes_dictionary() {
    let printed = run_marshalling();
    let hex = printed
        .split("bytes.fromhex(\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the example prints a Python line with the hex");
    let check = format!(
        "import pickle; d = pickle.loads(bytes.fromhex('{hex}')); \
         assert d == {{'name': 'keith', 'location': (2.425, 1.783, 0.892), \
         'info': {{'email': 'keith@cc', 'phone': 56783}}, \
         'buddies': ['ralph', 'fred', 'betty']}}, d"
    );
    let status = Command::new("python3")
        .args(["-c", &check])
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "Python did not read back the notes' dictionary"
    );
}

#[test]
fn marshalling_shows_what_is_refused_and_why() {
    let printed = run_marshalling();
    for reason in [
        "GLOBAL (0x63) is not allowed",
        "nested more than",
        "holds more than",
    ] {
        assert!(
            printed.contains(reason),
            "missing {reason:?} in:\n{printed}"
        );
    }
}
