//! `natter chat --plain`: a line protocol for scripts, bots and tests.
//!
//! Lines read from stdin are the same as typed in the terminal UI (plain
//! text goes to the current conversation, which is the last one joined or
//! created: the client joins the conversations its own `/invite` creates).
//! Every event is printed as one line on stdout:
//!
//! ```text
//! STATE connected 127.0.0.1:6666
//! ONLINE alice=online bob="be right back"
//! INVITATION 3 alice
//! MEMBERS 3 alice bob
//! MESSAGE 3 alice hello
//! CONVERSATIONS 3:alice,bob 4:
//! ERROR name alice is taken
//! STATE reconnecting 2s (attempt 1: connection refused)
//! QUEUED 3 typed while disconnected, sent after the reconnect
//! ```
//!
//! Local problems (a typo in a command) go to stderr. At stdin EOF or
//! `/quit` the client says GOODBYE after everything typed before it was
//! sent, prints what the server still sends, and exits 0.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natter_client::{Client, ClientConfig, ClientError, ConnectionState, ConvId, Event, Events};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::input::{self, HELP, Input};

/// Longest input line; the rest of a longer line is dropped.
const MAX_LINE: usize = 16 * 1024;

pub async fn run(
    server: ClientConfig,
    name: String,
    status: String,
    login: super::login::Login,
) -> anyhow::Result<()> {
    let (client, events) = Client::connect_with(server).await?;
    if let Err(err) = super::login::register(&client, &login, &name, &status).await {
        if matches!(
            err,
            ClientError::NameTaken(_) | ClientError::Rejected(_) | ClientError::AccountNeeded(_)
        ) {
            print_line(&format!("ERROR {}", one_line(&err.to_string())));
        }
        return Err(err.into());
    }
    let joined = Joined::default();
    let printer = tokio::spawn(print_events(events, name, joined.clone()));
    let outcome = read_commands(&client, &joined).await;
    client.goodbye().await?;
    // The printer ends after the final Disconnected state.
    let _ = tokio::time::timeout(Duration::from_secs(5), printer).await;
    outcome
}

/// The conversations we are in, the current one last; shared by the
/// command reader and the event printer, which sees the ones our own
/// `/invite`s create (the client library joins those).
#[derive(Clone, Default)]
struct Joined(Arc<Mutex<Vec<ConvId>>>);

impl Joined {
    fn make_current(&self, conv: ConvId) {
        let mut joined = self.0.lock().unwrap_or_else(|e| e.into_inner());
        joined.retain(|c| *c != conv);
        joined.push(conv);
    }

    fn forget(&self, conv: ConvId) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| *c != conv);
    }

    fn current(&self) -> Option<ConvId> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .copied()
    }
}

async fn print_events(mut events: Events, me: String, joined: Joined) {
    while let Some(event) = events.recv().await {
        if let Event::Invitation { conv, inviter } = &event
            && inviter.to_lowercase() == me.to_lowercase()
        {
            joined.make_current(*conv);
        }
        if let Some(line) = format_event(&event) {
            print_line(&line);
        }
    }
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout is the reader's choice; nothing to do about it.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Sends what stdin says until EOF or `/quit`.
async fn read_commands(client: &Client, joined: &Joined) -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    while let Some(line) = next_line(&mut stdin).await? {
        let input = match input::parse(&line) {
            Ok(input) => input,
            Err(problem) => {
                eprintln!("{problem}");
                continue;
            }
        };
        match input {
            Input::Say(text) => match joined.current() {
                Some(conv) => match client.send_message(conv, text).await {
                    Ok(_) => {}
                    // A full outbox is this line's problem, not the session's.
                    Err(err @ ClientError::OutboxFull { .. }) => eprintln!("{err}"),
                    Err(err) => return Err(err.into()),
                },
                None => eprintln!("no conversation: /join ID or /invite NAME first"),
            },
            Input::Invite(names) => client.invite(names).await?,
            Input::Join(conv) => {
                joined.make_current(conv);
                client.join(conv).await?;
            }
            Input::Leave(conv) => match conv.or(joined.current()) {
                Some(conv) => {
                    joined.forget(conv);
                    client.leave(conv).await?;
                }
                None => eprintln!("no conversation to leave"),
            },
            Input::Status(status) => client.status(status).await?,
            Input::Topic(text) => match joined.current() {
                Some(conv) => client.topic(conv, text).await?,
                None => eprintln!("no conversation to name"),
            },
            Input::List => client.list_conversations().await?,
            Input::Watch(names) => client.watch(names).await?,
            Input::Unwatch(names) => client.unwatch(names).await?,
            Input::Who(prefix) => client.list_users(prefix, 100).await?,
            Input::Help => {
                for (usage, what) in HELP {
                    eprintln!("{usage:<18} {what}");
                }
            }
            Input::Quit => break,
            Input::Nothing => {}
        }
    }
    Ok(())
}

/// Reads one line of at most `MAX_LINE` bytes; `None` at EOF.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<String>> {
    let mut bytes = Vec::new();
    let read = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut bytes)
        .await?;
    if read == 0 {
        return Ok(None);
    }
    if bytes.last() != Some(&b'\n') && read == MAX_LINE {
        // Too long: skip to the end of this line.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let n = (&mut *reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut rest)
                .await?;
            if n == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        eprintln!("line longer than {MAX_LINE} bytes: truncated");
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The one-line form of an event; `None` for events scripts need not see.
pub fn format_event(event: &Event) -> Option<String> {
    Some(match event {
        Event::State(state) => format!("STATE {}", format_state(state)),
        Event::OnlineUsers { users, .. } => {
            let mut line = String::from("ONLINE");
            for (name, status) in users {
                line.push_str(&format!(" {name}={}", quote(status)));
            }
            line
        }
        Event::Invitation { conv, inviter } => format!("INVITATION {conv} {inviter}"),
        Event::Members { conv, members } => {
            let mut line = format!("MEMBERS {conv}");
            for member in members {
                line.push(' ');
                line.push_str(member);
            }
            line
        }
        Event::Users(found) => {
            let mut line = String::from("USERS");
            for (name, status) in found {
                line.push_str(&format!(" {name}={}", quote(status)));
            }
            line
        }
        Event::Conversations(list) => {
            let mut line = String::from("CONVERSATIONS");
            for (conv, members) in list {
                line.push_str(&format!(" {conv}:{}", members.join(",")));
            }
            line
        }
        Event::Message {
            conv, sender, text, ..
        } => format!("MESSAGE {conv} {sender} {}", one_line(text)),
        Event::Queued { conv, text, .. } => format!("QUEUED {conv} {}", one_line(text)),
        Event::Topic { conv, text, setter } => {
            format!("TOPIC {conv} {setter} {}", one_line(text))
        }
        Event::Missed {
            conv,
            after_seq,
            before_seq,
        } => match before_seq {
            Some(before) => format!("MISSED {conv} {after_seq} {before}"),
            None => format!("MISSED {conv} {after_seq}"),
        },
        // The MESSAGE line is the confirmation; the rest is for programs.
        Event::Sent { .. } | Event::History { .. } | Event::Unread(_) | Event::Capabilities(_) => {
            return None;
        }
        Event::ServerError(text) => format!("ERROR {}", one_line(text)),
        Event::DecodeError { error, fatal } => {
            let kind = if *fatal { "fatal" } else { "skipped" };
            format!("DECODE_ERROR {kind} {}", one_line(error))
        }
        Event::NotSent { command, reason } => {
            format!("NOT_SENT {} {}", command.word(), one_line(reason))
        }
    })
}

fn format_state(state: &ConnectionState) -> String {
    match state {
        ConnectionState::Connecting { addr } => format!("connecting {addr}"),
        ConnectionState::Connected { addr } => format!("connected {addr}"),
        ConnectionState::Reconnecting {
            attempt,
            delay,
            reason,
        } => format!(
            "reconnecting {} (attempt {attempt}: {})",
            short_duration(*delay),
            one_line(reason)
        ),
        ConnectionState::Disconnected { reason } => format!("disconnected {}", one_line(reason)),
    }
}

/// `2s` for delays of a second or more (rounded), `250ms` below.
pub fn short_duration(delay: Duration) -> String {
    if delay >= Duration::from_secs(1) {
        format!("{}s", delay.as_secs_f64().round() as u64)
    } else {
        format!("{}ms", delay.as_millis())
    }
}

/// Keeps one event on one line: line breaks are shown as `\n`.
fn one_line(text: &str) -> String {
    text.replace('\r', "\\r").replace('\n', "\\n")
}

/// A status as one token: quoted when it has spaces, quotes or `=`.
fn quote(status: &str) -> String {
    if status.is_empty() || status.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
        format!("{:?}", status)
    } else {
        status.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn events_print_as_the_documented_lines() {
        let users: BTreeMap<String, String> = [("bob", "away"), ("alice", "online")]
            .into_iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        let cases = [
            (
                Event::OnlineUsers {
                    users,
                    changes: vec![],
                },
                "ONLINE alice=online bob=away",
            ),
            (
                Event::Message {
                    conv: 3,
                    sender: "alice".into(),
                    text: "hello".into(),
                    info: None,
                },
                "MESSAGE 3 alice hello",
            ),
            (
                Event::Invitation {
                    conv: 3,
                    inviter: "alice".into(),
                },
                "INVITATION 3 alice",
            ),
            (
                Event::Members {
                    conv: 3,
                    members: vec!["alice".into(), "bob".into()],
                },
                "MEMBERS 3 alice bob",
            ),
            (
                Event::Conversations(vec![(3, vec!["alice".into(), "bob".into()]), (4, vec![])]),
                "CONVERSATIONS 3:alice,bob 4:",
            ),
            (
                Event::ServerError("name alice is taken".into()),
                "ERROR name alice is taken",
            ),
            (
                Event::State(ConnectionState::Connected {
                    addr: "127.0.0.1:6666".into(),
                }),
                "STATE connected 127.0.0.1:6666",
            ),
            (
                Event::State(ConnectionState::Reconnecting {
                    attempt: 2,
                    delay: Duration::from_millis(2100),
                    reason: "connection refused".into(),
                }),
                "STATE reconnecting 2s (attempt 2: connection refused)",
            ),
            (
                Event::Queued {
                    conv: 3,
                    nonce: natter_client::Nonce::new("n-1").unwrap(),
                    text: "typed while disconnected, sent after the reconnect".into(),
                },
                "QUEUED 3 typed while disconnected, sent after the reconnect",
            ),
            (
                Event::Topic {
                    conv: 3,
                    text: "friday lunch".into(),
                    setter: "alice".into(),
                },
                "TOPIC 3 alice friday lunch",
            ),
            (
                Event::Missed {
                    conv: 3,
                    after_seq: 5,
                    before_seq: Some(900),
                },
                "MISSED 3 5 900",
            ),
        ];
        for (event, line) in cases {
            assert_eq!(format_event(&event).as_deref(), Some(line));
        }
        let confirmed = Event::Sent {
            conv: 3,
            nonce: natter_client::Nonce::new("n-1").unwrap(),
            seq: Some(7),
        };
        assert_eq!(format_event(&confirmed), None, "the MESSAGE line says it");
    }

    #[test]
    fn every_event_stays_on_one_line() {
        let event = Event::Message {
            conv: 1,
            sender: "bob".into(),
            text: "two\nlines".into(),
            info: None,
        };
        assert_eq!(format_event(&event).unwrap(), "MESSAGE 1 bob two\\nlines");
        let mut users = BTreeMap::new();
        users.insert("bob".to_string(), "be right back".to_string());
        let event = Event::OnlineUsers {
            users,
            changes: vec![],
        };
        assert_eq!(
            format_event(&event).unwrap(),
            "ONLINE bob=\"be right back\""
        );
    }

    #[tokio::test]
    async fn overlong_input_lines_are_cut_not_buffered() {
        let mut long = vec![b'x'; MAX_LINE * 3];
        long.extend_from_slice(b"\n/list\n");
        let mut reader = BufReader::new(&long[..]);
        let first = next_line(&mut reader).await.unwrap().unwrap();
        assert_eq!(first.len(), MAX_LINE);
        assert_eq!(
            next_line(&mut reader).await.unwrap().as_deref(),
            Some("/list\n")
        );
        assert_eq!(next_line(&mut reader).await.unwrap(), None);
    }
}
