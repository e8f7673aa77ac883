//! The checks behind each fuzz target. Each module is self-contained so the
//! main workspace's tests can include it and replay the committed corpus.

pub mod chat_session;
pub mod decoders;
pub mod pickle_oracle;
