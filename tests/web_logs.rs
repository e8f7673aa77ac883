//! No password or session token in the server's log, whatever the log
//! level: `natter serve` as an operator runs it (log on a pipe, here at
//! `RUST_LOG=trace`, the most it says), then a sign-up, a wrong password,
//! a sign-in, a WebSocket with the session cookie and a sign-out over the
//! web listener, and the log searched for the secrets used.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(20);
const PASSWORD: &str = "correct horse 0x5ec4e7";
const WRONG: &str = "wrong horse 0x5ec4e7";

struct Server {
    child: Child,
    web: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
            .args([
                "serve",
                "--ephemeral",
                "--listen",
                "127.0.0.1:0",
                "--web",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "trace")
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
                let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                sink.lock().unwrap().push_str(&text);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("web on http://") {
                    let _ = tx.send(url.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let web = rx.recv_timeout(PATIENCE).expect("the web address");
        Server { child, web, log }
    }

    /// One request; the status line and the headers and body as text.
    fn request(&self, method: &str, path: &str, headers: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(self.web).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let web = self.web;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {web}\r\nOrigin: http://{web}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{headers}\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    }
}

fn form(name: &str, password: &str) -> String {
    format!("name={name}&password={}", password.replace(' ', "+"))
}

#[test]
fn no_password_or_token_reaches_the_log() {
    let server = Server::start();
    let up = server.request("POST", "/signup", "", &form("zed", PASSWORD));
    assert!(up.starts_with("HTTP/1.1 200"), "{up}");
    let wrong = server.request("POST", "/signin", "", &form("zed", WRONG));
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let signed_in = server.request("POST", "/signin", "", &form("zed", PASSWORD));
    let cookie = signed_in
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let token = cookie.split_once(':').unwrap().1.to_string();
    assert!(token.starts_with("nt1."), "{cookie}");

    // The WebSocket upgrade with the cookie (the handshake is enough: the
    // cookie is checked before it is answered).
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let upgrade = format!(
        "Cookie: {cookie}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
    );
    let mut stream = TcpStream::connect(server.web).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let web = server.web;
    write!(
        stream,
        "GET /ws HTTP/1.1\r\nHost: {web}\r\nOrigin: http://{web}\r\n{upgrade}\r\n"
    )
    .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 101");
    drop(stream);

    let out = server.request("POST", "/signout", &format!("Cookie: {cookie}\r\n"), "");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // The log said something about each step, and nothing secret.
    let deadline = Instant::now() + PATIENCE;
    while !server.log.lock().unwrap().contains("web sign-out") {
        assert!(Instant::now() < deadline, "no sign-out in the log");
        thread::sleep(Duration::from_millis(10));
    }
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("web sign-in"), "{log}");
    let hex = &token["nt1.".len()..];
    for secret in [
        PASSWORD,
        WRONG,
        "correct+horse",
        "wrong+horse",
        "0x5ec4e7",
        hex,
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
}
