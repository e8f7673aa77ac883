//! Accounts, sessions and devices over real sockets, one test per rule of
//! the contract's "Identity, devices and history" section, in every
//! encoding where the wire matters.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use natter_core::AccountsMode;
use natter_proto::{Command, Encoding, Secret, ServerMessage};
use natter_server::{Config, ServerHandle};

const ENCODINGS: [Encoding; 3] = [Encoding::Framed, Encoding::Classic, Encoding::Json];
const BAD_CREDENTIALS: &str = "wrong username or password";

fn durable(dir: &Path) -> Config {
    Config {
        data_dir: Some(dir.to_path_buf()),
        ..test_config()
    }
}

async fn signup(server: &ServerHandle, encoding: Encoding, name: &str, password: &str) {
    let mut client = TestClient::connect(server.local_addr(), encoding).await;
    client
        .send(Command::Signup {
            name: name.into(),
            password: Secret::new(password),
        })
        .await;
    let signed_up = client
        .expect(|m| match m {
            ServerMessage::SignedUp(n) => Some(n.clone()),
            _ => None,
        })
        .await;
    assert_eq!(signed_up, name);
}

fn login(name: &str, secret: &str) -> Command {
    Command::Login {
        name: name.into(),
        status: "online".into(),
        secret: Secret::new(secret),
    }
}

/// Connects, asks for `caps`, logs in with `secret` and waits for
/// ONLINE_USERS; gives back the SESSION token if one came.
async fn device(
    server: &ServerHandle,
    encoding: Encoding,
    caps: &[&str],
    name: &str,
    secret: &str,
) -> (TestClient, Option<String>) {
    let mut client = TestClient::connect(server.local_addr(), encoding).await;
    client.name = name.into();
    if !caps.is_empty() {
        client
            .send(Command::Caps(caps.iter().map(|c| c.to_string()).collect()))
            .await;
        client
            .expect(|m| matches!(m, ServerMessage::Caps(_)).then_some(()))
            .await;
    }
    client.send(login(name, secret)).await;
    let mut token = None;
    loop {
        let Received::Message(message) = client.recv().await else {
            panic!("{name}: closed while logging in");
        };
        match message {
            ServerMessage::Session(t) => token = Some(t.expose().to_owned()),
            ServerMessage::OnlineUsers(users) if users.iter().any(|(n, _)| n == name) => break,
            ServerMessage::Error(e) => panic!("{name} refused: {e}"),
            _ => {}
        }
    }
    if caps.contains(&"session") && token.is_none() {
        token = client.try_recv(QUIET).await.and_then(|r| match r {
            Received::Message(ServerMessage::Session(t)) => Some(t.expose().to_owned()),
            _ => None,
        });
    }
    (client, token)
}

async fn refused(server: &ServerHandle, encoding: Encoding, command: Command) -> String {
    let mut client = TestClient::connect(server.local_addr(), encoding).await;
    client.send(command).await;
    client.expect_error().await
}

#[tokio::test]
async fn signup_then_login_with_the_password_in_every_encoding() {
    let server = start().await;
    for (i, encoding) in ENCODINGS.into_iter().enumerate() {
        let name = format!("user{i}");
        signup(&server, encoding, &name, "correct horse").await;
        let (mut me, _) = device(&server, encoding, &[], &name, "correct horse").await;
        me.send(Command::Goodbye).await;
        me.expect_closed().await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_name_get_the_same_error() {
    let server = start().await;
    signup(&server, Encoding::Framed, "alice", "correct horse").await;
    for encoding in ENCODINGS {
        let wrong = refused(&server, encoding, login("alice", "wrong horse")).await;
        let unknown = refused(&server, encoding, login("nobody", "wrong horse")).await;
        assert_eq!(wrong, BAD_CREDENTIALS);
        assert_eq!(unknown, BAD_CREDENTIALS);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_guest_is_refused_an_accounts_name_but_other_names_stay_free() {
    let server = start().await;
    signup(&server, Encoding::Json, "alice", "correct horse").await;
    for encoding in ENCODINGS {
        let guest = Command::Register {
            name: "ALICE".into(),
            status: "hi".into(),
        };
        assert_eq!(refused(&server, encoding, guest).await, BAD_CREDENTIALS);
    }
    TestClient::registered(server.local_addr(), Encoding::Classic, "bob").await;
    server.shutdown().await;
}

#[tokio::test]
async fn accounts_required_refuses_guests_and_signup_closed_refuses_signup() {
    let server = start_with(Config {
        accounts: AccountsMode::Required,
        ..test_config()
    })
    .await;
    let guest = Command::Register {
        name: "bob".into(),
        status: "hi".into(),
    };
    let error = refused(&server, Encoding::Json, guest).await;
    assert!(error.contains("requires an account"), "{error}");
    signup(&server, Encoding::Json, "alice", "correct horse").await;
    device(&server, Encoding::Json, &[], "alice", "correct horse").await;
    server.shutdown().await;

    let closed = start_with(Config {
        signup_open: false,
        ..test_config()
    })
    .await;
    let signup = Command::Signup {
        name: "carol".into(),
        password: Secret::new("correct horse"),
    };
    let error = refused(&closed, Encoding::Framed, signup).await;
    assert!(error.contains("sign-up is closed"), "{error}");
    closed.shutdown().await;
}

#[tokio::test]
async fn a_session_token_works_as_the_secret_until_logout() {
    let server = start().await;
    signup(&server, Encoding::Framed, "alice", "correct horse").await;
    for encoding in ENCODINGS {
        let (mut first, token) =
            device(&server, encoding, &["session"], "alice", "correct horse").await;
        let token = token.expect("a SESSION token after a password login");
        assert!(token.len() >= 32, "at least 128 bits");
        let (mut second, again) = device(&server, encoding, &["session"], "alice", &token).await;
        assert_eq!(again, None, "a token login gets no new token");
        second.send(Command::Logout).await;
        second.expect_closed().await;
        let error = refused(&server, encoding, login("alice", &token)).await;
        assert_eq!(error, BAD_CREDENTIALS, "LOGOUT ended the token");
        first.send(Command::Goodbye).await;
        first.expect_closed().await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_and_devices() {
    let server = start().await;
    signup(&server, Encoding::Json, "alice", "correct horse").await;
    let (mut laptop, mine) = device(
        &server,
        Encoding::Json,
        &["session"],
        "alice",
        "correct horse",
    )
    .await;
    let (mut phone, theirs) = device(
        &server,
        Encoding::Framed,
        &["session"],
        "alice",
        "correct horse",
    )
    .await;
    laptop
        .send(Command::Password {
            old: Secret::new("correct horse"),
            new: Secret::new("battery staple"),
        })
        .await;
    laptop
        .expect(|m| matches!(m, ServerMessage::PasswordChanged(n) if n == "alice").then_some(()))
        .await;
    let error = phone.expect_error().await;
    assert!(error.contains("password"), "{error}");
    phone.expect_closed().await;
    let stale = refused(&server, Encoding::Framed, login("alice", &theirs.unwrap())).await;
    assert_eq!(stale, BAD_CREDENTIALS);
    let old = refused(&server, Encoding::Framed, login("alice", "correct horse")).await;
    assert_eq!(old, BAD_CREDENTIALS);
    device(&server, Encoding::Classic, &[], "alice", &mine.unwrap()).await;
    device(&server, Encoding::Classic, &[], "alice", "battery staple").await;
    server.shutdown().await;
}

#[tokio::test]
async fn two_devices_share_one_presence_entry_and_both_receive_everything() {
    let server = start().await;
    signup(&server, Encoding::Json, "alice", "correct horse").await;
    let (mut laptop, _) = device(&server, Encoding::Json, &[], "alice", "correct horse").await;
    let (mut phone, _) = device(&server, Encoding::Classic, &[], "alice", "correct horse").await;
    let mut bob = TestClient::registered(server.local_addr(), Encoding::Framed, "bob").await;
    let conv = bob.invite(&["alice"]).await;
    assert_eq!(laptop.expect_invitation().await, conv);
    assert_eq!(phone.expect_invitation().await, conv);
    laptop.join(conv).await;
    bob.join(conv).await;
    bob.say(conv, "hello alice").await;
    for alice in [&mut laptop, &mut phone] {
        let (c, sender, text) = alice.expect_message().await;
        assert_eq!(
            (c, sender.as_str(), text.as_str()),
            (conv, "bob", "hello alice")
        );
    }
    phone.send(Command::Status("on the phone".into())).await;
    bob.expect_online_users_where(|u| {
        u == [
            ("alice".into(), "on the phone".into()),
            ("bob".into(), "online".into()),
        ]
    })
    .await;
    // One device leaving does not take the user offline.
    phone.send(Command::Goodbye).await;
    phone.expect_closed().await;
    bob.say(conv, "still there?").await;
    assert_eq!(laptop.expect_message().await.2, "still there?");
    assert_eq!(
        bob.conversations().await,
        [(conv, vec!["alice".to_string(), "bob".to_string()])]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_offline_member_stays_in_and_catches_up_with_unread_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(durable(dir.path())).await;
    signup(&server, Encoding::Framed, "alice", "correct horse").await;
    let (mut alice, _) = device(
        &server,
        Encoding::Framed,
        &["history"],
        "alice",
        "correct horse",
    )
    .await;
    let mut bob = TestClient::registered(server.local_addr(), Encoding::Json, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    alice.send(Command::Goodbye).await;
    alice.expect_closed().await;
    for text in ["one", "two"] {
        bob.say(conv, text).await;
        bob.expect_message().await;
    }
    assert_eq!(
        bob.conversations().await,
        [(conv, vec!["alice".to_string(), "bob".to_string()])],
        "an offline account stays a member"
    );
    let (mut alice, _) = device(
        &server,
        Encoding::Framed,
        &["history"],
        "alice",
        "correct horse",
    )
    .await;
    // Still a member after being away: HISTORY has what was missed.
    alice
        .send(Command::History {
            conv,
            before_seq: 0,
            limit: 10,
        })
        .await;
    let entries = alice
        .expect(|m| match m {
            ServerMessage::History { entries, .. } => Some(entries.clone()),
            _ => None,
        })
        .await;
    let texts: Vec<&str> = entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["one", "two"]);
    server.shutdown().await;
}

#[tokio::test]
async fn unread_after_login_counts_what_an_offline_member_missed() {
    let server = start_with(durable(tempfile::tempdir().unwrap().path())).await;
    signup(&server, Encoding::Json, "alice", "correct horse").await;
    let (mut alice, _) = device(
        &server,
        Encoding::Json,
        &["history"],
        "alice",
        "correct horse",
    )
    .await;
    let mut bob = TestClient::registered(server.local_addr(), Encoding::Classic, "bob").await;
    let conv = conversation(&mut [&mut alice, &mut bob]).await;
    alice.send(Command::Goodbye).await;
    alice.expect_closed().await;
    bob.say(conv, "missed").await;
    bob.expect_message().await;
    let mut alice = TestClient::connect(server.local_addr(), Encoding::Json).await;
    alice.send(Command::Caps(vec!["history".into()])).await;
    alice.send(login("alice", "correct horse")).await;
    let unread = alice
        .expect(|m| match m {
            ServerMessage::Unread(list) => Some(list.clone()),
            _ => None,
        })
        .await;
    assert_eq!(unread, [(conv, 1, 0)]);
    server.shutdown().await;
}

#[tokio::test]
async fn the_data_dir_never_holds_a_password_or_token_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(durable(dir.path())).await;
    let password = "plain-text-canary-4711";
    signup(&server, Encoding::Framed, "alice", password).await;
    let (_alice, token) = device(&server, Encoding::Framed, &["session"], "alice", password).await;
    let token = token.unwrap();
    server.shutdown().await;
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        for secret in [password, &token, &token[4..]] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret in clear on disk"
            );
        }
    }
    assert!(files >= 2, "the store wrote files");
    // And the account is really there: it survives the restart.
    let server = start_with(durable(dir.path())).await;
    device(&server, Encoding::Json, &[], "alice", password).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_thousand_wrong_passwords_from_one_address_are_slowed_and_refused() {
    let server = start().await;
    signup(&server, Encoding::Framed, "alice", "correct horse").await;
    signup(&server, Encoding::Framed, "victim", "correct horse").await;
    let started = Instant::now();
    let mut attacker =
        TestClient::connect_from(server.local_addr(), [127, 0, 0, 2], Encoding::Framed).await;
    let (mut wrong, mut blocked) = (0, 0);
    for i in 0..1000 {
        attacker
            .send(login("victim", &format!("guess-{i:04}")))
            .await;
        let error = attacker.expect_error().await;
        if error == BAD_CREDENTIALS {
            wrong += 1;
        } else {
            assert!(error.starts_with("too many failed attempts"), "{error}");
            blocked += 1;
        }
        if i == 500 {
            // Meanwhile, someone else logs in normally and quickly.
            let t = Instant::now();
            device(&server, Encoding::Json, &[], "alice", "correct horse").await;
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
    }
    assert!(wrong <= 10, "{wrong} guesses were checked");
    assert_eq!(wrong + blocked, 1000);
    assert!(started.elapsed() < Duration::from_secs(30));
    server.shutdown().await;
}

/// The JSON example in docs/PROTOCOL.md's accounts section, line by line:
/// what the doc says the client sends is sent, what it says the server
/// answers must come back (any token where the doc writes `nt1.TOKEN`).
#[tokio::test]
async fn the_protocol_doc_identity_example_is_what_the_server_says() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md"),
    )
    .unwrap();
    let begin = doc.find("<!-- BEGIN IDENTITY EXAMPLE -->").unwrap();
    let end = doc.find("<!-- END IDENTITY EXAMPLE -->").unwrap();
    let lines: Vec<&str> = doc[begin..end].lines().skip(1).collect();
    assert!(lines.len() >= 10, "the example is there");
    let server = start().await;
    let stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut replies = BufReader::new(read).lines();
    for line in lines {
        let line = line.trim();
        if let Some(sent) = line.strip_prefix("ann → ") {
            write
                .write_all(format!("{sent}\n").as_bytes())
                .await
                .unwrap();
        } else if let Some(expected) = line.strip_prefix("ann ← ") {
            let got = tokio::time::timeout(PATIENCE, replies.next_line())
                .await
                .expect("an answer")
                .unwrap()
                .expect("the connection stays open");
            let got: serde_json::Value = serde_json::from_str(&got).unwrap();
            let mut expected: serde_json::Value = serde_json::from_str(expected).unwrap();
            if expected["args"][0] == "nt1.TOKEN" {
                let token = got["args"][0].as_str().unwrap();
                assert!(token.starts_with("nt1.") && token.len() == 68, "{token}");
                expected["args"][0] = got["args"][0].clone();
            }
            assert_eq!(got, expected);
        }
    }
    server.shutdown().await;
}
