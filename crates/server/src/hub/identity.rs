//! The hub's side of identity: SIGNUP, REGISTER with a secret, LOGOUT and
//! PASSWORD.
//!
//! Checking a password takes the slow path through the hashing pool and
//! comes back as [`HubEvent::AuthDone`]; meanwhile the hub goes on with
//! everyone else, and what the waiting connection sends is held and run
//! after its answer, so its commands keep their order. A session token is
//! checked right here: it is one SHA-256 and a constant-time comparison.
//! No secret is ever put in a log line or an error text.
//!
//! [`HubEvent::AuthDone`]: super::HubEvent::AuthDone

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use natter_core::{ChatError, ConnId, Fact, Output, Recipients, user_key};
use natter_proto::{Command, Secret, ServerMessage};

use super::{Hub, unix_ms};
use crate::auth::secrets::{
    decoy_phc, hash_password, new_token, token_hash, token_matches, verify_password,
};
use crate::auth::{Credential, MAX_HELD_COMMANDS, Outcome, owned};
use crate::cluster::entry::{Account, Proof};
use crate::metrics::{Disconnect, ErrorKind, LoginFailure};

/// Most live session tokens per account; the oldest ends past it.
const MAX_SESSIONS: usize = 64;

/// What an account's other devices are told when its password changes.
const SIGNED_OUT: &str = "signed out: the password of this account was changed";

impl Hub {
    /// Takes the commands that need identity work (and those a connection
    /// sends while its secret is checked); gives back the others.
    pub(super) fn identity_command(&mut self, conn: ConnId, command: Command) -> Option<Command> {
        if let Some(held) = self.auth.held.get_mut(&conn) {
            if held.len() >= MAX_HELD_COMMANDS {
                self.doomed.push((conn, Disconnect::RateLimit));
            } else {
                held.push_back(command);
            }
            return None;
        }
        if !self.config.accounts.enabled() {
            return Some(command); // the core answers that accounts are off
        }
        let registered = self.chat.registered_as(conn).map(|(_, account)| account);
        match (command, registered) {
            (Command::Signup { name, password }, None) => self.signup(conn, name, password),
            (
                Command::Login {
                    name,
                    status,
                    secret,
                },
                None,
            ) => self.login(conn, name, status, secret),
            (Command::Logout, Some(true)) => self.logout(conn),
            (Command::Password { old, new }, Some(true)) => self.change_password(conn, old, new),
            (command, _) => return Some(command),
        }
        None
    }

    /// The pool finished a job for `conn`.
    pub(super) fn auth_done(&mut self, conn: ConnId, outcome: Outcome) {
        if !self.peers.contains_key(&conn) {
            self.auth.forget(conn);
            return;
        }
        match outcome {
            Outcome::Hashed { name, phc } => self.signed_up(conn, name, phc),
            Outcome::Verified {
                name,
                status,
                phc,
                ok,
            } => self.verified(conn, name, status, phc, ok),
            Outcome::Changed { phc, new_phc } => self.password_changed(conn, phc, new_phc),
        }
        // In a cluster, an outcome that went to the log is answered (and
        // what was held behind it released) when it comes back.
        if !self.account_in_log(conn) {
            self.release_held(conn);
        }
    }

    fn signup(&mut self, conn: ConnId, name: String, password: Secret) {
        if !self.config.signup_open {
            let text = "sign-up is closed on this server: ask its operator for an account";
            return self.send_error(conn, text.into(), ErrorKind::Auth);
        }
        let Some(ip) = self.blocked_check(conn, None) else {
            return;
        };
        if let Err(banned) = self.chat.check_not_banned(&name) {
            return self.send_error(conn, banned.to_string(), ErrorKind::Refused);
        }
        let key = user_key(&name);
        if self.auth.credentials.contains_key(&key) || self.chat.is_online(&key) {
            // Counts as a failure: probing for names is limited too.
            self.auth.limiter.failed(ip, None, Instant::now());
            return self.send_error(
                conn,
                ChatError::NameTaken(name).to_string(),
                ErrorKind::Auth,
            );
        }
        let password = owned(&password);
        self.submit(conn, move || Outcome::Hashed {
            phc: hash_password(&password).ok(),
            name,
        });
    }

    fn signed_up(&mut self, conn: ConnId, name: String, phc: Option<String>) {
        let key = user_key(&name);
        let Some(phc) = phc else {
            return self.send_error(conn, "could not create the account".into(), ErrorKind::Auth);
        };
        if self.auth.credentials.contains_key(&key) || self.chat.is_online(&key) {
            return self.send_error(
                conn,
                ChatError::NameTaken(name).to_string(),
                ErrorKind::Auth,
            );
        }
        if self.cluster.is_some() {
            let session = None;
            return self.log_account(conn, Account::SignUp { name, phc, session });
        }
        self.create_account(&key, &name, phc);
        tracing::info!(conn = conn.0, name, "signed up");
        self.reply(conn, ServerMessage::SignedUp(name));
    }

    fn login(&mut self, conn: ConnId, name: String, status: String, secret: Secret) {
        self.tally.login_attempts += 1;
        let key = user_key(&name);
        let Some(ip) = self.blocked_check(conn, None) else {
            return self.tally.login_failed(LoginFailure::TooManyAttempts);
        };
        // Before any hashing: a banned account costs the server nothing.
        if let Err(banned) = self.chat.check_not_banned(&name) {
            return self.send_error(conn, banned.to_string(), ErrorKind::Refused);
        }
        // A token: cheap to check, impossible to guess, so it is not held
        // back by the per-account limit (a guesser cannot lock the owner's
        // devices out).
        let sessions = self
            .auth
            .credentials
            .get(&key)
            .map(|c| c.sessions.as_slice());
        if let Some(hash) = sessions.and_then(|s| token_matches(secret.expose(), s)) {
            if self.cluster.is_some() {
                let proof = Proof::Session(hash);
                return self.log_login(conn, name, status, proof, None);
            }
            return self.logged_in(conn, &key, status, Some(hash));
        }
        if self.blocked_check(conn, Some(&key)).is_none() {
            return self.tally.login_failed(LoginFailure::TooManyAttempts);
        }
        if secret
            .expose()
            .starts_with(crate::auth::secrets::TOKEN_PREFIX)
        {
            if self.cluster.is_some() {
                // Perhaps started on another node by an entry this copy has
                // not applied yet: the log decides, at its place in it.
                let proof = Proof::Session(token_hash(secret.expose()));
                return self.log_login(conn, name, status, proof, None);
            }
            // A token that is no longer valid: no hashing needed to say so.
            self.auth.limiter.failed(ip, Some(key), Instant::now());
            self.tally.login_failed(LoginFailure::BadCredentials);
            return self.send_error(conn, ChatError::BadCredentials.to_string(), ErrorKind::Auth);
        }
        let phc = self.auth.credentials.get(&key).map(|c| c.phc.clone());
        let password = owned(&secret);
        self.submit(conn, move || {
            let ok = match &phc {
                Some(phc) => verify_password(&password, phc),
                None => {
                    // Unknown name: take as long as a wrong password.
                    verify_password(&password, decoy_phc());
                    false
                }
            };
            Outcome::Verified {
                name,
                status,
                phc: phc.unwrap_or_else(|| Arc::from("")),
                ok,
            }
        });
    }

    fn verified(&mut self, conn: ConnId, name: String, status: String, phc: Arc<str>, ok: bool) {
        let key = user_key(&name);
        let current = self.auth.credentials.get(&key).map(|c| c.phc.clone());
        // A password changed while this one was checked counts as wrong.
        if !ok || current.as_deref() != Some(&*phc) {
            if let Some(ip) = self.peer_ip(conn) {
                self.auth.limiter.failed(ip, Some(key), Instant::now());
            }
            tracing::info!(conn = conn.0, "login refused");
            self.tally.login_failed(LoginFailure::BadCredentials);
            return self.send_error(conn, ChatError::BadCredentials.to_string(), ErrorKind::Auth);
        }
        self.auth.limiter.succeeded(&key);
        if self.cluster.is_some() {
            // A token in case the client asked for sessions: every copy
            // starts it (or not) alike; only this node knows the token.
            let (token, hash) = new_token();
            let proof = Proof::Password(phc.to_string());
            return self.log_login(conn, name, status, proof, Some((token, hash)));
        }
        self.logged_in(conn, &key, status, None);
    }

    /// The secret was right: `conn` becomes a device of the account `key`.
    /// `token` is the session it came in with; after a password, a
    /// `session` client gets a new one.
    fn logged_in(&mut self, conn: ConnId, key: &str, status: String, token: Option<[u8; 32]>) {
        let Some(credential) = self.auth.credentials.get(key) else {
            return;
        };
        let display = credential.display.clone();
        if !self
            .chat
            .login(conn, display.clone(), status, &mut self.outputs)
        {
            return self.dispatch();
        }
        let shown: &str = &display;
        tracing::info!(
            conn = conn.0,
            name = shown,
            token = token.is_some(),
            "register (account)"
        );
        match token {
            Some(hash) => {
                self.auth.session_of.insert(conn, hash);
            }
            None if self.chat.wants_session(conn) => self.issue_session(conn, key),
            None => {}
        }
        self.dispatch();
    }

    /// Stores a new account (its name is known to be free).
    pub(super) fn create_account(&mut self, key: &str, name: &str, phc: String) {
        if self.store.is_some() {
            self.outputs.push(Output::Fact(Fact::AccountCreated {
                key: key.to_owned(),
                display: name.to_owned(),
                phc: phc.clone(),
                ts: unix_ms(),
            }));
        }
        let credential = Credential {
            display: name.to_owned(),
            phc: phc.into(),
            sessions: Vec::new(),
        };
        self.auth.credentials.insert(key.to_owned(), credential);
        self.chat.add_account(key.to_owned());
    }

    fn issue_session(&mut self, conn: ConnId, key: &str) {
        let (token, hash) = self.start_session(key);
        self.auth.session_of.insert(conn, hash);
        self.outputs.push(Output::Send {
            to: Recipients::One(conn),
            message: Arc::new(ServerMessage::Session(Secret::new(token))),
        });
    }

    /// A new session token of the account `key` (which exists), stored as
    /// its hash; past [`MAX_SESSIONS`] the oldest one ends.
    pub(super) fn start_session(&mut self, key: &str) -> (String, [u8; 32]) {
        let (token, hash) = new_token();
        self.add_session(key, hash);
        (token, hash)
    }

    /// Starts the session `hash` of the account `key` (which exists); past
    /// [`MAX_SESSIONS`] the oldest one ends.
    pub(super) fn add_session(&mut self, key: &str, hash: [u8; 32]) {
        let durable = self.store.is_some();
        let credential = self
            .auth
            .credentials
            .get_mut(key)
            .expect("checked by caller");
        if credential.sessions.len() >= MAX_SESSIONS {
            let oldest = credential.sessions.remove(0);
            if durable {
                self.outputs
                    .push(Output::Fact(Fact::SessionEnded { token: oldest }));
            }
        }
        credential.sessions.push(hash);
        if durable {
            self.outputs.push(Output::Fact(Fact::SessionStarted {
                key: key.to_owned(),
                token: hash,
                ts: unix_ms(),
            }));
        }
    }

    /// LOGOUT: this connection's token ends, then the connection, as with
    /// GOODBYE.
    fn logout(&mut self, conn: ConnId) {
        if self.cluster.is_some() {
            let session = self.auth.session_of.remove(&conn);
            let name = None;
            return self.log_account(conn, Account::LogOut { name, session });
        }
        if let Some(hash) = self.auth.session_of.remove(&conn)
            && let Some((key, _)) = self.chat.registered_as(conn)
        {
            let key = key.to_owned();
            self.end_session(&key, hash);
        }
        self.chat.handle(conn, Command::Goodbye, &mut self.outputs);
        self.dispatch();
    }

    /// The session `hash` of the account `key` ends.
    pub(super) fn end_session(&mut self, key: &str, hash: [u8; 32]) {
        if let Some(credential) = self.auth.credentials.get_mut(key) {
            credential.sessions.retain(|h| *h != hash);
        }
        if self.store.is_some() {
            self.outputs
                .push(Output::Fact(Fact::SessionEnded { token: hash }));
        }
    }

    fn change_password(&mut self, conn: ConnId, old: Secret, new: Secret) {
        let Some((key, _)) = self.chat.registered_as(conn) else {
            return;
        };
        let key = key.to_owned();
        if self.blocked_check(conn, Some(&key)).is_none() {
            return;
        }
        let Some(phc) = self.auth.credentials.get(&key).map(|c| c.phc.clone()) else {
            return;
        };
        let (old, new) = (owned(&old), owned(&new));
        self.submit(conn, move || {
            let new_phc = if verify_password(&old, &phc) {
                hash_password(&new).ok()
            } else {
                None
            };
            Outcome::Changed { phc, new_phc }
        });
    }

    fn password_changed(&mut self, conn: ConnId, phc: Arc<str>, new_phc: Option<String>) {
        let Some((key, true)) = self.chat.registered_as(conn) else {
            return;
        };
        let key = key.to_owned();
        let credential = self.auth.credentials.get_mut(&key).expect("an account");
        let Some(new_phc) = new_phc.filter(|_| credential.phc == phc) else {
            if let Some(ip) = self.peer_ip(conn) {
                self.auth.limiter.failed(ip, Some(key), Instant::now());
            }
            return self.send_error(
                conn,
                "PASSWORD refused: wrong password".into(),
                ErrorKind::Auth,
            );
        };
        let keep = self.auth.session_of.get(&conn).copied();
        if self.cluster.is_some() {
            let old = phc.to_string();
            let new = new_phc;
            return self.log_account(conn, Account::Password { old, new, keep });
        }
        self.set_password(conn, &key, new_phc, keep);
    }

    /// The account `key` of `conn` has the password hash `new_phc` now:
    /// only the session `keep` stays, its other devices are signed out.
    pub(super) fn set_password(
        &mut self,
        conn: ConnId,
        key: &str,
        new_phc: String,
        keep: Option<[u8; 32]>,
    ) {
        let key = key.to_owned();
        let credential = self.auth.credentials.get_mut(&key).expect("an account");
        credential.phc = new_phc.as_str().into();
        credential.sessions.retain(|h| Some(*h) == keep);
        let display = credential.display.clone();
        if self.store.is_some() {
            self.outputs.push(Output::Fact(Fact::PasswordChanged {
                key: key.clone(),
                phc: new_phc,
                keep,
            }));
        }
        let shown: &str = &display;
        tracing::info!(conn = conn.0, name = shown, "password changed");
        self.sign_out_other_devices(conn, &key);
        self.reply(conn, ServerMessage::PasswordChanged(display));
    }

    /// After a password change, every other device of the account is told
    /// why and closed: whoever knew the old password is out.
    fn sign_out_other_devices(&mut self, conn: ConnId, key: &str) {
        for device in self.chat.devices_of(key) {
            if device == conn {
                continue;
            }
            self.outputs.push(Output::Send {
                to: Recipients::One(device),
                message: Arc::new(ServerMessage::Error(SIGNED_OUT.into())),
            });
            // (In a cluster every copy signs out every device; each node
            // counts its own.)
            if self.peers.contains_key(&device) {
                self.tally.error(ErrorKind::Auth);
                self.tally.disconnect(Disconnect::SignedOut);
            }
            self.chat.disconnect(device, &mut self.outputs);
            self.outputs.push(Output::Close(device));
            self.auth.forget(device);
        }
    }

    /// Runs `job` on the pool, holding `conn`'s later commands until it is
    /// done; says "busy" if the pool is full.
    fn submit(&mut self, conn: ConnId, job: impl FnOnce() -> Outcome + Send + 'static) {
        match self.auth.pool.submit(conn, job) {
            Ok(()) => {
                self.auth.held.insert(conn, Default::default());
            }
            Err(busy) => self.send_error(conn, busy.to_string(), ErrorKind::Auth),
        }
    }

    /// Runs what `conn` sent while it waited, until one of those waits too.
    pub(super) fn release_held(&mut self, conn: ConnId) {
        let Some(mut queue) = self.auth.held.remove(&conn) else {
            return;
        };
        while let Some(command) = queue.pop_front() {
            self.apply_command(conn, command);
            if let Some(held) = self.auth.held.get_mut(&conn) {
                held.extend(queue);
                return;
            }
        }
    }

    /// The peer's address if no limit blocks it (for `key`'s password,
    /// when given); otherwise says how long to wait and gives `None`.
    fn blocked_check(&mut self, conn: ConnId, key: Option<&String>) -> Option<IpAddr> {
        let ip = self.peer_ip(conn)?;
        let Some(wait) = self.auth.limiter.blocked_for(ip, key, Instant::now()) else {
            return Some(ip);
        };
        let secs = wait.max(Duration::from_secs(1)).as_secs();
        let text = format!("too many failed attempts: try again in {secs} s");
        self.send_error(conn, text, ErrorKind::Auth);
        None
    }

    pub(super) fn peer_ip(&self, conn: ConnId) -> Option<IpAddr> {
        self.peers.get(&conn).map(|p| p.addr.ip())
    }

    pub(super) fn reply(&mut self, conn: ConnId, message: ServerMessage) {
        self.outputs.push(Output::Send {
            to: Recipients::One(conn),
            message: Arc::new(message),
        });
        self.dispatch();
    }
}
