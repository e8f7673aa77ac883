//! natter's async client library.
//!
//! ```no_run
//! # async fn demo() -> Result<(), natter_client::ClientError> {
//! use natter_client::{Client, Event};
//!
//! let (client, mut events) = Client::connect("127.0.0.1:6666").await?;
//! client.register("alice", "online").await?; // Err(NameTaken) if taken
//! client.invite(["bob"]).await?; // and joins the new conversation itself
//! while let Some(event) = events.recv().await {
//!     match event {
//!         // Invitations from others are ours to accept or not.
//!         Event::Invitation { conv, inviter } if inviter != "alice" => client.join(conv).await?,
//!         Event::Members { conv, .. } => {
//!             client.send_message(conv, "hi bob").await?;
//!         }
//!         Event::Message { sender, text, .. } => println!("{sender}: {text}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! - [`Client::connect`] opens a framed connection and returns a cloneable
//!   [`Client`] handle (one method per protocol command) and the
//!   [`Events`] receiver.
//! - Before `REGISTER` the client asks for the `presence-scope`,
//!   `presence-delta`, `members`, `history` and `topics` capabilities
//!   ([`Event::Capabilities`] says which the server granted);
//!   [`Event::OnlineUsers`] always carries the whole list the server
//!   maintains for us, whichever form it sends. With `presence-scope` that
//!   list holds us, the users we share a conversation with (or invited, or
//!   were invited by) and those we [`Client::watch`]; [`Client::list_users`]
//!   searches everyone online.
//! - **Outbox.** Every message sent gets a random [`Nonce`] and stays in a
//!   bounded outbox ([`ClientConfig::outbox_capacity`], 256 by default;
//!   full is [`ClientError::OutboxFull`], never a silent drop) until the
//!   server echoes it ([`Event::Sent`]). Sent while disconnected, it waits
//!   ([`Event::Queued`]); after the reconnect the outbox is resent in
//!   order with the same nonces. A server with `history` stores a nonce
//!   once, so nothing is lost or doubled; without it a resend after a lost
//!   echo may double a message (at-least-once). A refused or unconfirmed
//!   message ends as [`Event::NotSent`].
//! - **Catch-up.** With `history`, messages carry a seq
//!   ([`MessageInfo`]) and are delivered once each. After a reconnect the
//!   client fetches with `HISTORY` what was said in its conversations
//!   meanwhile and delivers it as [`Event::Message`]s marked `catch_up`,
//!   in seq order with the live ones. [`Client::history`], [`Client::read`]
//!   and [`Client::topic`] expose the rest of the extension.
//! - **Accounts.** [`Client::login`] signs in with [`Credentials`]: a
//!   password, the session token kept from last time (in a
//!   [`TokenStore`], by default `~/.config/natter/sessions/`, files
//!   `0600`), or both: the token first, the password when the token is
//!   refused. With `signup` it creates the account first. The server's
//!   `SESSION` token is kept and used for reconnects, so the password is
//!   sent once per run at most.
//! - When the connection drops after registering, the client reconnects
//!   with exponential backoff (1 s doubling to 30 s, jittered; see
//!   [`Backoff`]), registers again with the same name and status and
//!   re-joins its conversations, reporting each step as
//!   [`Event::State`]. `goodbye` ends it for good.
//! - The client joins the conversations its own `INVITE`s create: the
//!   protocol makes the inviter a member only once it joins.
//! - Bad data from a server is an [`Event::DecodeError`], never a panic;
//!   when the stream cannot be trusted any more the client reconnects.
//! - Every queue is bounded ([`ClientConfig`]), and commands go out no
//!   faster than the server's default rate limit allows ([`Pace`]).

mod account;
mod client;
mod config;
mod connection;
mod error;
mod event;
mod outbox;
mod pace;
mod session;
mod task;
mod timeline;
mod tls;
mod tokens;

pub use account::Credentials;
pub use client::{Client, Events};
pub use config::{Backoff, ClientConfig};
pub use error::ClientError;
pub use event::{ConnectionState, Event, MessageInfo, OnlineUsers, Unread};
pub use natter_proto::Secret;
pub use natter_proto::{Command, ConvId, HistoryEntry};
pub use outbox::Nonce;
pub use pace::Pace;
pub use session::lost_conversation;
pub use tls::{ClientTls, TlsConfigError};
pub use tokens::TokenStore;
