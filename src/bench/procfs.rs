//! A process's CPU time and resident memory, read from `/proc`.
//!
//! The benchmark measures a server it did not start, so it reads the same
//! counters `top` does: `utime + stime` from `/proc/PID/stat` (in clock
//! ticks, 100 per second on Linux) and `VmRSS` from `/proc/PID/status`.

use std::fs;

use anyhow::{Context, bail};

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`); 100 on every
/// Linux architecture the project builds for.
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Which process to read: a pid, or `self`.
#[derive(Debug, Clone)]
pub struct Process(String);

impl Process {
    pub fn pid(pid: u32) -> Process {
        Process(pid.to_string())
    }

    pub fn this() -> Process {
        Process("self".to_string())
    }

    pub fn sample(&self) -> anyhow::Result<Sample> {
        Ok(Sample {
            cpu_seconds: self.cpu_seconds()?,
            rss_kib: self.rss_kib()?,
        })
    }

    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/stat", self.0);
        let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name (field 2) may hold spaces; fields after it are
        // counted from its closing parenthesis.
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13
        // after the name.
        let ticks = |i: usize| -> anyhow::Result<u64> {
            let field = fields.get(i).context("short /proc stat line")?;
            Ok(field.parse()?)
        };
        Ok((ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SECOND)
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.0);
        let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        for line in status.lines() {
            if let Some(value) = line.strip_prefix("VmRSS:") {
                let kib = value.trim().trim_end_matches("kB").trim();
                return Ok(kib.parse()?);
            }
        }
        bail!("no VmRSS in {path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_a_clock() {
        let sample = Process::this().sample().unwrap();
        assert!(sample.rss_kib > 0);
        assert!(sample.cpu_seconds >= 0.0);
    }
}
