//! The classic encoding: incremental decoder and encoder.
