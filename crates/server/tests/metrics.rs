//! `GET /metrics` on a real server: the text is parsed strictly (the
//! OpenMetrics text format, which Prometheus reads), and its numbers are
//! checked against what the test made the server do: clients of every
//! transport and encoding, messages and their deliveries, the bytes they
//! took, a failed login, bad input, a slow consumer, a GOODBYE, TLS
//! handshakes good and bad, store commits. The Grafana dashboard's queries
//! are checked against the same output.
//!
//! The server runs on the test's own single-threaded runtime with presence
//! sent at once, so everything one event causes (deliveries included) is
//! done and published before any client reads what it produced: the counts
//! are exact, not "at least".

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::{PATIENCE, TestClient, TestTls, conversation};
use futures::{SinkExt, StreamExt};
use natter_proto::codec::{encode_command, encode_message};
use natter_proto::{Command, Encoding, Secret, ServerMessage};
use natter_server::{Config, ServerHandle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// One `/metrics` answer, parsed.
#[derive(Debug)]
struct Scrape {
    /// Each sample's value by name and labels.
    samples: HashMap<(String, BTreeMap<String, String>), f64>,
    /// Each family's type by family name.
    types: HashMap<String, String>,
}

/// The suffixes a sample of each type may add to its family's name.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "gauge" | "unknown" => &[""],
        "histogram" => &["_bucket", "_sum", "_count", "_created"],
        "summary" => &["", "_sum", "_count", "_created"],
        _ => &[],
    }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `{a="x",b="y"}` (escapes `\\`, `\"`, `\n`); returns the labels
/// and what follows the closing brace.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !is_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// A strict reading of the text format: every line is a HELP, TYPE or UNIT
/// of a family, or a sample of the family declared last, named as its type
/// allows; no series twice; `# EOF` last; histogram buckets cumulative up to
/// `+Inf`, which equals `_count`.
fn parse(text: &str) -> Result<Scrape, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("does not end with # EOF")?;
    let mut scrape = Scrape {
        samples: HashMap::new(),
        types: HashMap::new(),
    };
    let mut family: Option<(String, String)> = None;
    for (n, line) in body.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (word, name, rest) = (parts.next(), parts.next(), parts.next());
            let (Some(word), Some(name), Some(rest)) = (word, name, rest) else {
                return Err(fail("incomplete metadata"));
            };
            if !is_name(name) {
                return Err(fail("bad family name"));
            }
            match word {
                "TYPE" => {
                    if suffixes(rest).is_empty() {
                        return Err(fail("unknown type"));
                    }
                    if scrape.types.insert(name.into(), rest.into()).is_some() {
                        return Err(fail("family declared twice"));
                    }
                    family = Some((name.into(), rest.into()));
                }
                "HELP" | "UNIT" => {}
                _ => return Err(fail("unknown metadata")),
            }
            continue;
        }
        let split = line.find(['{', ' ']).ok_or_else(|| fail("no value"))?;
        let name = &line[..split];
        let (labels, rest) = if line[split..].starts_with('{') {
            parse_labels(&line[split..]).map_err(|e| fail(&e))?
        } else {
            (BTreeMap::new(), &line[split..])
        };
        let value = rest.strip_prefix(' ').ok_or_else(|| fail("no space"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| fail("bad value"))?,
        };
        let Some((family_name, kind)) = &family else {
            return Err(fail("sample before any TYPE"));
        };
        let allowed = suffixes(kind)
            .iter()
            .any(|suffix| name.strip_suffix(suffix) == Some(family_name));
        if !allowed {
            return Err(fail("sample not of the family declared last"));
        }
        if scrape
            .samples
            .insert((name.to_string(), labels), value)
            .is_some()
        {
            return Err(fail("series twice"));
        }
    }
    check_histograms(&scrape)?;
    Ok(scrape)
}

fn check_histograms(scrape: &Scrape) -> Result<(), String> {
    for (family, _) in scrape.types.iter().filter(|(_, t)| *t == "histogram") {
        let mut buckets: Vec<(f64, f64)> = scrape
            .samples
            .iter()
            .filter(|((name, _), _)| *name == format!("{family}_bucket"))
            .map(|((_, labels), value)| {
                let le = &labels["le"];
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (le, *value)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[0].1 > w[1].1) {
            return Err(format!("{family}: buckets not cumulative: {buckets:?}"));
        }
        let count = scrape.samples[&(format!("{family}_count"), BTreeMap::new())];
        match buckets.last() {
            Some((le, all)) if le.is_infinite() && *all == count => {}
            _ => return Err(format!("{family}: +Inf bucket is not _count {count}")),
        }
    }
    Ok(())
}

impl Scrape {
    /// The value of one series; panics, listing what there is, if missing.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match self.samples.get(&(name.to_string(), labels.clone())) {
            Some(value) => *value,
            None => {
                let mut names: Vec<_> = self.samples.keys().collect();
                names.sort();
                panic!("no series {name}{labels:?} in {names:#?}")
            }
        }
    }

    fn has_sample_named(&self, name: &str) -> bool {
        self.samples.keys().any(|(n, _)| n == name)
    }
}

/// One HTTP/1.1 GET: the status, the Content-Type and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("header end");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map_or(String::new(), |(_, v)| v.trim().to_string());
    (status, content_type, body.to_string())
}

/// Scrapes and parses `/metrics` at `addr`.
async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, content_type, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    parse(&body).unwrap_or_else(|e| panic!("/metrics is not valid: {e}\n{body}"))
}

/// Scrapes until `check` holds (the hub publishes after events the test
/// cannot wait on directly, such as a client's end of stream).
async fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let scrape = scrape(addr).await;
        if check(&scrape) {
            return scrape;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server with every transport (TCP, TLS, the web page's WebSocket over
/// HTTPS), a store, presence sent at once and no periodic snapshot, and a
/// small send queue so that a client that does not read is cut off soon.
/// Its metrics are on a plain HTTP listener of their own.
fn config(tls: &TestTls, data_dir: &std::path::Path) -> Config {
    Config {
        web: Some("127.0.0.1:0".parse().unwrap()),
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(data_dir.to_path_buf()),
        presence_coalesce: Duration::ZERO,
        presence_interval: Duration::ZERO,
        send_queue: 32 * 1024,
        ..tls.config()
    }
}

fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

/// A browser on `/ws` over HTTPS, registered as `name`.
async fn browser(
    web: SocketAddr,
    name: &str,
    tls: &TestTls,
) -> tokio_tungstenite::WebSocketStream<impl AsyncRead + AsyncWrite + Unpin> {
    let stream = TcpStream::connect(web).await.unwrap();
    let server_name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tls.connector.connect(server_name, stream).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", stream)
        .await
        .expect("websocket handshake");
    let register = format!(r#"{{"command":"REGISTER","args":["{name}","online"]}}"#);
    ws.send(Message::text(register)).await.unwrap();
    let first = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("an answer in time")
        .expect("an answer")
        .expect("a frame");
    assert!(
        first.to_text().unwrap().contains("ONLINE_USERS"),
        "{first:?}"
    );
    ws
}

/// Not a TLS handshake, though it starts like one: the server's TLS
/// layer refuses it and closes.
async fn garbage_handshake(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut sink)).await;
}

#[tokio::test]
async fn the_metrics_count_what_clients_did() {
    let tls = TestTls::new();
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(config(&tls, dir.path())).await;
    let addr = server.local_addr();
    let web = server.web_addr().unwrap();
    let metrics = server.metrics_addr().unwrap();
    let start = scrape(metrics).await;
    assert_eq!(start.value("natter_users", &[]), 0.0);
    assert_eq!(start.value("natter_deliveries_total", &[]), 0.0);

    // One client of each encoding over TCP, one over TLS, one browser.
    let mut alice = TestClient::registered(addr, Encoding::Framed, "alice").await;
    let mut bob = TestClient::registered(addr, Encoding::Classic, "bob").await;
    let mut carol = TestClient::registered(addr, Encoding::Json, "carol").await;
    let _dave = TestClient::registered_tls(addr, Encoding::Framed, "dave", &tls).await;
    let _erin = browser(web, "erin", &tls).await;
    garbage_handshake(addr).await;
    let conv = conversation(&mut [&mut alice, &mut bob, &mut carol]).await;
    let before = scrape(metrics).await;
    for (transport, encoding) in [
        ("tcp", "framed"),
        ("tcp", "classic"),
        ("tcp", "json"),
        ("tls", "framed"),
        ("websocket", "json"),
    ] {
        let labels = [("transport", transport), ("encoding", encoding)];
        assert_eq!(before.value("natter_connections", &labels), 1.0);
        assert_eq!(
            before.value("natter_connections_opened_total", &labels),
            1.0
        );
    }
    assert_eq!(
        before.value(
            "natter_connections",
            &[("transport", "tls"), ("encoding", "json")]
        ),
        0.0
    );
    assert_eq!(before.value("natter_users", &[]), 5.0);
    assert_eq!(before.value("natter_conversations", &[]), 1.0);
    let handshakes = |listener, result| {
        before.value(
            "natter_tls_handshakes_total",
            &[("listener", listener), ("result", result)],
        )
    };
    assert_eq!(handshakes("chat", "ok"), 1.0);
    assert_eq!(handshakes("chat", "failed"), 1.0);
    assert_eq!(handshakes("web", "ok"), 1.0);
    assert_eq!(handshakes("web", "failed"), 0.0);
    let invites = [("command", "INVITE")];
    assert_eq!(
        before.value("natter_commands_received_total", &invites),
        1.0
    );

    // Five messages to three members: fifteen deliveries, exactly.
    const MESSAGES: usize = 5;
    let mut sent_bytes = 0;
    for i in 0..MESSAGES {
        let say = Command::SendMessage {
            conv,
            text: format!("hello {i}"),
            nonce: None,
        };
        let mut wire = BytesMut::new();
        encode_command(&say, Encoding::Framed, &mut wire);
        sent_bytes += wire.len();
        alice.send(say).await;
    }
    let mut received_bytes = 0;
    for member in [&mut alice, &mut bob, &mut carol] {
        for _ in 0..MESSAGES {
            let message = member
                .expect(|m| matches!(m, ServerMessage::Message { .. }).then(|| m.clone()))
                .await;
            received_bytes += encode_message(&message, member.encoding).len();
        }
    }
    let after = scrape(metrics).await;
    let change = |name, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    assert_eq!(change("natter_messages_received_total", &[]), 5.0);
    let sends = [("command", "SEND_MESSAGE")];
    assert_eq!(change("natter_commands_received_total", &sends), 5.0);
    assert_eq!(change("natter_deliveries_total", &[]), 15.0);
    let tcp = [("transport", "tcp")];
    assert_eq!(
        change("natter_received_bytes_total", &tcp),
        sent_bytes as f64
    );
    assert_eq!(
        change("natter_sent_bytes_total", &tcp),
        received_bytes as f64
    );
    // Each message was committed before it was delivered.
    assert!(change("natter_store_commit_seconds_count", &[]) >= 1.0);
    assert!(change("natter_hub_batch_size_count", &[]) >= 1.0);
    assert!(change("natter_hub_busy_seconds_total", &[]) > 0.0);
    assert!(after.value("natter_received_bytes_total", &[("transport", "tls")]) > 0.0);
    assert!(after.value("natter_sent_bytes_total", &[("transport", "websocket")]) > 0.0);
    // The process: the test's own (the server runs in it).
    assert!(after.value("process_cpu_seconds_total", &[]) > 0.0);
    assert!(after.value("process_resident_memory_bytes", &[]) > 1e6);
    let fds = after.value("process_open_fds", &[]);
    assert!(fds >= 6.0, "six clients' sockets at least, {fds}");
    assert!(after.value("process_max_fds", &[]) >= fds);

    // Bad input, a refused command, a wrong password.
    carol
        .send_raw(b"{\"command\":\"NO_SUCH_THING\",\"args\":[]}\n")
        .await;
    carol.expect_error().await;
    carol.send(Command::Join(999)).await;
    carol.expect_error().await;
    let mut frank = TestClient::connect(addr, Encoding::Json).await;
    frank
        .send(Command::Signup {
            name: "frank".into(),
            password: Secret::new("correct horse"),
        })
        .await;
    frank
        .expect(|m| matches!(m, ServerMessage::SignedUp(_)).then_some(()))
        .await;
    frank
        .send(Command::Login {
            name: "frank".into(),
            status: "online".into(),
            secret: Secret::new("wrong horse"),
        })
        .await;
    assert_eq!(frank.expect_error().await, "wrong username or password");
    let errors = scrape(metrics).await;
    let change = |name, labels: &[(&str, &str)]| delta(&after, &errors, name, labels);
    assert_eq!(
        change("natter_errors_sent_total", &[("kind", "invalid")]),
        1.0
    );
    assert_eq!(
        change("natter_errors_sent_total", &[("kind", "refused")]),
        1.0
    );
    assert_eq!(change("natter_errors_sent_total", &[("kind", "auth")]), 1.0);
    assert_eq!(change("natter_login_attempts_total", &[]), 1.0);
    let bad = [("reason", "bad_credentials")];
    assert_eq!(change("natter_login_failures_total", &bad), 1.0);

    // A client that never reads is cut off as a slow consumer.
    let mut sleeper = TestClient::connect_small_buffer(addr, Encoding::Framed).await;
    sleeper.register("sleeper", "zzz").await;
    let nap = conversation(&mut [&mut alice, &mut sleeper]).await;
    let big = "z".repeat(8000);
    let slow = [("reason", "slow_consumer")];
    let mut cut_off = false;
    for _ in 0..2000 {
        alice.say(nap, &big).await;
        alice
            .expect(|m| matches!(m, ServerMessage::Message { .. }).then_some(()))
            .await;
        if scrape(metrics)
            .await
            .value("natter_disconnects_total", &slow)
            > 0.0
        {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "the sleeper was never cut off");

    // GOODBYE, and a client that just goes.
    bob.send(Command::Goodbye).await;
    bob.expect_closed().await;
    drop(carol);
    let end = scrape_until(metrics, "carol's end counted", |s| {
        s.value("natter_disconnects_total", &[("reason", "client")]) >= 1.0
    })
    .await;
    let disconnects = |reason| end.value("natter_disconnects_total", &[("reason", reason)]);
    assert_eq!(disconnects("slow_consumer"), 1.0);
    assert_eq!(disconnects("goodbye"), 1.0);
    assert_eq!(disconnects("client"), 1.0);
    assert_eq!(disconnects("rate_limit"), 0.0);
    let open = |encoding| {
        end.value(
            "natter_connections",
            &[("transport", "tcp"), ("encoding", encoding)],
        )
    };
    // alice and frank remain on TCP (framed, JSON); bob and carol left.
    assert_eq!(open("framed"), 1.0);
    assert_eq!(open("classic"), 0.0);
    assert_eq!(open("json"), 1.0);
    assert_eq!(end.value("natter_users", &[]), 3.0, "alice, dave, erin");
    server.shutdown().await;
}

/// With `--metrics ADDR`, the numbers are there and only there: a public
/// web page does not show them.
#[tokio::test]
async fn a_metrics_listener_of_its_own_takes_metrics_off_the_web_page() {
    let server = common::start_with(Config {
        web: Some("127.0.0.1:0".parse().unwrap()),
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..common::test_config()
    })
    .await;
    let web = server.web_addr().unwrap();
    let metrics = server.metrics_addr().expect("a metrics listener");
    let _alice = TestClient::registered(server.local_addr(), Encoding::Json, "alice").await;
    let scrape = scrape(metrics).await;
    assert_eq!(scrape.value("natter_users", &[]), 1.0);
    assert_eq!(http_get(web, "/metrics").await.0, 404);
    assert_eq!(http_get(metrics, "/").await.0, 404);
    assert_eq!(http_get(web, "/healthz").await.0, 200);
    server.shutdown().await;
}

/// Every metric the Grafana dashboard queries is one a real server
/// exports: a renamed metric cannot leave a panel silently empty.
#[tokio::test]
async fn every_metric_the_dashboard_queries_exists() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/grafana/natter.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "only {} queries", exprs.len());
    let server: ServerHandle = common::start_with(Config {
        web: Some("127.0.0.1:0".parse().unwrap()),
        ..common::test_config()
    })
    .await;
    let scrape = scrape(server.web_addr().unwrap()).await;
    let mut used = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            used += 1;
            assert!(
                scrape.has_sample_named(&name),
                "the dashboard queries {name} ({expr}), which /metrics does not have"
            );
        }
    }
    assert!(used >= exprs.len(), "queries without a metric: {exprs:?}");
    server.shutdown().await;
}

/// Every `expr` of every panel's targets.
fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The metric names in a PromQL expression: every `natter_…` and
/// `process_…` word.
fn metric_names(expr: &str) -> Vec<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    expr.split(|c: char| !word(c))
        .filter(|w| w.starts_with("natter_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let good = "# TYPE a counter\na_total{x=\"1\"} 2\n# TYPE h histogram\n\
                h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n# EOF\n";
    assert!(parse(good).is_ok(), "{:?}", parse(good));
    for bad in [
        "# TYPE a counter\na_total 1\n",                   // no EOF
        "a_total 1\n# EOF\n",                              // no TYPE
        "# TYPE a counter\nb_total 1\n# EOF\n",            // another family
        "# TYPE a counter\na_total{x=\"1} 1\n# EOF\n",     // broken label
        "# TYPE a counter\na_total one\n# EOF\n",          // bad value
        "# TYPE a counter\na_total 1\na_total 2\n# EOF\n", // twice
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

/// A client over the rate limit for the flood window is cut off, and the
/// metrics say so (about 5 s: the window).
#[tokio::test]
async fn a_flooder_cut_off_is_counted() {
    let defaults = Config::default();
    let server = common::start_with(Config {
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        rate_limit: defaults.rate_limit,
        rate_burst: defaults.rate_burst,
        ..common::test_config()
    })
    .await;
    let metrics = server.metrics_addr().unwrap();
    let flooder = TestClient::registered(server.local_addr(), Encoding::Framed, "flooder").await;
    let (mut flooder_in, mut flooder_out) = flooder.split();
    let flood = tokio::spawn(async move {
        let mut burst = BytesMut::new();
        for _ in 0..100 {
            encode_command(&Command::ListConversations, Encoding::Framed, &mut burst);
        }
        // Bounded: far more than the flood window lets in.
        for _ in 0..10_000 {
            if flooder_out.write_all(&burst).await.is_err() {
                break;
            }
        }
    });
    let mut last_error = None;
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match flooder_in.recv().await {
                common::Received::Closed => break,
                common::Received::Message(ServerMessage::Error(text)) => last_error = Some(text),
                common::Received::Message(_) => {}
            }
        }
    })
    .await;
    ended.expect("the flooder is cut off within 15 s");
    flood.abort();
    assert!(last_error.unwrap().starts_with("flooding"));
    let scrape = scrape(metrics).await;
    let rate_limit = [("reason", "rate_limit")];
    assert_eq!(scrape.value("natter_disconnects_total", &rate_limit), 1.0);
    let kind = [("kind", "rate_limit")];
    assert_eq!(scrape.value("natter_errors_sent_total", &kind), 1.0);
    assert_eq!(scrape.value("natter_users", &[]), 0.0);
    server.shutdown().await;
}

/// Posts a form to the web listener as the page does (from its origin);
/// gives the status.
async fn post_form(web: SocketAddr, path: &str, form: &str) -> u16 {
    let mut stream = TcpStream::connect(web).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {web}\r\nOrigin: http://{web}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The web page's sign-in counts as a login like REGISTER with a password.
#[tokio::test]
async fn a_wrong_password_on_the_web_page_is_a_failed_login() {
    let server = common::start_with(Config {
        web: Some("127.0.0.1:0".parse().unwrap()),
        ..common::test_config()
    })
    .await;
    let web = server.web_addr().unwrap();
    let signup = "name=gail&password=correct+horse+battery";
    assert_eq!(post_form(web, "/signup", signup).await, 200);
    let wrong = "name=gail&password=wrong+horse+battery";
    assert_eq!(post_form(web, "/signin", wrong).await, 401);
    let right = "name=gail&password=correct+horse+battery";
    assert_eq!(post_form(web, "/signin", right).await, 200);
    let scrape = scrape(web).await;
    assert_eq!(scrape.value("natter_login_attempts_total", &[]), 2.0);
    let bad = [("reason", "bad_credentials")];
    assert_eq!(scrape.value("natter_login_failures_total", &bad), 1.0);
    server.shutdown().await;
}
