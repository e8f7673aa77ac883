//! `natter chat --plain` as scripts use it: real processes against a server
//! started in this test, driven through stdin, checked line by line on
//! stdout. Every wait is bounded.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

async fn start_server() -> natter_server::ServerHandle {
    natter_server::spawn(natter_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        presence_coalesce: Duration::from_millis(10),
        close_linger: Duration::from_millis(200),
        ..natter_server::Config::default()
    })
    .await
    .expect("server starts")
}

/// One `natter chat --plain` process.
struct Chat {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Chat {
    fn start(server: &str, name: &str) -> Chat {
        Chat::start_with(server, name, &[], None)
    }

    /// With more arguments, and `XDG_CONFIG_HOME` (where session tokens
    /// are kept) set to `config`.
    fn start_with(server: &str, name: &str, more: &[&str], config: Option<&Path>) -> Chat {
        let mut command = Command::new(env!("CARGO_BIN_EXE_natter"));
        if let Some(config) = config {
            command.env("XDG_CONFIG_HOME", config);
        }
        let mut child = command
            .args(["chat", "--plain", "--server", server, "--name", name])
            .args(more)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("natter starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
        Chat {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits for this exact line on stdout, skipping others.
    async fn expect(&mut self, line: &str) {
        self.expect_where(line, |next| next == line).await;
    }

    /// Waits for a line on stdout that `matches`, skipping others.
    async fn expect_where(&mut self, line: &str, matches: impl Fn(&str) -> bool) {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(next) = self.lines.recv().await {
                self.seen.push(next.clone());
                if matches(&next) {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(found, Ok(true)) {
            let stderr = self.stderr_so_far().await;
            panic!(
                "{}: no line {line:?} within {WAIT:?}; stdout was:\n{}\nstderr: {stderr}",
                self.name,
                self.seen.join("\n")
            );
        }
    }

    async fn stderr_so_far(&mut self) -> String {
        let _ = self.child.start_kill();
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = tokio::time::timeout(Duration::from_secs(1), stderr.read_to_string(&mut text))
                .await;
        }
        text
    }

    /// Closes stdin and waits for the process to exit; returns its exit
    /// status and every remaining stdout line.
    async fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit after stdin EOF", self.name))
            .unwrap();
        let mut rest = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.lines.recv()).await {
            rest.push(line);
        }
        (status, rest)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_plain_clients_invite_join_chat_and_leave() {
    let server = start_server().await;
    let addr = server.local_addr().to_string();

    let mut alice = Chat::start(&addr, "alice");
    alice.expect(&format!("STATE connected {addr}")).await;
    alice.expect("ONLINE alice=online").await;
    let mut bob = Chat::start(&addr, "bob");
    // Presence covers only contacts: each sees itself, and finds the other
    // by searching.
    bob.expect("ONLINE bob=online").await;
    alice.say("/who B").await;
    alice.expect("USERS bob=online").await;

    // alice is in the conversation she creates, and it is her current one.
    alice.say("/invite bob").await;
    bob.expect("INVITATION 1 alice").await;
    alice.expect("INVITATION 1 alice").await;
    // Invited, they are each other's contacts (alice's ONLINE line and her
    // MEMBERS line may come in either order).
    bob.expect("ONLINE alice=online bob=online").await;
    alice.expect("MEMBERS 1 alice").await;
    bob.say("/join 1").await;
    bob.expect("MEMBERS 1 alice bob").await;
    alice.expect("MEMBERS 1 alice bob").await;

    alice.say("hello bob").await;
    bob.expect("MESSAGE 1 alice hello bob").await;
    alice.expect("MESSAGE 1 alice hello bob").await;
    bob.say("hi alice, how are you?").await;
    alice.expect("MESSAGE 1 bob hi alice, how are you?").await;

    bob.say("/list").await;
    bob.expect("CONVERSATIONS 1:alice,bob").await;
    bob.say("/status away").await;
    alice.expect("ONLINE alice=online bob=away").await;

    bob.say("/leave").await;
    bob.expect("MEMBERS 1 alice").await;
    alice.expect("MEMBERS 1 alice").await;

    let (status, rest) = bob.finish().await;
    assert!(status.success(), "bob exits 0 after stdin EOF: {status}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("STATE disconnected goodbye")
    );
    alice.expect("ONLINE alice=online").await;

    // What was typed before EOF is sent before GOODBYE.
    alice.say("anyone?").await;
    let (status, rest) = alice.finish().await;
    assert!(status.success(), "alice exits 0: {status}");
    assert!(
        rest.contains(&"MESSAGE 1 alice anyone?".to_string()),
        "{rest:?}"
    );
    server.shutdown().await;
}

/// What is typed while the server is away waits in the client's outbox
/// (`QUEUED`) and is sent once the client is back: nothing typed is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_typed_while_the_server_is_down_is_sent_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let config = |listen| natter_server::Config {
        listen,
        presence_coalesce: Duration::from_millis(10),
        close_linger: Duration::from_millis(200),
        data_dir: Some(dir.path().to_path_buf()),
        ..natter_server::Config::default()
    };
    let server = natter_server::spawn(config("127.0.0.1:0".parse().unwrap()))
        .await
        .expect("server starts");
    let listen = server.local_addr();
    let addr = listen.to_string();
    let mut alice = Chat::start(&addr, "alice");
    alice.expect("ONLINE alice=online").await;
    let mut bob = Chat::start(&addr, "bob");
    bob.expect("ONLINE bob=online").await;
    alice.say("/watch bob").await;
    alice.expect("ONLINE alice=online bob=online").await;
    alice.say("/invite bob").await;
    alice.expect("INVITATION 1 alice").await;
    alice.say("/join 1").await;
    bob.say("/join 1").await;
    alice.expect("MEMBERS 1 alice bob").await;

    server.shutdown().await;
    alice.expect("ERROR server shutting down").await;
    alice
        .expect_where("STATE reconnecting ...", |line| {
            line.starts_with("STATE reconnecting ")
        })
        .await;
    alice.say("typed while the server was away").await;
    alice
        .expect("QUEUED 1 typed while the server was away")
        .await;

    // The same data dir and port: conversation 1 and its members are back.
    let server = natter_server::spawn(config(listen))
        .await
        .expect("server starts again");
    alice
        .expect("MESSAGE 1 alice typed while the server was away")
        .await;
    bob.expect("MESSAGE 1 alice typed while the server was away")
        .await;
    let (status, _) = alice.finish().await;
    assert!(status.success(), "{status}");
    let (status, _) = bob.finish().await;
    assert!(status.success(), "{status}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_name_is_printed_and_the_exit_status_says_so() {
    let server = start_server().await;
    let addr = server.local_addr().to_string();
    let mut alice = Chat::start(&addr, "alice");
    alice.expect("ONLINE alice=online").await;

    let mut impostor = Chat::start(&addr, "alice");
    impostor.expect("ERROR name alice is taken").await;
    let status = tokio::time::timeout(WAIT, impostor.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    let stderr = impostor.stderr_so_far().await;
    assert!(stderr.contains("name alice is taken"), "{stderr}");

    let (status, _) = alice.finish().await;
    assert!(status.success());
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_on_stderr() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let output = tokio::time::timeout(
        WAIT,
        Command::new(env!("CARGO_BIN_EXE_natter"))
            .args(["chat", "--plain", "--server", &addr, "--name", "alice"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach {addr}: connection refused")),
        "{stderr}"
    );
}

#[tokio::test]
async fn plain_mode_needs_a_name() {
    let output = tokio::time::timeout(
        WAIT,
        Command::new(env!("CARGO_BIN_EXE_natter"))
            .args(["chat", "--plain", "--server", "127.0.0.1:1"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--plain needs --name NAME"), "{stderr}");
}

/// `--signup --password-file` creates the account and keeps a session
/// token (0600, in `$XDG_CONFIG_HOME/natter/sessions/`); the next run signs
/// in with the token alone; without it the name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_signs_up_from_a_password_file_then_signs_in_with_its_kept_token() {
    use std::os::unix::fs::PermissionsExt;
    let server = start_server().await;
    let addr = server.local_addr().to_string();
    let home = tempfile::tempdir().unwrap();
    let password_file = home.path().join("password");
    std::fs::write(&password_file, "correct horse\n").unwrap();
    let config = home.path().join("config");
    let file_arg = password_file.to_str().unwrap();

    let mut first = Chat::start_with(
        &addr,
        "ann",
        &["--signup", "--password-file", file_arg],
        Some(&config),
    );
    first.expect("ONLINE ann=online").await;
    let (status, _) = first.finish().await;
    assert!(status.success(), "{status}");
    let sessions = config.join("natter").join("sessions");
    let kept: Vec<_> = std::fs::read_dir(&sessions)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let token = std::fs::read_to_string(&kept[0]).unwrap();
    assert!(token.starts_with("nt1."), "the file holds a session token");
    assert_eq!(
        std::fs::metadata(&kept[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // No password this time: the kept token signs ann in.
    let mut second = Chat::start_with(&addr, "ann", &["--status", "away"], Some(&config));
    second.expect("ONLINE ann=away").await;
    let (status, _) = second.finish().await;
    assert!(status.success(), "{status}");

    // Elsewhere (no token), the name needs its password.
    let elsewhere = home.path().join("elsewhere");
    let mut guest = Chat::start_with(&addr, "ann", &[], Some(&elsewhere));
    guest.expect("ERROR wrong username or password").await;
    let (status, _) = guest.finish().await;
    assert!(!status.success());
}
