//! Messages a server sends, typed.
//!
//! The server builds a [`ServerMessage`] once and encodes it once per
//! encoding in use ([`crate::codec::encode_message`]); clients decode with
//! [`ServerMessage::from_raw`].

use crate::ConvId;
use crate::pickle::Value;
use crate::sink::ArgSink;
use crate::wire::RawMessage;

/// A server → client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// `ONLINE_USERS {username: status}`: every registered user.
    OnlineUsers(Vec<(String, String)>),
    /// `PRESENCE {username: status | None}` (capability `presence-delta`):
    /// users who arrived or changed status; `None` for users who left.
    Presence(Vec<(String, Option<String>)>),
    /// `INVITATION [convID, inviter]`
    Invitation { conv: ConvId, inviter: String },
    /// `CONVERSATIONS {convID: [member, ...]}`, members sorted.
    Conversations(Vec<(ConvId, Vec<String>)>),
    /// `MESSAGE [convID, sender, message]`; with the `history` capability
    /// `[convID, sender, message, {"seq": n, "ts": ms}]` (plus `"nonce"` for
    /// the sender's own devices).
    Message {
        conv: ConvId,
        sender: String,
        text: String,
        meta: Option<MessageMeta>,
    },
    /// `HISTORY [convID, [[seq, ts, sender, message], ...]]`, oldest first.
    History {
        conv: ConvId,
        entries: Vec<HistoryEntry>,
    },
    /// `UNREAD {convID: [last_seq, last_read_seq]}` after REGISTER
    /// (capability `history`), for every conversation the user is in.
    Unread(Vec<(ConvId, u64, u64)>),
    /// `TOPIC [convID, text, setter]` (capability `topics`).
    Topic {
        conv: ConvId,
        text: String,
        setter: String,
    },
    /// `MEMBERS [convID, [member, ...]]` (capability `members`), sorted.
    Members { conv: ConvId, members: Vec<String> },
    /// `CAPS [name, ...]`: the capabilities the server enabled.
    Caps(Vec<String>),
    /// `ERROR "text"`: the argument is a bare string.
    Error(String),
    /// `SIGNED_UP [username]`: SIGNUP created this account.
    SignedUp(String),
    /// `SESSION [token]` (capability `session`): a token that works as the
    /// secret of later REGISTERs. Its `Debug` hides the token.
    Session(crate::command::Secret),
    /// `PASSWORD_CHANGED [username]`: PASSWORD succeeded.
    PasswordChanged(String),
    /// `USERS {username: status}`: the answer to `LIST_USERS`, sorted.
    Users(Vec<(String, String)>),
}

/// The fourth element of `MESSAGE` for `history` clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// Per-conversation sequence number, never reused.
    pub seq: u64,
    /// When the server accepted it, in Unix milliseconds.
    pub ts: i64,
    /// The sender's nonce, only on the sender's own devices.
    pub nonce: Option<String>,
}

/// One stored message in a `HISTORY` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub seq: u64,
    pub ts: i64,
    pub sender: String,
    pub text: String,
}

/// A server message a client could not make sense of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected {word} from server: {reason}")]
pub struct MessageError {
    pub word: String,
    pub reason: String,
}

impl ServerMessage {
    pub fn word(&self) -> &'static str {
        match self {
            ServerMessage::OnlineUsers(_) => "ONLINE_USERS",
            ServerMessage::Presence(_) => "PRESENCE",
            ServerMessage::Invitation { .. } => "INVITATION",
            ServerMessage::Conversations(_) => "CONVERSATIONS",
            ServerMessage::Message { .. } => "MESSAGE",
            ServerMessage::History { .. } => "HISTORY",
            ServerMessage::Unread(_) => "UNREAD",
            ServerMessage::Topic { .. } => "TOPIC",
            ServerMessage::Members { .. } => "MEMBERS",
            ServerMessage::Caps(_) => "CAPS",
            ServerMessage::Error(_) => "ERROR",
            ServerMessage::SignedUp(_) => "SIGNED_UP",
            ServerMessage::Session(_) => "SESSION",
            ServerMessage::PasswordChanged(_) => "PASSWORD_CHANGED",
            ServerMessage::Users(_) => "USERS",
        }
    }

    /// Whether this message names a conversation for which `named` is
    /// true: what a server holds back while a conversation's creation is
    /// not stored yet.
    pub fn names_conversation(&self, mut named: impl FnMut(ConvId) -> bool) -> bool {
        match self {
            ServerMessage::Invitation { conv, .. }
            | ServerMessage::Message { conv, .. }
            | ServerMessage::History { conv, .. }
            | ServerMessage::Topic { conv, .. }
            | ServerMessage::Members { conv, .. } => named(*conv),
            ServerMessage::Conversations(convs) => convs.iter().any(|(conv, _)| named(*conv)),
            ServerMessage::Unread(convs) => convs.iter().any(|(conv, ..)| named(*conv)),
            ServerMessage::OnlineUsers(_)
            | ServerMessage::Presence(_)
            | ServerMessage::Caps(_)
            | ServerMessage::Error(_)
            | ServerMessage::SignedUp(_)
            | ServerMessage::Session(_)
            | ServerMessage::PasswordChanged(_)
            | ServerMessage::Users(_) => false,
        }
    }

    /// Types a raw message from a server (client side). Lenient where the
    /// contract allows (ids as JSON string keys, lists or tuples).
    pub fn from_raw(raw: RawMessage) -> Result<ServerMessage, MessageError> {
        let RawMessage { word, args } = raw;
        let fail = |reason: String| MessageError {
            word: word.clone(),
            reason,
        };
        let args = args.ok_or_else(|| fail("no arguments".into()))?;
        type_args(&word, args).map_err(fail)
    }

    /// The raw form: what [`ServerMessage::write_args`] writes, as a value.
    pub fn to_raw(&self) -> RawMessage {
        let str = |s: &str| Value::Str(s.to_owned());
        let conv = |id: ConvId| Value::Int(id as i64);
        let strs = |v: &[String]| Value::List(v.iter().map(|s| str(s)).collect());
        let args = match self {
            ServerMessage::OnlineUsers(users) | ServerMessage::Users(users) => {
                Value::Dict(users.iter().map(|(n, s)| (str(n), str(s))).collect())
            }
            ServerMessage::Presence(changes) => Value::Dict(
                changes
                    .iter()
                    .map(|(n, s)| (str(n), s.as_deref().map_or(Value::None, str)))
                    .collect(),
            ),
            ServerMessage::Invitation { conv: id, inviter } => {
                Value::List(vec![conv(*id), str(inviter)])
            }
            ServerMessage::Conversations(convs) => {
                Value::Dict(convs.iter().map(|(id, m)| (conv(*id), strs(m))).collect())
            }
            ServerMessage::Message {
                conv: id,
                sender,
                text,
                meta,
            } => {
                let mut items = vec![conv(*id), str(sender), str(text)];
                if let Some(meta) = meta {
                    let mut pairs = vec![
                        (str("seq"), Value::Int(meta.seq as i64)),
                        (str("ts"), Value::Int(meta.ts)),
                    ];
                    if let Some(nonce) = &meta.nonce {
                        pairs.push((str("nonce"), str(nonce)));
                    }
                    items.push(Value::Dict(pairs));
                }
                Value::List(items)
            }
            ServerMessage::History { conv: id, entries } => Value::List(vec![
                conv(*id),
                Value::List(
                    entries
                        .iter()
                        .map(|e| {
                            Value::List(vec![
                                Value::Int(e.seq as i64),
                                Value::Int(e.ts),
                                str(&e.sender),
                                str(&e.text),
                            ])
                        })
                        .collect(),
                ),
            ]),
            ServerMessage::Unread(convs) => Value::Dict(
                convs
                    .iter()
                    .map(|(id, last, read)| {
                        let pair = vec![Value::Int(*last as i64), Value::Int(*read as i64)];
                        (conv(*id), Value::List(pair))
                    })
                    .collect(),
            ),
            ServerMessage::Topic {
                conv: id,
                text,
                setter,
            } => Value::List(vec![conv(*id), str(text), str(setter)]),
            ServerMessage::Members { conv: id, members } => {
                Value::List(vec![conv(*id), strs(members)])
            }
            ServerMessage::Caps(names) => strs(names),
            ServerMessage::Error(text) => str(text),
            ServerMessage::SignedUp(name) | ServerMessage::PasswordChanged(name) => {
                Value::List(vec![str(name)])
            }
            ServerMessage::Session(token) => Value::List(vec![str(token.expose())]),
        };
        RawMessage {
            word: self.word().to_owned(),
            args: Some(args),
        }
    }

    /// Describes the arguments to `sink`, which writes them as a pickle or
    /// as JSON without an intermediate [`Value`].
    pub(crate) fn write_args(&self, sink: &mut impl ArgSink) {
        let strs = |sink: &mut _, names: &[String]| write_strings(sink, names);
        match self {
            ServerMessage::OnlineUsers(users) | ServerMessage::Users(users) => {
                sink.dict_begin();
                for (name, status) in users {
                    sink.key_str(name);
                    sink.str(status);
                }
                sink.dict_end();
            }
            ServerMessage::Presence(changes) => {
                sink.dict_begin();
                for (name, status) in changes {
                    sink.key_str(name);
                    match status {
                        Some(status) => sink.str(status),
                        None => sink.none(),
                    }
                }
                sink.dict_end();
            }
            ServerMessage::Invitation { conv, inviter } => {
                sink.list_begin();
                sink.int(*conv as i64);
                sink.str(inviter);
                sink.list_end();
            }
            ServerMessage::Conversations(convs) => {
                sink.dict_begin();
                for (conv, members) in convs {
                    sink.key_conv(*conv);
                    strs(sink, members);
                }
                sink.dict_end();
            }
            ServerMessage::Message {
                conv,
                sender,
                text,
                meta,
            } => {
                sink.list_begin();
                sink.int(*conv as i64);
                sink.str(sender);
                sink.str(text);
                if let Some(meta) = meta {
                    sink.dict_begin();
                    sink.key_str("seq");
                    sink.int(meta.seq as i64);
                    sink.key_str("ts");
                    sink.int(meta.ts);
                    if let Some(nonce) = &meta.nonce {
                        sink.key_str("nonce");
                        sink.str(nonce);
                    }
                    sink.dict_end();
                }
                sink.list_end();
            }
            ServerMessage::History { conv, entries } => {
                sink.list_begin();
                sink.int(*conv as i64);
                sink.list_begin();
                for entry in entries {
                    sink.list_begin();
                    sink.int(entry.seq as i64);
                    sink.int(entry.ts);
                    sink.str(&entry.sender);
                    sink.str(&entry.text);
                    sink.list_end();
                }
                sink.list_end();
                sink.list_end();
            }
            ServerMessage::Unread(convs) => {
                sink.dict_begin();
                for (conv, last, read) in convs {
                    sink.key_conv(*conv);
                    sink.list_begin();
                    sink.int(*last as i64);
                    sink.int(*read as i64);
                    sink.list_end();
                }
                sink.dict_end();
            }
            ServerMessage::Topic { conv, text, setter } => {
                sink.list_begin();
                sink.int(*conv as i64);
                sink.str(text);
                sink.str(setter);
                sink.list_end();
            }
            ServerMessage::Members { conv, members } => {
                sink.list_begin();
                sink.int(*conv as i64);
                strs(sink, members);
                sink.list_end();
            }
            ServerMessage::Caps(names) => strs(sink, names),
            ServerMessage::Error(text) => sink.str(text),
            ServerMessage::SignedUp(name) | ServerMessage::PasswordChanged(name) => {
                sink.list_begin();
                sink.str(name);
                sink.list_end();
            }
            ServerMessage::Session(token) => {
                sink.list_begin();
                sink.str(token.expose());
                sink.list_end();
            }
        }
    }

    /// A guess at the encoded size, so the output buffer is allocated once.
    pub(crate) fn size_hint(&self) -> usize {
        let strs = |v: &[String]| v.iter().map(|s| s.len() + 8).sum::<usize>();
        32 + match self {
            ServerMessage::OnlineUsers(users) | ServerMessage::Users(users) => {
                users.iter().map(|(n, s)| n.len() + s.len() + 14).sum()
            }
            ServerMessage::Presence(changes) => changes
                .iter()
                .map(|(n, s)| n.len() + s.as_ref().map_or(0, String::len) + 14)
                .sum(),
            ServerMessage::Invitation { inviter, .. } => inviter.len() + 16,
            ServerMessage::Conversations(convs) => convs.iter().map(|(_, m)| strs(m) + 16).sum(),
            ServerMessage::Message {
                sender, text, meta, ..
            } => {
                sender.len()
                    + text.len()
                    + 24
                    + meta
                        .as_ref()
                        .map_or(0, |m| 48 + m.nonce.as_ref().map_or(0, String::len))
            }
            ServerMessage::History { entries, .. } => entries
                .iter()
                .map(|e| e.sender.len() + e.text.len() + 40)
                .sum(),
            ServerMessage::Unread(convs) => convs.len() * 32,
            ServerMessage::Topic { text, setter, .. } => text.len() + setter.len() + 16,
            ServerMessage::Members { members, .. } => strs(members) + 16,
            ServerMessage::Caps(names) => strs(names),
            ServerMessage::Error(text) => text.len() + 8,
            ServerMessage::SignedUp(name) | ServerMessage::PasswordChanged(name) => name.len() + 8,
            ServerMessage::Session(token) => token.expose().len() + 8,
        }
    }
}

/// Types the arguments of the server message `word`.
fn type_args(word: &str, args: Value) -> Result<ServerMessage, String> {
    match word {
        "ONLINE_USERS" => statuses(args).map(ServerMessage::OnlineUsers),
        "USERS" => statuses(args).map(ServerMessage::Users),
        "PRESENCE" => dict(args)?
            .into_iter()
            .map(|(k, v)| {
                let status = match v {
                    Value::None => None,
                    other => Some(string(other, "status")?),
                };
                Ok((string(k, "username")?, status))
            })
            .collect::<Result<_, String>>()
            .map(ServerMessage::Presence),
        "INVITATION" => seq::<2>(args).and_then(|[conv, inviter]| {
            Ok(ServerMessage::Invitation {
                conv: conv_id(conv)?,
                inviter: string(inviter, "inviter")?,
            })
        }),
        "CONVERSATIONS" => dict(args)?
            .into_iter()
            .map(|(k, v)| Ok((conv_id(k)?, strings(v, "member")?)))
            .collect::<Result<_, String>>()
            .map(ServerMessage::Conversations),
        "MESSAGE" => message(args),
        "HISTORY" => seq::<2>(args).and_then(|[conv, entries]| {
            Ok(ServerMessage::History {
                conv: conv_id(conv)?,
                entries: list(entries)?
                    .into_iter()
                    .map(history_entry)
                    .collect::<Result<_, String>>()?,
            })
        }),
        "UNREAD" => dict(args)?
            .into_iter()
            .map(|(k, v)| {
                let [last, read] = seq::<2>(v)?;
                Ok((
                    conv_id(k)?,
                    count(last, "last_seq")?,
                    count(read, "last_read_seq")?,
                ))
            })
            .collect::<Result<_, String>>()
            .map(ServerMessage::Unread),
        "TOPIC" => seq::<3>(args).and_then(|[conv, text, setter]| {
            Ok(ServerMessage::Topic {
                conv: conv_id(conv)?,
                text: string(text, "topic")?,
                setter: string(setter, "setter")?,
            })
        }),
        "MEMBERS" => seq::<2>(args).and_then(|[conv, members]| {
            Ok(ServerMessage::Members {
                conv: conv_id(conv)?,
                members: strings(members, "member")?,
            })
        }),
        "CAPS" => strings(args, "capability").map(ServerMessage::Caps),
        "ERROR" => match args {
            Value::List(mut items) | Value::Tuple(mut items) if items.len() == 1 => {
                string(items.remove(0), "error text")
            }
            bare => string(bare, "error text"),
        }
        .map(ServerMessage::Error),
        "SIGNED_UP" => seq::<1>(args)
            .and_then(|[name]| string(name, "username"))
            .map(ServerMessage::SignedUp),
        "PASSWORD_CHANGED" => seq::<1>(args)
            .and_then(|[name]| string(name, "username"))
            .map(ServerMessage::PasswordChanged),
        "SESSION" => seq::<1>(args)
            .and_then(|[token]| string(token, "token"))
            .map(|token| ServerMessage::Session(crate::command::Secret::new(token))),
        _ => Err("unknown message".to_owned()),
    }
}

/// `{username: status}`, as ONLINE_USERS and USERS carry it.
fn statuses(args: Value) -> Result<Vec<(String, String)>, String> {
    dict(args)?
        .into_iter()
        .map(|(k, v)| Ok((string(k, "username")?, string(v, "status")?)))
        .collect()
}

/// `MESSAGE [convID, sender, message]`, with an optional metadata dict.
fn message(args: Value) -> Result<ServerMessage, String> {
    let mut items = list(args)?;
    let meta = match items.len() {
        3 => None,
        4 => Some(message_meta(items.pop().expect("four items"))?),
        n => return Err(format!("expected 3 or 4 arguments, got {n}")),
    };
    let [conv, sender, text] = <[Value; 3]>::try_from(items).expect("three items");
    Ok(ServerMessage::Message {
        conv: conv_id(conv)?,
        sender: string(sender, "sender")?,
        text: string(text, "message")?,
        meta,
    })
}

fn message_meta(value: Value) -> Result<MessageMeta, String> {
    let mut meta = MessageMeta {
        seq: 0,
        ts: 0,
        nonce: None,
    };
    for (key, value) in dict(value)? {
        match (string(key, "metadata key")?.as_str(), value) {
            ("seq", value) => meta.seq = count(value, "seq")?,
            ("ts", Value::Int(ts)) => meta.ts = ts,
            ("nonce", value) => meta.nonce = Some(string(value, "nonce")?),
            _ => {} // newer servers may add keys
        }
    }
    Ok(meta)
}

fn history_entry(value: Value) -> Result<HistoryEntry, String> {
    let [seq, ts, sender, text] = seq::<4>(value)?;
    Ok(HistoryEntry {
        seq: count(seq, "seq")?,
        ts: match ts {
            Value::Int(ts) => ts,
            other => return Err(format!("ts must be an integer, got {}", other.type_name())),
        },
        sender: string(sender, "sender")?,
        text: string(text, "message")?,
    })
}

fn list(value: Value) -> Result<Vec<Value>, String> {
    match value {
        Value::List(items) | Value::Tuple(items) => Ok(items),
        other => Err(format!("expected a list, got {}", other.type_name())),
    }
}

fn count(value: Value, what: &str) -> Result<u64, String> {
    match value {
        Value::Int(n) if n >= 0 => Ok(n as u64),
        other => Err(format!(
            "{what} must be a non-negative integer, got {other:?}"
        )),
    }
}

fn write_strings(sink: &mut impl ArgSink, items: &[String]) {
    sink.list_begin();
    for item in items {
        sink.str(item);
    }
    sink.list_end();
}

fn dict(args: Value) -> Result<Vec<(Value, Value)>, String> {
    match args {
        Value::Dict(pairs) => Ok(pairs),
        other => Err(format!("expected a dict, got {}", other.type_name())),
    }
}

fn seq<const N: usize>(args: Value) -> Result<[Value; N], String> {
    match args {
        Value::List(items) | Value::Tuple(items) => {
            let got = items.len();
            <[Value; N]>::try_from(items).map_err(|_| format!("expected {N} arguments, got {got}"))
        }
        other => Err(format!("expected a list, got {}", other.type_name())),
    }
}

fn string(value: Value, what: &str) -> Result<String, String> {
    match value {
        Value::Str(s) => Ok(s),
        other => Err(format!(
            "{what} must be a string, got {}",
            other.type_name()
        )),
    }
}

fn strings(value: Value, what: &str) -> Result<Vec<String>, String> {
    match value {
        Value::List(items) | Value::Tuple(items) => {
            items.into_iter().map(|v| string(v, what)).collect()
        }
        other => Err(format!(
            "expected a list of {what}s, got {}",
            other.type_name()
        )),
    }
}

/// A conversation id: an int, or in JSON a dict key such as `"3"`.
fn conv_id(value: Value) -> Result<ConvId, String> {
    match value {
        Value::Int(id) if id >= 0 => Ok(id as ConvId),
        Value::Str(text) => text
            .parse::<ConvId>()
            .map_err(|_| format!("conversation id {text:?} is not a number")),
        other => Err(format!("conversation id must be an integer, got {other:?}")),
    }
}
