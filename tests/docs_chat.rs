//! docs/CHAT.md, checked: its screen captures are the files in
//! docs/screenshots/ (made by driving the client in tmux), and its
//! `--plain` sessions run exactly as written against a real server, with
//! `NATTER_SERVER` pointing the commands at it instead of the default
//! 127.0.0.1:6666. (The full-screen client's sessions are replayed in
//! tests/chat_tmux.rs.)

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(15);
/// The address the documentation's sessions show.
const DOC_ADDR: &str = "127.0.0.1:6666";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chat_md() -> String {
    std::fs::read_to_string(root().join("docs/CHAT.md")).expect("docs/CHAT.md")
}

#[test]
fn every_screen_in_chat_md_is_a_capture_in_docs_screenshots() {
    let doc = chat_md();
    let mut shown = Vec::new();
    for part in doc.split("<!-- screenshot:").skip(1) {
        let (name, rest) = part
            .split_once(" -->\n```text\n")
            .expect("a screenshot block");
        let (screen, _) = rest
            .split_once("\n```\n<!-- end screenshot -->")
            .expect("its end");
        let file = root().join(format!("docs/screenshots/chat-{name}.txt"));
        let captured = std::fs::read_to_string(&file).expect("the capture file");
        assert_eq!(
            screen,
            captured.trim_end_matches('\n'),
            "{}",
            file.display()
        );
        shown.push(format!("chat-{name}.txt"));
    }
    let mut files: Vec<String> = std::fs::read_dir(root().join("docs/screenshots"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("chat-") && name.ends_with(".txt"))
        .collect();
    files.sort();
    shown.sort();
    assert_eq!(
        files, shown,
        "every capture is shown, every screen captured"
    );
}

/// The indented block that starts with `first`, without its indent.
fn block(doc: &str, first: &str) -> Vec<String> {
    let lines: Vec<&str> = doc.lines().collect();
    let start = lines
        .iter()
        .position(|line| line.trim_start() == first)
        .unwrap_or_else(|| panic!("no block starting {first:?} in CHAT.md"));
    lines[start..]
        .iter()
        .take_while(|line| line.starts_with("    "))
        .map(|line| line[4..].to_string())
        .collect()
}

fn natter_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_natter"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn with_natter_on_path() -> String {
    format!(
        "{}:{}",
        natter_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

async fn start_server(dir: &Path) -> natter_server::ServerHandle {
    natter_server::spawn(natter_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        presence_coalesce: Duration::from_millis(10),
        close_linger: Duration::from_millis(200),
        data_dir: Some(dir.to_path_buf()),
        ..natter_server::Config::default()
    })
    .await
    .expect("server starts")
}

/// The shell session (`$ printf ... | natter chat --plain ...`, the
/// unreachable server, `echo $?`) run by bash, output as shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_session_prints_what_chat_md_shows() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let addr = server.local_addr().to_string();
    let session = block(
        &chat_md(),
        "$ printf '/invite alice\\n/list\\n' | natter chat --plain --name bob",
    );
    let commands: Vec<&str> = session
        .iter()
        .filter_map(|line| line.strip_prefix("$ "))
        .collect();
    assert_eq!(commands.len(), 3, "{session:?}");
    let expected: Vec<String> = session
        .iter()
        .filter(|line| !line.starts_with("$ "))
        .map(|line| line.replace(DOC_ADDR, &addr))
        .collect();
    let script = format!("exec 2>&1\n{}\n", commands.join("\n"));
    let run = Command::new("bash")
        .args(["-c", &script])
        .env("PATH", with_natter_on_path())
        .env("NATTER_SERVER", &addr)
        // A reader's shell, not the test runner's: no backtraces.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT, run)
        .await
        .expect("in time")
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<&str> = printed.lines().collect();
    assert_eq!(printed, expected);
    server.shutdown().await;
}

/// The bot's session: alice (a library client) invites it when the
/// transcript says the invitation came; typed lines go to its stdin; every
/// printed line comes, in order, nothing else in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_session_prints_what_chat_md_shows() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let addr = server.local_addr().to_string();
    let (alice, _alice_events) = natter_client::Client::connect(addr.clone()).await.unwrap();
    alice.register("alice", "online").await.unwrap();

    let session = block(&chat_md(), "$ natter chat --plain --name bot");
    let command = session[0].strip_prefix("$ ").unwrap();
    let mut bot = Command::new("bash")
        .args(["-c", command])
        .env("PATH", with_natter_on_path())
        .env("NATTER_SERVER", &addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = bot.stdin.take().unwrap();
    let mut stdout = BufReader::new(bot.stdout.take().unwrap()).lines();
    let is_output = |line: &str| {
        let word = line.split(' ').next().unwrap_or("");
        !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    };
    for line in &session[1..] {
        if !is_output(line) {
            stdin
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            continue;
        }
        if line.starts_with("INVITATION") {
            alice.invite(["bot"]).await.unwrap();
        }
        let next = tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("waited for {line:?}"))
            .unwrap()
            .expect("the bot still prints");
        assert_eq!(next, line.replace(DOC_ADDR, &addr));
    }
    drop(stdin);
    let _ = tokio::time::timeout(WAIT, bot.wait()).await;
    server.shutdown().await;
}
