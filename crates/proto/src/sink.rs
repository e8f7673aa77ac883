//! One description of a server message's arguments, two output formats.
//!
//! [`ServerMessage::write_args`](crate::message::ServerMessage) describes
//! its arguments to an [`ArgSink`]; the pickle and JSON sinks turn the
//! description straight into bytes. The hot messages (MESSAGE, a full
//! ONLINE_USERS) are thus encoded without building a `Value` tree first.

use bytes::BytesMut;

use crate::pickle::writer;

/// Receives the parts of an argument value in order.
pub(crate) trait ArgSink {
    fn int(&mut self, value: i64);
    fn str(&mut self, value: &str);
    fn none(&mut self);
    fn list_begin(&mut self);
    fn list_end(&mut self);
    fn dict_begin(&mut self);
    fn dict_end(&mut self);
    /// A dict key that is a string.
    fn key_str(&mut self, key: &str);
    /// A dict key that is a conversation id: an int in a pickle, a string
    /// (`"3"`) in JSON, whose keys are always strings.
    fn key_conv(&mut self, key: u64);
}

/// Writes pickle opcodes (the caller writes PROTO and STOP).
pub(crate) struct PickleSink<'a>(pub &'a mut BytesMut);

impl ArgSink for PickleSink<'_> {
    fn int(&mut self, value: i64) {
        writer::int(self.0, value);
    }
    fn str(&mut self, value: &str) {
        writer::str(self.0, value);
    }
    fn none(&mut self) {
        writer::none(self.0);
    }
    fn list_begin(&mut self) {
        writer::list_begin(self.0);
    }
    fn list_end(&mut self) {
        writer::list_end(self.0);
    }
    fn dict_begin(&mut self) {
        writer::dict_begin(self.0);
    }
    fn dict_end(&mut self) {
        writer::dict_end(self.0);
    }
    fn key_str(&mut self, key: &str) {
        writer::str(self.0, key);
    }
    fn key_conv(&mut self, key: u64) {
        writer::int(self.0, key as i64);
    }
}

/// Writes JSON text.
pub(crate) struct JsonSink<'a>(pub &'a mut BytesMut);

impl JsonSink<'_> {
    /// A comma before every element except the first of a list or dict and
    /// a dict value (which follows its key's colon).
    fn separate(&mut self) {
        if !matches!(self.0.last(), Some(b'[' | b'{' | b':') | None) {
            self.0.extend_from_slice(b",");
        }
    }
}

impl ArgSink for JsonSink<'_> {
    fn int(&mut self, value: i64) {
        self.separate();
        crate::json::write_int(self.0, value);
    }
    fn str(&mut self, value: &str) {
        self.separate();
        crate::json::write_str(self.0, value);
    }
    fn none(&mut self) {
        self.separate();
        self.0.extend_from_slice(b"null");
    }
    fn list_begin(&mut self) {
        self.separate();
        self.0.extend_from_slice(b"[");
    }
    fn list_end(&mut self) {
        self.0.extend_from_slice(b"]");
    }
    fn dict_begin(&mut self) {
        self.separate();
        self.0.extend_from_slice(b"{");
    }
    fn dict_end(&mut self) {
        self.0.extend_from_slice(b"}");
    }
    fn key_str(&mut self, key: &str) {
        self.separate();
        crate::json::write_str(self.0, key);
        self.0.extend_from_slice(b":");
    }
    fn key_conv(&mut self, key: u64) {
        self.separate();
        self.0.extend_from_slice(b"\"");
        crate::json::write_int(self.0, key as i64);
        self.0.extend_from_slice(b"\":");
    }
}
