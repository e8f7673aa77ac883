//! `natter serve` as an operator runs it, for the tests of its config
//! file, reload and service integration: a real process with its log
//! captured, signals sent to it, and a JSON-lines client. Every wait is
//! bounded; the process is killed when its guard drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any one step may take (the machine may be loaded).
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const NATTER: &str = env!("CARGO_BIN_EXE_natter");

/// A running `natter serve`, killed when dropped.
pub struct Serve {
    pub child: Child,
    /// The chat port.
    pub addr: SocketAddr,
    /// Everything it wrote to stderr so far.
    log: Arc<Mutex<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts `natter serve ARGS` in `cwd` with `env` (and RUST_LOG=info
    /// unless `env` says otherwise), and waits for its address. `args`
    /// must choose a loopback port.
    pub fn start(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Serve {
        let mut command = Command::new(NATTER);
        command
            .arg("serve")
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .envs(env.iter().copied());
        Serve::spawn(command)
    }

    /// Starts `command` (a `natter serve`), its output captured, and waits
    /// for its address.
    pub fn spawn(mut command: Command) -> Serve {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("natter serve starts");
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
        let Ok(addr) = rx.recv_timeout(PATIENCE) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "natter serve printed no address; log:\n{}",
                log.lock().unwrap()
            );
        };
        Serve { child, addr, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until the log holds `text` `times` times.
    pub fn await_log_count(&self, text: &str, times: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.log().matches(text).count() < times {
            assert!(
                Instant::now() < deadline,
                "not {times} x {text:?} in the log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn await_log(&self, text: &str) {
        self.await_log_count(text, 1);
    }

    /// Sends a signal (`HUP`, `TERM`...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGHUP, then waits until the reload is done (the `n`th).
    pub fn reload(&self, n: usize) {
        self.signal("HUP");
        self.await_log_count("settings reloaded", n);
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "natter serve still running; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A client speaking JSON lines over any stream (TCP, or TLS over it).
pub struct JsonClient<S: Read + Write> {
    stream: S,
    buf: Vec<u8>,
}

impl JsonClient<TcpStream> {
    pub fn connect(addr: SocketAddr) -> JsonClient<TcpStream> {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        JsonClient::over(stream)
    }
}

impl<S: Read + Write> JsonClient<S> {
    pub fn over(stream: S) -> JsonClient<S> {
        JsonClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
        self.stream.flush().unwrap();
    }

    /// The next line from the server; `None` at the end of the stream.
    pub fn recv(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(error) => panic!("no line from the server: {error}"),
            }
        }
    }

    /// Skips lines until one contains `wanted`; returns it. Bounded: the
    /// server's periodic presence lines must not keep it waiting for ever.
    pub fn expect(&mut self, wanted: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "no {wanted:?} in time");
            match self.recv() {
                Some(line) if line.contains(wanted) => return line,
                Some(_) => {}
                None => panic!("closed while waiting for {wanted:?}"),
            }
        }
    }

    pub fn register(&mut self, name: &str) {
        self.send(&format!(
            r#"{{"command":"REGISTER","args":["{name}","online"]}}"#
        ));
        self.expect("ONLINE_USERS");
    }

    /// Invites `invitee` to a new conversation and joins it: its id.
    pub fn own_conversation(&mut self, invitee: &str) -> u64 {
        self.send(&format!(r#"{{"command":"INVITE","args":["{invitee}"]}}"#));
        let invitation = self.expect(r#""command":"INVITATION""#);
        let value: serde_json::Value = serde_json::from_str(&invitation).unwrap();
        let conv = value["args"][0].as_u64().expect("a conversation id");
        self.send(&format!(r#"{{"command":"JOIN","args":[{conv}]}}"#));
        conv
    }
}

/// A conversation with one message in the service's store, and its two
/// members, who must stay connected (a conversation everyone left ends).
pub fn chat(service: &Serve) -> Vec<JsonClient<TcpStream>> {
    let mut alice = JsonClient::connect(service.addr);
    alice.register("alice");
    let mut bob = JsonClient::connect(service.addr);
    bob.register("bob");
    let conv = alice.own_conversation("bob");
    alice.send(&format!(
        r#"{{"command":"SEND_MESSAGE","args":[{conv},"kept"]}}"#
    ));
    alice.expect(r#""command":"MESSAGE""#);
    vec![alice, bob]
}
