//! The hub's side of the web page's sign-in: the same accounts, limiter,
//! hashing pool and session tokens as SIGNUP and REGISTER, for a request
//! that has no connection yet (see `auth/web.rs`).
//!
//! A successful sign-in starts a session token of the account, exactly as
//! REGISTER with the `session` capability does; the page keeps it in a
//! cookie and its WebSocket comes in with it. The answer waits until the
//! store has committed the account and the session, as `SIGNED_UP` does.
//! No secret ever reaches a log line.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use natter_core::{ChatError, Output, Recipients, user_key};
use natter_proto::{Secret, ServerMessage};
use tokio::sync::oneshot;

use super::{Hub, HubEvent};
use crate::auth::Outcome;
use crate::auth::secrets::{
    TOKEN_PREFIX, decoy_phc, hash_password, token_matches, verify_password,
};
use crate::auth::web::{Pending, Refused, WebLogin, WebRequest, WebSession, Why};
use crate::metrics::LoginFailure;

/// What the connections of a web session are told when it is signed out.
const SIGNED_OUT: &str = "signed out";

type Answer = Result<WebSession, Refused>;

impl Hub {
    pub(super) fn web_request(&mut self, request: WebRequest) {
        match request {
            WebRequest::Login(login) => self.web_login(login),
            WebRequest::Check { name, token, reply } => {
                let display = self.web_session(&name, &token).map(|(display, _)| display);
                let _ = reply.send(display);
            }
            WebRequest::SignOut { name, token, reply } => self.web_sign_out(&name, &token, reply),
        }
    }

    /// The display name of the account `name` and the hash of its session
    /// `token`, if that session is still valid.
    fn web_session(&self, name: &str, token: &Secret) -> Option<(String, [u8; 32])> {
        let credential = self.auth.credentials.get(&user_key(name))?;
        let hash = token_matches(token.expose(), &credential.sessions)?;
        Some((credential.display.clone(), hash))
    }

    fn web_login(&mut self, login: WebLogin) {
        let WebLogin {
            ip,
            name,
            password,
            signup,
            reply,
        } = login;
        if !signup {
            self.tally.login_attempts += 1;
        }
        if let Err(refused) = self.web_login_allowed(ip, &name, signup) {
            if !signup && matches!(refused.why, Why::Blocked) {
                self.tally.login_failed(LoginFailure::TooManyAttempts);
            }
            let _ = reply.send(Err(refused));
            return;
        }
        let password = password.expose().to_owned();
        let pending = Pending { ip, reply };
        let then = |outcome| HubEvent::WebAuthDone { pending, outcome };
        let submitted = if signup {
            self.auth.pool.submit_then(
                move || Outcome::Hashed {
                    phc: hash_password(&password).ok(),
                    name,
                },
                then,
            )
        } else {
            let phc = self
                .auth
                .credentials
                .get(&user_key(&name))
                .map(|c| c.phc.clone());
            self.auth.pool.submit_then(
                move || {
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
                        status: String::new(),
                        phc: phc.unwrap_or_else(|| Arc::from("")),
                        ok,
                    }
                },
                then,
            )
        };
        if let Err(busy) = submitted {
            // The job (and the reply in it) is dropped: the page hears
            // nothing back but a closed channel, which it reports as busy.
            tracing::info!(%busy, "web sign-in refused");
        }
    }

    /// Whether a web sign-in (or sign-up) of `name` from `ip` may go to the
    /// pool: accounts on, not blocked, a free name for a sign-up, and (a
    /// token is no password) no token in the password field.
    fn web_login_allowed(&mut self, ip: IpAddr, name: &str, signup: bool) -> Result<(), Refused> {
        if !self.config.accounts.enabled() {
            return Err(Refused::new(
                Why::NotAllowed,
                "this server has no accounts: sign in with a name only",
            ));
        }
        if signup && !self.config.signup_open {
            return Err(Refused::new(
                Why::NotAllowed,
                "sign-up is closed on this server: ask its operator for an account",
            ));
        }
        // Before any hashing, as for REGISTER: an operator's ban.
        if let Err(banned) = self.chat.check_not_banned(name) {
            return Err(Refused::new(Why::NotAllowed, banned.to_string()));
        }
        let key = user_key(name);
        let per_account = (!signup).then_some(&key);
        if let Some(wait) = self
            .auth
            .limiter
            .blocked_for(ip, per_account, Instant::now())
        {
            let secs = wait.max(Duration::from_secs(1)).as_secs();
            let text = format!("too many failed attempts: try again in {secs} s");
            return Err(Refused::new(Why::Blocked, text));
        }
        if signup && (self.auth.credentials.contains_key(&key) || self.chat.is_online(&key)) {
            // Counts as a failure: probing for names is limited too.
            self.auth.limiter.failed(ip, None, Instant::now());
            return Err(taken(name));
        }
        Ok(())
    }

    /// The pool finished a web login's job.
    pub(super) fn web_auth_done(&mut self, pending: Pending, outcome: Outcome) {
        if self.cluster.is_some() {
            return self.web_to_log(pending, outcome);
        }
        let Pending { ip, reply } = pending;
        let signed_in = match outcome {
            Outcome::Hashed { name, phc } => self.web_signed_up(name, phc),
            Outcome::Verified { name, phc, ok, .. } => self.web_verified(ip, name, phc, ok),
            Outcome::Changed { .. } => return, // never submitted for the web
        };
        let answer: Answer = signed_in.map(|(key, display)| {
            let (token, _) = self.start_session(&key);
            let shown: &str = &display;
            tracing::info!(name = shown, peer = %ip, "web sign-in");
            WebSession {
                display,
                token: Secret::new(token),
            }
        });
        if let Err(refused) = &answer {
            tracing::info!(peer = %ip, reason = ?refused.why, "web sign-in refused");
        }
        self.answer_when_stored(move || {
            let _ = reply.send(answer);
        });
    }

    /// The new account's key and name, once stored.
    fn web_signed_up(
        &mut self,
        name: String,
        phc: Option<String>,
    ) -> Result<(String, String), Refused> {
        let key = user_key(&name);
        let Some(phc) = phc else {
            return Err(Refused::new(Why::Busy, "could not create the account"));
        };
        if self.auth.credentials.contains_key(&key) || self.chat.is_online(&key) {
            return Err(taken(&name));
        }
        self.create_account(&key, &name, phc);
        tracing::info!(name, "signed up (web)");
        Ok((key, name))
    }

    fn web_verified(
        &mut self,
        ip: IpAddr,
        name: String,
        phc: Arc<str>,
        ok: bool,
    ) -> Result<(String, String), Refused> {
        let key = user_key(&name);
        let current = self.auth.credentials.get(&key);
        // A password changed while this one was checked counts as wrong.
        match current {
            Some(credential) if ok && credential.phc == phc => {
                let display = credential.display.clone();
                self.auth.limiter.succeeded(&key);
                Ok((key, display))
            }
            _ => {
                self.auth.limiter.failed(ip, Some(key), Instant::now());
                self.tally.login_failed(LoginFailure::BadCredentials);
                Err(Refused::new(
                    Why::BadCredentials,
                    ChatError::BadCredentials.to_string(),
                ))
            }
        }
    }

    /// Sign-out: the session ends (and with it every connection that came
    /// in with it, told why), as LOGOUT ends a device's.
    fn web_sign_out(&mut self, name: &str, token: &Secret, reply: oneshot::Sender<()>) {
        if token.expose().starts_with(TOKEN_PREFIX)
            && let Some((display, hash)) = self.web_session(name, token)
        {
            if self.cluster.is_some() {
                return self.web_sign_out_to_log(&display, hash, reply);
            }
            self.end_session(&user_key(name), hash);
            let devices = self.auth.devices_of_session(hash);
            for device in devices {
                self.outputs.push(Output::Send {
                    to: Recipients::One(device),
                    message: Arc::new(ServerMessage::Error(SIGNED_OUT.into())),
                });
                self.chat.disconnect(device, &mut self.outputs);
                self.outputs.push(Output::Close(device));
                self.auth.forget(device);
            }
            self.dispatch();
            let shown: &str = &display;
            tracing::info!(name = shown, "web sign-out");
        }
        self.answer_when_stored(move || {
            let _ = reply.send(());
        });
    }

    /// Runs `answer` once everything the hub has done so far is committed
    /// (at once without a store).
    pub(super) fn answer_when_stored(&mut self, answer: impl FnOnce() + Send + 'static) {
        self.dispatch();
        let ticket = self.durability.current_ticket();
        if ticket <= self.durability.finished() && self.auth.web_replies.is_empty() {
            answer();
        } else {
            self.auth.web_replies.push_back((ticket, Box::new(answer)));
        }
    }

    /// Sends the web answers whose facts are now committed (or failed: the
    /// answer says what the hub knows, as `SIGNED_UP` does then).
    pub(super) fn release_web_answers(&mut self) {
        let finished = self.durability.finished();
        while let Some((ticket, _)) = self.auth.web_replies.front() {
            if *ticket > finished {
                break;
            }
            let (_, answer) = self.auth.web_replies.pop_front().expect("front exists");
            answer();
        }
    }
}

fn taken(name: &str) -> Refused {
    Refused::new(
        Why::Taken,
        ChatError::NameTaken(name.to_owned()).to_string(),
    )
}
