//! # Step 1: an echo server that serves one client at a time
//!
//! This is the course notes' `SimpleServer` (week 6, "Writing a Simple
//! Server") in Rust, using only the standard library's blocking sockets.
//! It teaches the server's side of a socket's life:
//!
//! | Python (notes)                       | Rust (here)                        |
//! |--------------------------------------|------------------------------------|
//! | `socket.socket(...)`, `bind`, `listen` | `TcpListener::bind(addr)`        |
//! | `SO_REUSEADDR`                       | set for you by Rust on Unix        |
//! | `requestSock, peer = sock.accept()`  | `listener.accept()`                |
//! | `input = requestSock.recv(1024)`     | `stream.read(&mut buffer)`         |
//! | `if not input: break`                | `Ok(0)` means the peer closed      |
//! | `requestSock.send(input)`            | `stream.write_all(&buffer[..n])`   |
//!
//! Two fixes over the Python: `send` may send only part of its input, so we
//! use `write_all`; and a network error ends that one connection with a
//! printed message, never the server ("defensive programming" in the notes).
//!
//! The lesson it sets up: while one client is connected, every other client
//! waits in the listen queue, even a client that connects and says nothing.
//! `echo_threaded` fixes that.
//!
//! Run it, then talk to it with the client (or `nc 127.0.0.1 7777`):
//!
//! ```text
//! cargo run --example echo_server -- 7777            # 127.0.0.1:7777
//! cargo run --example echo_server -- 0               # the OS picks a free port
//! cargo run --example echo_server -- 7777 0.0.0.0    # reachable from other hosts
//! cargo run --example echo_client -- 127.0.0.1:7777 hello there
//! ```
//!
//! Usage: `echo_server [PORT] [ADDRESS]`, default port 7777 on 127.0.0.1
//! (this machine only, which is the safe default). Once bound it prints
//! `listening on ADDRESS:PORT`, with the real port when you asked for 0.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};

/// The port the notes use when none is given.
const DEFAULT_PORT: u16 = 7777;

/// Bytes read from a client at once, like the notes' `recv(1024)`. The buffer
/// is reused for the whole connection, so a client costs at most this much
/// memory however much it sends, and binary data is echoed byte for byte.
const BUFFER_SIZE: usize = 1024;

fn main() {
    let addr = match listen_address() {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("usage: echo_server [PORT] [ADDRESS]: {message}");
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
    // Tests and scripts read this line to learn the port (useful with port 0).
    match listener.local_addr() {
        Ok(bound) => println!("listening on {bound}"),
        Err(error) => eprintln!("listening, but cannot tell where: {error}"),
    }
    serve_one_at_a_time(&listener);
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

/// The notes' outer `while 1:` loop: take the next client, serve it until it
/// leaves, repeat. Nobody else is served in the meantime.
fn serve_one_at_a_time(listener: &TcpListener) {
    for connection in listener.incoming() {
        match connection {
            Ok(stream) => serve_client(stream),
            // A failed accept (say, the client already gave up) only loses
            // that client; keep listening for the next.
            Err(error) => eprintln!("accept failed: {error}"),
        }
    }
}

/// Serves one client and reports how its connection ended.
fn serve_client(mut stream: TcpStream) {
    let peer = describe_peer(&stream);
    println!("accepted connection from {peer}");
    match echo_until_closed(&mut stream) {
        Ok(bytes) => println!("peer {peer} closed connection after {bytes} bytes"),
        Err(error) => eprintln!("connection with {peer} failed: {error}"),
    }
    // Dropping `stream` here closes the socket (`requestSock.close()`).
}

/// The notes' inner `while 1:` loop: send back whatever arrives until the
/// peer closes its side. Returns how many bytes were echoed.
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
