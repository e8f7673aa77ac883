//! Commands a client sends, typed and validated.
//!
//! [`Command::from_raw`] turns a [`RawMessage`] into a [`Command`], checking
//! argument count, types and the contract's limits (name syntax and length,
//! status length, message size). [`CommandError`]'s `Display` is the text the
//! server puts in its `ERROR` reply, so it says what was wrong and why.
//! [`Command::to_raw`] is the reverse, for clients.

use crate::ConvId;
use crate::limits::Limits;
use crate::pickle::Value;
use crate::wire::RawMessage;

/// A client → server command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `CAPS [name, ...]`, before REGISTER: ask for protocol extensions.
    Caps(Vec<String>),
    /// `REGISTER [username, status]`: as a guest.
    Register { name: String, status: String },
    /// `REGISTER [username, status, secret]`: as an account, with its
    /// password or a session token.
    Login {
        name: String,
        status: String,
        secret: Secret,
    },
    /// `SIGNUP [username, password]`, before REGISTER: creates an account.
    Signup { name: String, password: Secret },
    /// `LOGOUT`: ends this connection's session token and the connection.
    Logout,
    /// `PASSWORD [old, new]`: changes the account's password and ends its
    /// other sessions.
    Password { old: Secret, new: Secret },
    /// `STATUS [status]`
    Status(String),
    /// `GOODBYE`
    Goodbye,
    /// `INVITE [username, ...]`
    Invite(Vec<String>),
    /// `LIST_CONVERSATIONS`
    ListConversations,
    /// `JOIN [convID]`
    Join(ConvId),
    /// `SEND_MESSAGE [convID, message]`, or `[convID, message, nonce]`
    /// (capability `history`): the nonce makes a resend safe.
    SendMessage {
        conv: ConvId,
        text: String,
        nonce: Option<String>,
    },
    /// `LEAVE [convID]`
    Leave(ConvId),
    /// `HISTORY [convID, before_seq, limit]`: stored messages with a seq
    /// below `before_seq` (0: the newest), at most `limit`.
    History {
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    },
    /// `READ [convID, seq]`: read up to `seq`, on every device.
    Read { conv: ConvId, seq: u64 },
    /// `TOPIC [convID, text]` (capability `topics`): names a conversation.
    Topic { conv: ConvId, text: String },
    /// `WATCH [username, ...]` (capability `presence-scope`): also get
    /// presence for these users.
    Watch(Vec<String>),
    /// `UNWATCH [username, ...]`: stop watching these users.
    Unwatch(Vec<String>),
    /// `LIST_USERS [prefix, limit]`: at most `limit` online users whose
    /// names start with `prefix` (case-insensitive), for search.
    ListUsers { prefix: String, limit: usize },
}

/// A password or session token. Its `Debug` never shows the text, so a
/// command can be logged without leaking it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The secret itself: only for hashing, verifying or sending it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Shortest and longest password, in bytes of UTF-8 (the contract's).
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;
/// Longest secret accepted in REGISTER (a password or a token).
pub const MAX_SECRET: usize = MAX_PASSWORD;

/// Longest nonce a client may attach to a message, in characters.
pub const MAX_NONCE: usize = 64;
/// Longest topic, in characters.
pub const MAX_TOPIC: usize = 256;
/// Most messages one `HISTORY` returns; larger limits are reduced to it.
pub const MAX_HISTORY: usize = 500;
/// Most users one `LIST_USERS` returns; larger limits are reduced to it.
pub const MAX_LIST_USERS: usize = 100;

/// Why a command could not be accepted. Never fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("{command} takes arguments: {usage}")]
    MissingArguments {
        command: &'static str,
        usage: &'static str,
    },
    #[error("{command} expects {usage}")]
    BadArguments {
        command: &'static str,
        usage: &'static str,
    },
    /// Like `BadArguments`, saying which argument was wrong.
    #[error("{command} expects {usage}: {detail}")]
    BadArgument {
        command: &'static str,
        usage: &'static str,
        detail: String,
    },
    #[error("invalid username {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid username {name:?}: too long ({len} characters, at most {max})")]
    NameTooLong {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("status is too long ({len} characters, at most {max})")]
    StatusTooLong { len: usize, max: usize },
    #[error("message is too long ({len} bytes, at most {max})")]
    MessageTooLong { len: usize, max: usize },
    #[error("nonce is too long ({len} characters, at most {MAX_NONCE})")]
    NonceTooLong { len: usize },
    #[error("topic is too long ({len} characters, at most {MAX_TOPIC})")]
    TopicTooLong { len: usize },
    #[error("password must be {MIN_PASSWORD} to {MAX_PASSWORD} bytes, got {len}")]
    BadPasswordLength { len: usize },
}

impl Command {
    /// The command word on the wire.
    pub fn word(&self) -> &'static str {
        match self {
            Command::Caps(_) => "CAPS",
            Command::Register { .. } | Command::Login { .. } => "REGISTER",
            Command::Signup { .. } => "SIGNUP",
            Command::Logout => "LOGOUT",
            Command::Password { .. } => "PASSWORD",
            Command::Status(_) => "STATUS",
            Command::Goodbye => "GOODBYE",
            Command::Invite(_) => "INVITE",
            Command::ListConversations => "LIST_CONVERSATIONS",
            Command::Join(_) => "JOIN",
            Command::SendMessage { .. } => "SEND_MESSAGE",
            Command::Leave(_) => "LEAVE",
            Command::History { .. } => "HISTORY",
            Command::Read { .. } => "READ",
            Command::Topic { .. } => "TOPIC",
            Command::Watch(_) => "WATCH",
            Command::Unwatch(_) => "UNWATCH",
            Command::ListUsers { .. } => "LIST_USERS",
        }
    }

    /// Types and validates a raw message from a client.
    ///
    /// Arguments are a list or tuple; for one-argument commands a bare value
    /// is accepted too. Arguments sent to GOODBYE / LIST_CONVERSATIONS are
    /// ignored.
    pub fn from_raw(raw: RawMessage, limits: &Limits) -> Result<Command, CommandError> {
        Command::from_parts(&raw.word, raw.args, limits)
    }

    /// [`Command::from_raw`] for a word and arguments held apart.
    pub fn from_parts(
        word: &str,
        args: Option<Value>,
        limits: &Limits,
    ) -> Result<Command, CommandError> {
        match word {
            "GOODBYE" => Ok(Command::Goodbye),
            "LIST_CONVERSATIONS" => Ok(Command::ListConversations),
            "LOGOUT" => Ok(Command::Logout),
            "REGISTER" => {
                // Course clients send two arguments; the secret is an extension.
                const USAGE: &str = "[username, status]";
                let args = Args::new("REGISTER", USAGE, args)?;
                let (name, status, secret) = match args.values.len() {
                    3 => {
                        let [name, status, secret] = args.exactly()?;
                        (name, status, Some(secret))
                    }
                    _ => {
                        let [name, status] = args.exactly()?;
                        (name, status, None)
                    }
                };
                let name = name_arg(name, "username", limits)?;
                let status = status_arg(status, "REGISTER", USAGE, limits)?;
                match secret {
                    None => Ok(Command::Register { name, status }),
                    Some(secret) => Ok(Command::Login {
                        name,
                        status,
                        secret: secret_arg(secret, "REGISTER", USAGE, "secret", 1)?,
                    }),
                }
            }
            "SIGNUP" => {
                const USAGE: &str = "[username, password]";
                let [name, password] = Args::new("SIGNUP", USAGE, args)?.exactly()?;
                let name = name_arg(name, "username", limits)?;
                let password = password_arg(password, "SIGNUP", USAGE, "password")?;
                Ok(Command::Signup { name, password })
            }
            "PASSWORD" => {
                const USAGE: &str = "[old, new]";
                let [old, new] = Args::new("PASSWORD", USAGE, args)?.exactly()?;
                let old = secret_arg(old, "PASSWORD", USAGE, "old password", 1)?;
                let new = password_arg(new, "PASSWORD", USAGE, "new password")?;
                Ok(Command::Password { old, new })
            }
            "STATUS" => {
                let [status] = Args::new("STATUS", "[status]", args)?.exactly()?;
                Ok(Command::Status(status_arg(
                    status, "STATUS", "[status]", limits,
                )?))
            }
            "INVITE" => Ok(Command::Invite(names_arg("INVITE", args, limits)?)),
            "WATCH" => Ok(Command::Watch(names_arg("WATCH", args, limits)?)),
            "UNWATCH" => Ok(Command::Unwatch(names_arg("UNWATCH", args, limits)?)),
            "LIST_USERS" => {
                const USAGE: &str = "[prefix, limit]";
                let [prefix, limit] = Args::new("LIST_USERS", USAGE, args)?.exactly()?;
                let prefix = string_arg(prefix, "LIST_USERS", USAGE, "prefix")?;
                // A prefix longer than any name could match nothing.
                if prefix.chars().count() > limits.max_name {
                    return Err(CommandError::BadArgument {
                        command: "LIST_USERS",
                        usage: USAGE,
                        detail: format!("prefix is longer than a username ({})", limits.max_name),
                    });
                }
                let limit = count_arg(limit, "LIST_USERS", USAGE, "limit")?;
                if limit == 0 {
                    return Err(CommandError::BadArgument {
                        command: "LIST_USERS",
                        usage: USAGE,
                        detail: "limit must be at least 1".into(),
                    });
                }
                let limit = limit.min(MAX_LIST_USERS as u64) as usize;
                Ok(Command::ListUsers { prefix, limit })
            }
            "JOIN" => {
                let args = Args::new("JOIN", "[convID]", args)?;
                let [conv] = args.exactly()?;
                Ok(Command::Join(conv_arg(conv, "JOIN", "[convID]")?))
            }
            "LEAVE" => {
                let [conv] = Args::new("LEAVE", "[convID]", args)?.exactly()?;
                Ok(Command::Leave(conv_arg(conv, "LEAVE", "[convID]")?))
            }
            "SEND_MESSAGE" => {
                // Course clients know the two-argument form; the nonce is an extension.
                const USAGE: &str = "[convID, message]";
                let args = Args::new("SEND_MESSAGE", USAGE, args)?;
                let (conv, text, nonce) = match args.values.len() {
                    3 => {
                        let [conv, text, nonce] = args.exactly()?;
                        (conv, text, Some(nonce))
                    }
                    _ => {
                        let [conv, text] = args.exactly()?;
                        (conv, text, None)
                    }
                };
                let conv = conv_arg(conv, "SEND_MESSAGE", USAGE)?;
                let text = string_arg(text, "SEND_MESSAGE", USAGE, "message")?;
                if text.len() > limits.max_message {
                    return Err(CommandError::MessageTooLong {
                        len: text.len(),
                        max: limits.max_message,
                    });
                }
                let nonce = match nonce {
                    Some(nonce) => Some(nonce_arg(nonce, USAGE)?),
                    None => None,
                };
                Ok(Command::SendMessage { conv, text, nonce })
            }
            "HISTORY" => {
                const USAGE: &str = "[convID, before_seq, limit]";
                let [conv, before, limit] = Args::new("HISTORY", USAGE, args)?.exactly()?;
                let conv = conv_arg(conv, "HISTORY", USAGE)?;
                let before_seq = count_arg(before, "HISTORY", USAGE, "before_seq")?;
                let limit = count_arg(limit, "HISTORY", USAGE, "limit")?;
                if limit == 0 {
                    return Err(CommandError::BadArgument {
                        command: "HISTORY",
                        usage: USAGE,
                        detail: "limit must be at least 1".into(),
                    });
                }
                let limit = (limit as usize).min(MAX_HISTORY);
                Ok(Command::History {
                    conv,
                    before_seq,
                    limit,
                })
            }
            "READ" => {
                const USAGE: &str = "[convID, seq]";
                let [conv, seq] = Args::new("READ", USAGE, args)?.exactly()?;
                let conv = conv_arg(conv, "READ", USAGE)?;
                let seq = count_arg(seq, "READ", USAGE, "seq")?;
                Ok(Command::Read { conv, seq })
            }
            "TOPIC" => {
                const USAGE: &str = "[convID, text]";
                let [conv, text] = Args::new("TOPIC", USAGE, args)?.exactly()?;
                let conv = conv_arg(conv, "TOPIC", USAGE)?;
                let text = string_arg(text, "TOPIC", USAGE, "text")?;
                let len = text.chars().count();
                if len > MAX_TOPIC {
                    return Err(CommandError::TopicTooLong { len });
                }
                Ok(Command::Topic { conv, text })
            }
            "CAPS" => {
                let args = Args::new("CAPS", "[name, ...]", args)?;
                Ok(Command::Caps(args.all_strings("capability name")?))
            }
            _ => Err(CommandError::UnknownCommand(preview(word))),
        }
    }

    /// The raw form, for a client to encode.
    pub fn to_raw(&self) -> RawMessage {
        let strings =
            |items: &[String]| Value::List(items.iter().cloned().map(Value::Str).collect());
        let conv = |id: ConvId| Value::Int(id as i64);
        let args = match self {
            Command::Goodbye | Command::ListConversations | Command::Logout => None,
            Command::Login {
                name,
                status,
                secret,
            } => Some(Value::List(vec![
                Value::Str(name.clone()),
                Value::Str(status.clone()),
                Value::Str(secret.expose().to_owned()),
            ])),
            Command::Signup { name, password } => Some(Value::List(vec![
                Value::Str(name.clone()),
                Value::Str(password.expose().to_owned()),
            ])),
            Command::Password { old, new } => Some(Value::List(vec![
                Value::Str(old.expose().to_owned()),
                Value::Str(new.expose().to_owned()),
            ])),
            Command::Caps(names)
            | Command::Invite(names)
            | Command::Watch(names)
            | Command::Unwatch(names) => Some(strings(names)),
            Command::ListUsers { prefix, limit } => Some(Value::List(vec![
                Value::Str(prefix.clone()),
                Value::Int(*limit as i64),
            ])),
            Command::Register { name, status } => Some(Value::List(vec![
                Value::Str(name.clone()),
                Value::Str(status.clone()),
            ])),
            Command::Status(status) => Some(Value::List(vec![Value::Str(status.clone())])),
            Command::Join(id) | Command::Leave(id) => Some(Value::List(vec![conv(*id)])),
            Command::SendMessage {
                conv: id,
                text,
                nonce,
            } => {
                let mut items = vec![conv(*id), Value::Str(text.clone())];
                items.extend(nonce.iter().cloned().map(Value::Str));
                Some(Value::List(items))
            }
            Command::History {
                conv: id,
                before_seq,
                limit,
            } => Some(Value::List(vec![
                conv(*id),
                Value::Int(*before_seq as i64),
                Value::Int(*limit as i64),
            ])),
            Command::Read { conv: id, seq } => {
                Some(Value::List(vec![conv(*id), Value::Int(*seq as i64)]))
            }
            Command::Topic { conv: id, text } => {
                Some(Value::List(vec![conv(*id), Value::Str(text.clone())]))
            }
        };
        RawMessage {
            word: self.word().to_owned(),
            args,
        }
    }
}

/// Checks a username against the contract: 1–`max` characters, each a
/// letter (Unicode letters allowed), digit, `_`, `-` or `.`.
pub fn validate_name(name: &str, limits: &Limits) -> Result<(), CommandError> {
    if name.is_empty() {
        return Err(CommandError::InvalidName {
            name: String::new(),
            reason: "it is empty",
        });
    }
    let len = name.chars().count();
    if len > limits.max_name {
        return Err(CommandError::NameTooLong {
            name: preview(name),
            len,
            max: limits.max_name,
        });
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(CommandError::InvalidName {
            name: name.to_owned(),
            reason: "only letters, digits, '_', '-' and '.' are allowed",
        });
    }
    Ok(())
}

/// Longest excerpt of client-supplied text quoted back in an error.
const PREVIEW_CHARS: usize = 40;

/// At most [`PREVIEW_CHARS`] characters of `text`, so an error never
/// echoes a whole hostile frame.
fn preview(text: &str) -> String {
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The arguments of one command, as a sequence.
struct Args {
    command: &'static str,
    usage: &'static str,
    values: Vec<Value>,
}

impl Args {
    /// A list or tuple gives its items; a bare value is one argument.
    fn new(
        command: &'static str,
        usage: &'static str,
        args: Option<Value>,
    ) -> Result<Args, CommandError> {
        let values = match args {
            None => return Err(CommandError::MissingArguments { command, usage }),
            Some(Value::List(items) | Value::Tuple(items)) => items,
            Some(bare) => vec![bare],
        };
        Ok(Args {
            command,
            usage,
            values,
        })
    }

    fn wrong(&self, detail: String) -> CommandError {
        CommandError::BadArgument {
            command: self.command,
            usage: self.usage,
            detail,
        }
    }

    fn exactly<const N: usize>(self) -> Result<[Value; N], CommandError> {
        let got = self.values.len();
        let (command, usage) = (self.command, self.usage);
        <[Value; N]>::try_from(self.values).map_err(|_| CommandError::BadArgument {
            command,
            usage,
            detail: format!("got {got} argument{}", if got == 1 { "" } else { "s" }),
        })
    }

    fn all_strings(self, what: &str) -> Result<Vec<String>, CommandError> {
        let (command, usage) = (self.command, self.usage);
        self.values
            .into_iter()
            .map(|v| string_arg(v, command, usage, what))
            .collect()
    }
}

/// `[username, ...]` with at least one valid name (INVITE, WATCH,
/// UNWATCH).
fn names_arg(
    command: &'static str,
    args: Option<Value>,
    limits: &Limits,
) -> Result<Vec<String>, CommandError> {
    let args = Args::new(command, "[username, ...] with at least one name", args)?;
    if args.values.is_empty() {
        return Err(args.wrong("no username given".into()));
    }
    let names = args.all_strings("username")?;
    for name in &names {
        validate_name(name, limits)?;
    }
    Ok(names)
}

fn string_arg(
    value: Value,
    command: &'static str,
    usage: &'static str,
    what: &str,
) -> Result<String, CommandError> {
    match value {
        Value::Str(s) => Ok(s),
        other => Err(CommandError::BadArgument {
            command,
            usage,
            detail: format!("{what} must be a string, got {}", other.type_name()),
        }),
    }
}

/// A secret of `min`..=[`MAX_SECRET`] bytes. The error never quotes it.
fn secret_arg(
    value: Value,
    command: &'static str,
    usage: &'static str,
    what: &str,
    min: usize,
) -> Result<Secret, CommandError> {
    let Value::Str(text) = value else {
        return Err(CommandError::BadArgument {
            command,
            usage,
            detail: format!("{what} must be a string, got {}", value.type_name()),
        });
    };
    if text.len() < min || text.len() > MAX_SECRET {
        return Err(CommandError::BadArgument {
            command,
            usage,
            detail: format!("{what} must be {min} to {MAX_SECRET} bytes"),
        });
    }
    Ok(Secret(text))
}

/// A new password: [`MIN_PASSWORD`]..=[`MAX_PASSWORD`] bytes of UTF-8.
fn password_arg(
    value: Value,
    command: &'static str,
    usage: &'static str,
    what: &str,
) -> Result<Secret, CommandError> {
    let secret = secret_arg(value, command, usage, what, 0)?;
    let len = secret.0.len();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        return Err(CommandError::BadPasswordLength { len });
    }
    Ok(secret)
}

fn name_arg(value: Value, what: &str, limits: &Limits) -> Result<String, CommandError> {
    let name = string_arg(value, "REGISTER", "[username, status]", what)?;
    validate_name(&name, limits)?;
    Ok(name)
}

fn status_arg(
    value: Value,
    command: &'static str,
    usage: &'static str,
    limits: &Limits,
) -> Result<String, CommandError> {
    let status = string_arg(value, command, usage, "status")?;
    let len = status.chars().count();
    if len > limits.max_status {
        return Err(CommandError::StatusTooLong {
            len,
            max: limits.max_status,
        });
    }
    Ok(status)
}

fn conv_arg(
    value: Value,
    command: &'static str,
    usage: &'static str,
) -> Result<ConvId, CommandError> {
    let detail = match value {
        Value::Int(id) if id >= 0 => return Ok(id as ConvId),
        Value::Int(id) => format!("convID must be a non-negative integer, got {id}"),
        other => format!("convID must be an integer, got {}", other.type_name()),
    };
    Err(CommandError::BadArgument {
        command,
        usage,
        detail,
    })
}

fn nonce_arg(value: Value, usage: &'static str) -> Result<String, CommandError> {
    let nonce = string_arg(value, "SEND_MESSAGE", usage, "nonce")?;
    let len = nonce.chars().count();
    if len > MAX_NONCE {
        return Err(CommandError::NonceTooLong { len });
    }
    Ok(nonce)
}

/// A sequence number or count: a non-negative integer.
fn count_arg(
    value: Value,
    command: &'static str,
    usage: &'static str,
    what: &str,
) -> Result<u64, CommandError> {
    let detail = match value {
        Value::Int(n) if n >= 0 => return Ok(n as u64),
        Value::Int(n) => format!("{what} must be a non-negative integer, got {n}"),
        other => format!("{what} must be an integer, got {}", other.type_name()),
    };
    Err(CommandError::BadArgument {
        command,
        usage,
        detail,
    })
}
