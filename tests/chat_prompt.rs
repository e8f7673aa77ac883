//! `natter chat` without `--name`: it asks for the name first and connects
//! only once it has one, so a slow typist is never cut off by the server's
//! registration deadline.
//!
//! The "server" here is a bare listener on loopback that records what the
//! client sends; the client never gets an answer, so it never reaches the
//! full-screen UI (which needs a terminal), and it is killed at the end.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use natter_proto::wire::Direction;
use natter_proto::{Command as Cmd, Decoder, Encoding, Limits};

const PATIENCE: Duration = Duration::from_secs(10);

/// Kills the client however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `done` every 10 ms until it holds; false after `within`.
fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    done()
}

#[test]
fn the_terminal_client_asks_for_the_name_before_it_connects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut chat = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_natter"))
            .args(["chat", "--server", &addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("natter chat starts"),
    );
    let prompt = Arc::new(Mutex::new(String::new()));
    let mut stderr = chat.0.stderr.take().unwrap();
    let sink = prompt.clone();
    thread::spawn(move || {
        let mut byte = [0u8; 1];
        while let Ok(1) = stderr.read(&mut byte) {
            sink.lock().unwrap().push(byte[0] as char);
        }
    });

    // The question comes, and while nobody answers, nothing connects.
    let asked = eventually(PATIENCE, || prompt.lock().unwrap().contains("Your name: "));
    assert!(asked, "no prompt; stderr: {:?}", prompt.lock().unwrap());
    thread::sleep(Duration::from_millis(300));
    assert!(
        listener.accept().is_err(),
        "connected before the name was typed"
    );

    // The name typed, it connects and registers under it.
    let mut stdin = chat.0.stdin.take().unwrap();
    stdin.write_all(b"alice\n").unwrap();
    stdin.flush().unwrap();
    let mut accepted = None;
    let connected = eventually(PATIENCE, || {
        accepted = listener.accept().ok();
        accepted.is_some()
    });
    assert!(connected, "never connected after the name was typed");
    let (mut stream, _) = accepted.unwrap();
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut decoder = Decoder::new(Encoding::Framed, Direction::ToServer, Limits::default());
    let mut buf = BytesMut::new();
    let register = loop {
        match decoder.decode_command(&mut buf).expect("valid commands") {
            Some(Ok(Cmd::Caps(_))) => {}
            Some(Ok(command)) => break command,
            Some(Err(error)) => panic!("invalid command: {error}"),
            None => {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).expect("the client sends REGISTER");
                assert!(n > 0, "closed before REGISTER");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    };
    assert!(
        matches!(&register, Cmd::Register { name, .. } if name == "alice"),
        "{register:?}"
    );
}
