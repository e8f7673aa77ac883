//! What the client library's socket tests share: an in-process server
//! (in memory, or with a store in a temporary directory), clients with
//! fast reconnects, bounded waits for events, and a proxy that can lose
//! what the server sends or cut and refuse connections, so that "the echo
//! was lost" and "the network went away" happen when a test says.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use natter_client::{Backoff, Client, ClientConfig, ConnectionState, Event, Events};
use natter_server::ServerHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const WAIT: Duration = Duration::from_secs(5);

pub async fn start_server(listen: SocketAddr) -> ServerHandle {
    natter_server::spawn(natter_server::Config {
        listen,
        presence_coalesce: Duration::from_millis(10),
        close_linger: Duration::from_millis(200),
        ..natter_server::Config::default()
    })
    .await
    .expect("server starts")
}

pub fn fast_config(addr: SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::new(addr.to_string());
    config.backoff = Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    config.reply_timeout = WAIT;
    config
}

pub async fn registered(addr: SocketAddr, name: &str) -> (Client, Events) {
    let (client, events) = Client::connect_with(fast_config(addr))
        .await
        .expect("connects");
    client.register(name, "online").await.expect("registers");
    (client, events)
}

/// Skips events until one matches; fails the test (listing what it saw)
/// if none does within `WAIT`.
pub async fn expect<T>(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            if let Some(found) = pick(&event) {
                return Some(found);
            }
            seen.push(event);
        }
        None
    })
    .await;
    match found {
        Ok(Some(found)) => found,
        _ => panic!("no {what} within {WAIT:?}; saw {seen:#?}"),
    }
}

pub async fn expect_online(events: &mut Events, name: &str, status: Option<&str>) {
    expect(
        events,
        &format!("{name} with status {status:?}"),
        |event| match event {
            Event::OnlineUsers { users, .. } if users.get(name).map(String::as_str) == status => {
                Some(())
            }
            _ => None,
        },
    )
    .await
}

pub async fn expect_invitation(events: &mut Events) -> (u64, String) {
    expect(events, "an invitation", |event| match event {
        Event::Invitation { conv, inviter } => Some((*conv, inviter.clone())),
        _ => None,
    })
    .await
}

pub async fn expect_members(events: &mut Events, conv: u64, members: &[&str]) {
    expect(
        events,
        &format!("members {members:?} of {conv}"),
        |event| match event {
            Event::Members {
                conv: c,
                members: m,
            } if *c == conv && m == members => Some(()),
            _ => None,
        },
    )
    .await
}

pub async fn expect_message(events: &mut Events, conv: u64, sender: &str, text: &str) {
    expect(
        events,
        &format!("message {text:?} from {sender}"),
        |event| match event {
            Event::Message {
                conv: c,
                sender: s,
                text: t,
                ..
            } if *c == conv && s == sender && t == text => Some(()),
            _ => None,
        },
    )
    .await
}

pub async fn expect_state(
    events: &mut Events,
    what: &str,
    pick: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    expect(events, what, |event| match event {
        Event::State(state) if pick(state) => Some(state.clone()),
        _ => None,
    })
    .await
}

/// A server with a store in `dir` (the default `natter serve`, as
/// opposed to `--ephemeral`), listening on `listen`.
pub async fn start_durable(dir: &Path, listen: SocketAddr) -> ServerHandle {
    natter_server::spawn(natter_server::Config {
        listen,
        presence_coalesce: Duration::from_millis(10),
        close_linger: Duration::from_millis(200),
        data_dir: Some(dir.to_path_buf()),
        ..natter_server::Config::default()
    })
    .await
    .expect("durable server starts")
}

pub async fn registered_with(config: ClientConfig, name: &str) -> (Client, Events) {
    let (client, events) = Client::connect_with(config).await.expect("connects");
    client.register(name, "online").await.expect("registers");
    (client, events)
}

/// alice invites bob, both join; returns the conversation.
pub async fn conversation(
    alice: &Client,
    alice_events: &mut Events,
    bob: &Client,
    bob_events: &mut Events,
) -> u64 {
    // Presence covers contacts and whom we watch: bob is neither yet.
    alice.watch(["bob"]).await.unwrap();
    expect_online(alice_events, "bob", Some("online")).await;
    alice.invite(["bob"]).await.unwrap();
    let (conv, _) = expect_invitation(bob_events).await;
    alice.join(conv).await.unwrap();
    bob.join(conv).await.unwrap();
    expect_members(alice_events, conv, &["alice", "bob"]).await;
    expect_members(bob_events, conv, &["alice", "bob"]).await;
    conv
}

/// Every event up to and including the first that `stop` accepts (which
/// must come within `WAIT`).
pub async fn until(
    events: &mut Events,
    what: &str,
    mut stop: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    expect(events, what, |event| {
        seen.push(event.clone());
        stop(event).then_some(())
    })
    .await;
    seen
}

/// Every event that arrives within `quiet` of the previous one (at most
/// `WAIT` in all): what a client received, to count.
pub async fn drain(events: &mut Events, quiet: Duration) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(Some(event)) = tokio::time::timeout_at(
        deadline.min(tokio::time::Instant::now() + quiet),
        events.recv(),
    )
    .await
    {
        seen.push(event);
    }
    seen
}

/// The texts of the message events among `events`, in order.
pub fn message_texts(events: &[Event], conv: u64) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Message { conv: c, text, .. } if *c == conv => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// A TCP proxy in front of a server, under the test's control.
pub struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Connections are numbered as they come; those below this number are
    /// muted.
    next: Arc<AtomicU64>,
    mute_below: Arc<AtomicU64>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            up: Arc::new(AtomicBool::new(true)),
            next: Arc::new(AtomicU64::new(0)),
            mute_below: Arc::new(AtomicU64::new(0)),
            cut: watch::channel(0).0,
        };
        let up = proxy.up.clone();
        let (next, mute_below) = (proxy.next.clone(), proxy.mute_below.clone());
        let cut = proxy.cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    // Down: the client connects and is hung up on at once.
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let muted = Muted {
                    number: next.fetch_add(1, Ordering::SeqCst),
                    below: mute_below.clone(),
                };
                tokio::spawn(pump(client, server, muted, cut.subscribe()));
            }
        });
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, what the server sends on the connections open now is
    /// swallowed (later connections are not muted).
    pub fn mute_current(&self) {
        let open = self.next.load(Ordering::SeqCst);
        self.mute_below.store(open, Ordering::SeqCst);
    }

    /// Down: new connections are closed as soon as they are made.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Closes every connection through the proxy, both ways.
    pub fn cut(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }
}

/// Whether one proxied connection is muted.
struct Muted {
    number: u64,
    below: Arc<AtomicU64>,
}

impl Muted {
    fn now(&self) -> bool {
        self.number < self.below.load(Ordering::SeqCst)
    }
}

async fn pump(client: TcpStream, server: TcpStream, muted: Muted, mut cut: watch::Receiver<u64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !muted.now() && client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut.changed() => {}
    }
}
