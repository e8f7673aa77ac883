//! `natter serve` as an operator runs it: a real process, its log on a pipe
//! (not a terminal), its exit status. Clients speak JSON lines over
//! loopback; every wait is bounded and the process is killed when its guard
//! drops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any one step may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// A running `natter serve`, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Everything it wrote to stderr so far.
    log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `natter serve --ephemeral --listen 127.0.0.1:0 --no-web` plus `args`, with
    /// `env` set, and waits for its address.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
            .args([
                "serve",
                "--ephemeral",
                "--listen",
                "127.0.0.1:0",
                "--no-web",
            ])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("natter serve starts");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = rx
            .recv_timeout(PATIENCE)
            .expect("natter serve printed its address");
        Server { child, addr, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until the log holds `text`.
    fn await_log(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) for the process to exit on its own.
    fn wait_for_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "natter serve still running after {within:?}; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A client speaking JSON lines.
struct JsonClient {
    stream: TcpStream,
    lines: BufReader<TcpStream>,
}

impl JsonClient {
    fn connect(addr: SocketAddr) -> JsonClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let lines = BufReader::new(stream.try_clone().unwrap());
        JsonClient { stream, lines }
    }

    fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    /// The next line from the server; `None` at the end of the stream.
    fn recv(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.lines.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end().to_string()),
            Err(error) => panic!("no line from the server: {error}"),
        }
    }

    /// Skips lines until one contains `wanted`; returns it.
    fn expect(&mut self, wanted: &str) -> String {
        loop {
            match self.recv() {
                Some(line) if line.contains(wanted) => return line,
                Some(_) => {}
                None => panic!("closed while waiting for {wanted:?}"),
            }
        }
    }

    fn register(addr: SocketAddr, name: &str) -> JsonClient {
        let mut client = JsonClient::connect(addr);
        client.send(&format!(
            r#"{{"command":"REGISTER","args":["{name}","online"]}}"#
        ));
        client.expect("ONLINE_USERS");
        client
    }
}

#[test]
fn log_lines_about_one_clients_bad_input_are_rate_limited() {
    let server = Server::start(&["--rate-limit", "0"], &[]);
    let mut client = JsonClient::register(server.addr, "garbage");
    // 200 well-formed JSON lines that are not messages: ERROR each, and the
    // connection stays.
    for _ in 0..200 {
        client.send(r#"{"no":"command"}"#);
    }
    for _ in 0..200 {
        client.expect(r#""command":"ERROR""#);
    }
    // The server logs the disconnect after every line about the ERRORs.
    client.send(r#"{"command":"GOODBYE"}"#);
    assert_eq!(client.recv(), None);
    server.await_log("disconnect");
    let log = server.log();
    let logged = log.matches("rejected input").count();
    assert!(
        (1..=natter_server::log_limit::LOG_BURST as usize).contains(&logged),
        "{logged} lines about one client's bad input:\n{log}"
    );
}
#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let server = Server::start(&[], &[]);
    let mut client = JsonClient::register(server.addr, "plain");
    client.send(r#"{"command":"GOODBYE"}"#);
    assert_eq!(client.recv(), None);
    server.await_log("disconnect");
    let log = server.log();
    assert!(!log.contains('\x1b'), "escape codes in the log:\n{log:?}");
}

/// If the hub dies (here through the test-only hook, as a bug would make
/// it), the process must not live on half-dead: every client is told, and
/// the process exits at once with a non-zero status, for systemd or any
/// supervisor to start a fresh one.
#[test]
fn a_hub_that_panics_takes_the_process_down_with_a_non_zero_status() {
    let hook = natter_server::supervise::TEST_PANIC_ENV;
    let mut server = Server::start(&[], &[(hook, "1")]);
    let mut alice = JsonClient::register(server.addr, "alice");
    let mut bob = JsonClient::register(server.addr, "bob");
    let signal = Command::new("kill")
        .args(["-USR1", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(signal.success());
    let failure = natter_server::supervise::HUB_FAILED_MESSAGE;
    for client in [&mut alice, &mut bob] {
        let error = client.expect(r#""command":"ERROR""#);
        assert!(error.contains(failure), "{error}");
        assert_eq!(client.recv(), None, "closed after the ERROR");
    }
    let status = server.wait_for_exit(Duration::from_secs(3));
    assert!(!status.success(), "exited with {status}");
    server.await_log("the hub panicked");
}
