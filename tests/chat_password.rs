//! `natter chat` (the full-screen client) on a terminal, for a name that
//! turns out to be an account's: the server refuses the guest, the client
//! asks for the password on the terminal, signs in with what is typed
//! there, and keeps the session token (0600) for next time. The terminal
//! is a pseudo-terminal made by Python's `pty`; another client watches for
//! the account to come online. Every wait is bounded.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use natter_client::{Client, ClientConfig, Event};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "correct horse on a tty";

/// Runs `argv[2:]` on a pseudo-terminal and types `argv[1]` at the first
/// password prompt; keeps the terminal open until it is killed.
const ON_A_TERMINAL: &str = r#"
import os, pty, sys
password = sys.argv[1].encode() + b"\n"
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
seen, answered = b"", False
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    seen += data
    if not answered and b"password for" in seen:
        os.write(fd, password)
        answered = True
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_name_makes_the_terminal_client_ask_for_its_password() {
    let server = natter_server::spawn(natter_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..natter_server::Config::default()
    })
    .await
    .expect("server starts");
    let addr = server.local_addr().to_string();
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let signup = Command::new(env!("CARGO_BIN_EXE_natter"))
        .args([
            "chat", "--plain", "--server", &addr, "--name", "ann", "--signup",
        ])
        .arg("--password-file")
        .arg(&file)
        .env("XDG_CONFIG_HOME", home.path().join("elsewhere"))
        .stdin(Stdio::null())
        .output();
    let signup = tokio::time::timeout(WAIT, signup).await.unwrap().unwrap();
    assert!(signup.status.success(), "{signup:?}");

    // Someone watching for ann.
    let (observer, mut events) = Client::connect_with(ClientConfig::new(addr.clone()))
        .await
        .unwrap();
    observer.register("obs", "online").await.unwrap();
    observer.watch(["ann"]).await.unwrap();

    // On this machine there is no token: the client tries ann as a guest,
    // is refused, and asks.
    let config = home.path().join("config");
    let _chat = Command::new("python3")
        .args(["-c", ON_A_TERMINAL, PASSWORD, env!("CARGO_BIN_EXE_natter")])
        .args(["chat", "--server", &addr, "--name", "ann"])
        .env("XDG_CONFIG_HOME", &config)
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let online = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            if let Event::OnlineUsers { users, .. } = event
                && users.contains_key("ann")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(online, Ok(true)), "ann never came online");
    let kept = config.join("natter").join("sessions");
    let files: Vec<_> = std::fs::read_dir(&kept)
        .expect("a session token was kept")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
