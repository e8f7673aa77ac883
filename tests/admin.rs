//! `natter admin` against a real `natter serve` process over its real
//! admin socket: kick, ban (a name, an address, across a restart), unban,
//! broadcast to course clients (pickles) and JSON clients, drain, the
//! socket's permissions and what garbage on it does (nothing to anyone
//! else).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};
use std::time::Duration;

use common::{Client, PATIENCE, Server};
use natter_proto::{Command, Encoding, Secret, ServerMessage};

const NATTER: &str = env!("CARGO_BIN_EXE_natter");

/// The flags every server here runs with, in a fresh dir whose data dir
/// is `natter-data` (so the socket is `natter-data/admin.sock`, the
/// default `natter admin` looks for).
const SERVE: &[&str] = &["--listen", "127.0.0.1:0", "--no-web"];

/// Runs `natter admin ARGS` in `dir`.
fn admin(dir: &Path, args: &[&str]) -> Output {
    Process::new(NATTER)
        .arg("admin")
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("natter admin runs")
}

/// `natter admin ARGS`, which must succeed; its stdout.
fn admin_ok(dir: &Path, args: &[&str]) -> String {
    let out = admin(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "natter admin {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Reads until the server closes; the ERRORs it sent before.
async fn errors_until_closed(client: &mut Client) -> Vec<String> {
    let mut errors = Vec::new();
    let read = async {
        while let Some(message) = client.reader.recv().await {
            if let ServerMessage::Error(text) = message {
                errors.push(text);
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server closed the connection");
    errors
}

async fn register(client: &mut Client, name: &str) {
    client
        .send(Command::Register {
            name: name.into(),
            status: "online".into(),
        })
        .await;
}

/// The next ERROR (skipping presence); panics on a closed connection.
async fn next_error(client: &mut Client) -> String {
    client
        .reader
        .expect(|m| match m {
            ServerMessage::Error(text) => Some(text.clone()),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_user_is_told_why_and_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(SERVE, dir.path());
    let mut alice = Client::course(server.addr, Encoding::Json, "alice").await;
    let mut bob = Client::course(server.addr, Encoding::Classic, "bob").await;
    let users = admin_ok(dir.path(), &["users"]);
    assert!(
        users.contains("alice [online] guest: 127.0.0.1:"),
        "{users}"
    );
    assert!(users.contains("(tcp classic, conn"), "{users}");

    let said = admin_ok(dir.path(), &["kick", "bob", "spamming", "the", "lobby"]);
    assert_eq!(said, "kicked bob (1 connection)\n");
    let errors = errors_until_closed(&mut bob).await;
    assert_eq!(
        errors,
        ["disconnected by an operator: spamming the lobby"],
        "bob is told why, then closed"
    );
    // alice stays, and sees bob gone.
    alice
        .reader
        .expect(|m| match m {
            ServerMessage::OnlineUsers(users) => (users.len() == 1).then_some(()),
            _ => None,
        })
        .await;
    // Nobody by that name: the operator is told, nothing else happens.
    let out = admin(dir.path(), &["kick", "bob"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bob is not online"),
        "{out:?}"
    );
    common::stop(server, vec![alice]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_user_cannot_return_until_unbanned_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(SERVE, dir.path());
    let mut bob = Client::course(server.addr, Encoding::Json, "Bob").await;
    let said = admin_ok(dir.path(), &["ban", "bob", "7d", "--reason", "spam"]);
    assert!(
        said.starts_with("banned user:bob until ") && said.ends_with("(1 connection closed)\n"),
        "{said}"
    );
    let errors = errors_until_closed(&mut bob).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0] == "Bob is banned from this server for 7d more: spam",
        "{errors:?}"
    );

    // Back under another spelling: refused, and the connection may try
    // another name.
    let mut again = Client::connect(server.addr, Encoding::Classic, "bob again").await;
    register(&mut again, "BOB").await;
    let refused = next_error(&mut again).await;
    assert!(
        refused.starts_with("BOB is banned from this server for ")
            && refused.ends_with(" more: spam"),
        "{refused}"
    );
    register(&mut again, "robert").await;
    again
        .reader
        .expect(|m| matches!(m, ServerMessage::OnlineUsers(_)).then_some(()))
        .await;

    // The ban is in the store: a restart keeps it.
    common::stop(server, vec![again]).await;
    let server = Server::start(SERVE, dir.path());
    let bans = admin_ok(dir.path(), &["bans"]);
    assert!(
        bans.starts_with("user:bob until ") && bans.ends_with(": spam\n"),
        "{bans}"
    );
    let mut bob = Client::connect(server.addr, Encoding::Json, "bob").await;
    register(&mut bob, "bob").await;
    assert!(next_error(&mut bob).await.contains("banned"));

    assert_eq!(
        admin_ok(dir.path(), &["unban", "bob"]),
        "unbanned user:bob\n"
    );
    register(&mut bob, "bob").await;
    bob.reader
        .expect(|m| matches!(m, ServerMessage::OnlineUsers(_)).then_some(()))
        .await;
    assert_eq!(admin_ok(dir.path(), &["bans"]), "no bans\n");
    let out = admin(dir.path(), &["unban", "bob"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("there is no ban on user:bob"),
        "{out:?}"
    );
    common::stop(server, vec![bob]).await;
}

/// An account's password does not get a banned account in, on any device;
/// nor can a banned name be signed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_account_cannot_log_in_until_unbanned() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(SERVE, dir.path());
    let mut dave = Client::connect(server.addr, Encoding::Json, "dave").await;
    dave.send(Command::Signup {
        name: "dave".into(),
        password: Secret::new("correct horse"),
    })
    .await;
    dave.reader
        .expect(|m| matches!(m, ServerMessage::SignedUp(_)).then_some(()))
        .await;
    let login = || Command::Login {
        name: "dave".into(),
        status: "online".into(),
        secret: Secret::new("correct horse"),
    };
    dave.send(login()).await;
    dave.reader
        .expect(|m| matches!(m, ServerMessage::OnlineUsers(_)).then_some(()))
        .await;
    admin_ok(dir.path(), &["ban", "dave", "--reason", "phishing"]);
    assert_eq!(
        errors_until_closed(&mut dave).await,
        ["dave is banned from this server permanently: phishing"]
    );
    let mut dave = Client::connect(server.addr, Encoding::Framed, "dave").await;
    dave.send(login()).await;
    assert_eq!(
        next_error(&mut dave).await,
        "dave is banned from this server permanently: phishing"
    );
    admin_ok(dir.path(), &["ban", "eve"]);
    dave.send(Command::Signup {
        name: "Eve".into(),
        password: Secret::new("another secret"),
    })
    .await;
    assert_eq!(
        next_error(&mut dave).await,
        "Eve is banned from this server permanently"
    );
    admin_ok(dir.path(), &["unban", "dave"]);
    dave.send(login()).await;
    dave.reader
        .expect(|m| matches!(m, ServerMessage::OnlineUsers(_)).then_some(()))
        .await;
    common::stop(server, vec![dave]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_address_cannot_connect_until_unbanned() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(SERVE, dir.path());
    let mut alice = Client::course(server.addr, Encoding::Json, "alice").await;
    // Not registered yet: an address ban closes it too.
    let mut lurker = Client::connect(server.addr, Encoding::Json, "lurker").await;
    lurker.send(Command::ListConversations).await;
    next_error(&mut lurker).await; // "not registered": it is connected
    let said = admin_ok(dir.path(), &["ban", "127.0.0.1", "2h"]);
    assert!(said.ends_with("(2 connections closed)\n"), "{said}");
    for client in [&mut alice, &mut lurker] {
        let errors = errors_until_closed(client).await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0] == "your address is banned from this server for 2h more",
            "{errors:?}"
        );
    }
    // A new connection is refused with the reason, in its own encoding.
    let mut refused = Client::connect(server.addr, Encoding::Classic, "refused").await;
    register(&mut refused, "carol").await;
    let errors = errors_until_closed(&mut refused).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("your address is banned"),
        "{errors:?}"
    );

    admin_ok(dir.path(), &["unban", "127.0.0.1"]);
    let carol = Client::course(server.addr, Encoding::Classic, "carol").await;
    common::stop(server, vec![carol]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_course_pickle_clients_and_json_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(SERVE, dir.path());
    let mut course = Client::course(server.addr, Encoding::Classic, "course").await;
    let mut framed = Client::course(server.addr, Encoding::Framed, "framed").await;
    let mut json = Client::with_history(server.addr, Encoding::Json, "json").await;
    let said = admin_ok(
        dir.path(),
        &["broadcast", "maintenance at 22:00 UTC, back by 22:15"],
    );
    assert_eq!(said, "sent to 3 connections\n");
    for client in [&mut course, &mut framed, &mut json] {
        let (conv, sender, text, seq) = client.expect_message().await;
        assert_eq!(
            (conv, sender.as_str(), text.as_str(), seq),
            (
                0,
                "*server*",
                "maintenance at 22:00 UTC, back by 22:15",
                None
            )
        );
    }
    // Nobody got an ERROR for it, and everyone can go on chatting.
    let conv = course.invite(&["json"]).await;
    course.join(conv).await;
    course.say(conv, "still here").await;
    assert_eq!(course.expect_message().await.2, "still here");
    common::stop(server, vec![course, framed, json]).await;
}

/// The bytes a course client's `pickle.loads` sees, in Python itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_unpickles_a_broadcast() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(SERVE, dir.path());
    let script = format!(
        r#"
import pickle, socket, sys, time
s = socket.create_connection(("127.0.0.1", {port}))
s.sendall(b"REGISTER " + pickle.dumps(["carol", "online"], 2))
data = b""
deadline = time.time() + 20
sys.stdout.write("registered\n"); sys.stdout.flush()
while time.time() < deadline:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
    at = data.find(b"MESSAGE ")
    if at >= 0:
        try:
            print(repr(pickle.loads(data[at + 8:])))
            break
        except Exception:
            pass
"#,
        port = server.addr.port()
    );
    // Python 3 is needed by CI anyway (the Python client's tests).
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "registered\n");
    // Registered once the server lists carol.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !admin_ok(dir.path(), &["users"]).contains("carol") {
        assert!(
            std::time::Instant::now() < deadline,
            "carol never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin_ok(dir.path(), &["broadcast", "hello from the operator"]);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(rest, "[0, '*server*', 'hello from the operator']\n");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_accepting_tells_everyone_and_exits_when_they_leave() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(SERVE, dir.path());
    let addr = server.addr;
    let mut alice = Client::course(addr, Encoding::Classic, "alice").await;
    let mut bob = Client::course(addr, Encoding::Json, "bob").await;
    let said = admin_ok(dir.path(), &["drain", "--timeout", "120"]);
    assert!(said.starts_with("draining: not accepting clients; 2 still connected"));
    for client in [&mut alice, &mut bob] {
        let (conv, sender, text, _) = client.expect_message().await;
        assert_eq!((conv, sender.as_str()), (0, "*server*"));
        assert!(text.starts_with("this server is going down for maintenance within 2m"));
    }
    // No new clients.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let stats = admin_ok(dir.path(), &["stats"]);
    assert!(stats.contains("draining:      yes"), "{stats}");
    // Clients still chat while they finish up.
    let conv = alice.invite(&["bob"]).await;
    alice.join(conv).await;
    alice.say(conv, "wrapping up").await;
    assert_eq!(alice.expect_message().await.2, "wrapping up");
    // When the last one leaves, the server exits by itself, cleanly, and
    // takes its socket with it.
    for mut client in [alice, bob] {
        client.send(Command::Goodbye).await;
        errors_until_closed(&mut client).await;
    }
    let status = tokio::task::block_in_place(|| server.wait_exit(PATIENCE));
    assert!(status.success(), "{status}");
    assert!(!dir.path().join("natter-data/admin.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_the_server_at_its_timeout_with_clients_left() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(SERVE, dir.path());
    let stayer = Client::course(server.addr, Encoding::Json, "stayer").await;
    admin_ok(dir.path(), &["drain", "--timeout", "1"]);
    let told = tokio::spawn(stayer.until_closed());
    let status = tokio::task::block_in_place(|| server.wait_exit(PATIENCE));
    assert!(status.success(), "{status}");
    assert!(
        told.await.unwrap(),
        "the last client is told the server stops"
    );
}

/// Socket mode 0600, nobody else's socket replaced, a stale one replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_owner_only_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("natter-data/admin.sock");
    let server = Server::start(SERVE, dir.path());
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // Nothing left over from making it privately.
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path().join("natter-data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".natter-admin")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A crash leaves the socket behind; the next server replaces it.
    server.kill_9();
    assert!(socket.exists(), "SIGKILL leaves the socket");
    let server = Server::start(SERVE, dir.path());
    assert!(admin_ok(dir.path(), &["stats"]).contains("connections:   0"));

    // An ephemeral server has a socket only where told; a second server
    // cannot take a live one.
    let elsewhere = dir.path().join("ops.sock");
    let path = elsewhere.to_str().unwrap();
    let mut args = SERVE.to_vec();
    args.extend(["--ephemeral", "--admin-socket", path]);
    let ephemeral = Server::start(&args, dir.path());
    assert!(admin_ok(dir.path(), &["--admin-socket", path, "stats"]).contains("uptime:"));
    let second = Process::new(NATTER)
        .arg("serve")
        .args(&args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another server is running with the admin socket"),
        "{stderr}"
    );
    assert!(admin_ok(dir.path(), &["--admin-socket", path, "stats"]).contains("uptime:"));
    assert!(ephemeral.terminate().success());
    assert!(!elsewhere.exists(), "a clean exit removes the socket");
    assert!(server.terminate().success());
    assert!(!socket.exists());
}

/// Sends `bytes` on a fresh admin connection; every answer line until the
/// server closes it (or stops answering).
fn raw_exchange(socket: &Path, bytes: &[u8]) -> Vec<String> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(bytes).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    BufReader::new(stream)
        .lines()
        .map_while(Result::ok)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_admin_socket_gets_errors_and_harms_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("natter-data/admin.sock");
    let server = Server::start(SERVE, dir.path());
    let mut alice = Client::course(server.addr, Encoding::Json, "alice").await;

    let answers = raw_exchange(
        &socket,
        b"not json\n{\"command\":\"launch\"}\n{\"command\":\"kick\"}\n\
          {\"command\":\"ban\",\"target\":\"no spaces\"}\n\
          {\"command\":\"ban\",\"target\":\"bob\",\"duration\":\"soon\"}\n\
          {\"command\":\"broadcast\",\"text\":\"\"}\n\
          \xff\xfe\n{\"command\":\"stats\"}\n",
    );
    let expected_errors = [
        "not a request: expected ident",
        "not a request: unknown variant `launch`",
        "not a request: missing field `name`",
        "\"no spaces\" is neither a username nor an IP address",
        "\"soon\" is not a duration",
        "the notice is empty",
    ];
    assert_eq!(answers.len(), 7, "{answers:#?}");
    for (answer, expected) in answers.iter().zip(expected_errors) {
        let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
        assert_eq!(answer["ok"], false);
        let error = answer["error"].as_str().unwrap();
        assert!(error.starts_with(expected), "{error} / {expected}");
    }
    // Invalid UTF-8: the stream cannot be trusted; answered, then closed
    // (the stats request after it is never read).
    assert!(
        answers[6].contains("cannot read the request"),
        "{answers:#?}"
    );

    // An endless line is cut off at the bound.
    let long = vec![b'x'; 200 * 1024];
    let answers = raw_exchange(&socket, &long);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0].contains("request line longer than 65536 bytes"));

    // Connections at once are bounded: the ninth is told and closed.
    let held: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let answers = raw_exchange(&socket, b"{\"command\":\"stats\"}\n");
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(
        answers[0].contains("too many admin connections (at most 8)"),
        "{answers:?}"
    );
    drop(held);

    // Everyone else is fine: the chat, and the next operator.
    alice.send(Command::Status("still here".into())).await;
    alice
        .reader
        .expect(|m| match m {
            ServerMessage::OnlineUsers(users) => {
                users.iter().any(|(_, s)| s == "still here").then_some(())
            }
            _ => None,
        })
        .await;
    // (The slots of the connections just closed come back as the server
    // notices; bounded wait.)
    let deadline = std::time::Instant::now() + PATIENCE;
    let stats = loop {
        let out = admin(dir.path(), &["stats"]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(std::time::Instant::now() < deadline, "{out:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(stats.contains("users online:  1 (1 devices)"), "{stats}");
    common::stop(server, vec![alice]).await;
}

/// The lines of the ```sh block after `<!-- admin-example -->` in
/// docs/OPERATIONS.md.
fn documented_commands() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (_, after) = doc
        .split_once("<!-- admin-example -->")
        .expect("OPERATIONS.md marks its admin example");
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a ```sh block follows the marker");
    let end = body.find("```").expect("the block is closed");
    body[..end].lines().map(str::to_owned).collect()
}

/// Splits a command line as sh would, for the quoting the docs use
/// (double quotes around words with spaces).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in line.chars() {
        match c {
            '"' => (quoted, any) = (!quoted, true),
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quotes: {line}");
    if any {
        words.push(word);
    }
    words
}

/// Every command of the Admin section of docs/OPERATIONS.md, exactly as
/// written, in order, against a server with two clients, with what each
/// must have done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_section_of_operations_md_runs_as_written() {
    let lines = documented_commands();
    assert!(lines.len() >= 10, "{lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(SERVE, dir.path());
    let mut alice = Client::course(server.addr, Encoding::Json, "alice").await;
    let mut bob = Client::course(server.addr, Encoding::Classic, "bob").await;
    let mut drained = false;
    for line in &lines {
        let words = shell_words(line);
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        let ["natter", "admin", args @ ..] = args.as_slice() else {
            panic!("not a natter admin command: {line}");
        };
        let stdout = admin_ok(dir.path(), args);
        match args.first().copied() {
            Some("stats") => assert!(stats_line(&stdout, "users online:  2")),
            Some("users") => assert!(stdout.contains("bob [online] guest"), "{stdout}"),
            Some("broadcast") => {
                for client in [&mut alice, &mut bob] {
                    let (conv, sender, text, _) = client.expect_message().await;
                    assert_eq!((conv, sender.as_str()), (0, "*server*"));
                    assert_eq!(text, args[1]);
                }
            }
            Some("kick") => assert_eq!(
                errors_until_closed(&mut bob).await,
                [format!("disconnected by an operator: {}", args[2])]
            ),
            Some("bans") => {
                for target in ["user:bob", "ip:203.0.113.7", "ip:2001:db8:5:6::/64"] {
                    assert!(stdout.contains(target), "{target}: {stdout}");
                }
            }
            Some("--json") => {
                let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                assert_eq!(answer["ok"], true, "{stdout}");
            }
            Some("drain") => drained = true,
            _ => {}
        }
    }
    assert!(drained, "the example ends with a drain");
    alice.send(Command::Goodbye).await;
    errors_until_closed(&mut alice).await;
    let status = tokio::task::block_in_place(|| server.wait_exit(PATIENCE));
    assert!(status.success(), "{status}");
}

fn stats_line(stdout: &str, line: &str) -> bool {
    stdout.lines().any(|l| l.starts_with(line))
}

/// A Unix socket path has a length limit: a data dir too deep for it is
/// refused at start, with what to do about it.
#[test]
fn a_data_dir_too_deep_for_a_socket_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("d".repeat(110));
    let out = Process::new(NATTER)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-web", "--data-dir"])
        .arg(&deep)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot make the admin socket")
            && stderr.contains("give a shorter path with --admin-socket"),
        "{stderr}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&deep)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with(".natter-admin"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every admin action is in the server's log, refused ones with why.
#[test]
fn admin_actions_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Process::new(NATTER)
        .arg("serve")
        .args(SERVE)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let socket = dir.path().join("natter-data/admin.sock");
    let deadline = std::time::Instant::now() + PATIENCE;
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "no admin socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    admin_ok(dir.path(), &["ban", "mallory", "--reason", "phishing"]);
    assert!(!admin(dir.path(), &["kick", "nobody"]).status.success());
    let status = Process::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(log).unwrap();
    let line = |needle: &str| log.lines().find(|l| l.contains(needle)).map(str::to_owned);
    let ban = line("\"target\":\"mallory\"").expect("the ban is logged");
    assert!(ban.contains("admin") && ban.contains("phishing"), "{ban}");
    let kick = line("\"name\":\"nobody\"").expect("the refused kick is logged");
    assert!(
        kick.contains("admin: refused") && kick.contains("nobody is not online"),
        "{kick}"
    );
}

/// An IPv6 address is banned by its /64: banning `::2` shuts out `::1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_ban_covers_the_whole_64() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--listen", "[::1]:0", "--no-web"], dir.path());
    let mut alice = Client::course(server.addr, Encoding::Json, "alice").await;
    let said = admin_ok(dir.path(), &["ban", "::2", "30m"]);
    assert!(
        said.starts_with("banned ip:::/64 until ") && said.ends_with("(1 connection closed)\n"),
        "{said}"
    );
    assert_eq!(
        errors_until_closed(&mut alice).await,
        ["your address is banned from this server for 30m more"]
    );
    let mut refused = Client::connect(server.addr, Encoding::Json, "refused").await;
    register(&mut refused, "alice").await;
    assert_eq!(errors_until_closed(&mut refused).await.len(), 1);
    assert!(admin_ok(dir.path(), &["bans"]).starts_with("ip:::/64 until "));
    admin_ok(dir.path(), &["unban", "::1"]);
    let alice = Client::course(server.addr, Encoding::Json, "alice").await;
    common::stop(server, vec![alice]).await;
}
