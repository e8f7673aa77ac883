//! Signing in from the web page, over real HTTP: the form posts, the
//! session cookie's flags, the WebSocket that comes in with the cookie,
//! the Origin check, and signing out (or a password change elsewhere)
//! ending the session on the server.

mod common;

use std::net::SocketAddr;

use common::*;
use futures::{SinkExt, StreamExt};
use natter_core::AccountsMode;
use natter_proto::{Command, Encoding, Secret, ServerMessage};
use natter_server::{Config, ServerHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const PASSWORD: &str = "correct horse";
const BAD_CREDENTIALS: &str = "wrong username or password";

fn web_config() -> Config {
    Config {
        web: Some("127.0.0.1:0".parse().unwrap()),
        ..test_config()
    }
}

async fn start_web(config: Config) -> (ServerHandle, SocketAddr) {
    let server = start_with(config).await;
    let web = server.web_addr().expect("web listener requested");
    (server, web)
}

/// An HTTP answer: status, headers (lowercased names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `name=value` of the session cookie this answer sets.
    fn cookie(&self) -> String {
        let set = self.header("set-cookie").expect("a Set-Cookie header");
        set.split(';').next().unwrap().trim().to_string()
    }
}

/// One HTTP/1.1 request over `stream`, with `headers` added.
async fn request_over<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
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
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn request(
    web: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let stream = TcpStream::connect(web).await.expect("connect");
    request_over(stream, &web.to_string(), method, path, headers, body).await
}

fn form(name: &str, password: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("name", name)
        .append_pair("password", password)
        .finish()
}

/// Posts the sign-in (or sign-up) form as the page does, from its origin.
async fn post_form(web: SocketAddr, path: &str, name: &str, password: &str) -> Answer {
    let origin = format!("http://{web}");
    let headers = [("Origin", origin.as_str())];
    request(web, "POST", path, &headers, &form(name, password)).await
}

async fn session_of(web: SocketAddr, cookie: &str) -> Value {
    let answer = request(web, "GET", "/session", &[("Cookie", cookie)], "").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `/ws` with these headers; the HTTP status when it is refused.
async fn open_ws(web: SocketAddr, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut request = format!("ws://{web}/ws").into_client_request().unwrap();
    for (name, value) in headers {
        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("websocket handshake failed: {other}"),
    }
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// The next JSON message, or `None` once the socket is closed.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time");
        match frame {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

async fn expect_command(ws: &mut Ws, command: &str) -> Value {
    loop {
        let message = next(ws)
            .await
            .unwrap_or_else(|| panic!("closed before {command}"));
        if message["command"] == command {
            return message["args"].clone();
        }
    }
}

/// The page's WebSocket with its cookie, registered as `name`.
async fn signed_in_ws(web: SocketAddr, cookie: &str, name: &str) -> Ws {
    let origin = format!("http://{web}");
    let mut ws = open_ws(web, &[("Cookie", cookie), ("Origin", &origin)])
        .await
        .expect("the upgrade is accepted");
    send(
        &mut ws,
        json!({"command": "REGISTER", "args": [name, "online"]}),
    )
    .await;
    let users = expect_command(&mut ws, "ONLINE_USERS").await;
    assert_eq!(users[name], "online", "{name} missing from {users}");
    ws
}

#[tokio::test]
async fn sign_up_sets_a_strict_http_only_cookie_that_signs_the_websocket_in() {
    let (server, web) = start_web(web_config()).await;
    let answer = post_form(web, "/signup", "ann", PASSWORD).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json(), json!({"name": "ann"}));
    let set = answer.header("set-cookie").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} missing from {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP cannot keep a Secure cookie: {set}"
    );
    assert!(!set.contains(PASSWORD), "{set}");
    let cookie = answer.cookie();

    // The page asks who it is (a reload): the cookie signs ann in.
    let session = session_of(web, &cookie).await;
    assert_eq!(session["name"], "ann");
    assert_eq!(session["accounts"], "optional");
    assert_eq!(session["signup"], true);
    // Without the cookie, nobody.
    assert_eq!(session_of(web, "other=1").await["name"], Value::Null);

    // The WebSocket with the cookie registers the account without a secret
    // from the page; a guest may not take the name.
    let _ws = signed_in_ws(web, &cookie, "ann").await;
    let mut guest = TestClient::connect(server.local_addr(), Encoding::Json).await;
    guest
        .send(Command::Register {
            name: "ann".into(),
            status: "online".into(),
        })
        .await;
    assert_eq!(guest.expect_error().await, BAD_CREDENTIALS);

    // Signing in again (another browser) works with the password.
    let again = post_form(web, "/signin", "ANN", PASSWORD).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json(), json!({"name": "ann"}));
    assert_ne!(again.cookie(), cookie, "each sign-in is its own session");
}

#[tokio::test]
async fn a_wrong_password_or_unknown_name_gets_the_protocols_words_and_no_cookie() {
    let (_server, web) = start_web(web_config()).await;
    assert_eq!(post_form(web, "/signup", "bob", PASSWORD).await.status, 200);
    for (name, password) in [("bob", "wrong horse"), ("nobody", PASSWORD)] {
        let answer = post_form(web, "/signin", name, password).await;
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert_eq!(answer.json(), json!({"error": BAD_CREDENTIALS}));
        assert_eq!(answer.header("set-cookie"), None);
    }
    // A taken name, a short password, a bad name: said, no account made.
    let taken = post_form(web, "/signup", "Bob", PASSWORD).await;
    assert_eq!(
        (taken.status, taken.json()["error"].as_str()),
        (409, Some("name Bob is taken"))
    );
    let short = post_form(web, "/signup", "carol", "short").await;
    assert_eq!(short.status, 400, "{}", short.body);
    let bad = post_form(web, "/signup", "no spaces", PASSWORD).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(
        post_form(web, "/signin", "carol", "short").await.status,
        401
    );
}

#[tokio::test]
async fn repeated_wrong_passwords_are_blocked_before_hashing() {
    let (_server, web) = start_web(web_config()).await;
    assert_eq!(post_form(web, "/signup", "dan", PASSWORD).await.status, 200);
    let mut blocked = None;
    for _ in 0..10 {
        let answer = post_form(web, "/signin", "dan", "wrong horse").await;
        if answer.status == 429 {
            blocked = Some(answer.json()["error"].as_str().unwrap().to_string());
            break;
        }
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    let blocked = blocked.expect("blocked within ten failures");
    assert!(blocked.starts_with("too many failed attempts"), "{blocked}");
}

#[tokio::test]
async fn another_origin_is_refused_for_the_websocket_and_the_forms() {
    let (_server, web) = start_web(web_config()).await;
    let answer = post_form(web, "/signup", "erin", PASSWORD).await;
    let cookie = answer.cookie();
    for origin in [
        "http://evil.example",
        "http://127.0.0.1:1",
        "https://{web}",
        "null",
    ] {
        let origin = origin.replace("{web}", &web.to_string());
        let refused = open_ws(web, &[("Cookie", &cookie), ("Origin", &origin)]).await;
        assert_eq!(refused.err(), Some(403), "{origin}");
        let headers = [("Origin", origin.as_str())];
        let signin = request(web, "POST", "/signin", &headers, &form("erin", PASSWORD)).await;
        assert_eq!(signin.status, 403, "{origin}");
        assert_eq!(signin.header("set-cookie"), None);
        let signout = request(
            web,
            "POST",
            "/signout",
            &[("Origin", &origin), ("Cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(signout.status, 403, "{origin}");
    }
    // The session survived those attempts, and the page's own origin works.
    let _ws = signed_in_ws(web, &cookie, "erin").await;
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_server_and_closes_its_websocket() {
    let (server, web) = start_web(web_config()).await;
    let cookie = post_form(web, "/signup", "fay", PASSWORD).await.cookie();
    let token = cookie.split_once(':').unwrap().1.to_string();
    let mut ws = signed_in_ws(web, &cookie, "fay").await;

    let origin = format!("http://{web}");
    let out = request(
        web,
        "POST",
        "/signout",
        &[("Origin", &origin), ("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let cleared = out.header("set-cookie").unwrap();
    let name = format!("natter_session_{}=;", web.port());
    assert!(cleared.starts_with(&name), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // Its socket is told and closed.
    assert_eq!(expect_command(&mut ws, "ERROR").await, "signed out");
    assert_eq!(next(&mut ws).await, None);
    // The old cookie signs nobody in, over HTTP or WebSocket...
    assert_eq!(session_of(web, &cookie).await["name"], Value::Null);
    let refused = open_ws(web, &[("Cookie", &cookie), ("Origin", &origin)]).await;
    assert_eq!(refused.err(), Some(401));
    // ...nor is its token a secret for REGISTER any more.
    let mut tcp = TestClient::connect(server.local_addr(), Encoding::Json).await;
    tcp.send(Command::Login {
        name: "fay".into(),
        status: "online".into(),
        secret: Secret::new(token),
    })
    .await;
    assert_eq!(tcp.expect_error().await, BAD_CREDENTIALS);
}

#[tokio::test]
async fn a_password_change_on_another_device_ends_the_web_session() {
    let (server, web) = start_web(web_config()).await;
    let cookie = post_form(web, "/signup", "gus", PASSWORD).await.cookie();
    let mut ws = signed_in_ws(web, &cookie, "gus").await;
    let mut phone = TestClient::connect(server.local_addr(), Encoding::Framed).await;
    phone
        .send(Command::Login {
            name: "gus".into(),
            status: "online".into(),
            secret: Secret::new(PASSWORD),
        })
        .await;
    phone.expect_online_users().await;
    phone
        .send(Command::Password {
            old: Secret::new(PASSWORD),
            new: Secret::new("battery staple"),
        })
        .await;
    phone
        .expect(|m| matches!(m, ServerMessage::PasswordChanged(_)).then_some(()))
        .await;
    let error = expect_command(&mut ws, "ERROR").await;
    assert!(error.as_str().unwrap().starts_with("signed out"), "{error}");
    assert_eq!(session_of(web, &cookie).await["name"], Value::Null);
    assert_eq!(
        post_form(web, "/signin", "gus", "battery staple")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_large_form_is_refused_unread() {
    let (_server, web) = start_web(web_config()).await;
    let origin = format!("http://{web}");
    let huge = form("hal", &"x".repeat(64 * 1024));
    let answer = request(web, "POST", "/signup", &[("Origin", &origin)], &huge).await;
    assert_eq!(answer.status, 413, "{}", answer.body);
}

#[tokio::test]
async fn without_accounts_the_page_is_told_and_the_forms_refuse() {
    let config = Config {
        accounts: AccountsMode::Off,
        ..web_config()
    };
    let (_server, web) = start_web(config).await;
    let stray = format!("natter_session_{}=ann:nt1.00", web.port());
    let session = session_of(web, &stray).await;
    assert_eq!(
        session,
        json!({"accounts": "off", "signup": false, "name": null})
    );
    let answer = post_form(web, "/signup", "ivy", PASSWORD).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    // Guests chat as before, with or without a stray cookie.
    let origin = format!("http://{web}");
    let mut ws = open_ws(web, &[("Origin", &origin), ("Cookie", &stray)])
        .await
        .expect("a guest socket");
    send(
        &mut ws,
        json!({"command": "REGISTER", "args": ["ivy", "online"]}),
    )
    .await;
    expect_command(&mut ws, "ONLINE_USERS").await;
}

#[tokio::test]
async fn the_data_dir_never_holds_the_password_or_the_cookies_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..web_config()
    };
    let (server, web) = start_web(config).await;
    let cookie = post_form(web, "/signup", "jo", PASSWORD).await.cookie();
    let token = cookie.split_once(':').unwrap().1.to_string();
    server.shutdown().await;
    let mut found = 0;
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        found += 1;
        for secret in [PASSWORD, &token] {
            let hit = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!hit, "{} holds a secret", entry.display());
        }
    }
    assert!(found > 0, "the store wrote nothing");

    // After a restart (on the same address: the cookie's name carries the
    // port) the cookie still signs jo in: the session was stored.
    let config = Config {
        data_dir: Some(dir.path().to_path_buf()),
        web: Some(web),
        ..web_config()
    };
    let (_server, web) = start_web(config).await;
    assert_eq!(session_of(web, &cookie).await["name"], "jo");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn over_https_the_cookie_is_secure_and_the_origin_is_https() {
    let tls = TestTls::new();
    let config = Config {
        web: Some("127.0.0.1:0".parse().unwrap()),
        ..tls.config()
    };
    let (_server, web) = start_web(config).await;
    let host = format!("localhost:{}", web.port());
    let https = |method: &'static str,
                 path: &'static str,
                 headers: Vec<(&'static str, String)>,
                 body: String| {
        let tls = &tls;
        let host = host.clone();
        async move {
            let tcp = TcpStream::connect(web).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let stream = tls.connector.connect(name, tcp).await.unwrap();
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request_over(stream, &host, method, path, &headers, &body).await
        }
    };
    let origin = format!("https://{host}");
    let answer = https(
        "POST",
        "/signup",
        vec![("Origin", origin.clone())],
        form("kim", PASSWORD),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let set = answer.header("set-cookie").unwrap();
    assert!(set.contains("; Secure"), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    // The same page over plain http is another origin.
    let plain_origin = format!("http://{host}");
    let refused = https(
        "POST",
        "/signin",
        vec![("Origin", plain_origin)],
        form("kim", PASSWORD),
    )
    .await;
    assert_eq!(refused.status, 403);
}

/// A banned account cannot sign in from the page either (403 with the
/// ban's words, no cookie, no hashing); unbanned, it can.
#[tokio::test]
async fn a_banned_account_cannot_sign_in_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = web_config();
    config.admin_socket = Some(dir.path().join("admin.sock"));
    let (server, web) = start_web(config).await;
    assert_eq!(
        post_form(web, "/signup", "erin", PASSWORD).await.status,
        200
    );
    let admin = |request: Value| {
        let path = server.admin_socket().unwrap().to_path_buf();
        async move {
            use tokio::io::AsyncBufReadExt;
            let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
            stream
                .write_all(format!("{request}\n").as_bytes())
                .await
                .unwrap();
            let mut line = String::new();
            tokio::io::BufReader::new(stream)
                .read_line(&mut line)
                .await
                .unwrap();
            let answer: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(answer["ok"], true, "{answer}");
        }
    };
    admin(json!({"command": "ban", "target": "erin", "reason": "spam"})).await;
    for path in ["/signin", "/signup"] {
        let answer = post_form(web, path, "Erin", PASSWORD).await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.body);
        assert_eq!(
            answer.json(),
            json!({"error": "Erin is banned from this server permanently: spam"})
        );
        assert_eq!(answer.header("set-cookie"), None);
    }
    admin(json!({"command": "unban", "target": "erin"})).await;
    assert_eq!(
        post_form(web, "/signin", "erin", PASSWORD).await.status,
        200
    );
}
