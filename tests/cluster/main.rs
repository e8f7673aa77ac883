//! Several natter nodes on one NATS JetStream cluster, all real processes
//! on loopback: three `nats-server`s clustered with JetStream (the
//! `nats` module), `natter serve --nats ... --node ...` processes, and
//! clients over real sockets in every encoding.
//!
//! What is checked is what a user would notice: a name is claimed once in
//! the whole cluster; presence, invitations and messages cross nodes; 50
//! members spread over three nodes see the same order; history is served
//! by any node; a natter node killed with SIGKILL makes its users offline
//! everywhere within a stated bound, and they come back on another node
//! (one started after the traffic, so it catches up from the log) without
//! losing a message; one nats-server of three killed, chat goes on; the
//! whole cluster restarted, conversations and history are intact.
//!
//! The harness is libtest-mimic (see `crates/proto/tests/support/external.rs`):
//! without a `nats-server` on PATH the tests are listed as ignored (nextest
//! shows them as skipped); under CI (`.ci/install-nats.sh` installs one) they
//! run and fail.

#[path = "../common/mod.rs"]
mod common;
#[path = "../../crates/proto/tests/support/external.rs"]
mod external;
mod nats;
#[path = "../ports/mod.rs"]
mod ports;
#[path = "../../crates/store/tests/support/tmpfs.rs"]
mod tmpfs;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Client, PATIENCE};
use external::trial_needing;
use nats::NatsCluster;
use natter_proto::{Command, Encoding, Secret, ServerMessage};
use natter_server::cluster::log::STREAM;

/// How long a node may take to join (stream creation while JetStream
/// elects leaders, then the replay of the log).
const JOIN_PATIENCE: Duration = Duration::from_secs(40);

/// The bound promised for a killed node's users to be offline everywhere:
/// the node timeout (4 s by the log's clock) plus a heartbeat period, with
/// room for a loaded machine.
const OFFLINE_BOUND: Duration = Duration::from_secs(10);

/// For a node stopped with SIGTERM, from the signal: its last heartbeat
/// was at most 1 s before, so the timeout (4 s) could tell no sooner than
/// 3 s after it; only the node's own "stopping" entry can meet this.
const LEAVE_BOUND: Duration = Duration::from_millis(2500);

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let nats = nats::nats_server();
    let trials = vec![
        trial_needing("contract_across_three_nodes", &nats, |program| {
            runtime().block_on(contract_across_three_nodes(program))
        }),
        trial_needing(
            "fifty_members_on_three_nodes_see_one_order",
            &nats,
            |program| runtime().block_on(fifty_members_see_one_order(program)),
        ),
        trial_needing(
            "killed_node_users_go_offline_and_come_back",
            &nats,
            |program| runtime().block_on(killed_node(program)),
        ),
        trial_needing(
            "a_node_killed_under_traffic_restarts_with_every_message",
            &nats,
            |program| runtime().block_on(killed_under_traffic(program)),
        ),
        trial_needing(
            "a_node_whose_disk_fills_keeps_delivering_what_the_log_holds",
            &nats,
            |program| runtime().block_on(disk_full_node(program)),
        ),
        trial_needing("accounts_hold_across_nodes", &nats, |program| {
            runtime().block_on(accounts_across_nodes(program))
        }),
        trial_needing("web_sessions_hold_across_nodes", &nats, |program| {
            runtime().block_on(web_sessions_across_nodes(program))
        }),
        trial_needing("the_documented_cluster_commands_run", &nats, |program| {
            runtime().block_on(documented_commands(program))
        }),
        trial_needing("a_late_node_catches_up_from_a_snapshot", &nats, |program| {
            runtime().block_on(late_node_from_snapshot(program))
        }),
        trial_needing(
            "two_nodes_started_together_on_fresh_nats_servers_both_stay",
            &nats,
            |program| runtime().block_on(started_together(program)),
        ),
        trial_needing(
            "a_node_that_falls_behind_the_trimmed_log_restarts",
            &nats,
            |program| runtime().block_on(fell_behind_the_trimmed_log(program)),
        ),
        trial_needing(
            "nats_server_lost_then_whole_cluster_restarted",
            &nats,
            |program| runtime().block_on(nats_lost_then_restart(program)),
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A `natter serve --nats` process; killed if the test ends while it runs.
struct Node {
    child: Child,
    addr: SocketAddr,
    /// What it printed before its address (how it caught up).
    said: Vec<String>,
    _stdout: mpsc::Receiver<String>,
}

impl Node {
    fn start(nats: &NatsCluster, name: &str, dir: &Path) -> Node {
        Node::start_with(nats, name, dir, &[])
    }

    /// [`Node::start`] with `extra` arguments.
    fn start_with(nats: &NatsCluster, name: &str, dir: &Path, extra: &[&str]) -> Node {
        Node::start_logging(nats, name, dir, extra, Stdio::inherit())
    }

    /// [`Node::start_with`], its log (stderr) going to `log`.
    fn start_logging(
        nats: &NatsCluster,
        name: &str,
        dir: &Path,
        extra: &[&str],
        log: Stdio,
    ) -> Node {
        let data = dir.join(format!("natter-{name}"));
        let data = data.to_str().expect("a UTF-8 path");
        let urls = nats.urls();
        let web = if extra.contains(&"--web") {
            None
        } else {
            Some("--no-web")
        };
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend(web);
        args.extend(["--data-dir", data, "--nats", &urls, "--node", name]);
        args.extend_from_slice(extra);
        Node::spawn(&args, dir, log)
    }

    /// `natter serve ARGS` (plus test settings) in `cwd`, once it listens.
    fn spawn(args: &[&str], cwd: &Path, log: Stdio) -> Node {
        let mut child = Process::new(env!("CARGO_BIN_EXE_natter"))
            .arg("serve")
            .args(args)
            .args(["--presence-coalesce", "0", "--rate-limit", "0"])
            .current_dir(cwd)
            .env(
                "RUST_LOG",
                std::env::var("NATTER_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("natter serve starts");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + JOIN_PATIENCE;
        let mut said = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.trim().parse().expect("an address");
                    }
                    said.push(line);
                }
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    panic!("natter serve {args:?} printed no address (exit status: {status:?})");
                }
            }
        };
        Node {
            child,
            addr,
            said,
            _stdout: lines,
        }
    }

    /// SIGTERM, and waits (bounded) for a clean exit.
    fn terminate(mut self) {
        let status = Process::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "the node exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "the node ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Sends `signal` (`STOP`, `CONT`) to the node.
    fn signal(&self, signal: &str) {
        let status = Process::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (bounded by `patience`) for the node to exit on its own.
    fn wait_exit(mut self, patience: Duration) -> std::process::ExitStatus {
        common::wait_for_exit(&mut self.child, patience)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three nats-servers and three nodes, in a temporary directory.
fn cluster(program: &Path, dir: &Path) -> (NatsCluster, Vec<Node>) {
    let nats = NatsCluster::start(program, dir);
    let nodes = ["a", "b", "c"]
        .iter()
        .map(|name| Node::start(&nats, name, dir))
        .collect();
    (nats, nodes)
}

/// `alice` invites the user "bob" (`bob`) to a new conversation and both
/// join it: its id.
async fn alice_invites_bob(alice: &mut Client, bob: &mut Client) -> u64 {
    let conv = alice.invite(&["bob"]).await;
    assert_eq!(bob.expect_invitation().await, conv);
    alice.join(conv).await;
    bob.join(conv).await;
    conv
}

/// Waits for an ONLINE_USERS that `accept`s the set of names online.
async fn until_online(client: &mut Client, accept: impl Fn(&[String]) -> bool) {
    client
        .reader
        .expect(|m| match m {
            ServerMessage::OnlineUsers(users) => {
                let names: Vec<String> = users.iter().map(|(n, _)| n.clone()).collect();
                accept(&names).then_some(())
            }
            _ => None,
        })
        .await
}

fn has(names: &[String], name: &str) -> bool {
    names.iter().any(|n| n == name)
}

/// Registers `name`, answering whether the server took it (ONLINE_USERS)
/// or refused it (ERROR).
async fn try_register(client: &mut Client, name: &str) -> Result<(), String> {
    client
        .send(Command::Register {
            name: name.into(),
            status: "online".into(),
        })
        .await;
    client
        .reader
        .expect(|m| match m {
            ServerMessage::OnlineUsers(_) => Some(Ok(())),
            ServerMessage::Error(text) => Some(Err(text.clone())),
            _ => None,
        })
        .await
}

/// Connects with `history` and registers as `name`, again while the name
/// is still held by a connection of a node not yet declared down.
async fn rejoin(addr: SocketAddr, encoding: Encoding, name: &str) -> Client {
    let deadline = Instant::now() + OFFLINE_BOUND;
    loop {
        let mut client = Client::connect(addr, encoding, name).await;
        client.send(Command::Caps(vec!["history".into()])).await;
        client
            .reader
            .expect(|m| matches!(m, ServerMessage::Caps(_)).then_some(()))
            .await;
        match try_register(&mut client, name).await {
            Ok(()) => return client,
            Err(error) => {
                assert!(Instant::now() < deadline, "{name} cannot register: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// A node's own store keeps history without waiting for the disk (its
/// copy of the log is what is durable): node b, killed with SIGKILL while
/// messages pour in and restarted on the same data dir, serves a HISTORY
/// with every message node a has, in the same order.
async fn killed_under_traffic(program: &Path) {
    const MESSAGES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(program, dir.path());
    let start = |name: &str| tokio::task::block_in_place(|| Node::start(&nats, name, dir.path()));
    let a = start("a");
    let b = start("b");
    let mut alice = Client::with_history(a.addr, Encoding::Framed, "alice").await;
    let mut bob = Client::with_history(b.addr, Encoding::Json, "bob").await;
    let conv = alice_invites_bob(&mut alice, &mut bob).await;
    // Half the messages, then b dies while it is still applying them
    // (bob reads nothing), then the other half.
    for i in 0..MESSAGES / 2 {
        alice.say(conv, &format!("m{i}")).await;
    }
    tokio::task::block_in_place(|| b.kill_9());
    drop(bob);
    for i in MESSAGES / 2..MESSAGES {
        alice.say(conv, &format!("m{i}")).await;
    }
    for _ in 0..MESSAGES {
        alice.expect_message().await;
    }
    let on_a: Vec<String> = alice
        .history_after(conv, 0)
        .await
        .into_iter()
        .map(|e| format!("{} {}", e.seq, e.text))
        .collect();
    assert_eq!(on_a.len(), MESSAGES, "node a's history");
    let b = start("b");
    let mut bob = rejoin(b.addr, Encoding::Json, "bob").await;
    let on_b: Vec<String> = bob
        .history_after(conv, 0)
        .await
        .into_iter()
        .map(|e| format!("{} {}", e.seq, e.text))
        .collect();
    assert_eq!(on_b, on_a, "node b's history after SIGKILL and a restart");
}

/// Node a's data dir fills up (a 2 MiB tmpfs, filled by another file) while
/// alice on a and bob on b chat: the log holds every message, so every one
/// is delivered on both nodes, in the same order, and alice is never told
/// that a message was not stored; node b's history has them all. (A node's
/// failed cache commit once made its copy forget the messages, refuse
/// their senders and drop their deliveries, diverging from the others.)
async fn disk_full_node(program: &Path) {
    const MESSAGES: usize = 60;
    let Some(disk) = tmpfs::mount_or_skip("2m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(program, dir.path());
    let a = tokio::task::block_in_place(|| Node::start(&nats, "a", disk.path()));
    let b = tokio::task::block_in_place(|| Node::start(&nats, "b", dir.path()));
    let mut alice = Client::with_history(a.addr, Encoding::Framed, "alice").await;
    let mut bob = Client::with_history(b.addr, Encoding::Json, "bob").await;
    let conv = alice_invites_bob(&mut alice, &mut bob).await;
    tmpfs::fill(&disk.path().join("filler"));
    let big = |i: usize| format!("m{i} {}", "y".repeat(4000));
    for i in 0..MESSAGES {
        alice.say(conv, &big(i)).await;
    }
    for i in 0..MESSAGES {
        let (at, from, text, _) = alice.expect_message().await;
        assert_eq!(
            (at, from.as_str(), text),
            (conv, "alice", big(i)),
            "alice's own"
        );
        let (at, from, text, _) = bob.expect_message().await;
        assert_eq!((at, from.as_str(), text), (conv, "alice", big(i)), "bob's");
    }
    let on_b = bob.history_after(conv, 0).await;
    assert_eq!(on_b.len(), MESSAGES, "node b stored every message");
    drop(a);
    drop(disk);
}

/// The web address a node started with `--web` printed.
fn web_addr(node: &Node) -> SocketAddr {
    let line = node
        ._stdout
        .recv_timeout(PATIENCE)
        .expect("a line after the address");
    let addr = line
        .strip_prefix("web on http://")
        .expect("the web address");
    addr.trim().parse().expect("an address")
}

/// One HTTP/1.1 request from the page's own origin (the cookie, if any,
/// under the name the node at `web` reads): the status and the session
/// token of the cookie it sets, if it sets one.
async fn web_request(
    web: SocketAddr,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(web).await.expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {web}\r\nOrigin: http://{web}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(cookie) = cookie {
        request.push_str(&format!(
            "Cookie: natter_session_{}={cookie}\r\n",
            web.port()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("an answer in time")
        .expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let token = response
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or(l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .and_then(|c| c.split_once('=').map(|(_, value)| value.to_owned()))
        .filter(|value| !value.is_empty())
        .and_then(|value| value.split_once(':').map(|(_, token)| token.to_owned()));
    (status, token)
}

/// The web page's sessions are the accounts' sessions, on every node: a
/// sign-up on node a's page gives a token that signs in on node b; a
/// sign-in on b's page works with the password; a sign-out on b ends the
/// session on a.
async fn web_sessions_across_nodes(program: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(program, dir.path());
    let start = |name: &str| {
        let extra = ["--web", "127.0.0.1:0"];
        tokio::task::block_in_place(|| Node::start_with(&nats, name, dir.path(), &extra))
    };
    let a = start("a");
    let b = start("b");
    let (web_a, web_b) = (web_addr(&a), web_addr(&b));
    let form = "name=ann&password=correct+horse";
    let (status, token) = web_request(web_a, "/signup", None, form).await;
    assert_eq!(status, 200, "sign-up on a's page");
    let token = token.expect("a session cookie");
    let on_b = log_in(b.addr, Encoding::Json, "ann", &token).await;
    assert!(on_b.is_ok(), "a's web session on b: {:?}", on_b.err());
    let wrong = web_request(web_b, "/signin", None, "name=ann&password=wrong").await;
    assert_eq!(wrong, (401, None), "a wrong password on b's page");
    let (status, other) = web_request(web_b, "/signin", None, form).await;
    assert_eq!(status, 200, "sign-in on b's page");
    assert!(other.is_some_and(|t| t != token), "a session of its own");
    // Signed out on b's page: the session ends everywhere.
    let cookie = format!("ann:{token}");
    let (status, _) = web_request(web_b, "/signout", Some(&cookie), "").await;
    assert_eq!(status, 200, "sign-out on b");
    let ended = log_in(a.addr, Encoding::Framed, "ann", &token).await;
    assert_eq!(ended.err().as_deref(), Some(BAD_CREDENTIALS), "on a");

    // The operator's account tool would write where no node reads.
    let data = dir.path().join("natter-a");
    let out = Process::new(env!("CARGO_BIN_EXE_natter"))
        .args(["account", "list", "--data-dir"])
        .arg(&data)
        .output()
        .expect("natter account runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "natter account on a node's data dir");
    assert!(said.contains("cluster node's data dir"), "{said}");
}

/// What a wrong password (or an ended session) is told.
const BAD_CREDENTIALS: &str = "wrong username or password";

/// SIGNUP of `name` on the node at `addr`: SIGNED_UP, or the ERROR.
async fn sign_up(addr: SocketAddr, name: &str, password: &str) -> Result<(), String> {
    let mut client = Client::connect(addr, Encoding::Json, name).await;
    client
        .send(Command::Signup {
            name: name.into(),
            password: Secret::new(password),
        })
        .await;
    client
        .reader
        .expect(|m| match m {
            ServerMessage::SignedUp(n) if n == name => Some(Ok(())),
            ServerMessage::Error(text) => Some(Err(text.clone())),
            _ => None,
        })
        .await
}

/// REGISTER of the account `name` with `secret` (a password or a session
/// token) on the node at `addr`, asking for a session token: the device
/// and its new token, or the ERROR.
async fn log_in(
    addr: SocketAddr,
    encoding: Encoding,
    name: &str,
    secret: &str,
) -> Result<(Client, Option<String>), String> {
    let mut client = Client::connect(addr, encoding, name).await;
    client.send(Command::Caps(vec!["session".into()])).await;
    client
        .reader
        .expect(|m| matches!(m, ServerMessage::Caps(_)).then_some(()))
        .await;
    client
        .send(Command::Login {
            name: name.into(),
            status: "online".into(),
            secret: Secret::new(secret),
        })
        .await;
    let mut token = None;
    loop {
        let message = client
            .reader
            .expect(|m| match m {
                ServerMessage::Session(t) => Some(Ok(Some(t.expose().to_owned()))),
                ServerMessage::OnlineUsers(users)
                    if users.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) =>
                {
                    Some(Ok(None))
                }
                ServerMessage::Error(text) => Some(Err(text.clone())),
                _ => None,
            })
            .await?;
        match message {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    if token.is_none() && !secret.starts_with("nt1.") {
        // The token may come after ONLINE_USERS.
        token = Some(
            client
                .reader
                .expect(|m| match m {
                    ServerMessage::Session(t) => Some(t.expose().to_owned()),
                    _ => None,
                })
                .await,
        );
    }
    Ok((client, token))
}

/// Accounts are one set for the whole cluster: made on one node, they
/// sign in on another; a session token from one node resumes on another;
/// a password change or a LOGOUT on one node ends sessions everywhere; an
/// account's name is claimed once, against guests of every node too.
async fn accounts_across_nodes(program: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let (_nats, nodes) = cluster(program, dir.path());
    let (a, b, c) = (nodes[0].addr, nodes[1].addr, nodes[2].addr);

    // Made on a, refused on b with a wrong password, and as a guest on c.
    sign_up(a, "Alice", "correct horse")
        .await
        .expect("sign-up on a");
    let wrong = log_in(b, Encoding::Framed, "alice", "wrong horse").await;
    assert_eq!(wrong.err().as_deref(), Some(BAD_CREDENTIALS), "on b");
    let mut guest = Client::connect(c, Encoding::Classic, "guest").await;
    let refused = try_register(&mut guest, "alice").await;
    assert_eq!(
        refused.err().as_deref(),
        Some(BAD_CREDENTIALS),
        "guest on c"
    );
    let again = sign_up(c, "alice", "another horse").await;
    assert!(
        again.as_ref().is_err_and(|e| e.contains("taken")),
        "{again:?}"
    );

    // Signs in on b; a token from a resumes on b.
    let (on_b, token_b) = log_in(b, Encoding::Json, "alice", "correct horse")
        .await
        .expect("the password on b");
    let (mut on_a, token_a) = log_in(a, Encoding::Framed, "alice", "correct horse")
        .await
        .expect("the password on a");
    let (token_a, token_b) = (token_a.unwrap(), token_b.unwrap());
    let (on_b_again, none) = log_in(b, Encoding::Classic, "alice", &token_a)
        .await
        .expect("a's token on b");
    assert_eq!(none, None, "a token login gets no new token");

    // A password change on a signs out the devices on b and ends their
    // sessions on every node; the device that changed it keeps its own.
    on_a.send(Command::Password {
        old: Secret::new("correct horse"),
        new: Secret::new("battery staple"),
    })
    .await;
    on_a.reader
        .expect(|m| matches!(m, ServerMessage::PasswordChanged(n) if n == "Alice").then_some(()))
        .await;
    for device in [on_b, on_b_again] {
        tokio::time::timeout(PATIENCE, device.until_closed())
            .await
            .expect("b's devices are signed out");
    }
    for (addr, secret) in [(c, token_b.as_str()), (b, "correct horse")] {
        let stale = log_in(addr, Encoding::Framed, "alice", secret).await;
        assert_eq!(stale.err().as_deref(), Some(BAD_CREDENTIALS));
    }
    let (_kept, _) = log_in(b, Encoding::Json, "alice", &token_a)
        .await
        .expect("the changing device's session goes on");
    let (mut on_c, token_c) = log_in(c, Encoding::Json, "alice", "battery staple")
        .await
        .expect("the new password on c");

    // LOGOUT on c ends that session on every node.
    on_c.send(Command::Logout).await;
    assert!(!on_c.until_closed().await, "LOGOUT closes the device");
    let ended = log_in(a, Encoding::Framed, "alice", &token_c.unwrap()).await;
    assert_eq!(
        ended.err().as_deref(),
        Some(BAD_CREDENTIALS),
        "after LOGOUT"
    );

    // A SIGNUP on a and a guest's REGISTER on b race for one name: one
    // wins, in every copy alike.
    let mut racer = Client::connect(b, Encoding::Framed, "erin").await;
    racer.writer.queue(&Command::Register {
        name: "erin".into(),
        status: "racing".into(),
    });
    let (signed_up, _) = tokio::join!(sign_up(a, "erin", "correct horse"), async {
        racer.writer.flush().await.expect("write")
    });
    let registered = racer
        .reader
        .expect(|m| match m {
            ServerMessage::OnlineUsers(_) => Some(Ok(())),
            ServerMessage::Error(text) => Some(Err(text.clone())),
            _ => None,
        })
        .await;
    assert!(
        signed_up.is_ok() != registered.is_ok(),
        "one of them wins: sign-up {signed_up:?}, guest {registered:?}"
    );
    let as_account = log_in(c, Encoding::Json, "erin", "correct horse").await;
    assert_eq!(as_account.is_ok(), signed_up.is_ok(), "node c agrees");
}

async fn contract_across_three_nodes(program: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let (_nats, nodes) = cluster(program, dir.path());
    let (a, b, c) = (nodes[0].addr, nodes[1].addr, nodes[2].addr);

    // Every encoding, one node each.
    let mut alice = Client::with_history(a, Encoding::Framed, "alice").await;
    let mut bob = Client::course(b, Encoding::Classic, "bob").await;
    let mut carol = Client::with_history(c, Encoding::Json, "carol").await;

    // Presence crosses nodes.
    until_online(&mut alice, |n| has(n, "bob") && has(n, "carol")).await;
    until_online(&mut bob, |n| has(n, "alice") && has(n, "carol")).await;

    // A name is claimed once in the whole cluster: taken on another node...
    let mut impostor = Client::connect(c, Encoding::Classic, "impostor").await;
    let refused = try_register(&mut impostor, "Alice").await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("taken")),
        "a second alice on another node: {refused:?}"
    );
    // ...and when two nodes race for a free one, exactly one wins.
    let mut racers = Vec::new();
    for addr in [a, b, c] {
        racers.push(Client::connect(addr, Encoding::Framed, "dave?").await);
    }
    let mut writes = Vec::new();
    for racer in &mut racers {
        racer.writer.queue(&Command::Register {
            name: "dave".into(),
            status: "racing".into(),
        });
    }
    for racer in &mut racers {
        writes.push(racer.writer.flush().await);
    }
    assert!(writes.iter().all(|w| w.is_ok()));
    let mut won = 0;
    for racer in &mut racers {
        let answer = racer
            .reader
            .expect(|m| match m {
                ServerMessage::OnlineUsers(_) => Some(true),
                ServerMessage::Error(text) if text.contains("taken") => Some(false),
                _ => None,
            })
            .await;
        won += usize::from(answer);
    }
    assert_eq!(
        won, 1,
        "three nodes raced for \"dave\": exactly one must win"
    );

    // An invitation from node a reaches b and c; they join; messages go
    // both ways, in the same order for everyone.
    let names = vec!["bob".to_string(), "carol".to_string()];
    alice.send(Command::Invite(names)).await;
    let conv = alice.expect_invitation().await;
    assert_eq!(bob.expect_invitation().await, conv);
    assert_eq!(carol.expect_invitation().await, conv);
    for client in [&mut alice, &mut bob, &mut carol] {
        client.join(conv).await;
    }
    let members = alice
        .conversations()
        .await
        .into_iter()
        .find(|(id, _)| *id == conv)
        .map(|(_, m)| m);
    assert_eq!(
        members.as_deref(),
        Some(&["alice".to_string(), "bob".into(), "carol".into()][..])
    );
    alice.say(conv, "hello from a").await;
    bob.say(conv, "hello from b").await;
    carol.say(conv, "hello from c").await;
    let mut seen = Vec::new();
    for client in [&mut alice, &mut bob, &mut carol] {
        let mut got = Vec::new();
        for _ in 0..3 {
            let (id, sender, text, _) = client.expect_message().await;
            assert_eq!(id, conv);
            got.push(format!("{sender}: {text}"));
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "alice and bob saw different orders");
    assert_eq!(seen[0], seen[2], "alice and carol saw different orders");

    // History is served by any node: carol asks hers, alice hers.
    let on_c = carol.history_after(conv, 0).await;
    let on_a = alice.history_after(conv, 0).await;
    let texts = |h: &[natter_proto::HistoryEntry]| -> Vec<String> {
        h.iter()
            .map(|e| format!("{}: {}", e.sender, e.text))
            .collect()
    };
    assert_eq!(texts(&on_c), seen[0], "history on node c");
    assert_eq!(texts(&on_a), seen[0], "history on node a");

    // A departure crosses nodes too: bob leaves (his own listing, answered
    // after his LEAVE came back, no longer has him), and alice's node
    // applies it as well.
    bob.send(Command::Leave(conv)).await;
    let members_of = |listed: Vec<(u64, Vec<String>)>| {
        listed
            .into_iter()
            .find(|(id, _)| *id == conv)
            .map(|(_, m)| m)
    };
    let at_bob = members_of(bob.conversations().await);
    assert_eq!(
        at_bob.as_deref(),
        Some(&["alice".to_string(), "carol".into()][..])
    );
    let deadline = Instant::now() + PATIENCE;
    while members_of(alice.conversations().await) != at_bob {
        assert!(
            Instant::now() < deadline,
            "alice's node never applied bob's LEAVE"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fifty_members_see_one_order(program: &Path) {
    const MEMBERS: usize = 50;
    const SENDERS: usize = 6;
    const EACH: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let (_nats, nodes) = cluster(program, dir.path());
    let mut clients = Vec::new();
    for i in 0..MEMBERS {
        let addr = nodes[i % nodes.len()].addr;
        let encoding = [Encoding::Framed, Encoding::Classic, Encoding::Json][i % 3];
        clients.push(Client::course(addr, encoding, &format!("m{i:02}")).await);
    }
    // m00 opens a conversation; everyone joins it (open policy).
    let conv = clients[0].invite(&["m01"]).await;
    for client in &mut clients {
        client.join(conv).await;
    }
    let listed = clients[0].conversations().await;
    let members = &listed.iter().find(|(id, _)| *id == conv).unwrap().1;
    assert_eq!(members.len(), MEMBERS);
    // Senders on every node at once.
    for round in 0..EACH {
        for (s, sender) in clients.iter_mut().take(SENDERS).enumerate() {
            sender.writer.queue(&Command::SendMessage {
                conv,
                text: format!("s{s} #{round}"),
                nonce: None,
            });
        }
        for sender in clients.iter_mut().take(SENDERS) {
            sender.writer.flush().await.expect("write");
        }
    }
    let total = SENDERS * EACH;
    let mut orders = Vec::new();
    for client in clients.into_iter() {
        orders.push(tokio::spawn(async move {
            let mut client = client;
            let mut order = Vec::with_capacity(total);
            while order.len() < total {
                let (id, _, text, _) = client.expect_message().await;
                if id == conv {
                    order.push(text);
                }
            }
            order
        }));
    }
    let mut first: Option<Vec<String>> = None;
    for (i, order) in orders.into_iter().enumerate() {
        let order = order.await.expect("a member's reader");
        // Each sender's own messages keep the order they were sent in.
        for s in 0..SENDERS {
            let own: Vec<&String> = order
                .iter()
                .filter(|t| t.starts_with(&format!("s{s} ")))
                .collect();
            let sent: Vec<String> = (0..EACH).map(|r| format!("s{s} #{r}")).collect();
            assert_eq!(
                own,
                sent.iter().collect::<Vec<_>>(),
                "member {i}, sender {s}"
            );
        }
        match &first {
            None => first = Some(order),
            Some(first) => assert_eq!(&order, first, "member m{i:02} saw another order"),
        }
    }
}

/// Two nodes started at the same moment on nats-servers that have just
/// opened their ports, as a machine that boots them together does: while
/// JetStream settles, a node's first heartbeats may reach the log late,
/// and neither may declare the other down for it (before the starting
/// grace, one of them often exited within seconds). Both stay, and form
/// one cluster.
async fn started_together(program: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start_unsettled(program, dir.path());
    nats.wait_listening();
    let mut nodes = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let a = s.spawn(|| Node::start(&nats, "a", dir.path()));
            let b = s.spawn(|| Node::start(&nats, "b", dir.path()));
            vec![a.join().unwrap(), b.join().unwrap()]
        })
    });
    // Longer than the liveness timeout several times over.
    tokio::time::sleep(Duration::from_secs(15)).await;
    for node in &mut nodes {
        let exited = node.child.try_wait().expect("try_wait");
        assert!(exited.is_none(), "a node exited: {exited:?}");
    }
    let mut alice = Client::course(nodes[0].addr, Encoding::Framed, "alice").await;
    let _bob = Client::course(nodes[1].addr, Encoding::Json, "bob").await;
    until_online(&mut alice, |names| has(names, "bob")).await;
}

async fn killed_node(program: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let (nats, mut nodes) = cluster(program, dir.path());
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let mut alice = Client::with_history(a, Encoding::Framed, "alice").await;
    let mut bob = Client::with_history(b, Encoding::Classic, "bob").await;
    let carol = Client::course(nodes[2].addr, Encoding::Json, "carol").await;
    let conv = alice_invites_bob(&mut alice, &mut bob).await;
    alice.say(conv, "before the crash").await;
    assert_eq!(bob.expect_message().await.2, "before the crash");

    // SIGKILL bob's node: within the bound, alice sees him offline.
    let killed = nodes.remove(1);
    tokio::task::block_in_place(|| killed.kill_9());
    let started = Instant::now();
    let offline = async {
        until_online(&mut alice, |n| !has(n, "bob")).await;
    };
    // `expect` gives up after PATIENCE; the bound is checked on the clock.
    tokio::time::timeout(OFFLINE_BOUND.max(PATIENCE), offline)
        .await
        .expect("bob never went offline");
    let took = started.elapsed();
    assert!(took <= OFFLINE_BOUND, "bob went offline after {took:?}");
    eprintln!("killed node's user offline everywhere after {took:?}");

    // Meanwhile the conversation goes on.
    alice.say(conv, "while bob was away").await;

    // A node started now catches up from the log; bob reconnects there,
    // is a member again, and loses nothing.
    let d = tokio::task::block_in_place(|| Node::start(&nats, "d", dir.path()));
    let mut bob = Client::with_history(d.addr, Encoding::Classic, "bob").await;
    let listed = bob.conversations().await;
    assert!(
        listed.iter().any(|(id, _)| *id == conv),
        "bob is a member again: {listed:?}"
    );
    let history: Vec<String> = bob
        .history_after(conv, 0)
        .await
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(history, ["before the crash", "while bob was away"]);
    alice.say(conv, "welcome back").await;
    assert_eq!(bob.expect_message().await.2, "welcome back");
    bob.say(conv, "thanks").await;
    let (_, sender, text, _) = loop {
        let message = alice.expect_message().await;
        if message.1 == "bob" {
            break message;
        }
    };
    assert_eq!((sender.as_str(), text.as_str()), ("bob", "thanks"));

    // A node stopped cleanly (SIGTERM) says so in the log: its users are
    // offline everywhere at once, well before the timeout would tell.
    let c = nodes.remove(1);
    let started = Instant::now();
    // The node takes a while to close its connections and exit: watch
    // alice meanwhile.
    let stopping = tokio::task::spawn_blocking(move || c.terminate());
    until_online(&mut alice, |n| !has(n, "carol")).await;
    let took = started.elapsed();
    stopping.await.expect("the node stopped cleanly");
    eprintln!("a stopped node's user offline everywhere after {took:?}");
    assert!(took < LEAVE_BOUND, "carol went offline after {took:?}");
    drop(carol);
}

/// `(snapshot entry, entries replayed after it)` from what a node said,
/// if it caught up from a snapshot.
fn caught_up_from_snapshot(node: &Node) -> Option<(u64, u64)> {
    node.said.iter().find_map(|line| {
        let rest = line.strip_prefix("caught up from the snapshot at log entry ")?;
        let (seq, rest) = rest.split_once(", then ")?;
        let replayed = rest.strip_suffix(" entries")?;
        Some((seq.parse().ok()?, replayed.parse().ok()?))
    })
}

/// With a snapshot every 40 entries, a node started after ~70 inputs
/// starts from a snapshot, replays only the entries after it, and then
/// serves the same chat: who is online (through the other nodes), the
/// conversation and its members, its history, and messages both ways.
async fn late_node_from_snapshot(program: &Path) {
    const EVERY: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(program, dir.path());
    let every = EVERY.to_string();
    let extra = ["--snapshot-every", every.as_str()];
    let start = |name: &str| {
        tokio::task::block_in_place(|| Node::start_with(&nats, name, dir.path(), &extra))
    };
    let a = start("a");
    let b = start("b");
    // An account and a session of it, long before the snapshot.
    sign_up(a.addr, "zed", "correct horse")
        .await
        .expect("sign-up");
    let (zed, token) = log_in(b.addr, Encoding::Json, "zed", "correct horse")
        .await
        .expect("zed on b");
    drop(zed);
    let mut alice = Client::with_history(a.addr, Encoding::Framed, "alice").await;
    let mut bob = Client::with_history(b.addr, Encoding::Json, "bob").await;
    let _carol = Client::course(a.addr, Encoding::Classic, "carol").await;
    let conv = alice.invite(&["bob", "carol"]).await;
    assert_eq!(bob.expect_invitation().await, conv);
    alice.join(conv).await;
    bob.join(conv).await;
    for i in 0..30 {
        alice.say(conv, &format!("a{i}")).await;
        bob.say(conv, &format!("b{i}")).await;
    }
    let mut order = Vec::new();
    for _ in 0..60 {
        let (id, sender, text, _) = bob.expect_message().await;
        assert_eq!(id, conv);
        order.push(format!("{sender}: {text}"));
    }

    // Node a (the oldest) writes a snapshot after every 40th entry, in
    // the background: a node started before one is stored replays the
    // log from its start, so start until one catches up from a snapshot.
    let deadline = Instant::now() + JOIN_PATIENCE;
    let (c, (snapshot, replayed)) = loop {
        let c = start("c");
        if let Some(caught_up) = caught_up_from_snapshot(&c) {
            break (c, caught_up);
        }
        assert!(
            Instant::now() < deadline,
            "no node caught up from a snapshot: {:?}",
            c.said
        );
        tokio::task::block_in_place(|| c.terminate());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("node c: snapshot at entry {snapshot}, then {replayed} entries");
    assert!(
        snapshot >= EVERY,
        "the snapshot covers the traffic: {snapshot}"
    );
    assert!(
        replayed < snapshot,
        "node c replayed {replayed} entries, not fewer than the {snapshot} its snapshot covers"
    );

    // Node c knows the account and its session from the snapshot.
    for secret in ["correct horse", token.as_deref().expect("a token")] {
        let on_c = log_in(c.addr, Encoding::Framed, "zed", secret).await;
        assert!(on_c.is_ok(), "zed on node c: {:?}", on_c.err());
    }
    let wrong = log_in(c.addr, Encoding::Framed, "zed", "wrong horse").await;
    assert_eq!(wrong.err().as_deref(), Some(BAD_CREDENTIALS));

    // Node c serves what the others do.
    let mut dave = Client::connect(c.addr, Encoding::Classic, "dave").await;
    dave.send(Command::Caps(vec!["history".into()])).await;
    dave.send(Command::Register {
        name: "dave".into(),
        status: "late".into(),
    })
    .await;
    let online = dave
        .reader
        .expect(|m| match m {
            ServerMessage::OnlineUsers(users) => {
                Some(users.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .await;
    assert_eq!(
        online,
        ["alice", "bob", "carol", "dave"],
        "online on node c"
    );
    let listed = dave.conversations().await;
    let members = listed.iter().find(|(id, _)| *id == conv).map(|(_, m)| m);
    assert_eq!(
        members.map(Vec::as_slice),
        Some(&["alice".to_string(), "bob".into()][..]),
        "the conversation on node c: {listed:?}"
    );
    dave.join(conv).await;
    let history: Vec<String> = dave
        .history_after(conv, 0)
        .await
        .into_iter()
        .map(|e| format!("{}: {}", e.sender, e.text))
        .collect();
    assert_eq!(history, order, "history on node c");
    bob.say(conv, "after c").await;
    assert_eq!(dave.expect_message().await.2, "after c");
    dave.say(conv, "from c").await;
    let from_dave = loop {
        let (_, sender, text, _) = alice.expect_message().await;
        if sender == "dave" {
            break text;
        }
    };
    assert_eq!(from_dave, "from c");
}

async fn nats_lost_then_restart(program: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let (mut nats, nodes) = cluster(program, dir.path());
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    sign_up(b, "frank", "correct horse").await.expect("sign-up");
    let (frank, token) = log_in(a, Encoding::Json, "frank", "correct horse")
        .await
        .expect("frank on a");
    let token = token.expect("a session token");
    let mut alice = Client::with_history(a, Encoding::Json, "alice").await;
    let mut bob = Client::with_history(b, Encoding::Framed, "bob").await;
    let conv = alice_invites_bob(&mut alice, &mut bob).await;
    alice.say(conv, "one").await;
    assert_eq!(bob.expect_message().await.2, "one");
    assert_eq!(alice.expect_message().await.2, "one");

    // One nats-server of three killed (the first URL, which the nodes
    // connected to): chat goes on.
    tokio::task::block_in_place(|| nats.kill(0));
    alice.say(conv, "two").await;
    bob.say(conv, "three").await;
    let mut at_bob = Vec::new();
    let mut at_alice = Vec::new();
    for _ in 0..2 {
        at_bob.push(bob.expect_message().await.2);
        at_alice.push(alice.expect_message().await.2);
    }
    // Sent at once from two nodes: either order, the same for both.
    assert_eq!(at_alice, at_bob);
    at_bob.sort();
    assert_eq!(at_bob, ["three", "two"]);

    // Everything stops (natter nodes killed under their clients,
    // nats-servers killed) and starts again on the same stores.
    drop(frank);
    tokio::task::block_in_place(|| {
        for node in nodes {
            node.kill_9();
        }
        nats.kill_all();
        nats.start_all();
    });
    drop(alice);
    drop(bob);
    let nodes: Vec<Node> = tokio::task::block_in_place(|| {
        ["a", "b", "c"]
            .iter()
            .map(|name| Node::start(&nats, name, dir.path()))
            .collect()
    });
    // The conversation is there, with its history, for both of them (on
    // other nodes than before). Their names are free once the old nodes
    // are declared down, by the log's clock.
    let mut bob = rejoin(nodes[2].addr, Encoding::Framed, "bob").await;
    let listed = bob.conversations().await;
    assert!(listed.iter().any(|(id, _)| *id == conv), "{listed:?}");
    let history: Vec<String> = bob
        .history_after(conv, 0)
        .await
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0], "one");
    assert_eq!(
        history[1..],
        at_alice[..],
        "history has the order everyone saw"
    );
    let mut alice = rejoin(nodes[0].addr, Encoding::Classic, "alice").await;
    alice.say(conv, "after the restart").await;
    assert_eq!(bob.expect_message().await.2, "after the restart");
    // The account and its session survived too.
    for (node, secret) in [(1, "correct horse"), (2, token.as_str())] {
        let back = log_in(nodes[node].addr, Encoding::Framed, "frank", secret).await;
        assert!(back.is_ok(), "frank after the restart: {:?}", back.err());
    }
}

/// The marked ```sh block after `marker` in `doc`, line by line.
fn documented(doc: &str, marker: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
    let text = std::fs::read_to_string(path).expect("the doc");
    let after = text
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("{doc} has no {marker}"));
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .unwrap_or_else(|| panic!("{doc}: {marker} must precede a ```sh block"));
    let end = body.find("```").expect("a closed block");
    body[..end].lines().map(str::to_string).collect()
}

/// Every `127.0.0.1:PORT` and `0.0.0.0:PORT` in `word`, moved to a free
/// loopback port (the same one for the same documented port).
fn relocate(word: &str, ports: &mut HashMap<u16, u16>) -> String {
    let mut out = String::new();
    for (i, part) in word.split(',').enumerate() {
        if i > 0 {
            out.push(',');
        }
        let (prefix, host_port) = match part.rsplit_once("//") {
            Some((scheme, rest)) => (format!("{scheme}//"), rest),
            None => (String::new(), part),
        };
        match host_port.rsplit_once(':') {
            Some((host @ ("127.0.0.1" | "0.0.0.0"), port)) if port.parse::<u16>().is_ok() => {
                let _ = host;
                let port: u16 = port.parse().unwrap();
                let free = *ports.entry(port).or_insert_with(nats::free_port);
                out.push_str(&format!("{prefix}127.0.0.1:{free}"));
            }
            _ => out.push_str(part),
        }
    }
    out
}

/// A documented `nats-server` process; killed when dropped.
struct Documented(Child);

impl Drop for Documented {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// docs/CLUSTER.md's nats-servers and the README's natter nodes, run as
/// written; a message crosses from node a to node c.
async fn documented_commands(program: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let mut ports = HashMap::new();
    let mut servers = Vec::new();
    for line in documented("docs/CLUSTER.md", "<!-- nats-example -->") {
        let mut words: Vec<String> = Vec::new();
        for word in line.split_whitespace() {
            // `-p PORT` is the client port, bare.
            let word = match (words.last().map(String::as_str), word.parse::<u16>()) {
                (Some("-p"), Ok(port)) => ports
                    .entry(port)
                    .or_insert_with(nats::free_port)
                    .to_string(),
                _ => relocate(word, &mut ports),
            };
            words.push(word);
        }
        assert_eq!(words[0], "nats-server", "docs/CLUSTER.md: {line}");
        let child = Process::new(program)
            .args(&words[1..])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        servers.push(Documented(child));
    }
    assert_eq!(servers.len(), 3);
    let mut nodes = Vec::new();
    tokio::task::block_in_place(|| {
        for line in documented("README.md", "<!-- cluster-example -->") {
            let words: Vec<String> = line
                .split_whitespace()
                .map(|w| relocate(w, &mut ports))
                .collect();
            assert_eq!(words[..2], ["natter", "serve"], "README.md: {line}");
            let args: Vec<&str> = words[2..].iter().map(String::as_str).collect();
            nodes.push(Node::spawn(&args, dir.path(), Stdio::inherit()));
        }
    });
    assert_eq!(nodes.len(), 3);
    let mut alice = Client::course(nodes[0].addr, Encoding::Classic, "alice").await;
    let mut carol = Client::course(nodes[2].addr, Encoding::Framed, "carol").await;
    let conv = alice.invite(&["carol"]).await;
    assert_eq!(carol.expect_invitation().await, conv);
    alice.join(conv).await;
    carol.join(conv).await;
    alice.say(conv, "from node a").await;
    assert_eq!(
        carol.expect_message().await,
        (conv, "alice".into(), "from node a".into(), None)
    );
}

/// A node paused (SIGSTOP) while the others write, snapshot and trim the
/// log past where it was reading finds a gap when it resumes: it says it
/// fell behind and exits non-zero (serving a copy with entries missing
/// would diverge). Started again, it catches up from the newest snapshot
/// and serves the conversation, with every message of its pause in
/// history.
async fn fell_behind_the_trimmed_log(program: &Path) {
    const EVERY: u64 = 40;
    // An ordered consumer asks for 500 entries at a time (async-nats), so
    // a paused node may find that many in its socket when it resumes: the
    // log must be trimmed beyond them.
    const PREFETCH: u64 = 500;
    const ROUND: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(program, dir.path());
    let every = EVERY.to_string();
    let extra = ["--snapshot-every", every.as_str()];
    let start = |name: &str| {
        tokio::task::block_in_place(|| Node::start_with(&nats, name, dir.path(), &extra))
    };
    let a = start("a");
    let b = start("b");
    let c_log = dir.path().join("node-c.log");
    let log_file = std::fs::File::create(&c_log).expect("a log file");
    let c = tokio::task::block_in_place(|| {
        Node::start_logging(&nats, "c", dir.path(), &extra, log_file.into())
    });
    let mut alice = Client::with_history(a.addr, Encoding::Framed, "alice").await;
    let mut dave = Client::with_history(b.addr, Encoding::Json, "dave").await;
    let mut bob = Client::with_history(c.addr, Encoding::Classic, "bob").await;
    let conv = alice.invite(&["bob", "dave"]).await;
    for member in [&mut bob, &mut dave] {
        assert_eq!(member.expect_invitation().await, conv);
        member.join(conv).await;
    }
    alice.join(conv).await;
    alice.say(conv, "before the pause").await;
    assert_eq!(bob.expect_message().await.2, "before the pause");

    // Two senders on two nodes, each waiting for its own echo: one log
    // entry per message, as fast as the cluster goes.
    let (_, paused_at) = nats.stream_range(STREAM);
    c.signal("STOP");
    let paused = Instant::now();
    let mut sent = 0;
    let deadline = paused + JOIN_PATIENCE;
    loop {
        let (first, _) = tokio::task::block_in_place(|| nats.stream_range(STREAM));
        if first > paused_at + PREFETCH {
            break;
        }
        assert!(
            Instant::now() < deadline && sent < 20_000,
            "the log was not trimmed past {} after {sent} messages (it starts at {first})",
            paused_at + PREFETCH
        );
        tokio::join!(
            say_round(&mut alice, conv, sent, ROUND),
            say_round(&mut dave, conv, sent, ROUND)
        );
        sent += 2 * ROUND;
    }
    eprintln!(
        "log trimmed past node c (paused at entry {paused_at}) after {sent} messages in {:?}",
        paused.elapsed()
    );

    c.signal("CONT");
    let status = tokio::task::block_in_place(|| c.wait_exit(2 * PATIENCE));
    assert!(!status.success(), "node c exited with {status}");
    let said = std::fs::read_to_string(&c_log).expect("node c's log");
    assert!(
        said.contains("this node fell behind the cluster log"),
        "node c's log:\n{said}"
    );
    // Its clients are told it is going away, to reconnect elsewhere.
    assert!(
        bob.until_closed().await,
        "bob was not told his node stopped"
    );

    // Started again, c catches up from a snapshot beyond the gap.
    let c = start("c");
    let (snapshot, replayed) = caught_up_from_snapshot(&c).expect("c caught up from a snapshot");
    eprintln!("node c again: snapshot at entry {snapshot}, then {replayed} entries");
    assert!(snapshot > paused_at + PREFETCH, "snapshot at {snapshot}");
    let mut bob = rejoin(c.addr, Encoding::Classic, "bob").await;
    let history: Vec<String> = bob
        .history_after(conv, 0)
        .await
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(history.len(), sent + 1, "bob's history after the gap");
    assert_eq!(history[0], "before the pause");
    for (i, text) in history[1..].iter().enumerate() {
        assert!(
            text.starts_with('m') && text.contains('-'),
            "entry {i}: {text:?}"
        );
    }
    alice.say(conv, "welcome back").await;
    let sender = loop {
        let (_, sender, text, _) = bob.expect_message().await;
        if text == "welcome back" {
            break sender;
        }
    };
    assert_eq!(sender, "alice");
    bob.say(conv, "thanks").await;
    loop {
        let (_, sender, text, _) = alice.expect_message().await;
        if sender == "bob" {
            assert_eq!(text, "thanks");
            break;
        }
    }
    drop((a, b, dave));
}

/// `client` says `count` messages in `conv`, each after the echo of the
/// one before.
async fn say_round(client: &mut Client, conv: u64, from: usize, count: usize) {
    let name = client.reader.name.clone();
    for i in from..from + count {
        let text = format!("m{i}-{name}");
        client.say(conv, &text).await;
        loop {
            let (_, sender, echoed, _) = client.expect_message().await;
            if sender == name && echoed == text {
                break;
            }
        }
    }
}
