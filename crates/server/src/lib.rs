//! natter's server: a thin tokio shell around the protocol
//! ([`natter_proto`]) and the chat state ([`natter_core`]).
//!
//! Reading order:
//! - [`config`]: every setting and its default.
//! - [`listener`]: the accept loop, one task per client.
//! - [`connection`]: a client's reading half: bytes → commands → hub.
//! - [`parking`]: where quiet plaintext connections wait without a task.
//! - [`hub`]: the one task that owns the chat state and writes to clients.
//! - [`peer`]: a client as the hub sees it, with its bounded outgoing queue.
//! - [`tls`]: TLS on the same port, and how the hub writes through it.
//! - [`web`]: the chat page and its WebSocket gateway (another transport).
//! - [`admin`]: the operator's Unix socket (`natter admin`).
//! - [`metrics`]: what the server counts, for `GET /metrics`.
//! - this file: starting and stopping the whole thing.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let config = natter_server::Config {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     ..Default::default()
//! };
//! let server = natter_server::spawn(config).await?;
//! println!("listening on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod admission;
pub mod auth;
pub mod certs;
pub mod cluster;
pub mod coalesce;
pub mod config;
pub mod connection;
pub mod durability;
pub mod hub;
pub mod listener;
pub mod live;
pub mod log_limit;
pub mod metrics;
pub mod parking;
pub mod peer;
pub mod rate;
pub mod socket;
pub mod supervise;
pub mod tls;
pub mod web;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use natter_core::{Ban, BanTarget, Chat, StoredAccount};
use natter_store::Store;
use natter_store::worker::{CommitObserver, Reply, Worker, WorkerOptions};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use hub::{HubStats, SHUTDOWN_MESSAGE};
pub use listener::Shared;

/// How long [`ServerHandle::shutdown`] waits for connections to close
/// after the hub said goodbye, beyond the configured linger time.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A running server.
pub struct ServerHandle {
    /// How a cluster node caught up with the log (none: not a node).
    catch_up: Option<cluster::CatchUp>,
    local_addr: SocketAddr,
    web_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    hub: JoinHandle<()>,
    /// Removes the admin socket when the server is dropped.
    admin_socket: Option<admin::AdminSocket>,
}

/// Binds `config.listen` and starts serving in the background.
pub async fn spawn(config: Config) -> io::Result<ServerHandle> {
    let listener = listener::bind(config.listen, config.listen_backlog)?;
    let local_addr = listener.local_addr()?;
    // Bound before anything starts, so that a taken web port fails cleanly.
    let web_listener = match config.web {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let web_addr = web_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let metrics_listener = match config.metrics {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let config = Arc::new(config);
    let metrics = Arc::new(metrics::Metrics::new());
    let (hub_tx, hub_rx) = mpsc::channel(hub::HUB_QUEUE);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    // A cluster node joins first: the newest snapshot of the log, if any,
    // is what its chat state and store start from.
    let mut joined = None;
    if let Some(cluster) = &config.cluster {
        let history = match &config.data_dir {
            Some(dir) => Some(cluster_cache(dir, &cluster.node)?),
            None => None,
        };
        let join = cluster::log::join(
            cluster,
            config.limits.clone(),
            &tracker,
            shutdown.clone(),
            history,
        );
        joined = Some(join.await.map_err(io::Error::other)?);
    }
    let snapshot = joined.as_ref().and_then(|j| j.snapshot.as_ref());
    let (chat, store, replies, accounts, bans) = open_chat(&config, &metrics, snapshot).await?;
    let shared = Arc::new(
        Shared::new(
            config.clone(),
            hub_tx.clone(),
            shutdown.clone(),
            tracker.clone(),
        )
        .with_metrics(metrics.clone()),
    );
    for ban in bans {
        shared.bans.insert(ban);
    }
    let admin_socket = match &config.admin_socket {
        Some(path) => {
            let (listener, socket) = admin::AdminSocket::bind(path).map_err(|e| {
                let hint = match e.kind() {
                    io::ErrorKind::InvalidInput => " (give a shorter path with --admin-socket)",
                    _ => "",
                };
                io::Error::new(
                    e.kind(),
                    format!("cannot make the admin socket {}: {e}{hint}", path.display()),
                )
            })?;
            shared.tracker.spawn(admin::serve(listener, shared.clone()));
            Some(socket)
        }
        None => None,
    };
    let mut hub = hub::Hub::new(
        chat,
        config.clone(),
        hub_tx,
        tracker,
        store,
        accounts,
        shared.bans.clone(),
        metrics.clone(),
    );
    let mut caught_up = None;
    if let (Some(cluster), Some(joined)) = (&config.cluster, joined) {
        shared.first_conn_id(cluster::entry::first_conn_id(joined.incarnation));
        let (ready, ready_rx) = tokio::sync::oneshot::channel();
        caught_up = Some(ready_rx);
        hub = hub.clustered(joined, cluster, ready);
    }
    let hub = tokio::spawn(hub.run(hub_rx, replies, shutdown));
    let hub = tokio::spawn(supervise::watch(hub, shared.clone()));
    supervise::install_test_hook(&shared);
    let mut catch_up = None;
    if let Some(caught_up) = caught_up {
        // Clients come in once this node's copy has applied the log up to
        // its own start: before that it would answer from an old state.
        catch_up = Some(caught_up.await.map_err(|_| {
            io::Error::other("the hub stopped before catching up with the cluster log")
        })?);
    }
    parking::start(&shared)?;
    shared
        .tracker
        .spawn(listener::accept_loop(listener, shared.clone()));
    if let Some(web_listener) = web_listener {
        shared
            .tracker
            .spawn(web::serve(web_listener, shared.clone()));
    }
    if let Some(metrics_listener) = metrics_listener {
        shared
            .tracker
            .spawn(web::serve_metrics(metrics_listener, shared.clone()));
    }
    Ok(ServerHandle {
        catch_up,
        local_addr,
        web_addr,
        metrics_addr,
        shared,
        hub,
        admin_socket,
    })
}

/// What the server starts from: the chat state, the store threads and
/// their replies (with a store), the accounts, and the address bans (the
/// user bans are in the chat state).
type Opened = (
    Chat,
    Option<Worker>,
    Option<mpsc::Receiver<Reply>>,
    Vec<StoredAccount>,
    Vec<Ban>,
);

/// The chat state, from the store when there is one, with the store
/// threads, their replies and the accounts. A cluster node's comes from
/// the cluster's `snapshot` instead, if there is one, and its store (a
/// cache, emptied by [`cluster_cache`]) is seeded with its history.
async fn open_chat(
    config: &Config,
    metrics: &Arc<metrics::Metrics>,
    cluster_snapshot: Option<&cluster::snapshot::Snapshot>,
) -> io::Result<Opened> {
    let chat_config = natter_core::Config {
        policy: config.policy,
        limits: config.limits.clone(),
        durable: config.data_dir.is_some(),
        accounts: config.accounts,
        ..natter_core::Config::default()
    };
    let Some(mut dir) = config.data_dir.clone() else {
        let (chat, accounts) = match cluster_snapshot {
            Some(snapshot) => (
                Chat::import_live(chat_config, snapshot.chat.clone()),
                snapshot_accounts(snapshot),
            ),
            None => (Chat::new(chat_config), Vec::new()),
        };
        return Ok((chat, None, None, accounts, Vec::new()));
    };
    let mut seed = Vec::new();
    if let Some(cluster) = &config.cluster {
        // Emptied when the node joined.
        dir = dir
            .join("cluster-cache")
            .join(node_file_name(&cluster.node));
        seed = cluster_snapshot
            .map(cluster::snapshot::history_facts)
            .unwrap_or_default();
    }
    let cache = config.cluster.is_some();
    let metrics = metrics.clone();
    let options = WorkerOptions {
        history_days: config.history_days,
        on_commit: CommitObserver::new(move |took| metrics.store_commit(took)),
    };
    // Opening and reading the store touches the disk: off the runtime.
    let opened = tokio::task::spawn_blocking(move || {
        // A node's store is a cache of the log, rebuilt at every start: its
        // commits need not wait for the disk (the log is what is durable).
        let mut store = if cache {
            Store::open_cache(&dir)?
        } else {
            Store::open(&dir)?
        };
        if !seed.is_empty() {
            store.commit(&seed)?;
        }
        let snapshot = store.load_snapshot(hub::unix_ms())?;
        let accounts = store.load_accounts()?;
        let bans = store.load_bans(hub::unix_ms())?;
        Ok::<_, natter_store::StoreError>((store, snapshot, accounts, bans))
    })
    .await
    .map_err(io::Error::other)?;
    let (store, snapshot, mut accounts, bans) = opened.map_err(io::Error::other)?;
    if let Some(cluster_snapshot) = cluster_snapshot {
        // Seeded into the (empty) cache above too; these are the ones the
        // hub checks secrets against.
        accounts = snapshot_accounts(cluster_snapshot);
    }
    tracing::info!(
        conversations = snapshot.conversations.len(),
        next_conversation = snapshot.next_conv_id,
        "store opened"
    );
    let (reply_tx, reply_rx) = mpsc::channel(STORE_REPLIES);
    let worker = natter_store::worker::spawn(store, options, reply_tx).map_err(io::Error::other)?;
    let mut chat = match cluster_snapshot {
        Some(live) => Chat::import_live(chat_config, live.chat.clone()),
        None => Chat::restore(chat_config, snapshot),
    };
    for account in &accounts {
        chat.add_account(account.key.clone());
    }
    chat.set_time(hub::unix_ms());
    let (user_bans, address_bans) = bans
        .into_iter()
        .partition(|ban| matches!(ban.target, BanTarget::User(_)));
    for ban in user_bans {
        chat.restore_ban(ban);
    }
    Ok((chat, Some(worker), Some(reply_rx), accounts, address_bans))
}

/// The accounts a cluster snapshot carries.
fn snapshot_accounts(snapshot: &cluster::snapshot::Snapshot) -> Vec<StoredAccount> {
    snapshot.accounts.iter().cloned().map(Into::into).collect()
}

/// A cluster node's store is a cache of what the log holds (history for
/// HISTORY): every start rebuilds it from the log, in a directory of its
/// own under the data directory.
fn cluster_cache(data_dir: &std::path::Path, node: &str) -> io::Result<std::path::PathBuf> {
    let dir = data_dir.join("cluster-cache").join(node_file_name(node));
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A node's name as it may appear in a file name (its cache directory, its
/// admin socket): anything but ASCII letters, digits, `-` and `_` becomes `_`.
pub fn node_file_name(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Room for store replies: commits are bounded by the hub's batch limit,
/// history answers by the reader's queue.
const STORE_REPLIES: usize = 1024;

impl ServerHandle {
    /// How this cluster node caught up with the log before it took
    /// clients (`None` without `--nats`).
    pub fn catch_up(&self) -> Option<cluster::CatchUp> {
        self.catch_up
    }

    /// The address clients connect to (the real port when bound to 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The web page's address (the real port when bound to 0), if
    /// [`Config::web`] asked for one.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    /// The address of the metrics listener (the real port when bound to
    /// 0), if [`Config::metrics`] asked for one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// What other transports (the WebSocket gateway) need to join in.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// How much state the server holds right now (`None` once it stopped).
    pub async fn stats(&self) -> Option<HubStats> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.shared
            .hub
            .send(hub::HubEvent::Stats { reply })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// The settings the server runs with now.
    pub fn config(&self) -> Arc<Config> {
        self.shared.config.get()
    }

    /// Applies reloaded settings (SIGHUP): what can change live
    /// ([`Config::reloaded`]) takes effect for the hub at once, for new
    /// connections and for every connected client's next read; the rest
    /// stays as the server started. Returns what the server runs with now,
    /// or `None` when the hub is gone.
    pub async fn reload(&self, new: Config) -> Option<Arc<Config>> {
        let config = Arc::new(self.shared.config.get().reloaded(&new));
        let (applied, done) = tokio::sync::oneshot::channel();
        let event = hub::HubEvent::Reload {
            config: config.clone(),
            applied,
        };
        self.shared.hub.send(event).await.ok()?;
        done.await.ok()?;
        self.shared.publish(config.clone());
        Some(config)
    }

    /// Resolves when an operator's drain is over (every client left, or
    /// its timeout passed): the server should now be shut down.
    pub async fn stop_requested(&self) {
        self.shared.stop_requested.cancelled().await
    }

    /// Where the admin socket is, if there is one.
    pub fn admin_socket(&self) -> Option<&std::path::Path> {
        self.admin_socket.as_ref().map(|s| s.path())
    }

    /// Resolves if the hub fails ([`supervise`]): the server then serves
    /// no one, and should be shut down and restarted.
    pub async fn failed(&self) {
        self.shared.hub_failed.cancelled().await
    }

    /// Test-only: makes the hub panic, as a bug would.
    #[doc(hidden)]
    pub async fn panic_hub_for_test(&self) {
        let _ = self.shared.hub.send(hub::HubEvent::PanicForTest).await;
    }

    /// Stops accepting, sends every client `ERROR "server shutting down"`,
    /// closes each connection cleanly, and waits (bounded) for all of it.
    /// After a failed hub, only the last words get a moment.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let _ = self.hub.await;
        self.shared.tracker.close();
        let deadline = if self.shared.hub_failed.is_cancelled() {
            SHUTDOWN_GRACE
        } else {
            self.shared.config.get().close_linger + SHUTDOWN_GRACE
        };
        if tokio::time::timeout(deadline, self.shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
    }
}
