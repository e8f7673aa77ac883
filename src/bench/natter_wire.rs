//! The natter side of the generator: framed encoding, `CAPS
//! presence-delta members`, `REGISTER`, one `INVITE` per group, `JOIN`,
//! then `SEND_MESSAGE` and `MESSAGE`.
//!
//! Encoding and decoding go through `natter_proto`, the same code the server
//! uses. Presence traffic (`PRESENCE`, `ONLINE_USERS`) is skipped by its
//! command word without decoding the pickle: with thousands of clients it
//! is most of the setup traffic, and the generator's core is needed for the
//! measurement.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use natter_proto::codec::encode_command;
use natter_proto::limits::MAX_FRAME_CEILING;
use natter_proto::wire::Direction;
use natter_proto::{Command, ConvId, Decoder, Encoding, Limits, ServerMessage};
use tokio::sync::Barrier;

use super::net;
use super::phases::{Phases, Step};
use super::plan::Plan;

/// The capabilities every benchmark client asks for.
const CAPS: [&str; 2] = ["presence-delta", "members"];
/// With `--scope`: presence for the client's own group only.
const SCOPED_CAPS: [&str; 3] = ["presence-scope", "presence-delta", "members"];

/// What one frame turned out to be.
enum Frame {
    /// `ONLINE_USERS` (true: the full list that acknowledges REGISTER) or
    /// `PRESENCE` (false), left undecoded.
    Presence {
        full: bool,
    },
    Message(ServerMessage),
}

/// Bytes received from the server and the decoder that splits them.
pub struct Inbox {
    buf: BytesMut,
    decoder: Decoder,
    /// Messages read ahead while waiting for the other clients (see
    /// [`Inbox::skim_until`]), handed out before anything else.
    early: VecDeque<ServerMessage>,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            buf: BytesMut::new(),
            decoder: Decoder::new(
                Encoding::Framed,
                Direction::ToClient,
                Limits::client_default(),
            ),
            early: VecDeque::new(),
        }
    }

    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next whole frame in the buffer, if one has arrived.
    fn next_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        if let Some(message) = self.early.pop_front() {
            return Ok(Some(Frame::Message(message)));
        }
        self.next_buffered_frame()
    }

    /// The next whole frame in the buffer, ignoring those read ahead.
    fn next_buffered_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(header.try_into().expect("four bytes")) as usize;
        if len == 0 || len > MAX_FRAME_CEILING {
            bail!("server sent a frame of {len} bytes");
        }
        let Some(body) = self.buf.get(4..4 + len) else {
            return Ok(None);
        };
        for (word, full) in [(&b"PRESENCE"[..], false), (b"ONLINE_USERS", true)] {
            if body.starts_with(word) {
                self.buf.advance(4 + len);
                return Ok(Some(Frame::Presence { full }));
            }
        }
        let raw = self
            .decoder
            .decode(&mut self.buf)?
            .context("a whole frame did not decode")?;
        Ok(Some(Frame::Message(ServerMessage::from_raw(raw)?)))
    }

    /// Hands the text of every chat message in the buffer to `on_text`;
    /// counts `ERROR`s.
    pub fn drain(
        &mut self,
        mut on_text: impl FnMut(&[u8]),
        errors: &mut u64,
    ) -> anyhow::Result<()> {
        while let Some(frame) = self.next_frame()? {
            match frame {
                Frame::Message(ServerMessage::Message { text, .. }) => on_text(text.as_bytes()),
                Frame::Message(ServerMessage::Error(_)) => *errors += 1,
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads until `pick` accepts a message; an `ERROR` ends the wait.
    async fn wait_for<T>(
        &mut self,
        stream: &net::Link,
        mut pick: impl FnMut(&Frame) -> Option<T>,
    ) -> anyhow::Result<T> {
        loop {
            while let Some(frame) = self.next_frame()? {
                if let Frame::Message(ServerMessage::Error(text)) = &frame {
                    bail!("server said ERROR {text:?}");
                }
                if let Some(found) = pick(&frame) {
                    return Ok(found);
                }
            }
            if net::read_more(stream, &mut self.buf).await? == 0 {
                bail!("server closed the connection during setup");
            }
        }
    }
}

impl Inbox {
    /// Keeps reading while `done` is pending: presence updates are dropped
    /// and anything else is kept for later. A client waiting for the
    /// others must go on reading, or the server, rightly, cuts it off as a
    /// slow consumer once enough presence updates pile up for it.
    async fn skim_until(
        &mut self,
        stream: &net::Link,
        done: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(done);
        loop {
            loop {
                match self.next_buffered_frame()? {
                    None => break,
                    Some(Frame::Presence { .. }) => {}
                    Some(Frame::Message(ServerMessage::Error(text))) => {
                        bail!("server said ERROR {text:?}")
                    }
                    Some(Frame::Message(message)) => self.early.push_back(message),
                }
            }
            tokio::select! {
                () = &mut done => return Ok(()),
                read = net::read_more(stream, &mut self.buf) => {
                    if read? == 0 {
                        bail!("server closed the connection during setup");
                    }
                }
            }
        }
    }
}

/// A registered client, member of its group's conversation.
pub struct Joined {
    pub stream: Rc<net::Link>,
    pub conv: ConvId,
    pub inbox: Inbox,
}

/// Connects client `index`, registers it, and once every client is
/// registered (`registered`), joins its group's conversation. The leader
/// invites the others; everyone joins on the invitation and waits for the
/// `MEMBERS` that shows the whole group.
pub async fn setup(
    endpoint: &net::Endpoint,
    plan: &Plan,
    index: u32,
    scope: bool,
    connecting: &tokio::sync::Semaphore,
    registered: &Barrier,
    phases: &Phases,
) -> anyhow::Result<Joined> {
    let permit = connecting.acquire().await?;
    let began = Instant::now();
    let stream = net::connect_as(endpoint, index).await?;
    phases.finished(Step::Connect, began);
    let mut inbox = Inbox::new();
    let mut out = BytesMut::new();
    let name = plan.name(index);
    let caps: &[&str] = if scope { &SCOPED_CAPS } else { &CAPS };
    encode_command(
        &Command::Caps(caps.iter().map(|c| c.to_string()).collect()),
        Encoding::Framed,
        &mut out,
    );
    let register = Command::Register {
        name: name.clone(),
        status: "bench".to_string(),
    };
    encode_command(&register, Encoding::Framed, &mut out);
    let began = Instant::now();
    net::write_all(&stream, &out).await?;
    inbox
        .wait_for(&stream, |frame| {
            matches!(frame, Frame::Presence { full: true }).then_some(())
        })
        .await
        .with_context(|| format!("registering {name}"))?;
    phases.finished(Step::Register, began);
    drop(permit);

    inbox
        .skim_until(&stream, async {
            registered.wait().await;
        })
        .await
        .with_context(|| format!("{name} waiting for the others to register"))?;
    let began = Instant::now();
    let members = plan.members(index);
    if plan.is_leader(index) {
        let invited = members.clone().skip(1).map(|i| plan.name(i)).collect();
        out.clear();
        encode_command(&Command::Invite(invited), Encoding::Framed, &mut out);
        net::write_all(&stream, &out).await?;
    }
    let conv = inbox
        .wait_for(&stream, |frame| match frame {
            Frame::Message(ServerMessage::Invitation { conv, .. }) => Some(*conv),
            _ => None,
        })
        .await
        .with_context(|| format!("{name} waiting for its invitation"))?;
    out.clear();
    encode_command(&Command::Join(conv), Encoding::Framed, &mut out);
    net::write_all(&stream, &out).await?;
    let group_len = members.len();
    inbox
        .wait_for(&stream, |frame| match frame {
            Frame::Message(ServerMessage::Members { conv: c, members }) => {
                (*c == conv && members.len() == group_len).then_some(())
            }
            _ => None,
        })
        .await
        .with_context(|| format!("{name} waiting for its group to join"))?;
    phases.finished(Step::Join, began);
    Ok(Joined {
        stream: Rc::new(stream),
        conv,
        inbox,
    })
}

/// Encodes `SEND_MESSAGE [conv, text]` onto `out`. `text` is lent to the
/// command and handed back, so a steady run allocates nothing per send.
pub fn encode_send(conv: ConvId, text: &mut String, out: &mut BytesMut) {
    let command = Command::SendMessage {
        conv,
        text: std::mem::take(text),
        nonce: None,
    };
    encode_command(&command, Encoding::Framed, out);
    if let Command::SendMessage { text: lent, .. } = command {
        *text = lent;
    }
}

/// How the server answered an account command.
pub enum Answer {
    /// `SIGNED_UP`, or the `ONLINE_USERS` that welcomes a `REGISTER`.
    Accepted,
    /// `ERROR`, with its text.
    Refused(String),
}

/// Sends `command` on `stream` and reads until the server accepts or
/// refuses it (anything else, such as `SESSION`, is skipped).
pub async fn account_command(stream: &net::Link, command: &Command) -> anyhow::Result<Answer> {
    let mut out = BytesMut::new();
    encode_command(command, Encoding::Framed, &mut out);
    net::write_all(stream, &out).await?;
    let mut inbox = Inbox::new();
    loop {
        while let Some(frame) = inbox.next_frame()? {
            match frame {
                Frame::Presence { full: true } | Frame::Message(ServerMessage::SignedUp(_)) => {
                    return Ok(Answer::Accepted);
                }
                Frame::Message(ServerMessage::Error(text)) => return Ok(Answer::Refused(text)),
                _ => {}
            }
        }
        if net::read_more(stream, &mut inbox.buf).await? == 0 {
            bail!("server closed the connection before answering");
        }
    }
}
