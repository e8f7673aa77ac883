//! A test client that speaks any of the three encodings over a real socket,
//! and a server started in-process on port 0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use natter_proto::codec::{encode_command, encode_raw};
use natter_proto::wire::{Direction, RawMessage};
use natter_proto::{Command, Decoder, Encoding, Limits, ServerMessage};
use natter_server::{Config, ServerHandle};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does NOT happen.
pub const QUIET: Duration = Duration::from_millis(200);

pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        presence_coalesce: Duration::from_millis(10),
        close_linger: Duration::from_millis(500),
        // The suites open many connections from one address and send fast.
        rate_limit: 0,
        max_connections_per_ip: 0,
        ..Config::default()
    }
}

pub async fn start() -> ServerHandle {
    start_with(test_config()).await
}

pub async fn start_with(config: Config) -> ServerHandle {
    natter_server::spawn(config).await.expect("server starts")
}

/// What a read produced.
#[derive(Debug)]
pub enum Received {
    Message(ServerMessage),
    /// The server closed the connection.
    Closed,
}

/// The client's end: a plain socket, or TLS over one. Derefs to the socket
/// for tests that reach under the protocol (linger, peer address).
pub enum Wire {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl std::ops::Deref for Wire {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        match self {
            Wire::Plain(stream) => stream,
            Wire::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl tokio::io::AsyncRead for Wire {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Wire::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Wire {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Wire::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Wire::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Wire::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A test CA, a server config with a certificate it issued for this
/// machine, and a client connector that trusts the CA (and nothing else).
pub struct TestTls {
    pub ca: natter_server::certs::Authority,
    pub server: std::sync::Arc<rustls::ServerConfig>,
    pub connector: tokio_rustls::TlsConnector,
}

impl TestTls {
    pub fn new() -> TestTls {
        let ca = natter_server::certs::Authority::new("natter test CA").unwrap();
        let leaf = ca.issue(&natter_server::certs::LOCAL_NAMES).unwrap();
        let server = natter_server::tls::server_config_from_pem(&leaf.cert, &leaf.key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(natter_server::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestTls {
            ca,
            server: std::sync::Arc::new(server),
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)),
        }
    }

    /// The usual test config, with TLS on.
    pub fn config(&self) -> Config {
        Config {
            tls: Some(self.server.clone()),
            ..test_config()
        }
    }
}

pub struct TestClient {
    pub stream: Wire,
    pub encoding: Encoding,
    decoder: Decoder,
    buf: BytesMut,
    /// Name given at registration.
    pub name: String,
}

impl TestClient {
    pub async fn connect(addr: SocketAddr, encoding: Encoding) -> TestClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        TestClient::over(stream, encoding)
    }

    /// Connects over TLS, verifying the server as "localhost".
    pub async fn connect_tls(addr: SocketAddr, encoding: Encoding, tls: &TestTls) -> TestClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls_stream = tls
            .connector
            .connect(name, stream)
            .await
            .expect("TLS handshake");
        TestClient::over_wire(Wire::Tls(Box::new(tls_stream)), encoding)
    }

    /// Connects over TLS, registers and waits for the first ONLINE_USERS.
    pub async fn registered_tls(
        addr: SocketAddr,
        encoding: Encoding,
        name: &str,
        tls: &TestTls,
    ) -> TestClient {
        let mut client = TestClient::connect_tls(addr, encoding, tls).await;
        client.register(name, "online").await;
        client
    }

    fn over(stream: TcpStream, encoding: Encoding) -> TestClient {
        stream.set_nodelay(true).unwrap();
        TestClient::over_wire(Wire::Plain(stream), encoding)
    }

    pub fn over_wire(stream: Wire, encoding: Encoding) -> TestClient {
        TestClient {
            stream,
            encoding,
            decoder: Decoder::new(encoding, Direction::ToClient, Limits::client_default()),
            buf: BytesMut::new(),
            name: String::new(),
        }
    }

    /// Connects from another loopback address (e.g. 127.0.0.2), so that the
    /// server sees a different client address.
    pub async fn connect_from(addr: SocketAddr, from: [u8; 4], encoding: Encoding) -> TestClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((from, 0)))
            .expect("bind a loopback address");
        let stream = socket.connect(addr).await.expect("connect");
        TestClient::over(stream, encoding)
    }

    /// Connects with a tiny receive buffer, so that not reading fills the
    /// server's queue quickly.
    pub async fn connect_small_buffer(addr: SocketAddr, encoding: Encoding) -> TestClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.expect("connect");
        TestClient::over(stream, encoding)
    }

    /// Connects, registers and waits for the first ONLINE_USERS.
    pub async fn registered(addr: SocketAddr, encoding: Encoding, name: &str) -> TestClient {
        let mut client = TestClient::connect(addr, encoding).await;
        client.register(name, "online").await;
        client
    }

    pub async fn register(&mut self, name: &str, status: &str) {
        self.send(Command::Register {
            name: name.into(),
            status: status.into(),
        })
        .await;
        self.name = name.to_string();
        let users = self.expect_online_users().await;
        assert!(
            users.iter().any(|(n, _)| n == name),
            "{name} missing from {users:?}"
        );
    }

    pub async fn send(&mut self, command: Command) {
        let mut out = BytesMut::new();
        encode_command(&command, self.encoding, &mut out);
        self.send_raw(&out).await;
    }

    /// Sends a command word with arbitrary arguments (possibly invalid).
    pub async fn send_words(&mut self, raw: RawMessage) {
        let mut out = BytesMut::new();
        encode_raw(&raw, self.encoding, &mut out);
        self.send_raw(&out).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// The next message, or Closed; panics after [`PATIENCE`].
    pub async fn recv(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.read_next())
            .await
            .unwrap_or_else(|_| panic!("{}: nothing received in {PATIENCE:?}", self.name))
    }

    /// The next message within `wait`, if any.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Received> {
        tokio::time::timeout(wait, self.read_next()).await.ok()
    }

    async fn read_next(&mut self) -> Received {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(raw)) => {
                    let msg = ServerMessage::from_raw(raw).expect("server sent a valid message");
                    return Received::Message(msg);
                }
                Ok(None) => {}
                Err(e) => panic!("{}: undecodable bytes from server: {e}", self.name),
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Received::Closed,
                Ok(_) => {}
            }
        }
    }

    /// The next message that is not presence noise (ONLINE_USERS/PRESENCE).
    pub async fn recv_msg(&mut self) -> ServerMessage {
        loop {
            match self.recv().await {
                Received::Message(ServerMessage::OnlineUsers(_) | ServerMessage::Presence(_)) => {}
                Received::Message(m) => return m,
                Received::Closed => panic!("{}: connection closed unexpectedly", self.name),
            }
        }
    }

    /// Skips messages until one matches.
    pub async fn expect<T>(&mut self, mut pick: impl FnMut(&ServerMessage) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.read_next()).await {
                Err(_) => panic!("{}: expected message not received", self.name),
                Ok(Received::Closed) => panic!("{}: closed while waiting", self.name),
                Ok(Received::Message(m)) => {
                    if let Some(t) = pick(&m) {
                        return t;
                    }
                }
            }
        }
    }

    pub async fn expect_online_users(&mut self) -> Vec<(String, String)> {
        self.expect(|m| match m {
            ServerMessage::OnlineUsers(u) => Some(u.clone()),
            _ => None,
        })
        .await
    }

    /// The next non-presence message must be an ERROR; returns its text.
    pub async fn expect_error(&mut self) -> String {
        match self.recv_msg().await {
            ServerMessage::Error(text) => text,
            other => panic!("{}: expected ERROR, got {other:?}", self.name),
        }
    }

    /// The server closes the connection (skipping anything before).
    pub async fn expect_closed(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.read_next()).await {
                Err(_) => panic!("{}: connection not closed", self.name),
                Ok(Received::Closed) => return,
                Ok(Received::Message(_)) => {}
            }
        }
    }

    /// Nothing but presence arrives for a while.
    pub async fn expect_silence(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.read_next()).await {
                Err(_) => return,
                Ok(Received::Message(
                    ServerMessage::OnlineUsers(_) | ServerMessage::Presence(_),
                )) => {}
                Ok(other) => panic!("{}: expected silence, got {other:?}", self.name),
            }
        }
    }

    /// Invites `others`, and returns the new conversation id.
    pub async fn invite(&mut self, others: &[&str]) -> u64 {
        self.send(Command::Invite(
            others.iter().map(|s| s.to_string()).collect(),
        ))
        .await;
        self.expect_invitation().await
    }

    pub async fn expect_invitation(&mut self) -> u64 {
        self.expect(|m| match m {
            ServerMessage::Invitation { conv, .. } => Some(*conv),
            _ => None,
        })
        .await
    }

    /// Joins and makes sure the server processed it (LIST_CONVERSATIONS
    /// round trip, since classic clients get no JOIN acknowledgement).
    pub async fn join(&mut self, conv: u64) {
        self.send(Command::Join(conv)).await;
        self.sync().await;
    }

    /// A round trip: everything sent before has been handled.
    pub async fn sync(&mut self) {
        self.conversations().await;
    }

    /// Asks LIST_CONVERSATIONS and returns the answer.
    pub async fn conversations(&mut self) -> Vec<(u64, Vec<String>)> {
        self.send(Command::ListConversations).await;
        self.expect(|m| match m {
            ServerMessage::Conversations(c) => Some(c.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for an ONLINE_USERS for which `check` holds.
    pub async fn expect_online_users_where(&mut self, check: impl Fn(&[(String, String)]) -> bool) {
        self.expect(|m| match m {
            ServerMessage::OnlineUsers(u) => check(u).then_some(()),
            _ => None,
        })
        .await
    }

    pub async fn say(&mut self, conv: u64, text: &str) {
        self.send(Command::SendMessage {
            conv,
            text: text.into(),
            nonce: None,
        })
        .await;
    }

    /// Splits the client so that one task can read while another writes:
    /// the reading half carries on decoding where this client stopped.
    pub fn split(self) -> (ClientReader, OwnedWriteHalf) {
        let Wire::Plain(stream) = self.stream else {
            panic!("only a plaintext client can be split");
        };
        let (read, write) = stream.into_split();
        let reader = ClientReader {
            read,
            decoder: self.decoder,
            buf: self.buf,
            name: self.name,
        };
        (reader, write)
    }

    pub async fn expect_message(&mut self) -> (u64, String, String) {
        self.expect(|m| match m {
            ServerMessage::Message {
                conv, sender, text, ..
            } => Some((*conv, sender.clone(), text.clone())),
            _ => None,
        })
        .await
    }
}

/// The reading half of a [`TestClient::split`].
pub struct ClientReader {
    read: OwnedReadHalf,
    decoder: Decoder,
    buf: BytesMut,
    pub name: String,
}

impl ClientReader {
    /// The next message, or Closed (no time limit: callers bound it).
    pub async fn recv(&mut self) -> Received {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(raw)) => {
                    let msg = ServerMessage::from_raw(raw).expect("server sent a valid message");
                    return Received::Message(msg);
                }
                Ok(None) => {}
                Err(e) => panic!("{}: undecodable bytes from server: {e}", self.name),
            }
            self.buf.reserve(64 * 1024);
            match self.read.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Received::Closed,
                Ok(_) => {}
            }
        }
    }
}

/// The first client invites the others, and everyone joins; returns the id.
pub async fn conversation(members: &mut [&mut TestClient]) -> u64 {
    let (inviter, others) = members.split_first_mut().expect("at least one member");
    let names: Vec<String> = others.iter().map(|c| c.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let conv = inviter.invite(&names).await;
    inviter.join(conv).await;
    for other in others.iter_mut() {
        assert_eq!(other.expect_invitation().await, conv);
        other.join(conv).await;
    }
    conv
}
