//! natter's durable history: conversations, memberships, invitations,
//! topics, read markers and messages in an embedded SQLite database, so a
//! restart (or a `kill -9`) forgets nothing that anyone was shown.
//!
//! The chat state ([`natter_core`]) says what happened as [`Fact`]s; this
//! crate remembers them and gives them back as a [`Snapshot`] at start-up.
//! It knows nothing of connections or deliveries: the hub holds each
//! delivery until the facts before it are committed, which is all it takes
//! for "durable before anyone sees it".
//!
//! Reading order:
//! - [`schema`]: the tables, as migrations that only ever grow.
//! - [`Store`]: the one writer of a data dir (its lock, facts as SQL, the
//!   snapshot, retention).
//! - [`Reader`]: a read-only connection for `HISTORY`.
//! - [`worker`]: the writer and reader threads, with group commit, so the
//!   hub never touches the disk.
//! - [`backup()`]: a consistent copy while the server runs.
//!
//! Why SQLite: one file, crash-safe transactions, an online backup, and in
//! WAL mode with `synchronous=FULL` a commit costs one fsync of the log
//! however many rows it holds, which group commit turns into throughput.
//! `docs/STORAGE.md` has the schema, the guarantee and the measurements.
//!
//! ```no_run
//! # fn demo() -> Result<(), natter_store::StoreError> {
//! use natter_store::{Fact, Store};
//! let mut store = Store::open("natter-data".as_ref())?;
//! let snapshot = store.load_snapshot(0)?;
//! store.commit(&[Fact::ConversationCreated {
//!     conv: snapshot.next_conv_id,
//!     ts: 0,
//!     invited: vec![("alice".into(), "Alice".into())],
//! }])?;
//! # Ok(()) }
//! ```

mod accounts;
mod backup;
mod bans;
mod error;
mod reader;
pub mod schema;
mod store;
mod wal_room;
pub mod worker;

pub use accounts::AccountSummary;
pub use backup::backup;
pub use error::StoreError;
pub use natter_core::facts::*;
pub use reader::Reader;
pub use store::{DB_FILE, KEY_BATCH, LOCK_FILE, PRUNE_CHUNK, Store};
