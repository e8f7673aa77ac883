//! The programs outside Rust that some tests run (Python interpreters, a
//! browser), and what a test does when one is missing.
//!
//! Shared by `crates/proto/tests/cpython.rs`, `tests/python_client.rs` and
//! `tests/browser.rs` (included with `#[path]`), whose harness is
//! libtest-mimic so that the choice is made when the tests are listed:
//!
//! * `python3` is on every machine the project supports: a test that needs
//!   it and cannot run it fails.
//! * Python 2.7 is the course's language, but not every developer has one.
//!   A test that needs it is *ignored* when none is found, which nextest
//!   counts as "skipped" in its summary line, so a missing interpreter is
//!   never a silent pass. Under CI (`CI` set), where `.ci/install-python2.sh`
//!   provides one, it is not ignored: it runs and fails.
//! * The browser test follows the same rule for Chromium and chromedriver
//!   (`.ci/install-browser.sh`).
//!
//! Python 2.7 is looked for in this order: `$NATTER_PYTHON2`, pyenv's
//! 2.7.18, a working `python2.7` on `PATH`, then Debian's `jython` (Jython
//! 2.7, the JVM Python the course itself uses). `NATTER_PYTHON2=none`
//! pretends there is none (to see what a machine without one does).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libtest_mimic::{Failed, Trial};

/// pyenv's Python 2.7, where the project's machines have one.
const PYENV_PYTHON2: &str = "/root/.pyenv/versions/2.7.18/bin/python2.7";
/// Debian's `jython` package.
const JYTHON: &str = "/usr/bin/jython";

/// True under CI, where every interpreter a test needs must be there.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// `candidate` runs and reports Python `major`.
fn reports_major(candidate: &Path, major: u32) -> bool {
    let check = format!("import sys; sys.exit(0 if sys.version_info[0] == {major} else 1)");
    Command::new(candidate)
        .args(["-c", &check])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Python 3; panics (failing the test) when there is none.
pub fn python3() -> PathBuf {
    let python = PathBuf::from("python3");
    assert!(
        reports_major(&python, 3),
        "python3 is needed by this test and does not run (see the README: what the tests need)"
    );
    python
}

/// A Python 2.7 interpreter, or why there is none.
///
/// Paths that exist are taken without running them: a broken interpreter
/// must fail its tests, not make them skip. Jython is only tried last
/// because its JVM start-up makes every test slower.
pub fn python2() -> Result<PathBuf, String> {
    if let Some(chosen) = std::env::var_os("NATTER_PYTHON2").filter(|v| !v.is_empty()) {
        if chosen == "none" {
            return Err("no Python 2.7 interpreter: NATTER_PYTHON2=none".into());
        }
        return Ok(PathBuf::from(chosen));
    }
    if Path::new(PYENV_PYTHON2).exists() {
        return Ok(PYENV_PYTHON2.into());
    }
    // On PATH, `python2.7` may be a pyenv shim with no 2.7 behind it.
    if reports_major(Path::new("python2.7"), 2) {
        return Ok("python2.7".into());
    }
    if Path::new(JYTHON).exists() {
        return Ok(JYTHON.into());
    }
    Err(format!(
        "no Python 2.7 interpreter: none of $NATTER_PYTHON2, {PYENV_PYTHON2}, python2.7 on PATH, \
         {JYTHON} (install one with `bash .ci/install-python2.sh`)"
    ))
}

/// A test that needs nothing but what every machine has.
pub fn trial(name: &str, body: impl FnOnce() + Send + 'static) -> Trial {
    Trial::test(name, move || {
        body();
        Ok(())
    })
}

/// A test that needs `program` (found, or why not). Without it the test is
/// ignored (a visible "skipped"), except under CI; if it runs anyway it
/// fails with the reason.
pub fn trial_needing(
    name: &str,
    program: &Result<PathBuf, String>,
    body: impl FnOnce(&Path) + Send + 'static,
) -> Trial {
    let found = program.clone();
    let missing = found.is_err() && !under_ci();
    Trial::test(name, move || match found {
        Ok(path) => {
            body(&path);
            Ok(())
        }
        Err(why) => Err(Failed::from(why)),
    })
    .with_ignored_flag(missing)
}
