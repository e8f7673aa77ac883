//! The IRC side of the generator, for measuring an IRC server with the same
//! workload: `NICK`/`USER`, `JOIN #group`, `PRIVMSG #group :payload`.
//!
//! Only what the workload needs is parsed: the welcome numeric (001) that
//! ends registration, the end of `NAMES` (366) that acknowledges a join,
//! `PRIVMSG` lines, `PING` (answered, or the server drops us) and error
//! numerics (4xx/5xx), which are counted. IRC does not echo a sender's own
//! message back.

use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};

use super::net;
use super::phases::{Phases, Step};
use super::plan::Plan;

/// Longest line a server may send (RFC 1459 says 512; servers with message
/// tags send more).
const MAX_LINE: usize = 8 * 1024;

const RPL_ENDOFNAMES: u16 = 366;
const RPL_ENDOFMOTD: u16 = 376;
const ERR_NOMOTD: u16 = 422;

/// One line from the server, as far as the generator cares.
enum Line<'a> {
    Ping(&'a [u8]),
    Privmsg(&'a [u8]),
    Numeric(u16),
    /// `ERROR :...`: the server is closing the link.
    Fatal,
    Other,
}

fn classify(line: &[u8]) -> Line<'_> {
    if let Some(token) = line.strip_prefix(b"PING ") {
        return Line::Ping(token);
    }
    if line.starts_with(b"ERROR ") {
        return Line::Fatal;
    }
    // ":prefix COMMAND params"
    let rest = match line.strip_prefix(b":") {
        Some(rest) => match rest.iter().position(|&b| b == b' ') {
            Some(space) => &rest[space + 1..],
            None => return Line::Other,
        },
        None => line,
    };
    if let Some(params) = rest.strip_prefix(b"PRIVMSG ") {
        return match find(params, b" :") {
            Some(at) => Line::Privmsg(&params[at + 2..]),
            None => Line::Other,
        };
    }
    match rest.get(..4) {
        Some([a, b, c, b' ']) if [a, b, c].iter().all(|d| d.is_ascii_digit()) => Line::Numeric(
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'),
        ),
        _ => Line::Other,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes received from the server, split into lines.
pub struct Inbox {
    buf: BytesMut,
}

impl Inbox {
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Runs `each` on every whole line in the buffer (without its CR LF).
    fn lines(
        &mut self,
        mut each: impl FnMut(Line<'_>) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[..end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            let stop = each(classify(line))?;
            self.buf.advance(end + 1);
            if stop {
                return Ok(true);
            }
        }
        if self.buf.len() > MAX_LINE {
            bail!("server sent a line longer than {MAX_LINE} bytes");
        }
        Ok(false)
    }

    /// Hands every PRIVMSG text to `on_text`, queues `PONG`s in `replies`,
    /// counts error numerics.
    pub fn drain(
        &mut self,
        mut on_text: impl FnMut(&[u8]),
        replies: &mut Vec<u8>,
        errors: &mut u64,
    ) -> anyhow::Result<()> {
        self.lines(|line| {
            match line {
                Line::Privmsg(text) => on_text(text),
                Line::Ping(token) => pong(token, replies),
                Line::Numeric(400..=599) => *errors += 1,
                Line::Fatal => bail!("server sent ERROR and closes the link"),
                _ => {}
            }
            Ok(false)
        })?;
        Ok(())
    }

    /// Reads (answering PINGs) until one of the numerics `wanted` arrives.
    async fn wait_for(&mut self, stream: &net::Link, wanted: &[u16]) -> anyhow::Result<()> {
        let mut replies = Vec::new();
        loop {
            let found = self.lines(|line| match line {
                Line::Numeric(n) if wanted.contains(&n) => Ok(true),
                Line::Numeric(n @ 400..=599) => bail!("server answered with error numeric {n}"),
                Line::Ping(token) => {
                    pong(token, &mut replies);
                    Ok(false)
                }
                Line::Fatal => bail!("server sent ERROR and closes the link"),
                _ => Ok(false),
            })?;
            if !replies.is_empty() {
                net::write_all(stream, &replies).await?;
                replies.clear();
            }
            if found {
                return Ok(());
            }
            if net::read_more(stream, &mut self.buf).await? == 0 {
                bail!("server closed the connection during setup");
            }
        }
    }
}

fn pong(token: &[u8], replies: &mut Vec<u8>) {
    replies.extend_from_slice(b"PONG ");
    replies.extend_from_slice(token);
    replies.extend_from_slice(b"\r\n");
}

/// A registered client in its group's channel.
pub struct Joined {
    pub stream: Rc<net::Link>,
    pub channel: String,
    pub inbox: Inbox,
}

/// Connects client `index`, registers its nick and joins its group's
/// channel, waiting for the server's acknowledgement of each.
pub async fn setup(
    endpoint: &net::Endpoint,
    plan: &Plan,
    index: u32,
    connecting: &tokio::sync::Semaphore,
    phases: &Phases,
) -> anyhow::Result<Joined> {
    let permit = connecting.acquire().await?;
    let began = Instant::now();
    let stream = net::connect_as(endpoint, index).await?;
    phases.finished(Step::Connect, began);
    let began = Instant::now();
    let mut inbox = Inbox {
        buf: BytesMut::new(),
    };
    let nick = plan.name(index);
    let hello = format!("NICK {nick}\r\nUSER {nick} 0 * :natter bench\r\n");
    net::write_all(&stream, hello.as_bytes()).await?;
    // Registration ends with the MOTD, or the error saying there is none.
    inbox
        .wait_for(&stream, &[RPL_ENDOFMOTD, ERR_NOMOTD])
        .await
        .with_context(|| format!("registering {nick}"))?;
    phases.finished(Step::Register, began);
    drop(permit);
    let began = Instant::now();
    let channel = plan.channel(index);
    net::write_all(&stream, format!("JOIN {channel}\r\n").as_bytes()).await?;
    inbox
        .wait_for(&stream, &[RPL_ENDOFNAMES])
        .await
        .with_context(|| format!("{nick} joining {channel}"))?;
    phases.finished(Step::Join, began);
    Ok(Joined {
        stream: Rc::new(stream),
        channel,
        inbox,
    })
}

/// Encodes `PRIVMSG channel :text` onto `out`.
pub fn encode_send(channel: &str, text: &str, out: &mut BytesMut) {
    out.extend_from_slice(b"PRIVMSG ");
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(b" :");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privmsg_ping_and_numerics_are_told_apart() {
        assert!(matches!(
            classify(b":b1!b1@127.0.0.1 PRIVMSG #g0 :1.2.3.xx :with colon"),
            Line::Privmsg(b"1.2.3.xx :with colon")
        ));
        assert!(matches!(
            classify(b"PING :irc.local"),
            Line::Ping(b":irc.local")
        ));
        assert!(matches!(
            classify(b":irc.local 001 b1 :Welcome"),
            Line::Numeric(1)
        ));
        assert!(matches!(
            classify(b":irc.local 366 b1 #g0 :End"),
            Line::Numeric(366)
        ));
        assert!(matches!(classify(b"ERROR :Closing link"), Line::Fatal));
        assert!(matches!(classify(b":b1 JOIN #g0"), Line::Other));
    }

    #[test]
    fn drain_splits_lines_and_queues_pongs() {
        let mut inbox = Inbox {
            buf: BytesMut::from(
                &b":a PRIVMSG #g :one\r\nPING :x\r\n:s 404 b :no\r\n:a PRIVMSG #g :tw"[..],
            ),
        };
        let (mut texts, mut replies, mut errors) = (Vec::new(), Vec::new(), 0);
        inbox
            .drain(|t| texts.push(t.to_vec()), &mut replies, &mut errors)
            .unwrap();
        assert_eq!(texts, vec![b"one".to_vec()]);
        assert_eq!(replies, b"PONG :x\r\n");
        assert_eq!(errors, 1);
        assert_eq!(&inbox.buf[..], b":a PRIVMSG #g :tw");
    }
}
