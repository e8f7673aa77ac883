//! `natter bench` end to end: a real server on a loopback port, a short
//! low-rate run, and the report a user would read: every message reached
//! every other member of its group, and the figures add up.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NATTER: &str = env!("CARGO_BIN_EXE_natter");

/// A `natter serve` child, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    start_server_with(&[])
}

fn start_server_with(extra: &[&str]) -> Server {
    let help = Command::new(NATTER)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let mut args = vec!["serve", "--ephemeral", "--listen", "127.0.0.1:0"];
    // Flood limits, where this build has them, would throttle the load.
    for flag in ["--rate-limit", "--max-connections-per-ip"] {
        if help.contains(&format!("{flag} ")) {
            args.extend([flag, "0"]);
        }
    }
    // Tests run in parallel: no fixed web port.
    if help.contains("--no-web") {
        args.push("--no-web");
    }
    args.extend(extra);
    let mut child = Command::new(NATTER)
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server { child, addr }
}

/// Runs `natter bench` with `args`, killing it if it outlives `limit`.
fn bench(args: &[&str], limit: Duration) -> serde_json::Value {
    let mut child = Command::new(NATTER)
        .arg("bench")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("natter bench ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "natter bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON line on stdout")
}

#[test]
fn a_short_low_rate_run_delivers_every_message_to_every_other_member() {
    let server = start_server();
    let pid = server.child.id().to_string();
    #[rustfmt::skip]
    let report = bench(
        &["--addr", &server.addr, "--clients", "20", "--group", "5", "--rate", "100",
          "--warmup", "0.5", "--duration", "2", "--json", "--quiet", "--server-pid", &pid],
        Duration::from_secs(60),
    );
    let sent = report["sent"].as_u64().unwrap();
    assert!(
        (180..=220).contains(&sent),
        "about 100/s for 2 s, got {sent}"
    );
    assert_eq!(report["expected"].as_u64().unwrap(), sent * 4);
    assert_eq!(report["delivered"], report["expected"]);
    assert_eq!(report["delivery_ratio"].as_f64().unwrap(), 1.0);
    // natter echoes each message to its sender; those are counted apart.
    assert_eq!(report["echoes"].as_u64().unwrap(), sent);
    assert!(report["latency_us"]["p50"].as_u64().unwrap() > 0);
    assert!(report["server"]["rss_kib_end"].as_u64().unwrap() > 0);
    assert_eq!(report["server_errors"].as_u64().unwrap(), 0);
}

/// `--pace fine` sends each message at its own due time (a timerfd), not
/// in 1 ms ticks; the run is the same otherwise.
#[test]
fn a_finely_paced_run_delivers_every_message() {
    let server = start_server();
    let pid = server.child.id().to_string();
    #[rustfmt::skip]
    let report = bench(
        &["--addr", &server.addr, "--clients", "20", "--group", "5", "--rate", "500",
          "--pace", "fine", "--warmup", "0.5", "--duration", "2", "--json", "--quiet",
          "--server-pid", &pid],
        Duration::from_secs(60),
    );
    let sent = report["sent"].as_u64().unwrap();
    assert!(
        (900..=1100).contains(&sent),
        "about 500/s for 2 s, got {sent}"
    );
    assert_eq!(report["delivered"], report["expected"]);
    assert_eq!(report["expected"].as_u64().unwrap(), sent * 4);
    assert_eq!(report["server_errors"].as_u64().unwrap(), 0);
}

#[test]
fn idle_mode_reports_setup_time_and_memory_per_connection() {
    let server = start_server();
    let pid = server.child.id().to_string();
    #[rustfmt::skip]
    let report = bench(
        &["--addr", &server.addr, "--clients", "50", "--group", "10", "--idle",
          "--duration", "0.5", "--json", "--quiet", "--server-pid", &pid],
        Duration::from_secs(60),
    );
    assert_eq!(report["mode"], "idle");
    let setup = report["setup_s"].as_f64().unwrap();
    assert!(setup > 0.0);
    assert!(report["server"]["rss_bytes_per_connection"].is_number());
    assert_eq!(report["disconnects"].as_u64().unwrap(), 0);
    // The setup time splits into connect, register and join: consecutive
    // spans up to the moment the last client finished each, which together
    // make the whole setup, each with the server's CPU time in it and each
    // client's own time in the phase.
    let phases = &report["setup_phases"];
    let mut total = 0.0;
    let mut last = 0.0;
    for phase in ["connect", "register", "join"] {
        let p = &phases[phase];
        let done = p["all_done_s"]
            .as_f64()
            .unwrap_or_else(|| panic!("{phase}: {p}"));
        assert!(
            done >= last,
            "{phase} ended before the phase before it: {phases}"
        );
        last = done;
        total += p["span_s"].as_f64().unwrap();
        assert!(p["server_cpu_s"].as_f64().unwrap() >= 0.0, "{phases}");
        assert!(p["per_client_us"]["max"].as_u64().unwrap() > 0, "{phases}");
    }
    assert!(
        (total - last).abs() < 0.005,
        "spans add up to the last milestone: {phases}"
    );
    assert!(last <= setup + 0.005, "{phases} within setup {setup}");
    assert!(
        phases["register"]["per_client_us"]["p50"].as_u64().unwrap() > 0,
        "{phases}"
    );
}

/// Clients the idle-memory test holds: enough that the fixed part of the
/// server's memory weighs little per connection.
const IDLE_CLIENTS: u64 = 3000;

/// Raises this process's open-file limit (inherited by the server and the
/// generator it starts) to what `IDLE_CLIENTS` need in each of them.
fn allow_open_files_for_idle_clients() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let needed = IDLE_CLIENTS + 200;
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|current| current >= needed) {
        return;
    }
    assert!(
        limit.maximum.is_none_or(|hard| hard >= needed),
        "this test needs {needed} open files per process; the hard limit is {:?} \
         (raise it: `ulimit -Hn`, or LimitNOFILE= under systemd)",
        limit.maximum
    );
    let raised = Rlimit {
        current: Some(needed),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).expect("raising the open-file limit");
}

/// An idle registered `presence-scope` connection in a conversation of 10
/// costs the server no more memory than the idle-memory work of issue 14
/// left it: quiet plaintext connections park without a task, without
/// tokio's registration of their socket and with their decoder asleep (see
/// docs/PERFORMANCE.md, "Idle connections"). Clients connect 50 at a time,
/// so that what setup holds for a while (tasks of connections being served)
/// weighs little in the figure. A debug build held 2.7 to 3.0 KiB of RSS
/// per connection in six runs on a loaded 2-core machine, and 3.3 to 3.9
/// KiB at the commit before that work (ScheduledIo per socket, the whole
/// decoder parked). But one CI run, the test alone, saw 3.3 KiB with this
/// work (setup's transients vary with timing), so the bound is 4 KiB: it
/// fails if a task or a read buffer per idle connection comes back (either
/// is more than the margin), not for the smaller parts.
#[test]
fn an_idle_scoped_connection_costs_a_bounded_amount_of_server_memory() {
    allow_open_files_for_idle_clients();
    let server = start_server_with(&["--max-connections", "5000"]);
    let pid = server.child.id().to_string();
    let clients = IDLE_CLIENTS.to_string();
    #[rustfmt::skip]
    let report = bench(
        &["--addr", &server.addr, "--clients", &clients, "--group", "10", "--idle", "--scope",
          "--connect-concurrency", "50",
          "--duration", "0.5", "--json", "--quiet", "--server-pid", &pid],
        Duration::from_secs(120),
    );
    assert_eq!(report["disconnects"].as_u64().unwrap(), 0);
    let per = report["server"]["rss_bytes_per_connection"]
        .as_f64()
        .unwrap();
    println!("server RSS per idle scoped connection: {per} bytes");
    assert!(per <= 4.0 * 1024.0, "{per} bytes per idle connection");
}

/// Without --json, the human summary says where the setup time went.
#[test]
fn idle_mode_tells_a_person_where_setup_time_went() {
    let server = start_server();
    let pid = server.child.id().to_string();
    let output = Command::new(NATTER)
        .args([
            "bench",
            "--addr",
            &server.addr,
            "--clients",
            "20",
            "--group",
            "5",
        ])
        .args([
            "--idle",
            "--duration",
            "0.2",
            "--quiet",
            "--server-pid",
            &pid,
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for phase in ["connect", "register", "join"] {
        assert!(text.contains(&format!("{phase} ")), "{text}");
    }
    assert!(text.contains("server CPU"), "{text}");
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A login storm during the load: every storm login is answered and
/// accepted (the accounts are created first), chat goes on meanwhile, the
/// report says what the storm saw, and the server's memory stays within
/// what its hashing threads need (argon2id takes 19 MiB per hash; 60
/// hashes here once grew the server by over 300 MiB).
#[test]
fn a_login_storm_is_answered_while_chat_goes_on_and_memory_stays_bounded() {
    let server = start_server();
    let pid = server.child.id().to_string();
    let rss_at_start = rss_kib(&pid);
    #[rustfmt::skip]
    let report = bench(
        &["--addr", &server.addr, "--clients", "10", "--group", "5", "--rate", "50",
          "--warmup", "0.5", "--duration", "3", "--login-storm", "30", "--json", "--quiet",
          "--server-pid", &pid],
        Duration::from_secs(90),
    );
    let storm = &report["login_storm"];
    assert_eq!(storm["logins"].as_u64().unwrap(), 30, "{report}");
    assert_eq!(storm["accepted"].as_u64().unwrap(), 30, "{report}");
    let hashing_threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let allowed = hashing_threads * 19 * 1024 + 40 * 1024;
    let grown = storm["rss_kib_peak"].as_u64().unwrap() - rss_at_start;
    assert!(grown <= allowed, "grew by {grown} KiB, allowed {allowed}");
    assert_eq!(storm["failed"].as_u64().unwrap(), 0, "{report}");
    assert!(storm["answer_us"]["p50"].as_u64().unwrap() > 0);
    assert!(storm["rss_kib_peak"].as_u64().unwrap() > 0);
    assert_eq!(report["delivery_ratio"].as_f64().unwrap(), 1.0);
    assert_eq!(report["server_errors"].as_u64().unwrap(), 0);
}

/// The same run over TLS (a certificate from `natter cert`, the server
/// refusing plaintext): every message delivered, none lost to TLS.
#[test]
fn a_short_run_over_tls_delivers_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let made = Command::new(NATTER)
        .args(["cert", "--self-signed", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(made.status.success());
    let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = start_server_with(&["--tls-cert", cert, "--tls-key", key, "--require-tls"]);
    #[rustfmt::skip]
    let report = bench(
        &["--addr", &server.addr, "--clients", "20", "--group", "5", "--rate", "100",
          "--warmup", "0.5", "--duration", "2", "--json", "--quiet",
          "--tls", "--ca-file", cert],
        Duration::from_secs(60),
    );
    let sent = report["sent"].as_u64().unwrap();
    assert!(sent >= 180, "about 100/s for 2 s, got {sent}");
    assert_eq!(report["delivered"], report["expected"]);
    assert_eq!(report["echoes"].as_u64().unwrap(), sent);
    assert_eq!(report["server_errors"].as_u64().unwrap(), 0);
}

#[test]
fn scope_mode_sets_up_clients_that_see_only_their_group() {
    let server = start_server();
    #[rustfmt::skip]
    let report = bench(
        &["--addr", &server.addr, "--clients", "40", "--group", "4", "--idle", "--scope",
          "--duration", "0.2", "--json", "--quiet"],
        Duration::from_secs(60),
    );
    assert_eq!(report["scope"], true);
    assert_eq!(report["disconnects"].as_u64().unwrap(), 0);
    #[rustfmt::skip]
    let report = bench(
        &["--addr", &server.addr, "--clients", "20", "--group", "5", "--rate", "100",
          "--scope", "--warmup", "0.2", "--duration", "1", "--json", "--quiet"],
        Duration::from_secs(60),
    );
    assert_eq!(report["scope"], true);
    assert_eq!(report["delivered"], report["expected"]);
}

#[test]
fn refuses_a_target_that_is_not_loopback() {
    let output = Command::new(NATTER)
        .args(["bench", "--addr", "192.0.2.1:6666", "--duration", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
