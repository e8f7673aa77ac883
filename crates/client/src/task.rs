//! The connection task: the one owner of the socket and the session.
//!
//! [`crate::Client`] handles send it [`Request`]s over a bounded channel;
//! it sends [`Event`]s back over another. It registers (asking for the
//! `presence-delta` and `members` capabilities first), forwards commands,
//! turns server messages into events, joins the conversations its own
//! `INVITE`s create, and when the connection drops after
//! registering, reconnects with backoff, registers again under the same
//! name and status and re-joins the conversations we were in.

use natter_proto::{Command, ServerMessage};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};

use crate::config::ClientConfig;
use crate::connection::{Connection, Incoming};
use crate::error::{ClientError, registration_error};
use crate::event::{ConnectionState, Event};
use crate::session::Session;

/// The capabilities we ask for: deltas keep presence traffic small, and
/// `MEMBERS` tells us our memberships (which a reconnect restores).
const CAPABILITIES: [&str; 2] = ["presence-delta", "members"];

/// The reason reported once the client has said goodbye.
pub(crate) const GOODBYE_REASON: &str = "goodbye";

pub(crate) enum Request {
    Register {
        name: String,
        status: String,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Send(Command),
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
}

impl Task {
    pub fn new(
        config: ClientConfig,
        requests: mpsc::Receiver<Request>,
        events: mpsc::Sender<Event>,
    ) -> Task {
        Task {
            config,
            requests,
            events,
            session: Session::default(),
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
            if self.session.identity().is_none() {
                // Nothing to restore: there is no session yet.
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

    /// Serves one connection until it ends.
    async fn serve(&mut self, connection: &mut Connection, mut handshake: Handshake) -> Ending {
        loop {
            let deadline = handshake.register.as_ref().map(|pending| pending.deadline);
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
            }
        }
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
                reply,
            } => {
                if let Some(identity) = self.session.identity() {
                    let _ = reply.send(Err(ClientError::AlreadyRegistered(identity.name.clone())));
                    return None;
                }
                if let Err(reason) = send_register(connection, handshake, &name, &status).await {
                    let _ = reply.send(Err(ClientError::ConnectionLost(reason.clone())));
                    return Some(Ending::Lost(reason));
                }
                handshake.register = Some(PendingRegister {
                    name,
                    status,
                    reply: Some(reply),
                    deadline: Instant::now() + self.config.reply_timeout,
                });
                None
            }
            Request::Send(command) => {
                self.session.note_sent(&command);
                connection.send(&command).await.err().map(Ending::Lost)
            }
        }
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
            return None;
        }
        if let Some(pending) = handshake.register.take() {
            match &message {
                ServerMessage::OnlineUsers(_) => {
                    if let Some(ending) = self.registered(connection, pending).await {
                        return Some(ending);
                    }
                }
                ServerMessage::Error(text) => return self.register_refused(pending, text).await,
                _ => handshake.register = Some(pending),
            }
        }
        let created = self.session.created_by_us(&message);
        if let Some(event) = self.session.apply(message) {
            self.emit(event).await;
        }
        if let Some(conv) = created {
            // Our own INVITE: we are a member only once we join.
            let join = Command::Join(conv);
            self.session.note_sent(&join);
            return connection.send(&join).await.err().map(Ending::Lost);
        }
        None
    }

    /// The server accepted our `REGISTER` (its first `ONLINE_USERS` is the
    /// acknowledgement).
    async fn registered(
        &mut self,
        connection: &mut Connection,
        pending: PendingRegister,
    ) -> Option<Ending> {
        self.session.set_identity(pending.name, pending.status);
        match pending.reply {
            Some(reply) => {
                let _ = reply.send(Ok(()));
                None
            }
            None => {
                for conv in self.session.memberships() {
                    if let Err(reason) = connection.send(&Command::Join(conv)).await {
                        return Some(Ending::Lost(reason));
                    }
                }
                let addr = self.config.addr.clone();
                self.emit(Event::State(ConnectionState::Connected { addr }))
                    .await;
                None
            }
        }
    }

    /// The server refused our `REGISTER`. A caller's register fails and the
    /// connection stays usable (they may pick another name); a refused
    /// re-register after a reconnect is reported and retried with backoff,
    /// since the server may still hold our previous connection.
    async fn register_refused(&mut self, pending: PendingRegister, text: &str) -> Option<Ending> {
        match pending.reply {
            Some(reply) => {
                let _ = reply.send(Err(registration_error(text)));
                None
            }
            None => {
                self.emit(Event::ServerError(text.to_string())).await;
                Some(Ending::Lost(text.to_string()))
            }
        }
    }

    /// Sends `GOODBYE` and hands over what the server still sends until it
    /// closes the connection (bounded by the reply timeout).
    async fn say_goodbye(
        &mut self,
        connection: &mut Connection,
        reply: Option<oneshot::Sender<()>>,
    ) {
        if connection.send(&Command::Goodbye).await.is_ok() {
            let wait = self.config.reply_timeout;
            let drain = async {
                loop {
                    match connection.next().await {
                        Incoming::Message(message) => {
                            if let Some(event) = self.session.apply(message) {
                                self.emit(event).await;
                            }
                        }
                        Incoming::Undecodable(_) => {}
                        Incoming::Lost { .. } => break,
                    }
                }
            };
            let _ = timeout(wait, drain).await;
        }
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
            let mut connection = match Connection::open(&addr, self.config.connect_timeout).await {
                Ok(connection) => connection,
                Err(why) => {
                    reason = why;
                    continue;
                }
            };
            let identity = self.session.identity().cloned()?;
            let mut handshake = Handshake::default();
            if let Err(why) = send_register(
                &mut connection,
                &mut handshake,
                &identity.name,
                &identity.status,
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
            });
            self.session.expect_snapshot();
            return Some((connection, handshake));
        }
    }

    /// Waits `delay` with no connection, still answering the application.
    /// Status, join and leave are remembered for the next connection;
    /// other commands are reported as not sent. `false`: goodbye.
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
                },
            }
        }
    }

    async fn hold_or_drop(&mut self, command: Command) {
        match command {
            Command::Status(_) | Command::Join(_) | Command::Leave(_) => {
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
        self.emit(Event::State(ConnectionState::Disconnected {
            reason: GOODBYE_REASON.into(),
        }))
        .await;
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }
}

/// Sends `CAPS` (once per connection) and `REGISTER`.
async fn send_register(
    connection: &mut Connection,
    handshake: &mut Handshake,
    name: &str,
    status: &str,
) -> Result<(), String> {
    if !handshake.caps_sent {
        let caps = CAPABILITIES.iter().map(|cap| cap.to_string()).collect();
        connection.send(&Command::Caps(caps)).await?;
        handshake.caps_sent = true;
        handshake.caps_pending = true;
    }
    connection
        .send(&Command::Register {
            name: name.to_string(),
            status: status.to_string(),
        })
        .await
}

fn fail_register(handshake: &mut Handshake, error: ClientError) {
    if let Some(PendingRegister {
        reply: Some(reply), ..
    }) = handshake.register.take()
    {
        let _ = reply.send(Err(error));
    }
}
