//! Errors a caller of the client library can act on.
//!
//! Each variant's `Display` is a sentence a user can read as is: the
//! terminal client prints them unchanged.

use std::io;

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// `REGISTER` was refused because another user has this name. The
    /// connection stays usable: `register` may be called again.
    #[error("name {0} is taken")]
    NameTaken(String),
    /// `REGISTER` was refused for another reason (an invalid name, a status
    /// too long, ...): the server's own words.
    #[error("{0}")]
    Rejected(String),
    /// The name is an account's and the secret was wrong or missing (or
    /// the server takes accounts only): the server's words. The same
    /// connection may try again with the password.
    #[error("{0}")]
    AccountNeeded(String),
    /// `register` was called on a connection that is already registered.
    #[error("already registered as {0}")]
    AlreadyRegistered(String),
    /// The connection ended before the server answered; the text says how
    /// (for example "server closed the connection").
    #[error("{0}")]
    ConnectionLost(String),
    /// The server did not answer in time.
    #[error("no answer from the server within {0:?}")]
    Timeout(std::time::Duration),
    /// The outbox holds `capacity` messages the server has not confirmed
    /// yet ([`crate::ClientConfig::outbox_capacity`]); this one was not
    /// queued. Try again once some are confirmed ([`crate::Event::Sent`]).
    #[error("the outbox is full: {capacity} messages are waiting for the server to confirm them")]
    OutboxFull { capacity: usize },
    /// An empty message, which the server would refuse.
    #[error("message is empty")]
    EmptyMessage,
    /// A nonce longer than the protocol allows.
    #[error("nonce is too long ({len} characters, at most {max})", max = natter_proto::command::MAX_NONCE)]
    NonceTooLong { len: usize },
    /// `history` with a limit of 0, which asks for nothing.
    #[error("a history limit must be at least 1")]
    ZeroHistoryLimit,
    /// The client has shut down (after `goodbye`, or a connection lost
    /// before registering): no more calls are possible.
    #[error("the client is closed")]
    Closed,
}

/// What the user sees when the server ends the stream.
pub(crate) const SERVER_CLOSED: &str = "server closed the connection";

/// A short lowercase reason for a socket error: "connection refused"
/// rather than "Connection refused (os error 111)".
pub(crate) fn io_reason(err: &io::Error) -> String {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset by the server".into(),
        ConnectionAborted => "connection aborted".into(),
        BrokenPipe => SERVER_CLOSED.into(),
        UnexpectedEof => SERVER_CLOSED.into(),
        TimedOut => "timed out".into(),
        AddrNotAvailable => "address not available".into(),
        _ => {
            let text = err.to_string();
            // Drop the "(os error N)" suffix: it means nothing to a user.
            match text.find(" (os error") {
                Some(at) => text[..at].to_lowercase(),
                None => text,
            }
        }
    }
}

/// Recognises the server's answer to a taken name, `name alice is taken`,
/// and returns the name.
pub(crate) fn taken_name(error_text: &str) -> Option<&str> {
    error_text
        .strip_prefix("name ")?
        .strip_suffix(" is taken")
        .filter(|name| !name.is_empty())
}

/// Types the server's answer to a refused `REGISTER`.
pub(crate) fn registration_error(error_text: &str) -> ClientError {
    if crate::account::bad_credentials(error_text)
        || error_text.starts_with("this server requires an account")
    {
        return ClientError::AccountNeeded(error_text.to_string());
    }
    match taken_name(error_text) {
        Some(name) => ClientError::NameTaken(name.to_string()),
        None => ClientError::Rejected(error_text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_name_is_recognised_from_the_server_text() {
        assert_eq!(
            registration_error("name alice is taken"),
            ClientError::NameTaken("alice".into())
        );
        assert_eq!(
            ClientError::NameTaken("alice".into()).to_string(),
            "name alice is taken"
        );
    }

    #[test]
    fn other_refusals_keep_the_server_words() {
        let err = registration_error("invalid username \"a b\": spaces are not allowed");
        assert_eq!(
            err.to_string(),
            "invalid username \"a b\": spaces are not allowed"
        );
        assert!(matches!(err, ClientError::Rejected(_)));
    }

    #[test]
    fn refused_connections_read_like_a_sentence() {
        let err = io::Error::from(io::ErrorKind::ConnectionRefused);
        let unreachable = ClientError::Unreachable {
            addr: "127.0.0.1:6666".into(),
            reason: io_reason(&err),
        };
        assert_eq!(
            unreachable.to_string(),
            "cannot reach 127.0.0.1:6666: connection refused"
        );
    }
}
