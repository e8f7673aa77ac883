//! Several natter nodes as one server: state-machine replication over a
//! NATS JetStream stream (docs/CLUSTER.md says why and how it performs).
//!
//! Every node runs the same hub and the same chat state as a single
//! server. The difference is where inputs come from: a node appends each
//! input that changes the chat state (a connection, a command, a
//! departure) to the log, tagged with a cluster-wide connection id, and
//! applies nothing until the entry comes back from the stream. Every node
//! applies every entry, in the stream's order, to its own copy, and
//! delivers only to its own clients; queries that change nothing are
//! answered from the local copy.
//!
//! - [`entry`]: what an entry holds, as bytes.
//! - [`replica`]: what every copy decides from the log alone (liveness,
//!   per-node order), with the log's clock.
//! - [`log`]: the stream, the appender and the reader.
//! - [`snapshot`]: the state after an entry, for catch-up and trimming.
//! - `hub/cluster.rs`: the hub's side.

pub mod entry;
pub mod log;
pub mod replica;
pub mod snapshot;

pub use log::{ClusterConfig, LogError};

/// How a node caught up with the log before it took clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// The log entry of the snapshot it started from (none: the log's
    /// first entry).
    pub snapshot: Option<u64>,
    /// Entries it applied after that, up to its own start.
    pub replayed: u64,
}
