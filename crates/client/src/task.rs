//! The connection task: the one owner of the socket, the session, the
//! outbox and the timeline.
//!
//! [`crate::Client`] handles send it [`Request`]s over a bounded channel;
//! it sends [`Event`]s back over another. It registers (asking for the
//! capabilities first), forwards commands, turns server messages into
//! events, joins the conversations its own `INVITE`s create, and when the
//! connection drops after registering, reconnects with backoff, registers
//! again under the same name and status, re-joins the conversations we
//! were in, fetches what was said meanwhile ([`crate::timeline`]) and
//! resends the outbox ([`crate::outbox`]).

use natter_proto::{Command, ConvId, MessageMeta, Secret, ServerMessage};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant, sleep_until, timeout};

use crate::account::{Account, Credentials, Proof, bad_credentials};
use crate::config::ClientConfig;
use crate::connection::{Connection, Incoming};
use crate::error::{ClientError, registration_error};
use crate::event::{ConnectionState, Event};
use crate::outbox::{Entry, Nonce, Outbox, Slots, blame};
use crate::session::{Session, lost_conversation};
use crate::timeline::Timeline;

/// The capabilities we ask for: `presence-scope` limits presence to our
/// contacts and whom we watch (a company-sized server could not send us
/// everyone), with deltas (also asked alone, for servers without scope),
/// `MEMBERS` tells us our memberships (which a reconnect restores),
/// `history` numbers messages (dedupe, catch-up, safe resends) and
/// `topics` names conversations.
const CAPABILITIES: [&str; 5] = [
    "presence-scope",
    "presence-delta",
    "members",
    "history",
    "topics",
];

/// Most server messages handled before overdue confirmations are judged,
/// so that an echo already in the socket is not mistaken for a silence.
const DRAIN_BEFORE_JUDGING: usize = 1024;

/// The reason reported once the client has said goodbye.
pub(crate) const GOODBYE_REASON: &str = "goodbye";

pub(crate) enum Request {
    Register {
        name: String,
        status: String,
        /// An account's (`None`: a guest).
        credentials: Option<Credentials>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Send(Command),
    /// A message for the outbox; the handle took its slot.
    Message {
        conv: ConvId,
        text: String,
        nonce: Nonce,
    },
    Goodbye {
        reply: oneshot::Sender<()>,
    },
}

/// A `REGISTER` waiting for its answer. `reply` is `None` when we
/// re-register on our own after a reconnect.
struct PendingRegister {
    name: String,
    status: String,
    reply: Option<oneshot::Sender<Result<(), ClientError>>>,
    deadline: Instant,
    /// Where the opening exchange is.
    stage: Stage,
}

/// What a pending registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `SIGNED_UP` (then `REGISTER` with the password).
    SigningUp,
    /// The answer to `REGISTER`, sent with this secret (`None`: a guest).
    Registering(Option<Proof>),
}

/// Where one connection is in its opening exchange.
#[derive(Default)]
struct Handshake {
    caps_sent: bool,
    /// The server's answer to CAPS (CAPS, or ERROR from a server that does
    /// not know it) is still to come; it must not be mistaken for the
    /// answer to REGISTER.
    caps_pending: bool,
    register: Option<PendingRegister>,
}

/// Why serving one connection stopped.
enum Ending {
    /// The client is done for good (goodbye, or every handle dropped).
    Done,
    /// The connection broke; the text says why.
    Lost(String),
}

pub(crate) struct Task {
    config: ClientConfig,
    requests: mpsc::Receiver<Request>,
    events: mpsc::Sender<Event>,
    session: Session,
    outbox: Outbox,
    timeline: Timeline,
    /// Whether the current connection has the `history` capability.
    history: bool,
    /// The account we sign in to, if not a guest.
    account: Option<Account>,
}

impl Task {
    pub fn new(
        config: ClientConfig,
        requests: mpsc::Receiver<Request>,
        events: mpsc::Sender<Event>,
        slots: Slots,
    ) -> Task {
        let timeline = Timeline::new(config.catch_up_limit);
        Task {
            config,
            requests,
            events,
            session: Session::default(),
            outbox: Outbox::new(slots),
            timeline,
            history: false,
            account: None,
        }
    }

    pub async fn run(mut self, connection: Connection) {
        let mut connection = connection;
        let mut handshake = Handshake::default();
        loop {
            let reason = match self.serve(&mut connection, handshake).await {
                Ending::Done => return,
                Ending::Lost(reason) => reason,
            };
            self.connection_lost().await;
            if self.session.identity().is_none() {
                // Nothing to restore: there is no session yet.
                let why = format!("the connection was lost before registering: {reason}");
                self.abandon_outbox(&why).await;
                self.emit(Event::State(ConnectionState::Disconnected { reason }))
                    .await;
                return;
            }
            match self.reconnect(reason).await {
                Some((next, next_handshake)) => {
                    connection = next;
                    handshake = next_handshake;
                }
                None => return,
            }
        }
    }

    async fn emit(&self, event: Event) {
        // An application that dropped its receiver no longer listens.
        let _ = self.events.send(event).await;
    }

    async fn emit_all(&self, events: Vec<Event>) {
        for event in events {
            self.emit(event).await;
        }
    }

    /// Whatever was in flight waits for the next connection, and no
    /// answer to this one's requests will come.
    async fn connection_lost(&mut self) {
        self.history = false;
        self.timeline.connection_lost();
        for entry in self.outbox.requeue() {
            self.emit(queued(entry)).await;
        }
    }

    /// The client is closing: every message not confirmed is reported.
    async fn abandon_outbox(&mut self, reason: &str) {
        for entry in self.outbox.drain() {
            self.emit(not_sent(&entry, reason.to_string())).await;
        }
    }

    /// Serves one connection until it ends. The outbox goes out one
    /// message at a time as the pace allows, so that a long backlog never
    /// stops the reading.
    async fn serve(&mut self, connection: &mut Connection, mut handshake: Handshake) -> Ending {
        let confirm_within = self.config.reply_timeout;
        loop {
            let deadline = handshake.register.as_ref().map(|pending| pending.deadline);
            let overdue_at = self.outbox.next_deadline(confirm_within);
            let registered = deadline.is_none() && self.session.identity().is_some();
            let outbox_at = (registered && self.outbox.has_unsent())
                .then(|| Instant::now() + connection.ready_in());
            tokio::select! {
                // While a REGISTER is unanswered, commands wait: the server
                // would refuse them before registration.
                request = self.requests.recv(), if deadline.is_none() => {
                    let Some(request) = request else {
                        self.say_goodbye(connection, None).await;
                        return Ending::Done;
                    };
                    if let Some(ending) = self.on_request(connection, &mut handshake, request).await {
                        return ending;
                    }
                }
                incoming = connection.next() => {
                    if let Some(ending) = self.on_incoming(connection, &mut handshake, incoming).await {
                        return ending;
                    }
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let wait = self.config.reply_timeout;
                    fail_register(&mut handshake, ClientError::Timeout(wait));
                    return Ending::Lost("no answer from the server".into());
                }
                _ = sleep_until(overdue_at.map_or_else(Instant::now, Instant::from_std)), if overdue_at.is_some() => {
                    if let Some(ending) = self.on_overdue(connection, &mut handshake).await {
                        return ending;
                    }
                }
                _ = sleep_until(outbox_at.unwrap_or_else(Instant::now)), if outbox_at.is_some() => {
                    if let Some(ending) = self.send_next(connection).await {
                        return ending;
                    }
                }
            }
        }
    }

    /// The oldest message in flight has not been confirmed in time. What
    /// the socket already holds is read first: the echo may be there.
    async fn on_overdue(
        &mut self,
        connection: &mut Connection,
        handshake: &mut Handshake,
    ) -> Option<Ending> {
        for _ in 0..DRAIN_BEFORE_JUDGING {
            // Reading is cancel-safe: a zero timeout just takes what is ready.
            let Ok(incoming) = timeout(Duration::ZERO, connection.next()).await else {
                break;
            };
            if let Some(ending) = self.on_incoming(connection, handshake, incoming).await {
                return Some(ending);
            }
        }
        let wait = self.config.reply_timeout;
        let overdue = self
            .outbox
            .overdue(std::time::Instant::now(), wait, self.history);
        for entry in overdue.failed {
            let reason = format!("the server did not confirm it within {wait:?}");
            self.emit(not_sent(&entry, reason)).await;
        }
        for command in overdue.resend {
            if let Err(reason) = connection.send(&command).await {
                return Some(Ending::Lost(reason));
            }
        }
        None
    }

    async fn on_request(
        &mut self,
        connection: &mut Connection,
        handshake: &mut Handshake,
        request: Request,
    ) -> Option<Ending> {
        match request {
            Request::Goodbye { reply } => {
                self.say_goodbye(connection, Some(reply)).await;
                Some(Ending::Done)
            }
            Request::Register {
                name,
                status,
                credentials,
                reply,
            } => {
                if let Some(identity) = self.session.identity() {
                    let _ = reply.send(Err(ClientError::AlreadyRegistered(identity.name.clone())));
                    return None;
                }
                self.account = credentials.map(|c| Account::new(c, &self.config.addr, &name));
                let opened =
                    open_registration(connection, handshake, &name, &status, self.account.as_ref())
                        .await;
                let stage = match opened {
                    Ok(stage) => stage,
                    Err(reason) => {
                        let _ = reply.send(Err(ClientError::ConnectionLost(reason.clone())));
                        return Some(Ending::Lost(reason));
                    }
                };
                handshake.register = Some(PendingRegister {
                    name,
                    status,
                    reply: Some(reply),
                    deadline: Instant::now() + self.config.reply_timeout,
                    stage,
                });
                None
            }
            Request::Send(command) => self.forward(connection, command).await,
            Request::Message { conv, text, nonce } => {
                self.outbox.push(nonce.clone(), conv, text.clone());
                if self.session.identity().is_none() {
                    // Sent once we are registered.
                    self.emit(Event::Queued { conv, nonce, text }).await;
                }
                // Otherwise the serve loop sends it next.
                None
            }
        }
    }

    /// Sends a command, noting what a reconnect must restore and which
    /// `HISTORY` answers are the application's. Messages sent before it go
    /// first: a `LEAVE` must not overtake the last words.
    async fn forward(&mut self, connection: &mut Connection, command: Command) -> Option<Ending> {
        if self.session.identity().is_some()
            && let Some(ending) = self.flush_outbox(connection).await
        {
            return Some(ending);
        }
        match &command {
            Command::History { conv, .. } if self.history => self.timeline.app_fetch(*conv),
            Command::Leave(conv) => self.timeline.forget(*conv),
            _ => {}
        }
        self.session.note_sent(&command);
        connection.send(&command).await.err().map(Ending::Lost)
    }

    /// Sends the oldest message of the outbox not yet sent on this
    /// connection.
    async fn send_next(&mut self, connection: &mut Connection) -> Option<Ending> {
        let command = self.outbox.next_unsent(std::time::Instant::now())?;
        connection.send(&command).await.err().map(Ending::Lost)
    }

    /// Sends every message of the outbox not yet sent on this connection.
    async fn flush_outbox(&mut self, connection: &mut Connection) -> Option<Ending> {
        while self.outbox.has_unsent() {
            if let Some(ending) = self.send_next(connection).await {
                return Some(ending);
            }
        }
        None
    }

    async fn on_incoming(
        &mut self,
        connection: &mut Connection,
        handshake: &mut Handshake,
        incoming: Incoming,
    ) -> Option<Ending> {
        match incoming {
            Incoming::Message(message) => self.on_message(connection, handshake, message).await,
            Incoming::Undecodable(error) => {
                self.emit(Event::DecodeError {
                    error,
                    fatal: false,
                })
                .await;
                None
            }
            Incoming::Lost {
                reason,
                decode_error,
            } => {
                if let Some(error) = decode_error {
                    self.emit(Event::DecodeError { error, fatal: true }).await;
                }
                fail_register(handshake, ClientError::ConnectionLost(reason.clone()));
                Some(Ending::Lost(reason))
            }
        }
    }

    async fn on_message(
        &mut self,
        connection: &mut Connection,
        handshake: &mut Handshake,
        message: ServerMessage,
    ) -> Option<Ending> {
        if handshake.caps_pending
            && matches!(message, ServerMessage::Caps(_) | ServerMessage::Error(_))
        {
            handshake.caps_pending = false;
            // An ERROR here is a server that knows no CAPS: nothing granted.
            let granted = match message {
                ServerMessage::Caps(names) => names,
                _ => Vec::new(),
            };
            self.history = granted.iter().any(|cap| cap == "history");
            self.emit(Event::Capabilities(granted)).await;
            return None;
        }
        if let ServerMessage::Session(token) = message {
            return self.keep_token(token).await;
        }
        if let Some(mut pending) = handshake.register.take() {
            match (&message, pending.stage) {
                (ServerMessage::SignedUp(_), Stage::SigningUp) => {
                    // The account exists: now sign in to it.
                    let proof = self.account.as_ref().and_then(|a| a.password().cloned());
                    pending.stage = Stage::Registering(Some(Proof::Password));
                    let sent = send_register(
                        connection,
                        handshake,
                        &pending.name,
                        &pending.status,
                        proof.as_ref(),
                    )
                    .await;
                    handshake.register = Some(pending);
                    return sent.err().map(Ending::Lost);
                }
                (ServerMessage::OnlineUsers(_), _) => {
                    if let Some(ending) = self.registered(connection, pending).await {
                        return Some(ending);
                    }
                }
                (ServerMessage::Error(text), Stage::Registering(Some(Proof::Token)))
                    if bad_credentials(text) =>
                {
                    // The kept token ended (a logout, a password change):
                    // forget it, and try the password if we have one.
                    let account = self.account.as_mut()?;
                    account.token_refused();
                    let Some(password) = account.password().cloned() else {
                        return self.register_refused(pending, text).await;
                    };
                    pending.stage = Stage::Registering(Some(Proof::Password));
                    let sent = send_register(
                        connection,
                        handshake,
                        &pending.name,
                        &pending.status,
                        Some(&password),
                    )
                    .await;
                    handshake.register = Some(pending);
                    return sent.err().map(Ending::Lost);
                }
                (ServerMessage::Error(text), _) => {
                    return self.register_refused(pending, text).await;
                }
                _ => handshake.register = Some(pending),
            }
        }
        let ask = self.digest(message).await?;
        connection.send(&ask).await.err().map(Ending::Lost)
    }

    /// Turns a server message into events (outbox, timeline, session);
    /// returns what to send in answer, if anything: a `HISTORY` the
    /// timeline wants asked, or the `JOIN` of a conversation we created.
    async fn digest(&mut self, message: ServerMessage) -> Option<Command> {
        if let Some(conv) = self.session.created_by_us(&message) {
            if let Some(event) = self.session.apply(message) {
                self.emit(event).await;
            }
            // Our own INVITE: we are a member only once we join.
            let join = Command::Join(conv);
            self.session.note_sent(&join);
            return Some(join);
        }
        match message {
            ServerMessage::Message {
                conv,
                sender,
                text,
                meta,
            } => {
                self.confirm(conv, &sender, &text, meta.as_ref()).await;
                let outcome = self.timeline.live(conv, sender, text, meta);
                self.emit_all(outcome.events).await;
                outcome.ask
            }
            ServerMessage::History { conv, entries } => {
                let outcome = self.timeline.answer(conv, entries);
                self.emit_all(outcome.events).await;
                outcome.ask
            }
            ServerMessage::Error(text) => {
                self.refused(&text).await;
                None
            }
            ServerMessage::Members { conv, members } => {
                let in_it = members.iter().any(|member| self.session.is_me(member));
                if let Some(event) = self.session.apply(ServerMessage::Members { conv, members }) {
                    self.emit(event).await;
                }
                if !in_it {
                    self.timeline.forget(conv);
                    return None;
                }
                self.history.then(|| self.timeline.baseline(conv)).flatten()
            }
            ServerMessage::Unread(list) => {
                // It comes before REGISTER's answer: no identity yet means
                // this is our first registration.
                let first = self.session.identity().is_none();
                for (conv, last_seq, last_read_seq) in &list {
                    self.timeline
                        .note_unread(*conv, *last_seq, *last_read_seq, first);
                }
                if let Some(event) = self.session.apply(ServerMessage::Unread(list)) {
                    self.emit(event).await;
                }
                None
            }
            other => {
                if let Some(event) = self.session.apply(other) {
                    self.emit(event).await;
                }
                None
            }
        }
    }

    /// Our own `MESSAGE` back confirms an outbox entry: by nonce with
    /// `history`, by conversation and text without.
    async fn confirm(
        &mut self,
        conv: ConvId,
        sender: &str,
        text: &str,
        meta: Option<&MessageMeta>,
    ) {
        let entry = match (meta, meta.and_then(|m| m.nonce.as_deref())) {
            (_, Some(nonce)) => self.outbox.confirm(nonce),
            (None, None) if self.session.is_me(sender) => self.outbox.confirm_echo(conv, text),
            _ => None,
        };
        if let Some(entry) = entry {
            let seq = meta.map(|m| m.seq);
            self.emit(Event::Sent {
                conv: entry.conv,
                nonce: entry.nonce,
                seq,
            })
            .await;
        }
    }

    /// An `ERROR`: reported as is, then blamed on the message in flight or
    /// the `HISTORY` it refuses, when its text says which. One error has
    /// one culprit: a message first, else a history request.
    async fn refused(&mut self, text: &str) {
        if let Some(event) = self.session.apply(ServerMessage::Error(text.to_string())) {
            self.emit(event).await;
        }
        let blamed = blame(text).and_then(|culprit| self.outbox.refused(culprit));
        if let Some(entry) = blamed {
            self.emit(not_sent(&entry, text.to_string())).await;
            return;
        }
        // A conversation we are not in has nothing for us to miss; a
        // history the server could not read leaves a gap to report.
        let refusal = match lost_conversation(text) {
            Some(conv) => Some((conv, false)),
            None => history_unavailable(text).map(|conv| (conv, true)),
        };
        if let Some((conv, gap)) = refusal {
            let events = self.timeline.refused(conv, gap);
            self.emit_all(events).await;
        }
    }

    /// The server accepted our `REGISTER` (its first `ONLINE_USERS` is the
    /// acknowledgement).
    async fn registered(
        &mut self,
        connection: &mut Connection,
        pending: PendingRegister,
    ) -> Option<Ending> {
        self.session.set_identity(pending.name, pending.status);
        let Some(reply) = pending.reply else {
            return self.restore(connection).await;
        };
        // What was queued before registering goes out from the serve loop.
        let _ = reply.send(Ok(()));
        None
    }

    /// After a reconnect: re-join and catch up; the serve loop then resends
    /// the outbox (the server needs us to be a member for both).
    async fn restore(&mut self, connection: &mut Connection) -> Option<Ending> {
        let memberships = self.session.memberships();
        let mut commands: Vec<Command> = memberships.iter().map(|c| Command::Join(*c)).collect();
        let watched = self.session.watched();
        if !watched.is_empty() {
            commands.push(Command::Watch(watched));
        }
        if self.history {
            commands.extend(
                memberships
                    .iter()
                    .filter_map(|c| self.timeline.catch_up(*c)),
            );
        }
        for command in commands {
            if let Err(reason) = connection.send(&command).await {
                return Some(Ending::Lost(reason));
            }
        }
        let addr = self.config.addr.clone();
        self.emit(Event::State(ConnectionState::Connected { addr }))
            .await;
        None
    }

    /// The server refused our `REGISTER`. A caller's register fails and the
    /// connection stays usable (they may pick another name); a refused
    /// re-register after a reconnect is reported and retried with backoff,
    /// since the server may still hold our previous connection.
    async fn register_refused(&mut self, pending: PendingRegister, text: &str) -> Option<Ending> {
        match pending.reply {
            Some(reply) => {
                self.account = None;
                let _ = reply.send(Err(registration_error(text)));
                None
            }
            None if matches!(registration_error(text), ClientError::AccountNeeded(_)) => {
                // Our secret no longer opens the account: retrying would
                // only count as failed attempts against us.
                self.emit(Event::ServerError(text.to_string())).await;
                self.abandon_outbox(text).await;
                self.emit(Event::State(ConnectionState::Disconnected {
                    reason: text.to_string(),
                }))
                .await;
                Some(Ending::Done)
            }
            None => {
                self.emit(Event::ServerError(text.to_string())).await;
                Some(Ending::Lost(text.to_string()))
            }
        }
    }

    /// The server's `SESSION` token: the secret of our next `REGISTER`s.
    async fn keep_token(&mut self, token: Secret) -> Option<Ending> {
        let account = self.account.as_mut()?;
        if let Err(why) = account.keep(token) {
            self.emit(Event::ServerError(why)).await;
        }
        None
    }

    /// Sends what the outbox still holds and then `GOODBYE`, and hands over
    /// what the server still sends until it closes the connection (bounded
    /// by the reply timeout): so messages sent before `goodbye` are
    /// confirmed, or reported as not sent.
    async fn say_goodbye(
        &mut self,
        connection: &mut Connection,
        reply: Option<oneshot::Sender<()>>,
    ) {
        // A connection lost here makes the GOODBYE below fail as well.
        let flushed =
            self.session.identity().is_none() || self.flush_outbox(connection).await.is_none();
        if flushed && connection.send(&Command::Goodbye).await.is_ok() {
            let wait = self.config.reply_timeout;
            let drain = async {
                loop {
                    match connection.next().await {
                        // Nothing more is asked after GOODBYE.
                        Incoming::Message(message) => {
                            let _ = self.digest(message).await;
                        }
                        Incoming::Undecodable(_) => {}
                        Incoming::Lost { .. } => break,
                    }
                }
            };
            let _ = timeout(wait, drain).await;
        }
        self.abandon_outbox("the client said goodbye before the server confirmed it")
            .await;
        self.emit(Event::State(ConnectionState::Disconnected {
            reason: GOODBYE_REASON.into(),
        }))
        .await;
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }

    /// Reconnects with backoff until a connection is open and `REGISTER`
    /// is sent again. `None`: the application said goodbye meanwhile.
    async fn reconnect(&mut self, mut reason: String) -> Option<(Connection, Handshake)> {
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let delay = self.config.backoff.delay(attempt, rand::random::<f64>());
            self.emit(Event::State(ConnectionState::Reconnecting {
                attempt,
                delay,
                reason: reason.clone(),
            }))
            .await;
            if !self.wait_disconnected(delay).await {
                return None;
            }
            let addr = self.config.addr.clone();
            self.emit(Event::State(ConnectionState::Connecting {
                addr: addr.clone(),
            }))
            .await;
            let opened = Connection::open(
                &addr,
                self.config.connect_timeout,
                self.config.pace,
                self.config.tls.as_ref(),
            )
            .await;
            let mut connection = match opened {
                Ok(connection) => connection,
                Err(why) => {
                    reason = why;
                    continue;
                }
            };
            let identity = self.session.identity().cloned()?;
            let mut handshake = Handshake::default();
            let proof = self.account.as_ref().and_then(|a| a.proof());
            let stage = Stage::Registering(proof.map(|(kind, _)| kind));
            let secret = proof.map(|(_, secret)| secret.clone());
            if let Err(why) = send_register(
                &mut connection,
                &mut handshake,
                &identity.name,
                &identity.status,
                secret.as_ref(),
            )
            .await
            {
                reason = why;
                continue;
            }
            handshake.register = Some(PendingRegister {
                name: identity.name,
                status: identity.status,
                reply: None,
                deadline: Instant::now() + self.config.reply_timeout,
                stage,
            });
            self.session.expect_snapshot();
            return Some((connection, handshake));
        }
    }

    /// Waits `delay` with no connection, still answering the application.
    /// Status, join and leave are remembered for the next connection,
    /// messages wait in the outbox; other commands are reported as not
    /// sent. `false`: goodbye.
    async fn wait_disconnected(&mut self, delay: std::time::Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                request = self.requests.recv() => match request {
                    None => {
                        self.give_up(None).await;
                        return false;
                    }
                    Some(Request::Goodbye { reply }) => {
                        self.give_up(Some(reply)).await;
                        return false;
                    }
                    Some(Request::Register { reply, .. }) => {
                        let name = self.session.identity().map(|id| id.name.clone()).unwrap_or_default();
                        let _ = reply.send(Err(ClientError::AlreadyRegistered(name)));
                    }
                    Some(Request::Send(command)) => self.hold_or_drop(command).await,
                    Some(Request::Message { conv, text, nonce }) => {
                        self.outbox.push(nonce.clone(), conv, text.clone());
                        self.emit(Event::Queued { conv, nonce, text }).await;
                    }
                },
            }
        }
    }

    async fn hold_or_drop(&mut self, command: Command) {
        match command {
            Command::Status(_) | Command::Join(_) | Command::Watch(_) | Command::Unwatch(_) => {
                self.session.note_sent(&command)
            }
            Command::Leave(conv) => {
                self.timeline.forget(conv);
                self.session.note_sent(&command)
            }
            command => {
                self.emit(Event::NotSent {
                    command,
                    reason: "not connected".into(),
                })
                .await
            }
        }
    }

    async fn give_up(&mut self, reply: Option<oneshot::Sender<()>>) {
        self.abandon_outbox("the client said goodbye before it could be sent")
            .await;
        self.emit(Event::State(ConnectionState::Disconnected {
            reason: GOODBYE_REASON.into(),
        }))
        .await;
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }
}

/// Starts registering as `name`: `SIGNUP` first for a new account,
/// otherwise `REGISTER` with the account's token or password (or none, a
/// guest). Returns what the answer will be to.
async fn open_registration(
    connection: &mut Connection,
    handshake: &mut Handshake,
    name: &str,
    status: &str,
    account: Option<&Account>,
) -> Result<Stage, String> {
    let Some(account) = account else {
        send_register(connection, handshake, name, status, None).await?;
        return Ok(Stage::Registering(None));
    };
    if account.signs_up() {
        let password = account
            .password()
            .cloned()
            .unwrap_or_else(|| Secret::new(""));
        send_caps(connection, handshake, true).await?;
        let signup = Command::Signup {
            name: name.to_string(),
            password,
        };
        connection.send(&signup).await?;
        return Ok(Stage::SigningUp);
    }
    let proof = account.proof();
    let secret = proof.map(|(_, secret)| secret);
    send_register(connection, handshake, name, status, secret).await?;
    Ok(Stage::Registering(proof.map(|(kind, _)| kind)))
}

/// Sends `CAPS`, once per connection; an account asks for `session` too.
async fn send_caps(
    connection: &mut Connection,
    handshake: &mut Handshake,
    account: bool,
) -> Result<(), String> {
    if handshake.caps_sent {
        return Ok(());
    }
    let mut caps: Vec<String> = CAPABILITIES.iter().map(|cap| cap.to_string()).collect();
    if account {
        caps.push("session".into());
    }
    connection.send(&Command::Caps(caps)).await?;
    handshake.caps_sent = true;
    handshake.caps_pending = true;
    Ok(())
}

/// Sends `CAPS` (once per connection) and `REGISTER`, with `secret` for an
/// account.
async fn send_register(
    connection: &mut Connection,
    handshake: &mut Handshake,
    name: &str,
    status: &str,
    secret: Option<&Secret>,
) -> Result<(), String> {
    send_caps(connection, handshake, secret.is_some()).await?;
    let register = match secret {
        None => Command::Register {
            name: name.to_string(),
            status: status.to_string(),
        },
        Some(secret) => Command::Login {
            name: name.to_string(),
            status: status.to_string(),
            secret: secret.clone(),
        },
    };
    connection.send(&register).await
}

fn fail_register(handshake: &mut Handshake, error: ClientError) {
    if let Some(PendingRegister {
        reply: Some(reply), ..
    }) = handshake.register.take()
    {
        let _ = reply.send(Err(error));
    }
}

fn queued(entry: Entry) -> Event {
    Event::Queued {
        conv: entry.conv,
        nonce: entry.nonce,
        text: entry.text,
    }
}

fn not_sent(entry: &Entry, reason: String) -> Event {
    Event::NotSent {
        command: entry.command(),
        reason,
    }
}

/// The conversation whose history the server could not read: "history of
/// 3 is busy; ..." or "history of 3 not available: ...".
fn history_unavailable(error_text: &str) -> Option<ConvId> {
    let rest = error_text.strip_prefix("history of ")?;
    let id = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    id.parse().ok()
}
