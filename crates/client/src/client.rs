//! The application's handle on a connection: one async method per
//! protocol command, and the receiver of [`Event`]s.

use natter_proto::{Command, ConvId};
use tokio::sync::{mpsc, oneshot};

use crate::account::Credentials;
use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::error::ClientError;
use crate::event::{ConnectionState, Event};
use crate::outbox::{Nonce, Slots};
use crate::task::{Request, Task};

/// A handle on one client session. Cheap to clone; the session ends when
/// `goodbye` is called or every handle is dropped.
///
/// Commands other than `register` and `goodbye` return once queued: their
/// results arrive as [`Event`]s (`MEMBERS` acknowledges a join, `SENT`
/// confirms our own message, `ERROR` reports a refusal).
#[derive(Debug, Clone)]
pub struct Client {
    requests: mpsc::Sender<Request>,
    addr: String,
    /// The outbox's capacity, shared with the connection task.
    slots: Slots,
}

/// The events of one client session, in order. `recv` returns `None` after
/// the final [`ConnectionState::Disconnected`].
#[derive(Debug)]
pub struct Events {
    events: mpsc::Receiver<Event>,
}

impl Events {
    pub async fn recv(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event if one is already waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`) with the default settings.
    pub async fn connect(addr: impl Into<String>) -> Result<(Client, Events), ClientError> {
        Client::connect_with(ClientConfig::new(addr)).await
    }

    /// Connects, then starts the connection task. The first event is
    /// `State(Connected)`. Fails at once, without retrying, when the server
    /// cannot be reached.
    pub async fn connect_with(config: ClientConfig) -> Result<(Client, Events), ClientError> {
        let connection = Connection::open(
            &config.addr,
            config.connect_timeout,
            config.pace,
            config.tls.as_ref(),
        )
        .await
        .map_err(|reason| ClientError::Unreachable {
            addr: config.addr.clone(),
            reason,
        })?;
        let (request_tx, request_rx) = mpsc::channel(config.command_capacity.max(1));
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity.max(1));
        let addr = config.addr.clone();
        let connected = ConnectionState::Connected { addr: addr.clone() };
        // Cannot fail: the channel is new and has room.
        let _ = event_tx.try_send(Event::State(connected));
        let slots = Slots::new(config.outbox_capacity.max(1));
        tokio::spawn(Task::new(config, request_rx, event_tx, slots.clone()).run(connection));
        let client = Client {
            requests: request_tx,
            addr,
            slots,
        };
        Ok((client, Events { events: event_rx }))
    }

    /// The server address this client talks to.
    pub fn server_addr(&self) -> &str {
        &self.addr
    }

    /// Claims `name` with `status`. Resolves when the server accepted it
    /// ([`ClientError::NameTaken`] when someone else has it; the connection
    /// stays usable, so another name can be tried).
    pub async fn register(
        &self,
        name: impl Into<String>,
        status: impl Into<String>,
    ) -> Result<(), ClientError> {
        self.register_as(name.into(), status.into(), None).await
    }

    /// Signs in to the account `name` with `credentials` (see
    /// [`Credentials`]): its kept session token first, the password when
    /// there is no token or it is refused; with `signup`, `SIGNUP` creates
    /// the account first. The server's session token is kept for
    /// reconnects (and in `credentials.tokens` for next time).
    /// [`ClientError::AccountNeeded`] when the secret is wrong or missing;
    /// the connection stays usable.
    pub async fn login(
        &self,
        name: impl Into<String>,
        status: impl Into<String>,
        credentials: Credentials,
    ) -> Result<(), ClientError> {
        self.register_as(name.into(), status.into(), Some(credentials))
            .await
    }

    async fn register_as(
        &self,
        name: String,
        status: String,
        credentials: Option<Credentials>,
    ) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        self.request(Request::Register {
            name,
            status,
            credentials,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// `STATUS`: changes our status (kept for re-registering).
    pub async fn status(&self, status: impl Into<String>) -> Result<(), ClientError> {
        self.send(Command::Status(status.into())).await
    }

    /// `INVITE`: creates a conversation and invites these users. When its
    /// `INVITATION` comes back, the client joins it (the inviter is not a
    /// member until it joins), so [`Client::send_message`] works right
    /// after; with the `members` capability, `MEMBERS` confirms it.
    pub async fn invite<I, S>(&self, names: I) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        self.send(Command::Invite(names)).await
    }

    /// `WATCH`: also get presence for these users, whether or not we share
    /// a conversation (kept and watched again after a reconnect). Needs a
    /// server with `presence-scope`; it bounds how many one may watch.
    pub async fn watch<I, S>(&self, names: I) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        self.send(Command::Watch(names)).await
    }

    /// `UNWATCH`: stop watching these users.
    pub async fn unwatch<I, S>(&self, names: I) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        self.send(Command::Unwatch(names)).await
    }

    /// `LIST_USERS`: up to `limit` (at most 100) online users whose names
    /// start with `prefix`, any case, answered by [`Event::Users`]: for
    /// search and invitations, since presence only covers our contacts.
    pub async fn list_users(
        &self,
        prefix: impl Into<String>,
        limit: usize,
    ) -> Result<(), ClientError> {
        self.send(Command::ListUsers {
            prefix: prefix.into(),
            limit: limit.clamp(1, natter_proto::command::MAX_LIST_USERS),
        })
        .await
    }

    /// `LIST_CONVERSATIONS`: answered by [`Event::Conversations`].
    pub async fn list_conversations(&self) -> Result<(), ClientError> {
        self.send(Command::ListConversations).await
    }

    /// `JOIN`: becomes a member of `conv` (re-joined after a reconnect).
    pub async fn join(&self, conv: ConvId) -> Result<(), ClientError> {
        self.send(Command::Join(conv)).await
    }

    /// `SEND_MESSAGE`: says `text` in `conv`, with a fresh random nonce,
    /// which is returned. The message stays in the outbox until the server
    /// confirms it ([`Event::Sent`]); while disconnected it waits there
    /// ([`Event::Queued`]) and goes out after the reconnect. A full outbox
    /// is [`ClientError::OutboxFull`]; an empty text is refused here.
    pub async fn send_message(
        &self,
        conv: ConvId,
        text: impl Into<String>,
    ) -> Result<Nonce, ClientError> {
        let nonce = Nonce::random();
        self.submit(conv, text.into(), nonce.clone()).await?;
        Ok(nonce)
    }

    /// `HISTORY`: up to `limit` (at most 500) stored messages of `conv`
    /// with a seq below `before_seq` (0: the newest), answered by
    /// [`Event::History`]. Needs the `history` capability.
    pub async fn history(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<(), ClientError> {
        if limit == 0 {
            return Err(ClientError::ZeroHistoryLimit);
        }
        self.send(Command::History {
            conv,
            before_seq,
            limit,
        })
        .await
    }

    /// `READ`: marks `conv` read up to `seq`, for every device of ours.
    pub async fn read(&self, conv: ConvId, seq: u64) -> Result<(), ClientError> {
        self.send(Command::Read { conv, seq }).await
    }

    /// `TOPIC`: names `conv` (members get [`Event::Topic`]). Needs the
    /// `topics` capability.
    pub async fn topic(&self, conv: ConvId, text: impl Into<String>) -> Result<(), ClientError> {
        self.send(Command::Topic {
            conv,
            text: text.into(),
        })
        .await
    }

    /// `LEAVE`: stops being a member of `conv`.
    pub async fn leave(&self, conv: ConvId) -> Result<(), ClientError> {
        self.send(Command::Leave(conv)).await
    }

    /// `GOODBYE`: ends the session for good. Commands queued before it are
    /// sent first; resolves once the server closed the connection (or the
    /// reply timeout passed). Calling it again is harmless.
    pub async fn goodbye(&self) -> Result<(), ClientError> {
        let (reply, done) = oneshot::channel();
        if self.request(Request::Goodbye { reply }).await.is_err() {
            return Ok(());
        }
        let _ = done.await;
        Ok(())
    }

    /// Queues any command as is (the typed methods above are shorthands).
    /// `SEND_MESSAGE` goes through the outbox like `send_message`, with the
    /// nonce given or a fresh one.
    pub async fn send(&self, command: Command) -> Result<(), ClientError> {
        match command {
            Command::SendMessage { conv, text, nonce } => {
                let nonce = match nonce {
                    Some(chosen) => Nonce::new(chosen)?,
                    None => Nonce::random(),
                };
                self.submit(conv, text, nonce).await
            }
            command => self.request(Request::Send(command)).await,
        }
    }

    /// Takes an outbox slot and hands the message to the connection task.
    async fn submit(&self, conv: ConvId, text: String, nonce: Nonce) -> Result<(), ClientError> {
        if text.is_empty() {
            return Err(ClientError::EmptyMessage);
        }
        self.slots.take()?;
        let sent = self.request(Request::Message { conv, text, nonce }).await;
        if sent.is_err() {
            self.slots.give_back();
        }
        sent
    }

    async fn request(&self, request: Request) -> Result<(), ClientError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| ClientError::Closed)
    }
}
