//! The web listener from the outside: the WebSocket gateway spoken the way
//! a browser speaks it (one JSON message per text frame), side by side with
//! TCP clients, and the page and health check over plain HTTP.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{PATIENCE, TestClient};
use futures::{SinkExt, StreamExt};
use natter_proto::Encoding;
use natter_server::{Config, SHUTDOWN_MESSAGE, ServerHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

fn web_config() -> Config {
    Config {
        web: Some("127.0.0.1:0".parse().unwrap()),
        ..common::test_config()
    }
}

async fn start_web(config: Config) -> (ServerHandle, SocketAddr) {
    let server = common::start_with(config).await;
    let web = server.web_addr().expect("web listener requested");
    (server, web)
}

/// What a browser's socket sees.
#[derive(Debug)]
enum Seen {
    Json(Value),
    /// Close frame or end of stream.
    Closed,
}

/// A client that talks to `/ws` exactly as the page does.
struct Browser {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    name: String,
}

impl Browser {
    async fn connect(web: SocketAddr) -> Browser {
        let (ws, response) = tokio_tungstenite::connect_async(format!("ws://{web}/ws"))
            .await
            .expect("websocket handshake");
        assert_eq!(response.status(), 101);
        Browser {
            ws,
            name: String::new(),
        }
    }

    /// Connects, asks for the page's capabilities, registers, and waits for
    /// the first ONLINE_USERS (which is how the page knows it is in).
    async fn signed_in(web: SocketAddr, name: &str) -> Browser {
        let mut browser = Browser::connect(web).await;
        browser.name = name.to_string();
        browser
            .send(json!({"command": "CAPS", "args": ["presence-delta", "members"]}))
            .await;
        let caps = browser.expect_command("CAPS").await;
        assert_eq!(caps, json!(["presence-delta", "members"]));
        browser
            .send(json!({"command": "REGISTER", "args": [name, "online"]}))
            .await;
        let users = browser.expect_command("ONLINE_USERS").await;
        assert_eq!(users[name], "online", "{name} missing from {users}");
        browser
    }

    /// Connects with a 4 KiB receive buffer, for a browser that stops
    /// reading to be noticed soon.
    async fn connect_small_buffer(web: SocketAddr) -> Browser {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(web).await.expect("connect");
        let (ws, _) = tokio_tungstenite::client_async(
            format!("ws://{web}/ws"),
            MaybeTlsStream::Plain(stream),
        )
        .await
        .expect("websocket handshake");
        Browser {
            ws,
            name: String::new(),
        }
    }

    async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send frame");
    }

    async fn next(&mut self) -> Seen {
        let frame = tokio::time::timeout(PATIENCE, self.ws.next())
            .await
            .unwrap_or_else(|_| panic!("{}: nothing received in {PATIENCE:?}", self.name));
        match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Seen::Closed,
            Some(Ok(Message::Text(text))) => {
                assert!(!text.contains('\n'), "one message per frame: {text:?}");
                Seen::Json(serde_json::from_str(&text).expect("server frames are JSON"))
            }
            Some(Ok(other)) => panic!("{}: unexpected frame {other:?}", self.name),
        }
    }

    /// Skips other messages until `command` arrives; returns its args.
    async fn expect_command(&mut self, command: &str) -> Value {
        loop {
            match self.next().await {
                Seen::Json(message) if message["command"] == command => {
                    return message["args"].clone();
                }
                Seen::Json(_) => {}
                Seen::Closed => panic!("{}: closed while waiting for {command}", self.name),
            }
        }
    }

    /// Skips presence; the next message must be an ERROR. Returns its text.
    async fn expect_error(&mut self) -> String {
        loop {
            match self.next().await {
                Seen::Json(m) if m["command"] == "ONLINE_USERS" || m["command"] == "PRESENCE" => {}
                Seen::Json(m) => {
                    assert_eq!(
                        m["command"], "ERROR",
                        "{}: expected ERROR, got {m}",
                        self.name
                    );
                    return m["args"]
                        .as_str()
                        .expect("ERROR carries a bare string")
                        .into();
                }
                Seen::Closed => panic!("{}: closed while waiting for ERROR", self.name),
            }
        }
    }

    async fn expect_closed(&mut self) {
        loop {
            if let Seen::Closed = self.next().await {
                return;
            }
        }
    }
}

/// One HTTP/1.1 GET; returns status, headers (lowercased names) and body.
async fn http_get(web: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(web).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

#[tokio::test]
async fn browser_and_tcp_client_invite_join_and_chat() {
    let (server, web) = start_web(web_config()).await;
    let mut browser = Browser::signed_in(web, "wendy").await;
    let mut tcp = TestClient::registered(server.local_addr(), Encoding::Framed, "tom").await;

    // The browser sees the TCP user arrive as a presence delta.
    loop {
        let delta = browser.expect_command("PRESENCE").await;
        if delta["tom"] == "online" {
            break;
        }
    }

    browser
        .send(json!({"command": "INVITE", "args": ["tom"]}))
        .await;
    let invitation = browser.expect_command("INVITATION").await;
    let conv = invitation[0].as_u64().expect("conversation id");
    assert_eq!(invitation[1], "wendy");
    assert_eq!(tcp.expect_invitation().await, conv);

    browser
        .send(json!({"command": "JOIN", "args": [conv]}))
        .await;
    assert_eq!(
        browser.expect_command("MEMBERS").await,
        json!([conv, ["wendy"]])
    );
    tcp.join(conv).await;
    assert_eq!(
        browser.expect_command("MEMBERS").await,
        json!([conv, ["tom", "wendy"]])
    );

    browser
        .send(json!({"command": "SEND_MESSAGE", "args": [conv, "hi from the web ✓"]}))
        .await;
    assert_eq!(
        tcp.expect_message().await,
        (conv, "wendy".into(), "hi from the web ✓".into())
    );
    assert_eq!(
        browser.expect_command("MESSAGE").await,
        json!([conv, "wendy", "hi from the web ✓"])
    );

    tcp.say(conv, "hello, browser\nsecond line").await;
    assert_eq!(
        browser.expect_command("MESSAGE").await,
        json!([conv, "tom", "hello, browser\nsecond line"])
    );

    // The browser leaving is seen by the TCP side like any departure.
    browser.send(json!({"command": "GOODBYE"})).await;
    browser.expect_closed().await;
    let users = tcp.expect_online_users().await;
    assert!(!users.iter().any(|(name, _)| name == "wendy"), "{users:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn browser_names_clash_with_tcp_names() {
    let (server, web) = start_web(web_config()).await;
    let _tcp = TestClient::registered(server.local_addr(), Encoding::Json, "Alice").await;
    let mut browser = Browser::connect(web).await;
    browser
        .send(json!({"command": "REGISTER", "args": ["alice", "online"]}))
        .await;
    let error = browser.expect_error().await;
    assert!(error.contains("alice"), "{error}");
    // The connection may try again.
    browser
        .send(json!({"command": "REGISTER", "args": ["alice2", "away"]}))
        .await;
    let users = browser.expect_command("ONLINE_USERS").await;
    assert_eq!(users["alice2"], "away");
    assert_eq!(users["Alice"], "online");
    server.shutdown().await;
}

#[tokio::test]
async fn bad_json_gets_error_and_close() {
    let (server, web) = start_web(web_config()).await;
    let mut browser = Browser::connect(web).await;
    browser
        .send_text(r#"{"command": "REGISTER", "args": ["#.into())
        .await;
    let error = browser.expect_error().await;
    assert!(error.contains("JSON"), "{error}");
    browser.expect_closed().await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_command_gets_error_and_the_socket_stays_usable() {
    let (server, web) = start_web(web_config()).await;
    let mut browser = Browser::connect(web).await;
    browser.send(json!({"command": "DANCE", "args": []})).await;
    assert!(browser.expect_error().await.contains("DANCE"));
    browser
        .send(json!({"command": "JOIN", "args": ["three"]}))
        .await;
    browser.expect_error().await;
    browser
        .ws
        .send(Message::Binary(b"REGISTER".to_vec().into()))
        .await
        .unwrap();
    assert!(browser.expect_error().await.contains("binary"));
    browser
        .send(json!({"command": "REGISTER", "args": ["still_here", "online"]}))
        .await;
    let users = browser.expect_command("ONLINE_USERS").await;
    assert_eq!(users["still_here"], "online");
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_over_the_frame_limit_is_refused_and_closes() {
    let mut config = web_config();
    config.limits.max_frame = 4096;
    let (server, web) = start_web(config).await;
    let mut browser = Browser::signed_in(web, "big").await;

    // Up to the limit is read (and judged by the command rules).
    let text = "x".repeat(4096 - 64);
    let fits = json!({"command": "STATUS", "args": [text]}).to_string();
    assert!(fits.len() <= 4096);
    browser.send_text(fits).await;
    assert!(browser.expect_error().await.contains("status is too long"));

    // One byte over is refused by the WebSocket layer, before it is kept.
    let over = format!(r#"{{"command":"STATUS","args":["{}"]}}"#, "x".repeat(4097));
    browser.send_text(over).await;
    let error = browser.expect_error().await;
    assert!(error.contains("too large"), "{error}");
    browser.expect_closed().await;
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_browsers_and_closes() {
    let (server, web) = start_web(web_config()).await;
    let mut browser = Browser::signed_in(web, "leaving").await;
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(browser.expect_error().await, SHUTDOWN_MESSAGE);
    browser.expect_closed().await;
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("shutdown finishes")
        .unwrap();
    // Nobody accepts any more.
    assert!(TcpStream::connect(web).await.is_err());
}

#[tokio::test]
async fn healthz_answers_ok() {
    let (server, web) = start_web(web_config()).await;
    let (status, _, body) = http_get(web, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    server.shutdown().await;
}

#[tokio::test]
async fn the_page_is_served_with_its_content_types() {
    let (server, web) = start_web(web_config()).await;
    let (status, headers, body) = http_get(web, "/").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert!(body.contains(r#"<script type="module" src="/app.js">"#));
    assert!(header(&headers, "content-security-policy").contains("default-src 'self'"));

    let (status, headers, body) = http_get(web, "/app.js").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").starts_with("text/javascript"));
    assert!(body.contains("new WebSocket"));

    let (status, headers, _) = http_get(web, "/style.css").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").starts_with("text/css"));

    let (status, _, _) = http_get(web, "/nothing-here").await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_web_address_there_is_no_web_listener() {
    let server = common::start().await;
    assert_eq!(server.web_addr(), None);
    server.shutdown().await;
}

/// Every frame a browser sends takes its turn under the rate limit,
/// whatever it holds: binary frames and JSON that is not a message cost an
/// ERROR each, so they count like commands.
#[tokio::test]
async fn every_websocket_frame_counts_against_the_rate_limit() {
    let mut config = web_config();
    config.rate_limit = 20;
    config.rate_burst = 5;
    let (server, web) = start_web(config).await;
    let mut browser = Browser::signed_in(web, "fast").await;
    let started = tokio::time::Instant::now();
    for i in 0..25 {
        let frame = if i % 2 == 0 {
            Message::Binary(vec![1, 2, 3].into())
        } else {
            Message::Text(r#"{"no":"command"}"#.into())
        };
        browser.ws.send(frame).await.expect("send frame");
    }
    for _ in 0..25 {
        browser.expect_error().await;
    }
    // The burst of five (less CAPS and REGISTER), then 20 a second.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "not counted: {took:?}");
    // Commands wait their turn too, and none is lost.
    for _ in 0..5 {
        browser.send(json!({"command": "LIST_CONVERSATIONS"})).await;
    }
    for _ in 0..5 {
        browser.expect_command("CONVERSATIONS").await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_stops_reading_is_cut_off_and_tcp_clients_go_on() {
    let mut config = web_config();
    config.send_queue = 256 * 1024;
    let (server, web) = start_web(config).await;
    let addr = server.local_addr();
    let mut talker = TestClient::registered(addr, Encoding::Framed, "talker").await;
    let mut sleeper = Browser::connect_small_buffer(web).await;
    sleeper.name = "sleeper".into();
    sleeper
        .send(json!({"command": "CAPS", "args": ["members"]}))
        .await;
    sleeper
        .send(json!({"command": "REGISTER", "args": ["sleeper", "zzz"]}))
        .await;
    sleeper.expect_command("ONLINE_USERS").await;
    let conv = talker.invite(&["sleeper"]).await;
    talker.join(conv).await;
    sleeper.expect_command("INVITATION").await;
    sleeper
        .send(json!({"command": "JOIN", "args": [conv]}))
        .await;
    sleeper.expect_command("MEMBERS").await;

    // The sleeper reads nothing from now on; the talker reads its echoes.
    let text = "z".repeat(8000);
    for _ in 0..1000 {
        talker.say(conv, &text).await;
        while talker.try_recv(Duration::from_millis(0)).await.is_some() {}
        tokio::task::yield_now().await;
    }
    talker.send(natter_proto::Command::ListConversations).await;
    let convs = talker
        .expect(|m| match m {
            natter_proto::ServerMessage::Conversations(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(convs, vec![(conv, vec!["talker".to_string()])]);
    server.shutdown().await;
}

// ---------- the web listener's own limits ----------

/// The same per-address limit as TCP, applied before the upgrade: a
/// browser over it gets HTTP 429 with the reason, and no WebSocket.
#[tokio::test]
async fn a_browser_over_the_address_limit_is_refused_before_the_upgrade() {
    let mut config = web_config();
    config.max_connections_per_ip = 2;
    let (server, web) = start_web(config).await;
    // One place taken by a TCP client, one by a browser: they share it.
    let _tcp = TestClient::registered(server.local_addr(), Encoding::Json, "tcp").await;
    let _browser = Browser::signed_in(web, "browser").await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{web}/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            assert!(body.contains("too many connections"), "{body}");
        }
        Err(other) => panic!("refused without an HTTP answer: {other}"),
        Ok((_, response)) => panic!("upgraded over the limit: {}", response.status()),
    }
    // The page itself is still served (its own, larger limit).
    assert_eq!(http_get(web, "/healthz").await.0, 200);
}

/// A slow-loris that never finishes its headers is closed after the
/// header timeout; the page keeps loading for everyone else.
#[tokio::test]
async fn slow_request_headers_are_timed_out() {
    let mut config = web_config();
    config.web_header_timeout = Duration::from_millis(300);
    let (_server, web) = start_web(config).await;
    let mut loris = TcpStream::connect(web).await.unwrap();
    let started = tokio::time::Instant::now();
    loris
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let closed = tokio::time::timeout(PATIENCE, async {
        // One more header byte every 50 ms, until the server hangs up.
        let mut sink = [0u8; 1024];
        loop {
            tokio::select! {
                read = loris.read(&mut sink) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if loris.write_all(b"X").await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the slow-loris is still connected");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(http_get(web, "/healthz").await.0, 200);
}

/// Beyond the HTTP connection cap a new connection is closed at once;
/// a place comes back when one closes.
#[tokio::test]
async fn http_connections_over_the_cap_are_closed() {
    let mut config = web_config();
    config.max_web_connections = 3;
    let (_server, web) = start_web(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(web).await.unwrap());
    }
    let mut extra = TcpStream::connect(web).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(PATIENCE, extra.read(&mut byte))
        .await
        .expect("the extra connection is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The held ones are still there, and one gone frees a place.
    let mut first = held.remove(0);
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, first.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    drop(first);
    let answered = tokio::time::timeout(PATIENCE, async {
        loop {
            // The server lets go of the place a moment after it answered.
            let mut again = TcpStream::connect(web).await.unwrap();
            again
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = again.read_to_end(&mut answer).await;
            if !answer.is_empty() {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let answer = answered.await.expect("a place came back");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

/// `/healthz` answers for the hub, not just for the web listener: 200 while
/// the hub answers, 503 once it failed; browsers are told, too.
#[tokio::test]
async fn healthz_reflects_the_hubs_liveness() {
    let (server, web) = start_web(web_config()).await;
    let mut browser = Browser::signed_in(web, "watcher").await;
    assert_eq!(http_get(web, "/healthz").await.0, 200);
    server.panic_hub_for_test().await;
    assert_eq!(
        browser.expect_error().await,
        natter_server::supervise::HUB_FAILED_MESSAGE
    );
    browser.expect_closed().await;
    tokio::time::timeout(PATIENCE, server.failed())
        .await
        .expect("the handle reports the failure");
    let (status, _, body) = http_get(web, "/healthz").await;
    assert_eq!((status, body.as_str()), (503, "hub failed\n"));
    server.shutdown().await;
}

/// The slow-consumer rule counts, for a browser too, only what its socket
/// refused: a burst of large messages (16 × 8,000 bytes at a time, 640 in
/// all) with a 64 KiB send queue reaches a browser that reads, whole.
#[tokio::test]
async fn a_browser_that_reads_is_not_cut_off_by_a_burst_of_large_messages() {
    let mut config = web_config();
    config.send_queue = 65536;
    let (server, web) = start_web(config).await;
    let mut sender = TestClient::registered(server.local_addr(), Encoding::Framed, "sender").await;
    let mut reader = Browser::signed_in(web, "reader").await;
    let conv = sender.invite(&["reader"]).await;
    sender.join(conv).await;
    reader.expect_command("INVITATION").await;
    reader
        .send(json!({"command": "JOIN", "args": [conv]}))
        .await;
    reader.expect_command("MEMBERS").await;
    let (mut sender_in, mut sender_out) = sender.split();
    // The sender reads its own echoes, so that it is not the slow one.
    let echoes = tokio::spawn(async move {
        let mut seen = 0;
        while seen < 640 {
            match sender_in.recv().await {
                common::Received::Closed => return seen,
                common::Received::Message(natter_proto::ServerMessage::Message { .. }) => seen += 1,
                common::Received::Message(_) => {}
            }
        }
        seen
    });
    let writing = tokio::spawn(async move {
        let text = "x".repeat(7990);
        for burst in 0..40 {
            let mut out = bytes::BytesMut::new();
            for k in 0..16 {
                let command = natter_proto::Command::SendMessage {
                    conv,
                    text: format!("{} {text}", burst * 16 + k),
                    nonce: None,
                };
                natter_proto::codec::encode_command(&command, Encoding::Framed, &mut out);
            }
            if sender_out.write_all(&out).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    for k in 0..640 {
        reader.name = format!("reader at #{k}");
        let message = reader.expect_command("MESSAGE").await;
        let text = message[2].as_str().unwrap();
        assert!(text.starts_with(&format!("{k} ")), "#{k}: {}", &text[..8]);
    }
    writing.await.unwrap();
    assert_eq!(echoes.await.unwrap(), 640);
    server.shutdown().await;
}

// ---------- what an operator does to browsers ----------

/// One request on the admin socket ([`natter_server::admin`]); the answer.
async fn admin(server: &ServerHandle, request: Value) -> Value {
    use tokio::io::AsyncBufReadExt;
    let path = server.admin_socket().expect("an admin socket");
    let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
    stream
        .write_all(format!("{request}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    tokio::time::timeout(PATIENCE, reader.read_line(&mut line))
        .await
        .expect("an answer")
        .unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    answer["result"].clone()
}

/// The status and body of a refused WebSocket handshake.
async fn refused_upgrade(web: SocketAddr) -> (u16, String) {
    match tokio_tungstenite::connect_async(format!("ws://{web}/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            (response.status().as_u16(), body.into_owned())
        }
        Err(other) => panic!("refused without an HTTP answer: {other}"),
        Ok((_, response)) => panic!("upgraded: {}", response.status()),
    }
}

/// A banned address loses its browsers at once and gets HTTP 403 with the
/// reason instead of a new WebSocket; a draining server answers 503. A
/// notice reaches a browser as a MESSAGE in conversation 0.
#[tokio::test]
async fn browsers_get_notices_bans_and_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = web_config();
    config.admin_socket = Some(dir.path().join("admin.sock"));
    let (server, web) = start_web(config).await;
    let mut browser = Browser::signed_in(web, "browser").await;

    let sent = admin(&server, json!({"command": "broadcast", "text": "hello"})).await;
    assert_eq!(sent["sent"], 1);
    let notice = browser.expect_command("MESSAGE").await;
    assert_eq!(notice, json!([0, "*server*", "hello"]));

    let ban = json!({"command": "ban", "target": "127.0.0.1", "reason": "abuse"});
    assert_eq!(admin(&server, ban).await["closed"], 1);
    assert_eq!(
        browser.expect_error().await,
        "your address is banned from this server permanently: abuse"
    );
    browser.expect_closed().await;
    let (status, body) = refused_upgrade(web).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        "your address is banned from this server permanently: abuse\n"
    );

    admin(&server, json!({"command": "unban", "target": "127.0.0.1"})).await;
    let _back = Browser::signed_in(web, "back").await;
    admin(&server, json!({"command": "drain", "timeout_secs": 60})).await;
    let (status, body) = refused_upgrade(web).await;
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "the server is draining for maintenance: try again later\n"
        )
    );
    server.shutdown().await;
}
