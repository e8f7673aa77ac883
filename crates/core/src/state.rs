//! The chat state machine's public face: connections in, outputs out.

use std::sync::Arc;

use natter_proto::{Command, Limits, ServerMessage};

use crate::policy::Policy;

/// A connection, as the server shell numbers them. Never reused while the
/// server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Settings of the chat state.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    /// Validation limits (name, status and message lengths).
    pub limits: Limits,
}

/// Who gets a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    One(ConnId),
    /// Several connections; one allocation per message, shared by all.
    Many(Vec<ConnId>),
}

/// One effect of an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `message` to `to`. The message is behind an `Arc` so that the
    /// shell can encode it once per encoding and share the bytes.
    Send {
        to: Recipients,
        message: Arc<ServerMessage>,
    },
    /// Close this connection after what was queued for it is written
    /// (GOODBYE).
    Close(ConnId),
}

/// The outputs of one or more inputs, in order. Reused between calls to
/// avoid allocating.
pub type Outputs = Vec<Output>;

/// The whole chat state.
pub struct Chat {
    _config: Config,
}

impl Chat {
    pub fn new(config: Config) -> Self {
        Chat { _config: config }
    }

    /// A new connection arrived (not yet registered).
    pub fn connect(&mut self, conn: ConnId) {
        todo!("{conn:?}")
    }

    /// `conn` sent `cmd`.
    pub fn handle(&mut self, conn: ConnId, cmd: Command, out: &mut Outputs) {
        todo!("{conn:?} {cmd:?} {}", out.len())
    }

    /// `conn` is gone (closed, reset, cut off as a slow consumer, or after
    /// GOODBYE): it leaves every conversation, its presence departure is
    /// recorded.
    pub fn disconnect(&mut self, conn: ConnId, out: &mut Outputs) {
        todo!("{conn:?} {}", out.len())
    }

    /// Whether presence changes are waiting for [`Chat::flush_presence`].
    pub fn presence_pending(&self) -> bool {
        todo!()
    }

    /// Ends a coalescing window: sends one `ONLINE_USERS` (classic clients,
    /// and the first one for newly registered delta clients) or `PRESENCE`
    /// (delta clients) carrying the state after every change in the window.
    pub fn flush_presence(&mut self, out: &mut Outputs) {
        todo!("{}", out.len())
    }

    /// The periodic full `ONLINE_USERS` to every registered client without
    /// `presence-delta`.
    pub fn presence_snapshot(&mut self, out: &mut Outputs) {
        todo!("{}", out.len())
    }
}
