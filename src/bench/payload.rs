//! The text of a benchmark message: who sent it, its sequence number and
//! when it left, padded to the requested size.
//!
//! Carrying the send time inside the message is what lets a receiver
//! compute latency without any clock shared other than the generator's own
//! (every client lives in this one process). Hex keeps it short enough that
//! a 64-byte payload still has room for padding.

/// What a receiver learns from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the sending client.
    pub sender: u32,
    /// The sender's message counter.
    pub seq: u64,
    /// Nanoseconds since the benchmark's epoch when it was written.
    pub sent_ns: u64,
}

/// Writes `stamp` then padding so that `out` holds at least `size` bytes
/// (more only when the stamp itself is longer).
pub fn write(stamp: Stamp, size: usize, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(
        out,
        "{:x}.{:x}.{:x}.",
        stamp.sender, stamp.seq, stamp.sent_ns
    );
    while out.len() < size {
        out.push('x');
    }
}

/// Reads a stamp back; `None` for text some other client wrote.
pub fn parse(text: &[u8]) -> Option<Stamp> {
    let mut fields = text.splitn(4, |&b| b == b'.');
    let sender = hex(fields.next()?)?;
    let seq = hex(fields.next()?)?;
    let sent_ns = hex(fields.next()?)?;
    fields.next()?; // the padding: its presence proves the stamp ended
    Some(Stamp {
        sender: u32::try_from(sender).ok()?,
        seq,
        sent_ns,
    })
}

fn hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_round_trip_at_the_requested_size() {
        let stamp = Stamp {
            sender: 999,
            seq: 123_456,
            sent_ns: 59_000_000_000,
        };
        let mut text = String::new();
        write(stamp, 64, &mut text);
        assert_eq!(text.len(), 64);
        assert_eq!(parse(text.as_bytes()), Some(stamp));
    }

    #[test]
    fn foreign_text_is_not_a_stamp() {
        assert_eq!(parse(b"hello there"), None);
        assert_eq!(parse(b"1.2"), None);
        assert_eq!(parse(b"zz.1.2.x"), None);
    }
}
