//! presence
