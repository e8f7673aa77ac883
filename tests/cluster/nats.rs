//! A three-server NATS cluster with JetStream on loopback, for the tests:
//! configs written to a temporary directory, the servers started as real
//! processes, ready once each says JetStream is healthy, killed on drop.
//! A server can be killed (SIGKILL) and started again on its own ports and
//! store, and so can the whole cluster.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long three servers may take to elect their JetStream leaders.
const READY_PATIENCE: Duration = Duration::from_secs(30);

/// `nats-server` on PATH (`.ci/install-nats.sh` puts it there), or why not.
pub fn nats_server() -> Result<PathBuf, String> {
    let works = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        Ok("nats-server".into())
    } else {
        Err("no nats-server on PATH (install one with `bash .ci/install-nats.sh`)".into())
    }
}

struct Ports {
    client: u16,
    route: u16,
    monitor: u16,
}

/// Three clustered nats-servers.
pub struct NatsCluster {
    program: PathBuf,
    dir: PathBuf,
    ports: Vec<Ports>,
    servers: Vec<Option<Child>>,
}

impl NatsCluster {
    /// Starts three servers with their stores under `dir`, and waits until
    /// every one has JetStream ready.
    pub fn start(program: &Path, dir: &Path) -> NatsCluster {
        let mut cluster = NatsCluster::start_unsettled(program, dir);
        let deadline = Instant::now() + READY_PATIENCE;
        for i in 0..3 {
            cluster.wait_ready(i, deadline);
        }
        cluster
    }

    /// Starts three servers without waiting for JetStream (as a machine
    /// that boots them together with natter does).
    pub fn start_unsettled(program: &Path, dir: &Path) -> NatsCluster {
        let ports = (0..3)
            .map(|_| Ports {
                client: free_port(),
                route: free_port(),
                monitor: free_port(),
            })
            .collect::<Vec<_>>();
        let mut cluster = NatsCluster {
            program: program.into(),
            dir: dir.into(),
            ports,
            servers: vec![None, None, None],
        };
        for i in 0..3 {
            cluster.write_config(i);
        }
        for i in 0..3 {
            cluster.start_server(i);
        }
        cluster
    }

    /// Waits until every server takes client connections (JetStream may
    /// still be electing its leaders).
    pub fn wait_listening(&self) {
        let deadline = Instant::now() + READY_PATIENCE;
        for ports in &self.ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], ports.client));
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nats-server on {addr} never listened"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `nats://127.0.0.1:PORT,...` of every server, for `--nats`.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{}", p.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn write_config(&self, i: usize) {
        let me = &self.ports[i];
        let routes = self
            .ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("nats-route://127.0.0.1:{}", p.route))
            .collect::<Vec<_>>()
            .join(", ");
        let store = self.dir.join(format!("js{i}"));
        let config = format!(
            "server_name: n{i}\n\
             listen: 127.0.0.1:{client}\n\
             http: 127.0.0.1:{monitor}\n\
             jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n\
             cluster {{\n  name: natter-test\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
            client = me.client,
            monitor = me.monitor,
            route = me.route,
            store = store.display(),
        );
        std::fs::write(self.config_path(i), config).expect("write nats config");
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("nats{i}.conf"))
    }

    /// Starts server `i` (again, on its ports and store).
    pub fn start_server(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.join(format!("nats{i}.log"))).expect("log file");
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(self.config_path(i))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.servers[i] = Some(child);
    }

    /// Starts every server that is not running, and waits until all are
    /// ready.
    pub fn start_all(&mut self) {
        for i in 0..3 {
            if self.servers[i].is_none() {
                self.start_server(i);
            }
        }
        let deadline = Instant::now() + READY_PATIENCE;
        for i in 0..3 {
            self.wait_ready(i, deadline);
        }
    }

    /// Waits until server `i` reports JetStream healthy.
    pub fn wait_ready(&mut self, i: usize, deadline: Instant) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.ports[i].monitor));
        loop {
            if healthz(addr) {
                return;
            }
            if let Some(child) = &mut self.servers[i]
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server {i} exited: {status} (see {})",
                    self.dir.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {i} not ready in {READY_PATIENCE:?} (logs in {})",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL to server `i`; waits until it is gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The first and last sequence numbers the stream `name` holds, as
    /// server 0 reports them (its monitoring endpoint `/jsz`).
    pub fn stream_range(&self, name: &str) -> (u64, u64) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.ports[0].monitor));
        let (status, body) = get(addr, "/jsz?streams=true").expect("nats-server 0's /jsz");
        assert_eq!(status, 200, "/jsz: {body}");
        let jsz: serde_json::Value = serde_json::from_str(&body).expect("/jsz is JSON");
        let streams = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten());
        let state = streams
            .into_iter()
            .find(|stream| stream["name"] == name)
            .map(|stream| &stream["state"])
            .unwrap_or_else(|| panic!("no stream {name} in /jsz: {body}"));
        let seq = |field: &str| state[field].as_u64().expect("a sequence number");
        (seq("first_seq"), seq("last_seq"))
    }

    pub fn kill_all(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// `GET /healthz`: JetStream is up and current on this server.
fn healthz(addr: SocketAddr) -> bool {
    get(addr, "/healthz").is_some_and(|(status, _)| status == 200)
}

/// `GET path` from a monitoring port: the status and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A loopback port free right now, from the cluster tests' slice below
/// the ephemeral range (see `tests/ports`).
pub fn free_port() -> u16 {
    crate::ports::free_port(crate::ports::Slice::Cluster)
}
