//! The metrics examples in docs/OPERATIONS.md, run as written: the shell
//! block marked `<!-- metrics-example -->` runs under bash (with this
//! build's `natter` first on the PATH, in a fresh directory, its address
//! and chat addresses moved to free loopback ports) and must print what the text says it
//! prints; the Prometheus job marked `<!-- metrics-scrape-config -->` must
//! point at the address that block serves, and `promtool check config`
//! (Debian's `prometheus`, installed by .ci/install-metrics-tools.sh) must
//! accept it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NATTER: &str = env!("CARGO_BIN_EXE_natter");
/// The metrics address the docs use.
const DOC_ADDR: &str = "127.0.0.1:9185";
/// The chat address the docs use.
const DOC_LISTEN: &str = "127.0.0.1:6666";

fn operations() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md");
    std::fs::read_to_string(path).expect("docs/OPERATIONS.md")
}

/// The body of the ``` block (of language `lang`) right after `marker`.
fn block(doc: &str, marker: &str, lang: &str) -> String {
    let (_, after) = doc
        .split_once(marker)
        .unwrap_or_else(|| panic!("no {marker} in docs/OPERATIONS.md"));
    let body = after
        .trim_start()
        .strip_prefix(&format!("```{lang}\n"))
        .unwrap_or_else(|| panic!("{marker} must precede a ```{lang} block"));
    body[..body.find("```").expect("closed block")].to_string()
}

/// A loopback address with a port nobody listens on right now.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Runs `script` under bash in `dir`, ending every job it started when it
/// is done; gives back stdout. Fails after a minute.
fn run_script(script: &str, dir: &Path) -> String {
    let bin = Path::new(NATTER).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let wrapped =
        format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{script}");
    let mut child = Command::new("bash")
        .args(["-c", &wrapped])
        .current_dir(dir)
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the example did not finish within a minute:\n{script}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{script}\nfailed: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_scrape_example_prints_what_the_docs_say() {
    let doc = operations();
    let script = block(&doc, "<!-- metrics-example -->", "sh");
    assert!(script.contains(DOC_ADDR), "{script}");
    assert!(script.contains(DOC_LISTEN), "{script}");
    let (metrics, listen) = (free_addr(), free_addr());
    let script = script
        .replace(DOC_ADDR, &metrics)
        .replace(DOC_LISTEN, &listen);
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_script(&script, dir.path());
    let said = |doc_text: &str| {
        doc_text
            .replace(DOC_ADDR, &metrics)
            .replace(DOC_LISTEN, &listen)
    };
    let expected = [
        "listening on 127.0.0.1:6666",
        "metrics on http://127.0.0.1:9185/metrics",
        "natter_users 0",
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, expected.map(said), "{stdout}");
    // The text after the block quotes exactly those lines.
    let start = doc.find("<!-- metrics-example -->").unwrap();
    let end = doc.find("<!-- metrics-scrape-config -->").unwrap();
    let prose = doc[start..end].split_whitespace().collect::<Vec<_>>();
    let prose = prose.join(" ");
    for line in expected {
        assert!(
            prose.contains(&format!("`{line}`")),
            "the docs do not quote `{line}`"
        );
    }
}

#[test]
fn the_scrape_config_points_at_the_example_and_prometheus_accepts_it() {
    let doc = operations();
    let script = block(&doc, "<!-- metrics-example -->", "sh");
    let config = block(&doc, "<!-- metrics-scrape-config -->", "yaml");
    assert!(
        config.contains(&format!("targets: ['{DOC_ADDR}']")),
        "{config}"
    );
    assert!(
        script.contains(&format!("--metrics {DOC_ADDR}")),
        "{script}"
    );
    assert!(
        !config.contains("metrics_path"),
        "the default path is /metrics"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, &config).unwrap();
    let checked = match Command::new("promtool")
        .args(["check", "config"])
        .arg(&file)
        .output()
    {
        Ok(output) => output,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "promtool not installed (bash .ci/install-metrics-tools.sh): config not checked"
            );
            return;
        }
        Err(error) => panic!("promtool is needed under CI: {error}"),
    };
    assert!(checked.status.success(), "promtool: {checked:?}");
}
