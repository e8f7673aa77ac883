//! The json encoding: incremental decoder and encoder.
