//! Accounts in a cluster: SIGNUP, REGISTER with a secret, LOGOUT, PASSWORD
//! and the web page's sign-in and sign-out go through the log as
//! [`Account`] changes, so every node knows every account and session.
//!
//! The node that received the command does the slow and the private part:
//! argon2 on its own bounded pool, and a new session token, whose plaintext
//! only it ever holds. It appends what came of it (a hash, never a secret),
//! and every copy applies that at the same point of the log, after checking
//! it still holds there: the name still free, the password hash still the
//! account's, the session still live. So a race between two nodes (a
//! SIGNUP on one, a guest's REGISTER of the same name on another; a login
//! while the password changes) ends the same way everywhere, and no copy
//! hashes anything. The receiving node answers its client when the entry
//! comes back; what the client sends meanwhile waits, as it waits for the
//! pool on a single server. Failed attempts are counted by the node that
//! saw them (lockouts are per node).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use natter_core::{ChatError, ConnId, Output, Recipients, user_key};
use natter_proto::{Command, Secret, ServerMessage};
use tokio::sync::oneshot;

use super::super::Hub;
use crate::auth::Outcome;
use crate::auth::secrets::new_token;
use crate::auth::web::{Pending, Refused, WebSession, Why};
use crate::cluster::entry::{Account, Input, Proof, first_conn_id};
use crate::metrics::{Disconnect, ErrorKind, LoginFailure};

/// What the connections of a web session are told when it is signed out.
const WEB_SIGNED_OUT: &str = "signed out";

/// This node's account changes on their way through the log.
#[derive(Default)]
pub(in crate::hub) struct AccountsInLog {
    /// Local connections whose account change is in the log (their later
    /// commands are held until it is back).
    waiting: HashSet<ConnId>,
    /// The tokens of sessions this node asked the log to start, for the
    /// client that gets them.
    tokens: HashMap<ConnId, String>,
    /// The web page's requests in the log, under an id of their own.
    web: HashMap<ConnId, WebWaiting>,
    /// Web requests so far (their ids count down from the top of this
    /// node's connection ids, which count up from the bottom).
    web_count: u32,
}

enum WebWaiting {
    Login {
        ip: IpAddr,
        reply: oneshot::Sender<Result<WebSession, Refused>>,
    },
    SignOut(oneshot::Sender<()>),
}

impl Hub {
    /// Whether `conn`'s account change is in the log, not yet back.
    pub(in crate::hub) fn account_in_log(&self, conn: ConnId) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.accounts.waiting.contains(&conn))
    }

    /// Appends `conn`'s account change; its later commands wait for it.
    pub(in crate::hub) fn log_account(&mut self, conn: ConnId, account: Account) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.accounts.waiting.insert(conn);
        self.auth.held.entry(conn).or_default();
        cluster.append_input(Input::Account(conn, account));
    }

    /// REGISTER with a secret that matched: to the log, with the token of
    /// the session it may start.
    pub(in crate::hub) fn log_login(
        &mut self,
        conn: ConnId,
        name: String,
        status: String,
        proof: Proof,
        session: Option<(String, [u8; 32])>,
    ) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let session = session.map(|(token, hash)| {
            cluster.accounts.tokens.insert(conn, token);
            hash
        });
        let status = Some(status);
        let account = Account::LogIn {
            name,
            status,
            proof,
            session,
        };
        self.log_account(conn, account);
    }

    /// A web sign-in's (or sign-up's) password is hashed or checked: to
    /// the log, answered when it comes back.
    pub(in crate::hub) fn web_to_log(&mut self, pending: Pending, outcome: Outcome) {
        let Pending { ip, reply } = pending;
        let (token, hash) = new_token();
        let session = Some(hash);
        let account = match outcome {
            Outcome::Hashed {
                name,
                phc: Some(phc),
            } => Account::SignUp { name, phc, session },
            Outcome::Verified { name, phc, ok, .. } if ok => Account::LogIn {
                name,
                status: None,
                proof: Proof::Password(phc.to_string()),
                session,
            },
            Outcome::Hashed { phc: None, .. } => {
                let _ = reply.send(Err(Refused::new(Why::Busy, "could not create the account")));
                return;
            }
            Outcome::Verified { name, .. } => {
                self.web_bad_credentials(ip, &name, reply);
                return;
            }
            Outcome::Changed { .. } => return, // never submitted for the web
        };
        let Some(id) = self.web_id(WebWaiting::Login { ip, reply }) else {
            return;
        };
        if let Some(cluster) = &mut self.cluster {
            cluster.accounts.tokens.insert(id, token);
            cluster.append_input(Input::Account(id, account));
        }
    }

    /// The web page signs out the session `hash` of `name`: to the log.
    pub(in crate::hub) fn web_sign_out_to_log(
        &mut self,
        name: &str,
        hash: [u8; 32],
        reply: oneshot::Sender<()>,
    ) {
        let Some(id) = self.web_id(WebWaiting::SignOut(reply)) else {
            return;
        };
        let account = Account::LogOut {
            name: Some(name.to_owned()),
            session: Some(hash),
        };
        if let Some(cluster) = &mut self.cluster {
            cluster.append_input(Input::Account(id, account));
        }
    }

    /// An id for a web request in the log, which it waits under.
    fn web_id(&mut self, waiting: WebWaiting) -> Option<ConnId> {
        let cluster = self.cluster.as_mut()?;
        let accounts = &mut cluster.accounts;
        accounts.web_count = accounts.web_count.wrapping_add(1) % (u32::MAX / 2);
        let id = ConnId(
            first_conn_id(cluster.incarnation) - 1 + u64::from(u32::MAX - accounts.web_count),
        );
        accounts.web.insert(id, waiting);
        Some(id)
    }

    /// Applies an account change from the log (every copy alike); the node
    /// it came from answers.
    pub(super) fn apply_account(&mut self, conn: ConnId, account: Account) {
        match account {
            Account::SignUp { name, phc, session } => self.apply_sign_up(conn, name, phc, session),
            Account::LogIn {
                name,
                status,
                proof,
                session,
            } => self.apply_log_in(conn, name, status, proof, session),
            Account::LogOut { name, session } => self.apply_log_out(conn, name, session),
            Account::Password { old, new, keep } => self.apply_password(conn, old, new, keep),
        }
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.accounts.tokens.remove(&conn);
        cluster.accounts.web.remove(&conn);
    }

    /// Once `conn`'s account change is applied: what it sent meanwhile.
    pub(super) fn account_applied(&mut self, conn: ConnId) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.accounts.waiting.remove(&conn) && self.peers.contains_key(&conn) {
            self.release_held(conn);
        }
    }

    fn apply_sign_up(
        &mut self,
        conn: ConnId,
        name: String,
        phc: String,
        session: Option<[u8; 32]>,
    ) {
        let key = user_key(&name);
        let free = !self.auth.credentials.contains_key(&key)
            && !self.chat.is_online(&key)
            && self.chat.check_not_banned(&name).is_ok();
        if free {
            self.create_account(&key, &name, phc);
            tracing::info!(conn = conn.0, name, "signed up");
            if let Some(hash) = session {
                self.add_session(&key, hash);
            }
        }
        if self.peers.contains_key(&conn) {
            match free {
                true => self.reply(conn, ServerMessage::SignedUp(name)),
                false => {
                    let taken = ChatError::NameTaken(name).to_string();
                    self.send_error(conn, taken, ErrorKind::Auth)
                }
            }
        } else if let Some(WebWaiting::Login { ip, reply }) = self.take_web(conn) {
            let answer = match free {
                true => self.web_new_session(conn, name),
                false => Err(Refused::new(
                    Why::Taken,
                    ChatError::NameTaken(name).to_string(),
                )),
            };
            self.web_answer(ip, answer, reply);
        }
    }

    fn apply_log_in(
        &mut self,
        conn: ConnId,
        name: String,
        status: Option<String>,
        proof: Proof,
        session: Option<[u8; 32]>,
    ) {
        let key = user_key(&name);
        let valid = self
            .auth
            .credentials
            .get(&key)
            .is_some_and(|c| match &proof {
                // A password changed meanwhile (here or on any node)
                // counts as wrong.
                Proof::Password(phc) => *c.phc == **phc,
                Proof::Session(hash) => c.sessions.contains(hash),
            });
        let Some(status) = status else {
            // The web page: a session starts, no connection registers.
            let Some(WebWaiting::Login { ip, reply }) = self.take_web(conn) else {
                if valid && let Some(hash) = session {
                    self.add_session(&key, hash);
                }
                return;
            };
            let answer = match valid {
                true => {
                    if let Some(hash) = session {
                        self.add_session(&key, hash);
                    }
                    let display = self.auth.credentials[&key].display.clone();
                    self.web_new_session(conn, display)
                }
                false => {
                    return self.web_bad_credentials(ip, &name, reply);
                }
            };
            return self.web_answer(ip, answer, reply);
        };
        let local = self.peers.contains_key(&conn);
        if !valid {
            if local {
                if let Some(ip) = self.peer_ip(conn) {
                    self.auth.limiter.failed(ip, Some(key), Instant::now());
                }
                tracing::info!(conn = conn.0, "login refused");
                self.tally.login_failed(LoginFailure::BadCredentials);
                self.send_error(conn, ChatError::BadCredentials.to_string(), ErrorKind::Auth);
            }
            return;
        }
        let display = self.auth.credentials[&key].display.clone();
        if !self
            .chat
            .login(conn, display.clone(), status, &mut self.outputs)
        {
            return self.dispatch();
        }
        if local {
            let shown: &str = &display;
            tracing::info!(conn = conn.0, name = shown, "register (account)");
        }
        let started = match proof {
            Proof::Session(hash) => Some(hash),
            Proof::Password(_) => session.filter(|_| self.chat.wants_session(conn)),
        };
        if let (Proof::Password(_), Some(hash)) = (&proof, started) {
            self.add_session(&key, hash);
            let token = self
                .cluster
                .as_mut()
                .and_then(|c| c.accounts.tokens.remove(&conn));
            if let Some(token) = token.filter(|_| local) {
                self.outputs.push(Output::Send {
                    to: Recipients::One(conn),
                    message: Arc::new(ServerMessage::Session(Secret::new(token))),
                });
            }
        }
        if local && let Some(hash) = started {
            self.auth.session_of.insert(conn, hash);
        }
        self.dispatch();
    }

    /// LOGOUT (`name` none: the connection's session ends, then the
    /// connection) or the web page's sign-out of `name`.
    fn apply_log_out(&mut self, conn: ConnId, name: Option<String>, session: Option<[u8; 32]>) {
        let Some(name) = name else {
            if let Some(hash) = session
                && let Some((key, true)) = self.chat.registered_as(conn)
            {
                let key = key.to_owned();
                self.end_session(&key, hash);
            }
            self.chat.handle(conn, Command::Goodbye, &mut self.outputs);
            return self.dispatch();
        };
        if let Some(hash) = session {
            self.end_session(&user_key(&name), hash);
            // This node's devices of that session are told why and closed;
            // each node closes its own, and their departures go through
            // the log like any other.
            let devices = self.auth.devices_of_session(hash);
            for device in devices {
                self.auth.forget(device);
                self.outputs.push(Output::Send {
                    to: Recipients::One(device),
                    message: Arc::new(ServerMessage::Error(WEB_SIGNED_OUT.into())),
                });
                self.close_after_error(device, Disconnect::SignedOut);
            }
        }
        self.dispatch();
        if let Some(WebWaiting::SignOut(reply)) = self.take_web(conn) {
            tracing::info!(name, "web sign-out");
            self.answer_when_stored(move || {
                let _ = reply.send(());
            });
        }
    }

    fn apply_password(&mut self, conn: ConnId, old: String, new: String, keep: Option<[u8; 32]>) {
        let Some((key, true)) = self.chat.registered_as(conn) else {
            return;
        };
        let key = key.to_owned();
        let current = self.auth.credentials.get(&key).map(|c| c.phc.clone());
        if current.as_deref() == Some(old.as_str()) {
            return self.set_password(conn, &key, new, keep);
        }
        // Changed meanwhile by another device: the old password no longer
        // is the account's.
        if self.peers.contains_key(&conn) {
            if let Some(ip) = self.peer_ip(conn) {
                self.auth.limiter.failed(ip, Some(key), Instant::now());
            }
            let text = "PASSWORD refused: wrong password".into();
            self.send_error(conn, text, ErrorKind::Auth);
        }
    }

    fn take_web(&mut self, id: ConnId) -> Option<WebWaiting> {
        self.cluster.as_mut()?.accounts.web.remove(&id)
    }

    /// The web page's new session: the token this node made for request `id`.
    fn web_new_session(&mut self, id: ConnId, display: String) -> Result<WebSession, Refused> {
        let token = self
            .cluster
            .as_mut()
            .and_then(|c| c.accounts.tokens.remove(&id))
            .ok_or_else(|| Refused::new(Why::Busy, "could not start a session"))?;
        Ok(WebSession {
            display,
            token: Secret::new(token),
        })
    }

    fn web_answer(
        &mut self,
        ip: IpAddr,
        answer: Result<WebSession, Refused>,
        reply: oneshot::Sender<Result<WebSession, Refused>>,
    ) {
        match &answer {
            Ok(session) => {
                self.auth.limiter.succeeded(&user_key(&session.display));
                let shown: &str = &session.display;
                tracing::info!(name = shown, peer = %ip, "web sign-in");
            }
            Err(refused) => {
                tracing::info!(peer = %ip, reason = ?refused.why, "web sign-in refused")
            }
        }
        self.answer_when_stored(move || {
            let _ = reply.send(answer);
        });
    }

    fn web_bad_credentials(
        &mut self,
        ip: IpAddr,
        name: &str,
        reply: oneshot::Sender<Result<WebSession, Refused>>,
    ) {
        self.auth
            .limiter
            .failed(ip, Some(user_key(name)), Instant::now());
        self.tally.login_failed(LoginFailure::BadCredentials);
        let refused = Refused::new(Why::BadCredentials, ChatError::BadCredentials.to_string());
        self.web_answer(ip, Err(refused), reply);
    }
}
