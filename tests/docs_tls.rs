//! The TLS examples in README.md and docs/PROTOCOL.md, run as written:
//! every line of a block marked `<!-- tls-example -->` is a command this
//! test knows how to run (an unknown one fails it), in a fresh directory,
//! against the `natter serve` the block starts (moved to a free loopback
//! port, without a web listener or data dir). The refusal text quoted in
//! PROTOCOL.md is compared with what the server sends. A `natter chat`
//! line that asks for a password (`--signup`, `--password`) runs on a
//! pseudo-terminal (Python's `pty`), where the test types the password at
//! each prompt, as a person would.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output, Stdio};

use common::Server;
use natter_proto::codec::encode_message;
use natter_proto::{Encoding, ServerMessage};

const NATTER: &str = env!("CARGO_BIN_EXE_natter");
const MARKER: &str = "<!-- tls-example -->";
/// What the test types at a password prompt.
const PASSWORD: &str = "correct horse battery";

/// Runs `argv[2:]` on a pseudo-terminal, typing `argv[1]` at each password
/// prompt; once the client is in (`ONLINE`), ends its input with Ctrl-D.
/// Prints what the terminal showed; exits with the client's status.
const ON_A_TERMINAL: &str = r#"
import os, pty, sys
password = sys.argv[1].encode() + b"\n"
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
seen, answered, ended = b"", 0, False
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    seen += data
    while answered < seen.count(b"password for") + seen.count(b"again:"):
        os.write(fd, password)
        answered += 1
    if not ended and b"\nONLINE " in seen:
        os.write(fd, b"\x04")
        ended = True
_, status = os.waitpid(pid, 0)
getattr(sys.stdout, "buffer", sys.stdout).write(seen)
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of every marked ```sh block in `doc`.
fn examples(doc: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(repo().join(doc)).unwrap();
    let mut blocks = Vec::new();
    for part in text.split(MARKER).skip(1) {
        let body = part
            .trim_start()
            .strip_prefix("```sh\n")
            .unwrap_or_else(|| panic!("{doc}: {MARKER} must precede a ```sh block"));
        let end = body.find("```").expect("closed block");
        blocks.push(body[..end].lines().map(str::to_string).collect());
    }
    assert!(!blocks.is_empty(), "{doc} has no TLS example");
    blocks
}

/// Runs one block; returns how many client lines reached the server.
fn run_block(doc: &str, lines: &[String]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut server: Option<Server> = None;
    let mut clients = 0;
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let port = || server.as_ref().expect("a server started above").addr.port();
        match words.as_slice() {
            ["natter", "cert", args @ ..] => {
                let out = run(Process::new(NATTER).arg("cert").args(args), dir.path());
                assert!(out.status.success(), "{doc}: {line}: {out:?}");
            }
            ["natter", "serve", args @ ..] => {
                let mut args = args.to_vec();
                args.extend(["--listen", "127.0.0.1:0", "--no-web", "--ephemeral"]);
                server = Some(Server::start(&args, dir.path()));
            }
            ["natter", "chat", args @ ..] => {
                let server_at = format!("localhost:{}", port());
                let args: Vec<&str> = args
                    .iter()
                    .map(|arg| {
                        if *arg == "localhost:6666" {
                            &server_at
                        } else {
                            *arg
                        }
                    })
                    .collect();
                let prompts = args.iter().any(|a| ["--signup", "--password"].contains(a));
                let mut command = if prompts {
                    let mut on_a_terminal = Process::new("python3");
                    on_a_terminal.args(["-c", ON_A_TERMINAL, PASSWORD, NATTER]);
                    on_a_terminal
                } else {
                    Process::new(NATTER)
                };
                // Session tokens are kept in the scratch directory.
                command.env("XDG_CONFIG_HOME", dir.path());
                let out = run(command.args(["chat", "--plain"]).args(&args), dir.path());
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "{doc}: {line}: {out:?}");
                assert!(
                    stdout.contains("STATE connected"),
                    "{doc}: {line}: {stdout}"
                );
                clients += 1;
            }
            ["python3", script, args @ ..] => {
                let out = run(
                    Process::new("python3")
                        .arg(repo().join(script))
                        .args(["--port", &port().to_string()])
                        .args(args),
                    dir.path(),
                );
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(stdout.contains("ONLINE_USERS"), "{doc}: {line}: {out:?}");
                clients += 1;
            }
            _ => panic!("{doc}: no test knows how to run `{line}`"),
        }
    }
    clients
}

/// Runs a client to its end (stdin closed: it says GOODBYE and exits).
fn run(command: &mut Process, cwd: &Path) -> Output {
    let child = command
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(common::PATIENCE)
        .expect("the command finished in time")
        .unwrap()
}

#[test]
fn the_readme_tls_example_runs() {
    for block in examples("README.md") {
        assert!(run_block("README.md", &block) > 0);
    }
}

#[test]
fn the_protocol_tls_example_runs() {
    for block in examples("docs/PROTOCOL.md") {
        assert_eq!(run_block("docs/PROTOCOL.md", &block), 2);
    }
}

#[test]
fn the_quoted_refusal_is_what_the_server_sends() {
    let doc = std::fs::read_to_string(repo().join("docs/PROTOCOL.md")).unwrap();
    let quoted = doc
        .lines()
        .map(str::trim)
        .find(|line| line.contains("TLS required"))
        .expect("PROTOCOL.md quotes the refusal");
    let error = natter_server::tls::plaintext_refused("192.0.2.7".parse().unwrap());
    let sent = encode_message(&ServerMessage::Error(error), Encoding::Json);
    assert_eq!(quoted, String::from_utf8_lossy(&sent).trim_end());
}
