//! One entry of the replicated log, as bytes.
//!
//! The layout is ours and small: a kind byte, the fields in big-endian,
//! and a client command in the framed encoding (which every node already
//! decodes). Every node decodes every entry, so a malformed one (a foreign
//! publisher on the subject, a newer node) is skipped by every node alike,
//! and the copies stay the same.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use natter_core::{ConnId, TokenHash};
use natter_proto::codec::{Decoder, encode_command};
use natter_proto::wire::Direction;
use natter_proto::{Command, Encoding, Limits};

/// What a node appended.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A node started. Its *incarnation* is this entry's stream sequence:
    /// unique in the cluster's life, and the high half of its connection
    /// ids.
    NodeUp { name: String },
    /// The node of this incarnation is alive.
    Heartbeat { incarnation: u64 },
    /// The node of this incarnation is stopping (SIGTERM): the others need
    /// not wait for its heartbeats to stop.
    NodeDown { incarnation: u64 },
    /// Input from a client of the node (`seq` counts the node's inputs
    /// from 1, so that a retried publish is applied once and in order).
    Input { seq: u64, input: Input },
    /// Several entries of one node in one log entry, applied in order:
    /// what the appender found queued at once goes as one publish, so the
    /// log's and every copy's cost per entry is shared (never nested).
    Batch(Vec<Entry>),
}

/// A client's input, as the chat state takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Connect(ConnId),
    Command(ConnId, Command),
    Disconnect(ConnId),
    /// An account change the receiving node checked (see [`Account`]).
    Account(ConnId, Account),
}

/// What SIGNUP, REGISTER with a secret, LOGOUT and PASSWORD become in the
/// log. Never a password or a token: the node that received the command
/// hashed or checked the secret (argon2 on its pool), and the entry holds
/// what came of it, so every copy applies the same fact without hashing.
/// Each copy still checks it against its own state at that point of the
/// log (the name still free, the hash still current), so a race between
/// two nodes ends the same way everywhere.
#[derive(Clone, PartialEq)]
pub enum Account {
    /// SIGNUP: the account `name` with the password hash `phc`; `session`
    /// is the hash of a session token the new account starts with (the web
    /// page's sign-up), none for SIGNUP.
    SignUp {
        name: String,
        phc: String,
        session: Option<TokenHash>,
    },
    /// REGISTER with a secret that matched, or the web page's sign-in
    /// (`status` none: a session starts, no connection registers).
    /// `session` is the hash of a new token, started if the client asked
    /// for sessions (always for the web page).
    LogIn {
        name: String,
        status: Option<String>,
        proof: Proof,
        session: Option<TokenHash>,
    },
    /// LOGOUT (the session it came in with ends, then the connection), or
    /// the web page's sign-out of `name` (the session ends, its devices
    /// are closed).
    LogOut {
        name: Option<String>,
        session: Option<TokenHash>,
    },
    /// PASSWORD: `old` was the hash the old password matched; `keep` the
    /// session of the device that changed it.
    Password {
        old: String,
        new: String,
        keep: Option<TokenHash>,
    },
}

/// What a login was checked against.
#[derive(Clone, PartialEq)]
pub enum Proof {
    /// The password matched this hash (it must still be the account's).
    Password(String),
    /// A live session token, by its hash.
    Session(TokenHash),
}

impl std::fmt::Debug for Account {
    /// Names only: hashes are no secrets, but logs need none.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Account::SignUp { name, .. } => write!(f, "SignUp({name})"),
            Account::LogIn { name, .. } => write!(f, "LogIn({name})"),
            Account::LogOut { name, .. } => write!(f, "LogOut({name:?})"),
            Account::Password { .. } => write!(f, "Password"),
        }
    }
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proof::Password(_) => write!(f, "Password"),
            Proof::Session(_) => write!(f, "Session"),
        }
    }
}

impl Input {
    pub fn conn(&self) -> ConnId {
        match self {
            Input::Connect(conn)
            | Input::Command(conn, _)
            | Input::Disconnect(conn)
            | Input::Account(conn, _) => *conn,
        }
    }
}

/// Why bytes from the log are not an entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("empty entry")]
    Empty,
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    #[error("entry cut short")]
    Short,
    #[error("node name is not UTF-8")]
    BadName,
    #[error("command does not decode: {0}")]
    BadCommand(String),
    #[error("unknown account change {0}")]
    UnknownAccount(u8),
    #[error("text in an account change is not UTF-8")]
    BadText,
    #[error("a batch inside a batch")]
    NestedBatch,
    /// Not an entry: the reader found the log trimmed past the entry it
    /// needed next (this node fell more than a snapshot interval behind).
    #[error("the log skips from entry {expected} to {got}: it was trimmed below a snapshot")]
    Gap { expected: u64, got: u64 },
}

const NODE_UP: u8 = 1;
const HEARTBEAT: u8 = 2;
const CONNECT: u8 = 3;
const COMMAND: u8 = 4;
const DISCONNECT: u8 = 5;
const NODE_DOWN: u8 = 6;
const BATCH: u8 = 7;
const ACCOUNT: u8 = 8;

// What an ACCOUNT entry holds, after its seq and connection.
const SIGN_UP: u8 = 1;
const LOG_IN_PASSWORD: u8 = 2;
const LOG_IN_SESSION: u8 = 3;
const LOG_OUT: u8 = 4;
const PASSWORD: u8 = 5;

/// The incarnation (node life) a connection belongs to.
pub fn incarnation_of(conn: ConnId) -> u64 {
    conn.0 >> 32
}

/// The first connection id of an incarnation: its ids are `base + n`.
pub fn first_conn_id(incarnation: u64) -> u64 {
    (incarnation << 32) + 1
}

/// Every connection id an incarnation may hand out.
pub fn conn_ids_of(incarnation: u64) -> std::ops::RangeInclusive<ConnId> {
    ConnId(first_conn_id(incarnation))..=ConnId((incarnation << 32) | u64::from(u32::MAX))
}

impl Entry {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32);
        self.encode_into(&mut out);
        out.freeze()
    }

    /// `entries` as one log entry: the entry itself if there is one, else
    /// a batch of them.
    pub fn encode_all(entries: &[Entry]) -> Bytes {
        if let [entry] = entries {
            return entry.encode();
        }
        let mut out = BytesMut::with_capacity(1 + entries.len() * 48);
        out.put_u8(BATCH);
        for entry in entries {
            // Each entry behind its length: room for it, then filled in.
            let at = out.len();
            out.put_u32(0);
            entry.encode_into(&mut out);
            let len = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        out.freeze()
    }

    fn encode_into(&self, out: &mut BytesMut) {
        match self {
            Entry::NodeUp { name } => {
                out.put_u8(NODE_UP);
                out.put_slice(name.as_bytes());
            }
            Entry::Heartbeat { incarnation } => {
                out.put_u8(HEARTBEAT);
                out.put_u64(*incarnation);
            }
            Entry::NodeDown { incarnation } => {
                out.put_u8(NODE_DOWN);
                out.put_u64(*incarnation);
            }
            Entry::Input { seq, input } => {
                let kind = match input {
                    Input::Connect(_) => CONNECT,
                    Input::Command(..) => COMMAND,
                    Input::Disconnect(_) => DISCONNECT,
                    Input::Account(..) => ACCOUNT,
                };
                out.put_u8(kind);
                out.put_u64(*seq);
                out.put_u64(input.conn().0);
                match input {
                    Input::Command(_, command) => encode_command(command, Encoding::Framed, out),
                    Input::Account(_, account) => encode_account(account, out),
                    _ => {}
                }
            }
            Entry::Batch(entries) => {
                let batch = Entry::encode_all(entries);
                out.put_slice(&batch);
            }
        }
    }

    /// Decodes an entry; a command is validated against `limits` (every
    /// node must run with the same ones, as with any other setting that
    /// changes what the chat state decides).
    pub fn decode(mut bytes: &[u8], limits: &Limits) -> Result<Entry, EntryError> {
        if bytes.is_empty() {
            return Err(EntryError::Empty);
        }
        let kind = bytes.get_u8();
        match kind {
            NODE_UP => {
                let name = std::str::from_utf8(bytes).map_err(|_| EntryError::BadName)?;
                Ok(Entry::NodeUp { name: name.into() })
            }
            HEARTBEAT => Ok(Entry::Heartbeat {
                incarnation: take_u64(&mut bytes)?,
            }),
            NODE_DOWN => Ok(Entry::NodeDown {
                incarnation: take_u64(&mut bytes)?,
            }),
            CONNECT | COMMAND | DISCONNECT | ACCOUNT => {
                let seq = take_u64(&mut bytes)?;
                let conn = ConnId(take_u64(&mut bytes)?);
                let input = match kind {
                    CONNECT => Input::Connect(conn),
                    DISCONNECT => Input::Disconnect(conn),
                    ACCOUNT => Input::Account(conn, decode_account(bytes)?),
                    _ => Input::Command(conn, decode_command(bytes, limits)?),
                };
                Ok(Entry::Input { seq, input })
            }
            BATCH => {
                let mut entries = Vec::new();
                while !bytes.is_empty() {
                    if bytes.len() < 4 {
                        return Err(EntryError::Short);
                    }
                    let len = bytes.get_u32() as usize;
                    if bytes.len() < len {
                        return Err(EntryError::Short);
                    }
                    let (one, rest) = bytes.split_at(len);
                    bytes = rest;
                    match Entry::decode(one, limits)? {
                        Entry::Batch(_) => return Err(EntryError::NestedBatch),
                        entry => entries.push(entry),
                    }
                }
                Ok(Entry::Batch(entries))
            }
            other => Err(EntryError::UnknownKind(other)),
        }
    }
}

fn encode_account(account: &Account, out: &mut BytesMut) {
    match account {
        Account::SignUp { name, phc, session } => {
            out.put_u8(SIGN_UP);
            put_str(out, name);
            put_str(out, phc);
            put_hash(out, session.as_ref());
        }
        Account::LogIn {
            name,
            status,
            proof,
            session,
        } => {
            out.put_u8(match proof {
                Proof::Password(_) => LOG_IN_PASSWORD,
                Proof::Session(_) => LOG_IN_SESSION,
            });
            put_str(out, name);
            match status {
                Some(status) => {
                    out.put_u8(1);
                    put_str(out, status);
                }
                None => out.put_u8(0),
            }
            match proof {
                Proof::Password(phc) => put_str(out, phc),
                Proof::Session(hash) => out.put_slice(hash),
            }
            put_hash(out, session.as_ref());
        }
        Account::LogOut { name, session } => {
            out.put_u8(LOG_OUT);
            match name {
                Some(name) => {
                    out.put_u8(1);
                    put_str(out, name);
                }
                None => out.put_u8(0),
            }
            put_hash(out, session.as_ref());
        }
        Account::Password { old, new, keep } => {
            out.put_u8(PASSWORD);
            put_str(out, old);
            put_str(out, new);
            put_hash(out, keep.as_ref());
        }
    }
}

fn decode_account(mut bytes: &[u8]) -> Result<Account, EntryError> {
    let bytes = &mut bytes;
    if bytes.is_empty() {
        return Err(EntryError::Short);
    }
    let account = match bytes.get_u8() {
        SIGN_UP => Account::SignUp {
            name: take_str(bytes)?,
            phc: take_str(bytes)?,
            session: take_hash_opt(bytes)?,
        },
        kind @ (LOG_IN_PASSWORD | LOG_IN_SESSION) => {
            let name = take_str(bytes)?;
            let status = match take_u8(bytes)? {
                0 => None,
                _ => Some(take_str(bytes)?),
            };
            let proof = match kind {
                LOG_IN_PASSWORD => Proof::Password(take_str(bytes)?),
                _ => Proof::Session(take_hash(bytes)?),
            };
            Account::LogIn {
                name,
                status,
                proof,
                session: take_hash_opt(bytes)?,
            }
        }
        LOG_OUT => Account::LogOut {
            name: match take_u8(bytes)? {
                0 => None,
                _ => Some(take_str(bytes)?),
            },
            session: take_hash_opt(bytes)?,
        },
        PASSWORD => Account::Password {
            old: take_str(bytes)?,
            new: take_str(bytes)?,
            keep: take_hash_opt(bytes)?,
        },
        other => return Err(EntryError::UnknownAccount(other)),
    };
    if !bytes.is_empty() {
        return Err(EntryError::BadCommand("trailing bytes".into()));
    }
    Ok(account)
}

/// A string behind its length (names, statuses and PHC strings are far
/// below 64 KiB; the protocol's limits bound them before they get here).
fn put_str(out: &mut BytesMut, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

fn put_hash(out: &mut BytesMut, hash: Option<&TokenHash>) {
    match hash {
        Some(hash) => {
            out.put_u8(1);
            out.put_slice(hash);
        }
        None => out.put_u8(0),
    }
}

fn take_u8(bytes: &mut &[u8]) -> Result<u8, EntryError> {
    if bytes.is_empty() {
        return Err(EntryError::Short);
    }
    Ok(bytes.get_u8())
}

fn take_str(bytes: &mut &[u8]) -> Result<String, EntryError> {
    if bytes.len() < 2 {
        return Err(EntryError::Short);
    }
    let len = bytes.get_u16() as usize;
    if bytes.len() < len {
        return Err(EntryError::Short);
    }
    let (text, rest) = bytes.split_at(len);
    *bytes = rest;
    String::from_utf8(text.to_vec()).map_err(|_| EntryError::BadText)
}

fn take_hash(bytes: &mut &[u8]) -> Result<TokenHash, EntryError> {
    let hash = bytes
        .get(..32)
        .and_then(|h| TokenHash::try_from(h).ok())
        .ok_or(EntryError::Short)?;
    bytes.advance(32);
    Ok(hash)
}

fn take_hash_opt(bytes: &mut &[u8]) -> Result<Option<TokenHash>, EntryError> {
    match take_u8(bytes)? {
        0 => Ok(None),
        _ => take_hash(bytes).map(Some),
    }
}

fn take_u64(bytes: &mut &[u8]) -> Result<u64, EntryError> {
    if bytes.len() < 8 {
        return Err(EntryError::Short);
    }
    Ok(bytes.get_u64())
}

fn decode_command(bytes: &[u8], limits: &Limits) -> Result<Command, EntryError> {
    let mut decoder = Decoder::new(Encoding::Framed, Direction::ToServer, limits.clone());
    let mut buf = BytesMut::from(bytes);
    match decoder.decode_command(&mut buf) {
        Ok(Some(Ok(command))) if buf.is_empty() => Ok(command),
        Ok(Some(Ok(_))) => Err(EntryError::BadCommand("trailing bytes".into())),
        Ok(Some(Err(error))) => Err(EntryError::BadCommand(error.to_string())),
        Ok(None) => Err(EntryError::Short),
        Err(error) => Err(EntryError::BadCommand(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(entry: Entry) {
        let limits = Limits::server_default();
        assert_eq!(Entry::decode(&entry.encode(), &limits), Ok(entry));
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Entry::NodeUp { name: "n1".into() });
        round_trip(Entry::Heartbeat { incarnation: 7 });
        round_trip(Entry::NodeDown { incarnation: 7 });
        let conn = ConnId(first_conn_id(9));
        round_trip(Entry::Input {
            seq: 1,
            input: Input::Connect(conn),
        });
        round_trip(Entry::Input {
            seq: 2,
            input: Input::Command(
                conn,
                Command::Register {
                    name: "alice".into(),
                    status: "here".into(),
                },
            ),
        });
        round_trip(Entry::Input {
            seq: 3,
            input: Input::Command(
                conn,
                Command::SendMessage {
                    conv: 4,
                    text: "héllo".into(),
                    nonce: None,
                },
            ),
        });
        round_trip(Entry::Input {
            seq: 4,
            input: Input::Disconnect(conn),
        });
        assert_eq!(incarnation_of(conn), 9);
        let accounts = [
            Account::SignUp {
                name: "Alice".into(),
                phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                session: None,
            },
            Account::SignUp {
                name: "bob".into(),
                phc: "x".into(),
                session: Some([7; 32]),
            },
            Account::LogIn {
                name: "Alice".into(),
                status: Some("é".into()),
                proof: Proof::Password("phc".into()),
                session: Some([1; 32]),
            },
            Account::LogIn {
                name: "Alice".into(),
                status: None,
                proof: Proof::Session([2; 32]),
                session: None,
            },
            Account::LogOut {
                name: None,
                session: Some([3; 32]),
            },
            Account::LogOut {
                name: Some("alice".into()),
                session: None,
            },
            Account::Password {
                old: "a".into(),
                new: "b".into(),
                keep: Some([4; 32]),
            },
        ];
        for (n, account) in accounts.into_iter().enumerate() {
            round_trip(Entry::Input {
                seq: 10 + n as u64,
                input: Input::Account(conn, account),
            });
        }
        let batch = vec![
            Entry::Heartbeat { incarnation: 9 },
            Entry::Input {
                seq: 5,
                input: Input::Command(conn, Command::Join(4)),
            },
            Entry::Input {
                seq: 6,
                input: Input::Disconnect(conn),
            },
        ];
        let limits = Limits::server_default();
        let decoded = Entry::decode(&Entry::encode_all(&batch), &limits);
        assert_eq!(decoded, Ok(Entry::Batch(batch.clone())));
        round_trip(Entry::Batch(batch));
        // One entry goes as itself.
        let one = [Entry::Heartbeat { incarnation: 9 }];
        assert_eq!(Entry::encode_all(&one), one[0].encode());
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panicking() {
        // Every prefix of valid entries (cut short anywhere), and the same
        // with bytes flipped: an error or an entry, never a panic.
        let limits = Limits::server_default();
        let conn = ConnId(first_conn_id(3));
        let samples = [
            Entry::Input {
                seq: 1,
                input: Input::Account(
                    conn,
                    Account::LogIn {
                        name: "alice".into(),
                        status: Some("here".into()),
                        proof: Proof::Password("$argon2id$x".into()),
                        session: Some([9; 32]),
                    },
                ),
            },
            Entry::Input {
                seq: 2,
                input: Input::Account(
                    conn,
                    Account::Password {
                        old: "a".into(),
                        new: "b".into(),
                        keep: None,
                    },
                ),
            },
            Entry::Input {
                seq: 3,
                input: Input::Command(conn, Command::Join(4)),
            },
        ];
        let mut state = 0x9e37_79b9_u32;
        for sample in &samples {
            let bytes = Entry::encode_all(std::slice::from_ref(sample)).to_vec();
            for cut in 0..=bytes.len() {
                let _ = Entry::decode(&bytes[..cut], &limits);
                for _ in 0..8 {
                    let mut flipped = bytes[..cut].to_vec();
                    if flipped.is_empty() {
                        break;
                    }
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    let at = state as usize % flipped.len();
                    flipped[at] ^= (state >> 8) as u8 | 1;
                    let _ = Entry::decode(&flipped, &limits);
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let limits = Limits::server_default();
        assert_eq!(Entry::decode(&[], &limits), Err(EntryError::Empty));
        assert_eq!(
            Entry::decode(&[9], &limits),
            Err(EntryError::UnknownKind(9))
        );
        assert_eq!(Entry::decode(&[2, 1, 2], &limits), Err(EntryError::Short));
        let mut command = vec![COMMAND];
        command.extend_from_slice(&[0; 16]);
        command.extend_from_slice(b"\x00\x00\x00\x03abc");
        assert!(Entry::decode(&command, &limits).is_err());
        // An account change cut short, of an unknown kind, or not UTF-8.
        let mut account = vec![ACCOUNT];
        account.extend_from_slice(&[0; 16]);
        for (tail, error) in [
            (&[SIGN_UP, 0, 5, b'a'][..], EntryError::Short),
            (&[9][..], EntryError::UnknownAccount(9)),
            (&[SIGN_UP, 0, 1, 0xff, 0, 0, 0][..], EntryError::BadText),
            (&[LOG_IN_SESSION, 0, 0, 0, 1, 2][..], EntryError::Short),
        ] {
            let mut bytes = account.clone();
            bytes.extend_from_slice(tail);
            assert_eq!(Entry::decode(&bytes, &limits), Err(error), "{tail:?}");
        }
        // A batch whose length runs past its end, and one inside another.
        assert_eq!(
            Entry::decode(&[BATCH, 0, 0, 0, 9, HEARTBEAT], &limits),
            Err(EntryError::Short)
        );
        let inner = Entry::encode_all(&[
            Entry::Heartbeat { incarnation: 1 },
            Entry::Heartbeat { incarnation: 2 },
        ]);
        let mut nested = vec![BATCH];
        nested.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        nested.extend_from_slice(&inner);
        assert_eq!(
            Entry::decode(&nested, &limits),
            Err(EntryError::NestedBatch)
        );
    }
}
