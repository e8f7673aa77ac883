//! # Step 2: an echo server with one thread per client
//!
//! This is the course notes' `MTServer` and `Handler` (week 6,
//! "Multi-threaded Servers" and "More Tips") in Rust with `std::thread`.
//! `echo_server` makes every client wait while one is connected; here
//!
//! * one thread (`main`) waits for clients to appear, and
//! * each client gets its own thread, which ends when that client is done,
//!
//! so a slow or silent client only holds up its own thread.
//!
//! | Python (notes)                                  | Rust (here)                         |
//! |-------------------------------------------------|-------------------------------------|
//! | `while 1: requestSock, _ = self.sock.accept()`  | `for stream in listener.incoming()` |
//! | `Handler(requestSock)`                          | `spawn_handler(stream)`             |
//! | `threading.Thread(target=self.handle).start()`  | `thread::Builder::new().spawn(...)` |
//! | `def handle(self): while 1: recv / send`        | `echo_until_closed(&mut stream)`    |
//!
//! Rust adds one thing the Python leaves implicit: the `move` closure hands
//! the socket to the new thread, so exactly one thread owns each connection
//! and the compiler rejects any other thread touching it.
//!
//! What it does not fix: a thread costs memory (its stack) and the OS caps
//! how many you may have, so thousands of idle clients get expensive.
//! `echo_tokio` answers that with tasks.
//!
//! ```text
//! cargo run --example echo_threaded -- 7777
//! cargo run --example echo_client -- 7777 hello       # from several terminals
//! ```
//!
//! Usage: `echo_threaded [PORT] [ADDRESS]`, default port 7777 on 127.0.0.1.
//! It prints `listening on ADDRESS:PORT` once bound (port 0 picks a free one).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;

/// The port the notes use when none is given.
const DEFAULT_PORT: u16 = 7777;

/// Bytes read from a client at once, like the notes' `recv(1024)`: each
/// client costs this buffer plus its thread, however much it sends.
const BUFFER_SIZE: usize = 1024;

/// A client thread only needs room for its buffer and a few calls, far less
/// than the default 2 MiB stack, so we ask for less.
const HANDLER_STACK_SIZE: usize = 64 * 1024;

fn main() {
    let addr = match listen_address() {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("usage: echo_threaded [PORT] [ADDRESS]: {message}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {addr}: {error}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(bound) => println!("listening on {bound}"),
        Err(error) => eprintln!("listening, but cannot tell where: {error}"),
    }
    accept_forever(&listener);
}

/// `[PORT] [ADDRESS]` from the command line, like the notes' `sys.argv[1]`.
fn listen_address() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let port = match args.next() {
        Some(text) => text.parse().map_err(|_| format!("bad port {text:?}"))?,
        None => DEFAULT_PORT,
    };
    let ip = match args.next() {
        Some(text) => text.parse().map_err(|_| format!("bad address {text:?}"))?,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    Ok(SocketAddr::new(ip, port))
}

/// The thread that "hangs around waiting for clients to appear": it only
/// accepts and hands off, so it is back at `accept` almost at once.
fn accept_forever(listener: &TcpListener) {
    for connection in listener.incoming() {
        match connection {
            Ok(stream) => spawn_handler(stream),
            Err(error) => eprintln!("accept failed: {error}"),
        }
    }
}

/// The notes' `Handler`: a new thread that owns `stream` until the client
/// leaves. If the OS will not give us a thread, only this client is dropped.
fn spawn_handler(stream: TcpStream) {
    let peer = describe_peer(&stream);
    let spawned = thread::Builder::new()
        .name(format!("client {peer}"))
        .stack_size(HANDLER_STACK_SIZE)
        .spawn(move || serve_client(stream, &peer));
    // We never join the thread: it reports its own end, then simply exits.
    if let Err(error) = spawned {
        eprintln!("cannot start a thread for a client: {error}");
    }
}

/// Runs on the client's own thread; a failure here ends only this thread.
fn serve_client(mut stream: TcpStream, peer: &str) {
    println!("accepted connection from {peer}");
    match echo_until_closed(&mut stream) {
        Ok(bytes) => println!("peer {peer} closed connection after {bytes} bytes"),
        Err(error) => eprintln!("connection with {peer} failed: {error}"),
    }
}

/// `handle()`'s loop: send back whatever arrives until the peer closes.
/// Returns how many bytes were echoed.
fn echo_until_closed(stream: &mut TcpStream) -> std::io::Result<u64> {
    let mut buffer = [0u8; BUFFER_SIZE];
    let mut echoed = 0;
    loop {
        let received = stream.read(&mut buffer)?;
        if received == 0 {
            return Ok(echoed);
        }
        stream.write_all(&buffer[..received])?;
        echoed += received as u64;
    }
}

/// `getpeername()` from the notes' "Extra Useful Tricks", for log lines.
fn describe_peer(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map_or_else(|_| "an unknown peer".to_string(), |addr| addr.to_string())
}
