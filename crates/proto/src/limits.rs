//! Every bound the decoders and validators enforce, in one place.
//!
//! Hostile input is normal input: each field caps one way a peer could make
//! us allocate, recurse or loop without end.

/// The largest frame a server may ever be configured to accept. Keeping it
/// below 2^24 means the first byte of a framed length is always 0, which is
/// how the encoding is recognised.
pub const MAX_FRAME_CEILING: usize = 16 * 1024 * 1024 - 1;

/// Bounds applied while decoding and validating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest framed body / JSON line / classic message, in bytes.
    pub max_frame: usize,
    /// Largest chat message text, in bytes of UTF-8.
    pub max_message: usize,
    /// Longest status, in characters.
    pub max_status: usize,
    /// Longest username, in characters.
    pub max_name: usize,
    /// Deepest nesting of lists/tuples/dicts inside one pickle or JSON value.
    pub max_depth: usize,
    /// Most values (of any kind) inside one pickle or JSON value.
    pub max_items: usize,
}

impl Limits {
    /// Limits for a server's inbound traffic (the contract's defaults).
    pub const fn server_default() -> Self {
        Limits {
            max_frame: 64 * 1024,
            max_message: 8 * 1024,
            max_status: 128,
            max_name: 32,
            max_depth: 32,
            max_items: 16 * 1024,
        }
    }

    /// Limits for a client reading what a server sends: a full
    /// `ONLINE_USERS` for many thousands of users is large, so frames may be
    /// up to the ceiling.
    pub const fn client_default() -> Self {
        Limits {
            max_frame: MAX_FRAME_CEILING,
            max_message: 64 * 1024,
            max_status: 1024,
            max_name: 256,
            max_depth: 32,
            max_items: 4 * 1024 * 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::server_default()
    }
}
