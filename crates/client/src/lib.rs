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
//!         Event::Members { conv, .. } => client.send_message(conv, "hi bob").await?,
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
//! - Before `REGISTER` the client asks for the `presence-delta` and
//!   `members` capabilities; [`Event::OnlineUsers`] always carries the full
//!   online list, whichever the server sends.
//! - When the connection drops after registering, the client reconnects
//!   with exponential backoff (1 s doubling to 30 s, jittered; see
//!   [`Backoff`]), registers again with the same name and status and
//!   re-joins its conversations, reporting each step as
//!   [`Event::State`]. `goodbye` ends it for good.
//! - The client joins the conversations its own `INVITE`s create: the
//!   protocol makes the inviter a member only once it joins.
//! - Bad data from a server is an [`Event::DecodeError`], never a panic;
//!   when the stream cannot be trusted any more the client reconnects.
//! - Every queue is bounded ([`ClientConfig`]).

mod client;
mod config;
mod connection;
mod error;
mod event;
mod session;
mod task;

pub use client::{Client, Events};
pub use config::{Backoff, ClientConfig};
pub use error::ClientError;
pub use event::{ConnectionState, Event, OnlineUsers};
pub use natter_proto::{Command, ConvId};
pub use session::lost_conversation;
