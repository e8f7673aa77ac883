//! Signing in to an account: a password, a session token kept from last
//! time, or both (the token first; the password when the token is
//! refused), and `SIGNUP` to create the account first.
//!
//! The token comes from the server's `SESSION` answer (we ask for the
//! `session` capability) and is kept in memory for reconnects, and in a
//! [`TokenStore`] between runs when one is given. A refused token is
//! forgotten at once.

use natter_proto::Secret;

use crate::tokens::TokenStore;

/// How [`crate::Client::login`] proves who we are.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The account's password: for the first sign-in, a sign-up, and
    /// whenever the token is refused. `None`: the kept token only.
    pub password: Option<Secret>,
    /// Where the session token is kept between runs (`None`: it lives as
    /// long as the client).
    pub tokens: Option<TokenStore>,
    /// Create the account first with `SIGNUP` (needs the password).
    pub signup: bool,
}

impl Credentials {
    pub fn password(password: impl Into<String>) -> Credentials {
        Credentials {
            password: Some(Secret::new(password.into())),
            ..Credentials::default()
        }
    }
}

/// Which secret a `REGISTER` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proof {
    Token,
    Password,
}

/// The account the client signs in to, with what it knows of it.
#[derive(Debug)]
pub(crate) struct Account {
    credentials: Credentials,
    server: String,
    name: String,
    token: Option<Secret>,
}

impl Account {
    pub fn new(credentials: Credentials, server: &str, name: &str) -> Account {
        let token = match &credentials.tokens {
            Some(store) if !credentials.signup => store.load(server, name),
            _ => None,
        };
        Account {
            credentials,
            server: server.to_owned(),
            name: name.to_owned(),
            token,
        }
    }

    pub fn signs_up(&self) -> bool {
        self.credentials.signup
    }

    pub fn password(&self) -> Option<&Secret> {
        self.credentials.password.as_ref()
    }

    /// The secret to register with: the token while we have one.
    pub fn proof(&self) -> Option<(Proof, &Secret)> {
        match (&self.token, &self.credentials.password) {
            (Some(token), _) => Some((Proof::Token, token)),
            (None, Some(password)) => Some((Proof::Password, password)),
            (None, None) => None,
        }
    }

    /// The server gave us a session token: kept for reconnects and, with a
    /// store, for next time. `Err`: it could not be written (the text says
    /// why; the token still works for this run).
    pub fn keep(&mut self, token: Secret) -> Result<(), String> {
        let saved = match &self.credentials.tokens {
            Some(store) => store.save(&self.server, &self.name, &token).map_err(|e| {
                format!(
                    "cannot keep the session token in {}: {e}",
                    store.dir().display()
                )
            }),
            None => Ok(()),
        };
        self.token = Some(token);
        saved
    }

    /// The token was refused (it ended): forgotten everywhere.
    pub fn token_refused(&mut self) {
        self.token = None;
        if let Some(store) = &self.credentials.tokens {
            store.forget(&self.server, &self.name);
        }
    }
}

/// Whether a refused `REGISTER`'s text says the secret was wrong.
pub(crate) fn bad_credentials(error_text: &str) -> bool {
    error_text == "wrong username or password"
}
