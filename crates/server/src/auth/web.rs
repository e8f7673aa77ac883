//! What the web page's sign-in asks of the hub, and what it answers.
//!
//! The page signs in over HTTP, before any WebSocket exists, so these
//! requests carry a reply channel instead of a connection. They use the
//! same credentials, limiter, hashing pool and session tokens as the wire
//! protocol's SIGNUP and REGISTER: a web session is one more session token
//! of the account, so LOGOUT, PASSWORD and `natter account passwd` end it
//! like any other. The HTTP side is `web/signin.rs`; the hub's side is
//! `hub/web_identity.rs`.

use std::net::IpAddr;

use natter_proto::Secret;
use tokio::sync::oneshot;

/// One request of the web page.
pub enum WebRequest {
    /// Sign in (or sign up, then sign in) with a password.
    Login(WebLogin),
    /// Which account the session `token` of `name` opens, if it still does:
    /// its display name.
    Check {
        name: String,
        token: Secret,
        reply: oneshot::Sender<Option<String>>,
    },
    /// Ends the session `token` of `name` and closes the connections that
    /// came in with it.
    SignOut {
        name: String,
        token: Secret,
        reply: oneshot::Sender<()>,
    },
}

/// A sign-in or sign-up form.
pub struct WebLogin {
    pub ip: IpAddr,
    pub name: String,
    pub password: Secret,
    /// Create the account first.
    pub signup: bool,
    pub reply: oneshot::Sender<Result<WebSession, Refused>>,
}

/// The page's copy of a session: what goes in its cookie.
pub struct WebSession {
    /// The account's name as it was signed up.
    pub display: String,
    pub token: Secret,
}

/// Why a sign-in failed, in words for the person at the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub why: Why,
    pub text: String,
}

/// The kind of refusal (the HTTP status it becomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Accounts are off, or sign-up is closed.
    NotAllowed,
    /// Wrong name or password (one text for both).
    BadCredentials,
    /// The name is taken.
    Taken,
    /// Too many failed attempts: wait.
    Blocked,
    /// The hashing pool is full, or hashing failed.
    Busy,
}

impl Refused {
    pub fn new(why: Why, text: impl Into<String>) -> Refused {
        Refused {
            why,
            text: text.into(),
        }
    }
}

/// The pool's job for a web login is done: the hub finishes it.
pub struct Pending {
    pub ip: IpAddr,
    pub reply: oneshot::Sender<Result<WebSession, Refused>>,
}
