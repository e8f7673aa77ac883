//! # The client side: send bytes, read back the echo
//!
//! This is the course notes' `SimpleClient` (week 6, "Writing a Simple
//! Client") in Rust. It teaches the client's side of a socket's life:
//! connect, write, read, close.
//!
//! | Python (notes)                        | Rust (here)                         |
//! |---------------------------------------|-------------------------------------|
//! | `sock.connect(serverAddr, port)`      | `TcpStream::connect(address)`       |
//! | `sock.send(message)`                  | `stream.write_all(message)`         |
//! | `return sock.recv(1024)`              | `stream.read_exact(&mut echo)`      |
//! | `sys.stdin.readline()`                | `stdin.read_until(b'\n', ...)`      |
//! | `if string == "close\n": ... exit(0)` | the same check, then return         |
//!
//! One fix over the Python: a single `recv(1024)` may return only part of the
//! reply (TCP is a stream of bytes, not of messages). An echo server returns
//! exactly as many bytes as it got, so we read until we have them all.
//! Knowing where a reply ends is the problem every real protocol must solve;
//! natter's framings (crates/proto) are three answers to it.
//!
//! Usage: `echo_client [ADDRESS] [WORDS...]`
//!
//! * `ADDRESS` is `HOST:PORT` (`127.0.0.1:7777`, `localhost:7777`) or just a
//!   `PORT` on 127.0.0.1. Without arguments it is `127.0.0.1:7777`.
//! * With `WORDS`, it sends them as one line (joined by spaces, ending in a
//!   newline) and prints the echo.
//! * Without `WORDS`, it sends each line of standard input and prints each
//!   echo, until end of input or a line that is exactly `close`.
//!
//! Echoes are printed to standard output exactly as received, so binary input
//! comes back out unchanged; notes about the connection go to standard error.
//!
//! ```text
//! cargo run --example echo_client -- 7777 hello there
//! cargo run --example echo_client -- localhost:7777      # then type lines
//! printf 'one\ntwo\nclose\n' | cargo run --example echo_client -- 7777
//! ```

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;

/// Where to connect when no address is given.
const DEFAULT_ADDRESS: &str = "127.0.0.1:7777";

/// The longest piece of a line sent at once. A longer line goes out in
/// pieces of this size, so memory stays bounded whatever stdin holds.
const MAX_CHUNK: u64 = 4096;

/// The line that ends the session, as in the notes.
const CLOSE_LINE: &[u8] = b"close\n";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = server_address(args.next());
    let words: Vec<String> = args.collect();

    // Returning an error from `main` prints it and exits with status 1, so a
    // refused connection or a server that hangs up is reported, not a panic.
    let mut stream = TcpStream::connect(&address)
        .map_err(|error| anyhow::anyhow!("cannot connect to {address}: {error}"))?;
    eprintln!("connected to {address}");

    if words.is_empty() {
        echo_stdin_lines(&mut stream)?;
    } else {
        let line = format!("{}\n", words.join(" "));
        echo_one(&mut stream, line.as_bytes())?;
    }
    eprintln!("closing the connection");
    Ok(())
    // Dropping `stream` closes the socket (`self.sock.close()`).
}

/// `HOST:PORT` as given, a bare `PORT` on this machine, or the default.
fn server_address(arg: Option<String>) -> String {
    match arg {
        None => DEFAULT_ADDRESS.to_string(),
        Some(port) if port.parse::<u16>().is_ok() => format!("127.0.0.1:{port}"),
        Some(address) => address,
    }
}

/// The notes' `while 1:` loop over `sys.stdin.readline()`.
fn echo_stdin_lines(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::with_capacity(MAX_CHUNK as usize);
    loop {
        line.clear();
        // `take` caps how much one read may collect; bytes, not `String`,
        // because the input need not be UTF-8.
        let read = (&mut stdin).take(MAX_CHUNK).read_until(b'\n', &mut line)?;
        if read == 0 || line == CLOSE_LINE {
            return Ok(());
        }
        echo_one(stream, &line)?;
    }
}

/// Sends `message`, waits for the same number of bytes back, prints them.
fn echo_one(stream: &mut TcpStream, message: &[u8]) -> anyhow::Result<()> {
    stream.write_all(message)?;
    let mut echo = vec![0u8; message.len()];
    stream.read_exact(&mut echo).map_err(|error| {
        anyhow::anyhow!(
            "server stopped before echoing all {} bytes: {error}",
            message.len()
        )
    })?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&echo)?;
    stdout.flush()?;
    Ok(())
}
