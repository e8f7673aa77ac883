//! # Step 3: an echo server with one tokio task per client
//!
//! `echo_threaded` again, but each client gets a tokio *task* instead of an
//! OS thread. A task is a small state machine that the runtime parks while
//! it waits for the network, so a handful of threads can serve many
//! thousands of mostly idle clients. natter's server is built this way, and
//! the comments marked "natter:" show which part of it grew from which line.
//!
//! | Python (notes)                                  | Rust (here)                          |
//! |-------------------------------------------------|--------------------------------------|
//! | `while 1: requestSock, _ = self.sock.accept()`  | `accept_loop`: `listener.accept()`   |
//! | `Handler(requestSock)` starts a thread          | `tokio::spawn(serve_client(...))`    |
//! | `recv(1024)` / `send(input)` in `handle()`      | `read(&mut buffer)` / `write_all`    |
//!
//! What it adds over `echo_threaded`:
//! * `.await` marks each place a task may wait (accept, read, write);
//! * a cap on clients served at once, so an open port cannot be used to
//!   exhaust memory;
//! * a clean stop on Ctrl-C.
//!
//! natter's server adds one part with no counterpart here, the hub: a single
//! task that owns the chat state and that connection tasks talk to through
//! bounded channels. Echo clients share nothing, so they need no hub.
//!
//! ```text
//! cargo run --example echo_tokio -- 7777
//! cargo run --example echo_client -- 7777 hello
//! ```
//!
//! Usage: `echo_tokio [PORT] [ADDRESS]`, default port 7777 on 127.0.0.1.
//! It prints `listening on ADDRESS:PORT` once bound (port 0 picks a free one).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The port the notes use when none is given.
const DEFAULT_PORT: u16 = 7777;

/// Bytes read from a client at once. natter: every buffer is bounded like
/// this one; the frame decoders refuse a frame over the size limit instead of
/// growing to hold it.
const BUFFER_SIZE: usize = 1024;

/// At most this many clients are served at once; the next one waits in the
/// OS listen queue until someone leaves. natter: the listener's connection
/// limit (the same semaphore pattern as tokio's mini-redis).
const MAX_CLIENTS: usize = 1024;

/// How long to pause after a failed `accept` (e.g. out of file descriptors),
/// so the loop does not spin while the cause persists.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() {
    let addr = match listen_address() {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("usage: echo_tokio [PORT] [ADDRESS]: {message}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(addr).await {
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
    // natter: the shutdown module generalises this: on a signal the accept
    // loop stops and every connection is told to say goodbye.
    tokio::select! {
        () = accept_loop(listener) => {}
        _ = tokio::signal::ctrl_c() => println!("shutting down"),
    }
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

/// natter: the listener. Wait for a free slot, accept, hand the socket to a
/// new task, repeat; it never reads from a client itself, so one slow client
/// cannot hold up the others' arrival.
async fn accept_loop(listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        // The permit travels into the task and frees the slot when dropped.
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return; // only happens if the semaphore is closed, which we never do
        };
        match listener.accept().await {
            Ok((socket, peer)) => {
                tokio::spawn(serve_client(socket, peer, permit));
            }
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// natter: the connection task. One per client; it owns the socket, and when
/// it ends (for any reason) only this client is affected.
async fn serve_client(mut socket: TcpStream, peer: SocketAddr, _slot: OwnedSemaphorePermit) {
    println!("accepted connection from {peer}");
    match echo_until_closed(&mut socket).await {
        Ok(bytes) => println!("peer {peer} closed connection after {bytes} bytes"),
        Err(error) => eprintln!("connection with {peer} failed: {error}"),
    }
}

/// Read some, write it all back, until the peer closes. Returns the bytes
/// echoed.
///
/// Reading and writing in turn gives backpressure for free: if the client
/// stops reading, `write_all` waits, so we stop reading too and memory stays
/// at one buffer. natter's connections cannot simply wait, because other
/// users' messages also flow to each client, so each gets a bounded outbox
/// queue, and a client that lets it fill up is disconnected (protocol.md).
async fn echo_until_closed(socket: &mut TcpStream) -> std::io::Result<u64> {
    let mut buffer = [0u8; BUFFER_SIZE];
    let mut echoed = 0;
    loop {
        let received = socket.read(&mut buffer).await?;
        if received == 0 {
            return Ok(echoed);
        }
        socket.write_all(&buffer[..received]).await?;
        echoed += received as u64;
    }
}
