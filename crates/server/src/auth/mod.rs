//! Identity for the hub: who the accounts are, which secrets open them,
//! and the work that checking a secret takes, kept off the hub.
//!
//! The chat core decides naming (guests may not take an account's name,
//! an account may have several devices) but never sees a secret. This
//! module holds the credentials (one owner: the hub), the failed-attempt
//! [`limiter`], and the hashing [`pool`]; the flows that tie them to the
//! chat (SIGNUP, REGISTER with a secret, LOGOUT, PASSWORD) are in
//! `hub/identity.rs`. Changes reach the store as facts, so a reply like
//! `SIGNED_UP` leaves only once the account is committed.

pub mod limiter;
pub mod pool;
pub mod secrets;
pub mod web;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use natter_core::{ConnId, StoredAccount, TokenHash};
use natter_proto::{Command, Secret};

use limiter::Limiter;
use pool::Pool;

/// Commands a connection may send while its login is being checked; they
/// wait and run after it, in order. Past this the connection is cut off.
pub const MAX_HELD_COMMANDS: usize = 64;

/// What the pool found, back on the hub.
pub enum Outcome {
    /// SIGNUP's password, hashed (`None`: hashing failed).
    Hashed { name: String, phc: Option<String> },
    /// REGISTER's password checked against `phc` (the hash at the time,
    /// so a password changed meanwhile is noticed).
    Verified {
        name: String,
        status: String,
        phc: Arc<str>,
        ok: bool,
    },
    /// PASSWORD: the new hash if the old password was right.
    Changed {
        phc: Arc<str>,
        new_phc: Option<String>,
    },
}

/// An account as the hub knows it.
pub struct Credential {
    pub display: String,
    pub phc: Arc<str>,
    pub sessions: Vec<TokenHash>,
}

/// The hub's identity state.
pub struct Auth {
    pub credentials: HashMap<String, Credential>,
    pub limiter: Limiter,
    pub pool: Pool,
    /// Connections whose secret is being checked, with what they sent
    /// meanwhile.
    pub held: HashMap<ConnId, VecDeque<Command>>,
    /// The session token each account device came in with or was given.
    pub session_of: HashMap<ConnId, TokenHash>,
    /// Answers to the web page that wait for the store to commit what
    /// they reveal (an account, a session), with the ticket they wait for.
    pub web_replies: VecDeque<(u64, WebReply)>,
}

/// An answer to the web page, sent once what it reveals is stored.
pub type WebReply = Box<dyn FnOnce() + Send>;

impl Auth {
    pub fn new(accounts: Vec<StoredAccount>, pool: Pool) -> Self {
        let credentials = accounts
            .into_iter()
            .map(|a| {
                let credential = Credential {
                    display: a.display,
                    phc: a.phc.into(),
                    sessions: a.sessions,
                };
                (a.key, credential)
            })
            .collect();
        Auth {
            credentials,
            limiter: Limiter::default(),
            pool,
            held: HashMap::new(),
            session_of: HashMap::new(),
            web_replies: VecDeque::new(),
        }
    }

    /// Every account, by key, as a cluster snapshot carries it.
    pub fn export(&self) -> Vec<crate::cluster::snapshot::SnapshotAccount> {
        let mut accounts: Vec<_> = self
            .credentials
            .iter()
            .map(|(key, c)| crate::cluster::snapshot::SnapshotAccount {
                key: key.clone(),
                display: c.display.clone(),
                phc: c.phc.to_string(),
                sessions: c.sessions.clone(),
            })
            .collect();
        accounts.sort_by(|a, b| a.key.cmp(&b.key));
        accounts
    }

    /// This node's devices that came in with session `hash`.
    pub fn devices_of_session(&self, hash: TokenHash) -> Vec<ConnId> {
        self.session_of
            .iter()
            .filter(|(_, h)| **h == hash)
            .map(|(conn, _)| *conn)
            .collect()
    }

    /// The connection is gone: nothing of it is kept.
    pub fn forget(&mut self, conn: ConnId) {
        self.held.remove(&conn);
        self.session_of.remove(&conn);
    }
}

/// The secret as a password job needs it: owned, moved to the pool.
pub(crate) fn owned(secret: &Secret) -> String {
    secret.expose().to_owned()
}
