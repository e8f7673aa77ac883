//! docs/OPERATIONS.md, run: every line of every ```sh block, section by
//! section (one test each), on a scratch "machine": a temporary directory
//! stands for `/` (`/etc`, `/usr/local`, `/var` are under it), `sudo` is
//! left out, `cargo build --release` is this test's own build of natter,
//! and `systemctl` is played here, as systemd would act on the unit file
//! the doc installs: its `Environment=` and `ExecStart=` start the server
//! (on loopback ports) with a `NOTIFY_SOCKET` that must hear `READY=1`
//! before `start` returns, `reload` is SIGHUP, `stop` is SIGTERM. Any other
//! line runs in bash as written; a line that fails fails the test.

mod process;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use process::{JsonClient, NATTER, PATIENCE, Serve, chat};

const DOC: &str = "docs/OPERATIONS.md";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of the ```sh blocks of section `## {name}`.
fn section(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(DOC)).unwrap();
    let heading = format!("\n## {name}\n");
    let start = text
        .find(&heading)
        .unwrap_or_else(|| panic!("{DOC} has no section {name:?}"));
    let body = &text[start + heading.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut lines = Vec::new();
    for block in body.split("```sh\n").skip(1) {
        let end = block.find("```").expect("a closed block");
        lines.extend(block[..end].lines().map(str::to_string));
    }
    lines
}

/// The scratch machine.
struct Machine {
    root: tempfile::TempDir,
    /// Where commands run: a checkout of the repository's `contrib/` and
    /// a `target/release/natter` (this build).
    work: PathBuf,
    /// The server systemd would run, and what it told systemd.
    service: Option<Serve>,
    notify: Option<UnixDatagram>,
    reloads: usize,
    /// A server a section started in the foreground.
    foreground: Option<Serve>,
}

impl Machine {
    fn new() -> Machine {
        let root = tempfile::tempdir().unwrap();
        for dir in [
            "usr/local/bin",
            "etc/systemd/system",
            "var/lib",
            "var/backups",
            "run",
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let work = root.path().join("work");
        std::fs::create_dir_all(work.join("target/release")).unwrap();
        std::os::unix::fs::symlink(repo().join("contrib"), work.join("contrib")).unwrap();
        std::os::unix::fs::symlink(NATTER, work.join("target/release/natter")).unwrap();
        Machine {
            root,
            work,
            service: None,
            notify: None,
            reloads: 0,
            foreground: None,
        }
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    /// A line with the machine's paths in place of the real ones.
    fn localize(&self, text: &str) -> String {
        let root = self.root().display().to_string();
        let mut text = format!(" {text}");
        for prefix in ["/etc/", "/var/", "/usr/local/"] {
            for before in [' ', '=', '"'] {
                text = text.replace(
                    &format!("{before}{prefix}"),
                    &format!("{before}{root}{prefix}"),
                );
            }
        }
        text[1..].to_string()
    }

    fn run_section(&mut self, name: &str) {
        let lines = section(name);
        assert!(!lines.is_empty(), "{DOC}: section {name:?} has no commands");
        for line in lines {
            self.run(&line);
        }
    }

    fn run(&mut self, line: &str) {
        let line = line.replace("sudo ", "");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["cargo", "build", "--release"] => {
                assert!(self.work.join("target/release/natter").exists());
            }
            ["natter", "serve", args @ ..] => {
                let args = self.localize(&args.join(" "));
                let mut command = Command::new(self.installed());
                command
                    .arg("serve")
                    .args(args.split_whitespace())
                    .args(["--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"])
                    .current_dir(&self.work)
                    .env("RUST_LOG", "info");
                self.foreground = Some(Serve::spawn(command));
            }
            ["systemctl", verb, rest @ ..] => self.systemctl(verb, rest),
            _ => self.bash(&line),
        }
    }

    /// The natter the doc installed.
    fn installed(&self) -> PathBuf {
        let path = self.root().join("usr/local/bin/natter");
        assert!(path.exists(), "natter is not installed");
        path
    }

    fn bash(&self, line: &str) {
        let path = format!(
            "{}:{}",
            self.root().join("usr/local/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &self.localize(line)])
            .current_dir(&self.work)
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{DOC}: `{line}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn unit(&self) -> String {
        let path = self.root().join("etc/systemd/system/natter.service");
        std::fs::read_to_string(&path).expect("the unit is installed")
    }

    fn systemctl(&mut self, verb: &str, rest: &[&str]) {
        match (verb, rest) {
            ("daemon-reload", []) => self.verify_unit(),
            ("enable", ["--now", "natter"]) | ("start", ["natter"]) => self.start(),
            ("is-active", ["natter"]) => {
                let service = self.service.as_mut().expect("natter runs");
                assert!(service.child.try_wait().unwrap().is_none(), "natter exited");
            }
            ("reload", ["natter"]) => {
                self.reloads += 1;
                self.service
                    .as_ref()
                    .expect("natter runs")
                    .reload(self.reloads);
            }
            ("stop", ["natter"]) => self.stop(),
            ("restart", ["natter"]) => {
                self.stop();
                self.start();
            }
            _ => panic!(
                "{DOC}: the test cannot play `systemctl {verb} {}`",
                rest.join(" ")
            ),
        }
    }

    /// `systemd-analyze verify` on the installed unit, when there is one.
    fn verify_unit(&self) {
        if Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_err()
        {
            return; // tests/service.rs says whether CI must have it
        }
        let installed = self.root().join("etc/systemd/system/natter.service");
        let copy = self.root().join("run/natter.service");
        std::fs::write(&copy, self.localize(&self.unit())).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{installed:?}: {stderr}"
        );
    }

    /// What systemd does for `start`: the state directory, the unit's
    /// environment and command (ports moved to loopback), and waiting for
    /// READY=1.
    fn start(&mut self) {
        assert!(self.service.is_none(), "natter already runs");
        let unit = self.localize(&self.unit());
        let value = |key: &str| -> Vec<String> {
            unit.lines()
                .filter_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_string)
                .collect()
        };
        let state = value("StateDirectory");
        assert_eq!(state, ["natter"]);
        let private = self.root().join("var/lib/private/natter");
        std::fs::create_dir_all(&private).unwrap();
        let link = self.root().join("var/lib/natter");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(&private, &link).unwrap();
        }
        let exec = value("ExecStart").pop().expect("ExecStart");
        let mut words = exec.split_whitespace();
        let mut command = Command::new(words.next().unwrap());
        command
            .args(words)
            .args(["--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"]);
        for assignments in value("Environment") {
            for assignment in assignments.split_whitespace() {
                let (key, val) = assignment.split_once('=').unwrap();
                command.env(key, val);
            }
        }
        let dir = value("WorkingDirectory").pop().expect("WorkingDirectory");
        let socket_path = self.root().join("run/notify.sock");
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        command
            .current_dir(dir)
            .env("NOTIFY_SOCKET", &socket_path)
            .env_remove("WATCHDOG_USEC");
        let service = Serve::spawn(command);
        wait_for(&socket, "READY=1");
        self.notify = Some(socket);
        self.service = Some(service);
        self.reloads = 0;
    }

    fn stop(&mut self) {
        let mut service = self.service.take().expect("natter runs");
        service.signal("TERM");
        wait_for(self.notify.as_ref().unwrap(), "STOPPING=1");
        assert!(service.wait_for_exit().success(), "{}", service.log());
    }

    fn service(&self) -> &Serve {
        self.service.as_ref().expect("natter runs")
    }
}

/// Waits (bounded) for a notification line `wanted`.
fn wait_for(socket: &UnixDatagram, wanted: &str) {
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "systemd never heard {wanted}");
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == wanted)
        {
            return;
        }
    }
}

/// A machine where the Install, Configuration and service sections ran.
fn machine_with_service() -> Machine {
    let mut machine = Machine::new();
    machine.run_section("Install");
    machine.run_section("Configuration");
    machine.foreground = None;
    machine.run_section("Running as a service");
    machine
}

#[test]
fn install() {
    let mut machine = Machine::new();
    machine.run_section("Install");
    assert!(machine.installed().exists());
}

#[test]
fn configuration() {
    let mut machine = Machine::new();
    machine.run_section("Install");
    machine.run_section("Configuration");
    let file = std::fs::read_to_string(machine.root().join("etc/natter/natter.toml")).unwrap();
    assert!(
        file.lines().any(|l| l == "max-connections = 5000"),
        "{file}"
    );
    let server = machine
        .foreground
        .as_ref()
        .expect("the section starts a server");
    JsonClient::connect(server.addr).register("configured");
}

#[test]
fn running_as_a_service() {
    let machine = machine_with_service();
    let service = machine.service();
    JsonClient::connect(service.addr).register("served");
    // (The log comes through its own pipe: wait for it.)
    service.await_log("store opened");
    assert!(
        machine
            .root()
            .join("var/lib/private/natter/natter.db")
            .exists()
    );
}

#[test]
fn reload() {
    let mut machine = machine_with_service();
    let mut client = JsonClient::connect(machine.service().addr);
    client.register("connected");
    machine.run_section("Reload");
    let log = machine.service().log();
    assert!(
        log.contains("key=\"max-message\" from=8192 to=4096"),
        "the reload is not in the log:\n{log}"
    );
}

#[test]
fn backup_and_restore() {
    let mut machine = machine_with_service();
    let _members = chat(machine.service());
    machine.run_section("Backup and restore");
    // The restored store has the conversation (its log comes through its
    // own pipe: wait for it).
    machine.service().await_log("store opened conversations=1");
    assert!(
        machine
            .root()
            .join("var/lib/private/natter.before-restore")
            .exists()
    );
}

#[test]
fn upgrade() {
    let mut machine = machine_with_service();
    let _members = chat(machine.service());
    machine.run_section("Upgrade");
    machine.service().await_log("store opened conversations=1");
    assert!(
        machine
            .root()
            .join("var/backups/natter-before-upgrade/natter.db")
            .exists()
    );
}
