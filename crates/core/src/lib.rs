//! natter's chat state: users, statuses, conversations, invitations and the
//! rules of the contract, as a plain state machine.
//!
//! Input: which connection sent which [`Command`](natter_proto::Command) (or
//! connected, or went away, or a timer fired). Output: [`Output`]s saying
//! which message goes to which connections, and which connections to close.
//! No sockets, no async, no clock of its own: the server shell feeds time in
//! by calling [`Chat::flush_presence`] and [`Chat::presence_snapshot`] from
//! its timers. That is what lets later features plug in without a rewrite:
//! a history store is another consumer of outputs, another node another
//! source of inputs.

pub mod audit;
pub mod bans;
pub mod caps;
pub mod conversations;
pub mod error;
pub mod facts;
pub mod identity;
pub mod policy;
pub mod presence;
pub mod scope;
pub mod state;
mod users;

pub use bans::{Ban, BanTarget};
pub use error::ChatError;
pub use facts::{Fact, Snapshot, StoredAccount, StoredMessage, TokenHash, UnixMs};
pub use identity::AccountsMode;
pub use policy::Policy;
pub use state::{Chat, Config, ConnId, Output, Outputs, Recipients};
pub use users::user_key;
