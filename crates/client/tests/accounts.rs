//! Accounts from the client library against a real server: signing up,
//! the session token kept in a private file and used instead of the
//! password next time, the password when the kept token is refused, and
//! giving up (rather than guessing on) when neither opens the account.

mod common;

use std::path::Path;

use common::*;
use natter_client::{
    Client, ClientError, Command, ConnectionState, Credentials, Event, Secret, TokenStore,
};

const PASSWORD: &str = "correct horse";

fn credentials(password: Option<&str>, tokens: &TokenStore) -> Credentials {
    Credentials {
        password: password.map(Secret::new),
        tokens: Some(tokens.clone()),
        signup: false,
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_signed_up_account_signs_in_next_time_with_its_kept_token() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenStore::new(dir.path().join("natter").join("sessions"));

    let (first, _events) = Client::connect_with(fast_config(addr)).await.unwrap();
    let signup = Credentials {
        signup: true,
        ..credentials(Some(PASSWORD), &tokens)
    };
    first
        .login("ann", "online", signup)
        .await
        .expect("signs up and in");
    let file = tokens.path(&addr.to_string(), "ann");
    // The SESSION answer comes before the login completes.
    let token = std::fs::read_to_string(&file).expect("the token is kept");
    assert!(token.starts_with("nt1."), "{token}");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(tokens.dir()), 0o700);

    // Next time: no password at all, the kept token opens the account.
    let (second, mut events) = Client::connect_with(fast_config(addr)).await.unwrap();
    second
        .login("ANN", "away", credentials(None, &tokens))
        .await
        .expect("the kept token signs in");
    expect_online(&mut events, "ann", Some("away")).await;
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        token,
        "still the same session"
    );

    // A guest cannot take the name; the library says an account is needed.
    let (guest, _events) = Client::connect_with(fast_config(addr)).await.unwrap();
    let refused = guest.register("ann", "online").await;
    assert_eq!(
        refused,
        Err(ClientError::AccountNeeded(
            "wrong username or password".into()
        ))
    );
}

#[tokio::test]
async fn a_refused_token_is_replaced_by_signing_in_with_the_password() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenStore::new(dir.path());
    let (client, _events) = Client::connect_with(fast_config(addr)).await.unwrap();
    let signup = Credentials {
        signup: true,
        ..credentials(Some(PASSWORD), &tokens)
    };
    client.login("bea", "online", signup).await.unwrap();
    client.goodbye().await.unwrap();

    // The kept token ended (say, a logout elsewhere).
    let stale = Secret::new("nt1.0000000000000000000000000000000000000000000000000000000000000000");
    tokens.save(&addr.to_string(), "bea", &stale).unwrap();
    let (without, _events) = Client::connect_with(fast_config(addr)).await.unwrap();
    let refused = without
        .login("bea", "online", credentials(None, &tokens))
        .await;
    assert!(
        matches!(refused, Err(ClientError::AccountNeeded(_))),
        "{refused:?}"
    );
    assert_eq!(
        tokens.load(&addr.to_string(), "bea"),
        None,
        "a refused token is forgotten"
    );

    tokens.save(&addr.to_string(), "bea", &stale).unwrap();
    let (with, _events) = Client::connect_with(fast_config(addr)).await.unwrap();
    with.login("bea", "online", credentials(Some(PASSWORD), &tokens))
        .await
        .expect("the password after the refused token");
    let kept = tokens.load(&addr.to_string(), "bea").expect("a new token");
    assert_ne!(kept, stale);
    assert!(kept.expose().starts_with("nt1."));
}

#[tokio::test]
async fn a_device_signed_out_by_a_password_change_stops_instead_of_guessing() {
    let server = start_server("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let (laptop, mut events) = Client::connect_with(fast_config(addr)).await.unwrap();
    let signup = Credentials {
        signup: true,
        ..Credentials::password(PASSWORD)
    };
    laptop.login("cy", "online", signup).await.unwrap();
    let (phone, _phone_events) = Client::connect_with(fast_config(addr)).await.unwrap();
    phone
        .login("cy", "online", Credentials::password(PASSWORD))
        .await
        .unwrap();
    phone
        .send(Command::Password {
            old: Secret::new(PASSWORD),
            new: Secret::new("battery staple"),
        })
        .await
        .unwrap();
    // The laptop is closed by the server; its token and its (old) password
    // are both refused on the reconnect, and it stops there.
    let state = expect_state(&mut events, "disconnected for good", |state| {
        matches!(state, ConnectionState::Disconnected { .. })
    })
    .await;
    assert_eq!(
        state,
        ConnectionState::Disconnected {
            reason: "wrong username or password".into()
        }
    );
    let later = drain(&mut events, std::time::Duration::from_millis(300)).await;
    assert!(
        !later
            .iter()
            .any(|e| matches!(e, Event::State(ConnectionState::Reconnecting { .. }))),
        "{later:?}"
    );
}
