//! The full-screen `natter chat` as a person sees it: run in a tmux pane
//! (keys typed with `send-keys`, a paste with `paste-buffer`, the screen
//! read with `capture-pane`) against a real server, with a `--plain` bob
//! on the other side to say what actually arrived.
//!
//! Each test uses its own tmux socket, so it never touches another tmux
//! server; the socket's server is killed at the end. Without tmux the tests
//! are skipped, except under CI (`.ci/install-tmux.sh` installs it).

use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Upper bound for any one wait (reconnects back off 1 s, then 2 s, ...).
const WAIT: Duration = Duration::from_secs(20);

fn tmux_available() -> bool {
    let found = Process::new("tmux")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("tmux is missing: .ci/install-tmux.sh installs it");
    }
    found
}

/// A tmux server of our own running `natter chat` in one 100×30 pane.
struct Pane {
    socket: String,
}

impl Pane {
    fn start(args: &[&str], size: (u16, u16)) -> Pane {
        let socket = format!(
            "natter-test-{}-{}",
            std::process::id(),
            args.join("-").len()
        );
        let mut command = vec![env!("CARGO_BIN_EXE_natter").to_string(), "chat".into()];
        command.extend(args.iter().map(|a| a.to_string()));
        let pane = Pane { socket };
        pane.tmux(&[
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            &size.0.to_string(),
            "-y",
            &size.1.to_string(),
            &command.join(" "),
        ]);
        pane
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Process::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "chat"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "chat"];
        args.extend(keys);
        self.tmux(&args);
    }

    /// Types text literally, then Enter.
    fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "chat", "-l", text]);
        self.keys(&["Enter"]);
    }

    /// Pastes as a terminal does (bracketed, since the client asks for it).
    fn paste(&self, text: &str) {
        self.tmux(&["set-buffer", "--", text]);
        self.tmux(&["paste-buffer", "-p", "-t", "chat"]);
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("waited for {what}; the screen:\n{screen}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_shows(&self, text: &str) -> String {
        self.wait_for(text, |screen| screen.contains(text)).await
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

/// bob, `--plain`: one line per event, so what arrived can be counted.
struct Plain {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Plain {
    fn start(server: &str, name: &str) -> Plain {
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
            .args(["chat", "--plain", "--server", server, "--name", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
        Plain {
            stdin: child.stdin.take().unwrap(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    async fn say(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn expect(&mut self, line: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.seen.iter().any(|seen| seen == line) {
                return;
            }
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(next)) => self.seen.push(next),
                _ => panic!("no {line:?}; bob saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Reads what is still arriving for `quiet`.
    async fn settle(&mut self, quiet: Duration) {
        while let Ok(Some(next)) = tokio::time::timeout(quiet, self.lines.recv()).await {
            self.seen.push(next);
        }
    }

    fn count(&self, line: &str) -> usize {
        self.seen.iter().filter(|seen| *seen == line).count()
    }
}

fn config(listen: std::net::SocketAddr, dir: &std::path::Path) -> natter_server::Config {
    natter_server::Config {
        listen,
        presence_coalesce: Duration::from_millis(10),
        close_linger: Duration::from_millis(200),
        data_dir: Some(dir.to_path_buf()),
        ..natter_server::Config::default()
    }
}

/// What alice types while the server is down shows as pending, goes out
/// once when it is back, and so does the first line after the reconnect;
/// the conversation is still hers (no "not joined"), the status bar has no
/// old error, and a pasted block is one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_while_the_server_restarts_is_sent_once_and_a_paste_is_one_message() {
    if !tmux_available() {
        eprintln!("tmux not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = natter_server::spawn(config("127.0.0.1:0".parse().unwrap(), dir.path()))
        .await
        .expect("server starts");
    let listen = server.local_addr();
    let addr = listen.to_string();
    let mut bob = Plain::start(&addr, "bob");
    bob.expect("ONLINE bob=online").await;
    let alice = Pane::start(&["--name", "alice", "--server", &addr], (100, 30));
    alice.wait_shows(&format!("connected to {addr}")).await;

    alice.type_line("/invite bob");
    bob.expect("INVITATION 1 alice").await;
    bob.say("/join 1").await;
    alice.wait_shows("#1 · bob").await;
    // A skin tone stays with its hand, and the text after it stays put
    // when the lines are laid out again (alice's longer name widens the
    // sender column).
    bob.say("sure 👍🏽 see you there").await;
    alice.wait_shows("bob  sure 👍🏽 see you there").await;
    // A message that names alice rings the terminal's bell.
    let raw = dir.path().join("alice.raw");
    let pipe = format!("cat >> {}", raw.display());
    alice.tmux(&["pipe-pane", "-o", "-t", "chat", &pipe]);
    bob.say("alice: are you there?").await;
    alice.wait_shows("bob  alice: are you there?").await;
    let deadline = Instant::now() + WAIT;
    while !std::fs::read(&raw).unwrap_or_default().contains(&0x07) {
        assert!(Instant::now() < deadline, "no bell for a mention");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.tmux(&["pipe-pane", "-t", "chat"]);
    alice.type_line("before the restart");
    alice.wait_shows("alice  before the restart").await;
    alice.wait_shows("bob    sure 👍🏽 see you there").await;
    bob.expect("MESSAGE 1 alice before the restart").await;

    server.shutdown().await;
    alice.wait_shows("reconnecting in").await;
    let screen = alice.wait_shows("not connected").await;
    assert!(!screen.contains("● bob"), "bob shown online:\n{screen}");
    alice.type_line("typed while the server was away");
    let screen = alice
        .wait_shows("--:-- alice  typed while the server was away")
        .await;
    assert!(screen.contains("1 to send"), "{screen}");

    let server = natter_server::spawn(config(listen, dir.path()))
        .await
        .expect("server starts again");
    bob.expect("MESSAGE 1 alice typed while the server was away")
        .await;
    let screen = alice
        .wait_for("the pending message confirmed", |s| {
            s.contains("connected to") && !s.contains("--:--") && !s.contains("reconnecting")
        })
        .await;
    assert!(!screen.contains("not joined"), "{screen}");
    alice.type_line("the first line after the reconnect");
    bob.expect("MESSAGE 1 alice the first line after the reconnect")
        .await;

    // The keys as the terminal sends them: Home, End, ↑ (an earlier
    // input), Ctrl-W, Ctrl-U.
    alice.tmux(&["send-keys", "-t", "chat", "-l", "abc"]);
    alice.keys(&["Home", "X", "End", "Y"]);
    alice.wait_shows("› XabcY").await;
    alice.keys(&["C-u", "Up"]);
    alice
        .wait_shows("› the first line after the reconnect")
        .await;
    alice.keys(&["C-w"]);
    alice.wait_shows("› the first line after the ").await;
    alice.keys(&["C-u"]);

    alice.paste("one\ntwo\nthree\nfour");
    alice.wait_shows("4 lines").await;
    alice.keys(&["Enter"]);
    alice.wait_shows("send these 4 lines as one message?").await;
    alice.keys(&["Enter"]);
    bob.expect("MESSAGE 1 alice one\\ntwo\\nthree\\nfour").await;

    bob.settle(Duration::from_millis(1500)).await;
    for line in [
        "MESSAGE 1 alice typed while the server was away",
        "MESSAGE 1 alice the first line after the reconnect",
        "MESSAGE 1 alice one\\ntwo\\nthree\\nfour",
    ] {
        assert_eq!(
            bob.count(line),
            1,
            "{line}; bob saw:\n{}",
            bob.seen.join("\n")
        );
    }
    assert!(
        !bob.seen
            .iter()
            .any(|l| l == "MESSAGE 1 alice one" || l == "MESSAGE 1 alice two"),
        "the paste went out line by line:\n{}",
        bob.seen.join("\n")
    );
    let screen = alice.screen();
    assert_eq!(
        screen.matches("typed while the server was away").count(),
        1,
        "{screen}"
    );
    assert!(!screen.contains("error:"), "{screen}");
    alice.keys(&["C-c"]);
    drop(bob.child.kill().await);
    server.shutdown().await;
}
