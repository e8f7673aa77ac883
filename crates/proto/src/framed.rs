//! The framed encoding: incremental decoder and encoder.
