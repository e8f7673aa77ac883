//! `natter serve` under a service manager: the sd_notify messages systemd
//! waits for (told to a datagram socket the test binds, as systemd's
//! NOTIFY_SOCKET), JSON logs for collectors, and contrib/natter.service
//! checked by `systemd-analyze verify` where Debian's systemd is installed.

mod process;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use process::{JsonClient, NATTER, PATIENCE, Serve, chat};

/// What the fake service manager heard, in order.
struct Manager {
    socket: UnixDatagram,
    heard: Vec<String>,
}

impl Manager {
    fn bind(path: &std::path::Path) -> Manager {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Manager {
            socket,
            heard: Vec::new(),
        }
    }

    /// Waits (bounded) for a notification containing `wanted`; returns it.
    /// Everything heard before it stays in `heard`.
    fn expect(&mut self, wanted: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 4096];
        loop {
            assert!(
                Instant::now() < deadline,
                "no {wanted:?} notification; heard {:?}",
                self.heard
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.heard.push(message.clone());
                if message.lines().any(|line| line == wanted) {
                    return message;
                }
            }
        }
    }
}

#[test]
fn readiness_watchdog_reload_and_stopping_reach_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let mut manager = Manager::bind(&notify);
    let env = [
        ("NOTIFY_SOCKET", notify.to_str().unwrap()),
        // Half a second: a keep-alive every quarter second.
        ("WATCHDOG_USEC", "500000"),
    ];
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--ephemeral",
    ];
    let mut server = Serve::start(&args, &env, dir.path());
    manager.expect("READY=1");
    // Ready means listening: a client gets in at once.
    JsonClient::connect(server.addr).register("early");
    for _ in 0..3 {
        manager.expect("WATCHDOG=1");
    }
    server.signal("HUP");
    let reloading = manager.expect("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    manager.expect("READY=1");
    server.signal("TERM");
    manager.expect("STOPPING=1");
    assert!(server.wait_for_exit().success());
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--no-web",
        "--ephemeral",
        "--log-format",
        "json",
    ];
    let server = Serve::start(&args, &[], dir.path());
    let mut client = JsonClient::connect(server.addr);
    client.register("jason");
    client.send(r#"{"command":"GOODBYE"}"#);
    server.await_log("disconnect");
    let log = server.log();
    // Whole lines only: the last may still be on its way.
    let whole = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
    let mut registered = false;
    for line in whole.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(entry["timestamp"].is_string(), "{line}");
        assert!(entry["level"].is_string(), "{line}");
        if entry["fields"]["message"] == "register" {
            assert_eq!(entry["fields"]["name"], "jason", "{line}");
            registered = true;
        }
    }
    assert!(registered, "no register event in:\n{log}");
}

fn unit_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib/natter.service")
}

/// The settings the unit must keep: readiness, reload and the sandbox.
#[test]
fn the_unit_waits_for_readiness_reloads_with_sighup_and_is_sandboxed() {
    let unit = std::fs::read_to_string(unit_file()).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=natter",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in the unit");
    }
    assert!(
        unit.lines()
            .any(|l| l.starts_with("WatchdogSec=") && l != "WatchdogSec=0"),
        "no watchdog"
    );
    // The only writable path is the state dir, which the data dir is.
    assert!(
        !unit.contains("ReadWritePaths"),
        "more than the data dir writable"
    );
    assert!(unit.contains("--data-dir /var/lib/natter"));
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing (bash .ci/install-systemd.sh)"
        );
        eprintln!("skipped: no systemd-analyze");
        return;
    }
    // The unit as installed, but with this build's binary (verify checks
    // that it exists and is executable).
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(unit_file())
        .unwrap()
        .replace("/usr/local/bin/natter", NATTER);
    let path = dir.path().join("natter.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze complains:\n{stderr}"
    );
}

/// Every system call `natter serve` makes, run much as the unit runs it
/// (a data dir, the web page, clients that chat, SIGTERM), is one the
/// unit's `SystemCallFilter=` lets through: a call the filter denies
/// ends the server (or fails, with `SystemCallErrorNumber=`). The
/// password hashing threads' `setpriority`, in the denied `@resources`,
/// once ended the server at every start under this unit. Traced with
/// strace; the filter's groups are expanded by `systemd-analyze`.
#[test]
fn the_units_system_call_filter_allows_every_call_natter_makes() {
    let have = |tool: &str, arg: &str| Command::new(tool).arg(arg).output().is_ok();
    if !have("strace", "-V") || !have("systemd-analyze", "--version") {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace or systemd-analyze is missing (bash .ci/install-systemd.sh)"
        );
        eprintln!("skipped: no strace or systemd-analyze");
        return;
    }
    let allowed = allowed_by(&std::fs::read_to_string(unit_file()).unwrap());
    assert!(allowed.contains("read") && !allowed.contains("reboot"));

    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let mut command = Command::new("strace");
    command
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args([NATTER, "serve", "--listen", "127.0.0.1:0"])
        .args(["--web", "127.0.0.1:0", "--data-dir", "data"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info");
    let mut server = Serve::spawn(command);
    // strace's child is natter: signals go to it, and strace ends when it
    // does. (Killing strace, as `Serve` does when dropped, would leave
    // natter behind, stopped.)
    let strace = server.child.id();
    let natter = Killed(
        std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
            .unwrap()
            .trim()
            .to_string(),
    );
    // A message stored, then delivered.
    let _members = chat(&server);
    let status = Command::new("kill")
        .args(["-TERM", &natter.0])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(server.wait_for_exit().success(), "{}", server.log());
    natter.exited();

    let calls = called_in(&std::fs::read_to_string(&trace).unwrap());
    assert!(calls.contains("epoll_wait"), "{calls:?}");
    // Run as root, SQLite gives its -wal and -shm files to the database's
    // owner (fchown); under the unit natter is a user made up for it, for
    // whom SQLite does not.
    let as_root_only = ["fchown"];
    let denied: Vec<_> = calls
        .difference(&allowed)
        .filter(|call| !as_root_only.contains(&call.as_str()))
        .collect();
    assert!(
        denied.is_empty(),
        "natter calls what contrib/natter.service denies: {denied:?}"
    );
}

/// A process (by pid) killed when this is dropped, as when a test fails.
struct Killed(String);

impl Killed {
    /// It ended by itself: its pid may be another process's soon.
    fn exited(mut self) {
        self.0.clear();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("kill").args(["-KILL", &self.0]).status();
        }
    }
}

/// The system calls a unit's `SystemCallFilter=` lines allow: the first
/// line is an allow list, each later one adds (or with `~`, removes) its
/// names and groups, in order.
fn allowed_by(unit: &str) -> std::collections::BTreeSet<String> {
    let mut allowed = std::collections::BTreeSet::new();
    for line in unit.lines() {
        let Some(filter) = line.strip_prefix("SystemCallFilter=") else {
            continue;
        };
        let (deny, names) = match filter.strip_prefix('~') {
            Some(names) => (true, names),
            None => (false, filter),
        };
        for name in names.split_whitespace() {
            for call in expand(name) {
                if deny {
                    allowed.remove(&call);
                } else {
                    allowed.insert(call);
                }
            }
        }
    }
    allowed
}

/// A system call's name, or a group's calls (`systemd-analyze
/// syscall-filter @GROUP`, whose nested groups are expanded in turn).
fn expand(name: &str) -> Vec<String> {
    if !name.starts_with('@') {
        return vec![name.to_string()];
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {name}"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|entry| !entry.is_empty() && !entry.starts_with('#'))
        .flat_map(expand)
        .collect()
}

/// The names of the system calls in an `strace -f` log.
fn called_in(trace: &str) -> std::collections::BTreeSet<String> {
    trace
        .lines()
        .filter_map(|line| {
            let call = line.split_once(' ')?.1.trim_start();
            let name = call.split('(').next()?;
            let is_call = call.contains('(')
                && !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            is_call.then(|| name.to_string())
        })
        .collect()
}
