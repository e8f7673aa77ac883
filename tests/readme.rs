//! The README's quick start, run as written.
//!
//! The test reads README.md, starts `natter serve` the way its first block
//! says (on free loopback ports instead of 6666 and 8080, in a scratch
//! directory), runs `serve --help`, then plays the "Try it" sections for the
//! Python client and for JSON lines: every block marked
//! `<!-- session: NAME... -->` is started as that session's command or
//! typed into it, line by line, and every block marked
//! `<!-- expect: NAME... -->` must show up in those sessions' output. Only
//! the port is changed (`6666`, or `--port` for the Python client). Where a
//! person would wait to see their step take effect (a REGISTER answered, a
//! JOIN applied), the test waits on that condition, never on a clock.
//! Every wait is bounded and every process is killed when dropped.
//!
//! `nc` is used for one JSON session when it is installed; the README's
//! Python line otherwise (and always for the other session).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any one step may take.
const STEP: Duration = Duration::from_secs(20);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// Reading the README
// ---------------------------------------------------------------------------

/// What a block is for, from the comment just above it.
#[derive(Debug, Clone, PartialEq)]
enum Role {
    /// No marker: prose examples (the quick start's commands).
    Plain,
    /// Started in, or typed into, these sessions.
    Session(Vec<String>),
    /// Must appear in these sessions' output.
    Expect(Vec<String>),
}

#[derive(Debug, Clone)]
struct Block {
    role: Role,
    lang: String,
    text: String,
}

/// The fenced blocks between the headings `from` and `to`.
fn blocks(readme: &str, from: &str, to: &str) -> Vec<Block> {
    let start = readme.find(from).unwrap_or_else(|| panic!("no {from:?}"));
    let end = readme[start..]
        .find(to)
        .map(|i| start + i)
        .unwrap_or_else(|| panic!("no {to:?} after {from:?}"));
    let mut found = Vec::new();
    let mut role = Role::Plain;
    let mut lines = readme[start..end].lines();
    while let Some(line) = lines.next() {
        if let Some(marker) = line
            .strip_prefix("<!-- ")
            .and_then(|l| l.strip_suffix(" -->"))
        {
            let (kind, names) = marker.split_once(": ").expect("<!-- kind: names -->");
            let names = names.split_whitespace().map(String::from).collect();
            role = match kind {
                "session" => Role::Session(names),
                "expect" => Role::Expect(names),
                other => panic!("unknown README marker {other:?}"),
            };
        } else if let Some(lang) = line.strip_prefix("```") {
            let text: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            found.push(Block {
                role: std::mem::replace(&mut role, Role::Plain),
                lang: lang.to_string(),
                text: text.join("\n"),
            });
        } else if !line.trim().is_empty() {
            // A marker belongs to the block right after it.
            assert!(
                role == Role::Plain && !line.starts_with("<!--"),
                "a marker not followed by its block, at {line:?}"
            );
        }
    }
    found
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A process killed when dropped, with its stdout as lines.
struct Running {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn spawn(name: &str, command: &mut Command) -> Running {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap_or_else(|e| panic!("{}: {e}", self.name));
        stdin.flush().unwrap();
    }

    /// Waits for a line for which `check` holds; returns it.
    fn expect_where(&mut self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if check(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no {what} within {STEP:?}; it printed {:#?}",
                    self.name, self.seen
                ),
            }
        }
    }
}

/// `natter serve`, as the quick start's first block starts it, on free
/// loopback ports, in a scratch directory (its data dir goes there).
fn start_server(command: &str, scratch: &Path) -> (Running, SocketAddr) {
    let args = natter_args(command);
    assert_eq!(args, ["serve"], "the quick start starts the server plainly");
    let mut server = Running::spawn(
        "server",
        Command::new(env!("CARGO_BIN_EXE_natter"))
            .args(&args)
            .args(["--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"])
            .current_dir(scratch),
    );
    // What the README says it prints.
    let listening = server.expect_where("listening line", |l| l.starts_with("listening on "));
    server.expect_where("web line", |l| l.starts_with("web on http://127.0.0.1:"));
    let addr = listening["listening on ".len()..].parse().unwrap();
    (server, addr)
}

/// The arguments of a `cargo run --release -- ARGS  # comment` line.
fn natter_args(line: &str) -> Vec<String> {
    let command = line.split(" #").next().unwrap().trim();
    let args = command
        .strip_prefix("cargo run --release --")
        .unwrap_or_else(|| panic!("not a natter command: {line:?}"));
    args.split_whitespace().map(String::from).collect()
}

/// Runs a session's command as written (through `sh`, from the repository
/// root), with the server's port in place of the default.
fn start_session(name: &str, command: &str, port: u16) -> Running {
    let command = command
        .replace(
            "natter_client.py",
            &format!("natter_client.py --port {port}"),
        )
        .replace("6666", &port.to_string());
    Running::spawn(
        name,
        Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .current_dir(root()),
    )
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------
// Watching the server from the side
// ---------------------------------------------------------------------------

/// A JSON client that asks LIST_CONVERSATIONS, to see a step take effect
/// the way a person would see it on the other screen.
struct Observer {
    stream: TcpStream,
    lines: BufReader<TcpStream>,
}

impl Observer {
    fn connect(addr: SocketAddr) -> Observer {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        let lines = BufReader::new(stream.try_clone().unwrap());
        let mut observer = Observer { stream, lines };
        observer.send(r#"{"command":"REGISTER","args":["observer","watching"]}"#);
        observer.next_with(r#""ONLINE_USERS""#);
        observer
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stream, "{line}").unwrap();
    }

    fn next_with(&mut self, needle: &str) -> String {
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).expect("observer reads");
            assert!(n > 0, "the server closed the observer");
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Waits until `user` is a member of `conv`.
    fn await_member(&mut self, conv: u64, user: &str) {
        let deadline = Instant::now() + STEP;
        loop {
            self.send(r#"{"command":"LIST_CONVERSATIONS"}"#);
            let answer = self.next_with(r#""CONVERSATIONS""#);
            let listing: serde_json::Value = serde_json::from_str(&answer).unwrap();
            let members = &listing["args"][conv.to_string()];
            if members
                .as_array()
                .is_some_and(|m| m.iter().any(|n| n == user))
            {
                return;
            }
            assert!(Instant::now() < deadline, "{user} never joined {conv}");
            // Under the default rate limit (10 a second), so never paced.
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The conversation a typed line joins, if it is a JOIN.
fn joins(line: &str) -> Option<u64> {
    if let Some(id) = line.strip_prefix("/join ") {
        return id.trim().parse().ok();
    }
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    (json["command"] == "JOIN").then(|| json["args"][0].as_u64())?
}

// ---------------------------------------------------------------------------
// Playing a section
// ---------------------------------------------------------------------------

/// A session's user is the session's name, and the first block addressed
/// to a session starts it (for JSON sessions: the first of the alternative
/// commands that can run here).
fn play(section: &[Block], addr: SocketAddr, choose: impl Fn(&str, &[&Block]) -> usize) {
    let mut observer = Observer::connect(addr);
    let mut sessions: Vec<Running> = Vec::new();
    let mut i = 0;
    while i < section.len() {
        let block = &section[i];
        match &block.role {
            Role::Plain => {}
            Role::Session(names) if block.lang == "sh" => {
                // Alternative ways to open the same sessions, one after another.
                let alternatives: Vec<&Block> = section[i..]
                    .iter()
                    .take_while(|b| b.lang == "sh" && b.role == block.role)
                    .collect();
                i += alternatives.len() - 1;
                for name in names {
                    let command = &alternatives[choose(name, &alternatives)].text;
                    let mut session = start_session(name, command, addr.port());
                    if command.contains("natter_client.py") {
                        // The client says it is in once it registered.
                        session.expect_where("ONLINE_USERS", |l| {
                            l.starts_with("ONLINE_USERS") && l.contains(&format!("{name}="))
                        });
                    }
                    sessions.push(session);
                }
            }
            Role::Session(names) => {
                for name in names {
                    let session = find(&mut sessions, name);
                    for line in block.text.lines() {
                        session.type_line(line);
                        if line.contains(r#""REGISTER""#) {
                            session.expect_where("ONLINE_USERS", |l| l.contains("ONLINE_USERS"));
                        }
                        if let Some(conv) = joins(line) {
                            observer.await_member(conv, name);
                        }
                    }
                }
            }
            Role::Expect(names) => {
                for name in names {
                    let session = find(&mut sessions, name);
                    for wanted in block.text.lines() {
                        session.expect_where(&format!("{wanted:?}"), |l| l == wanted);
                    }
                }
            }
        }
        i += 1;
    }
}

fn find<'a>(sessions: &'a mut [Running], name: &str) -> &'a mut Running {
    sessions
        .iter_mut()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("the README types into {name:?} before starting it"))
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a scratch directory")
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let quick_start = blocks(&readme, "## Quick start", "## Try it");
    let commands: Vec<&str> = quick_start
        .iter()
        .flat_map(|b| b.text.lines())
        .filter(|l| l.starts_with("cargo run --release --"))
        .collect();
    assert_eq!(commands.len(), 2, "serve and serve --help: {commands:?}");

    // `serve --help` lists the settings with their defaults.
    let help = Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(natter_args(commands[1]))
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for setting in [
        "--conversations",
        "--presence-interval",
        "--max-frame",
        "--send-queue",
    ] {
        assert!(help.contains(setting), "{setting} missing from --help");
    }
    assert!(help.contains("[default: "), "no defaults in --help");

    // Each section on a new server, as its conversation ids assume.
    let scratch = scratch_dir();
    let (server, addr) = start_server(commands[0], scratch.path());
    let python = blocks(
        &readme,
        "### With the course-style Python client",
        "### With netcat",
    );
    play(&python, addr, |_, _| 0);
    drop(server);

    let scratch = scratch_dir();
    let (_server, addr) = start_server(commands[0], scratch.path());
    let json = blocks(&readme, "### With netcat, in JSON", "## How fast");
    let nc = have("nc");
    if !nc {
        println!("nc is not installed: both JSON sessions use the README's Python line");
    }
    play(&json, addr, |name, alternatives| {
        let uses_nc = |b: &&Block| b.text.starts_with("nc ");
        match alternatives.iter().position(uses_nc) {
            // One session over nc when it is there, the other over Python.
            Some(at) if nc && name == "carol" => at,
            _ => alternatives
                .iter()
                .position(|b| !uses_nc(b))
                .expect("a way that needs no nc"),
        }
    });
}

/// The marker parser itself, on a README-shaped snippet.
#[test]
fn readme_markers_say_which_session_a_block_is_for() {
    let text = "## A\n<!-- session: carol dave -->\n```sh\nnc x 6666\n```\n\nprose\n\n```text\nplain\n```\n<!-- expect: dave -->\n```json\n{}\n```\n## B\n";
    let found = blocks(text, "## A", "## B");
    assert_eq!(found.len(), 3);
    assert_eq!(
        found[0].role,
        Role::Session(vec!["carol".into(), "dave".into()])
    );
    assert_eq!(found[0].text, "nc x 6666");
    assert_eq!(found[1].role, Role::Plain);
    assert_eq!(found[2].role, Role::Expect(vec!["dave".into()]));
    assert_eq!(found[2].lang, "json");
}
