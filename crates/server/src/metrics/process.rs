//! The process's own numbers, read from `/proc/self` at each scrape (on
//! Linux; elsewhere nothing): CPU time, resident memory, open descriptors
//! and their limit, under the names every Prometheus client library uses.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on every Linux
/// architecture (as Prometheus's own procfs library assumes too).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(seconds) = cpu_seconds() {
            let metric = ConstCounter::new(seconds);
            let help = "CPU time the server used, user and system";
            let unit = prometheus_client::registry::Unit::Seconds;
            let metric_encoder = encoder.encode_descriptor(
                "process_cpu",
                help,
                Some(&unit),
                metric.metric_type(),
            )?;
            metric.encode(metric_encoder)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Memory the server holds in RAM (resident set size)",
                resident_bytes(),
            ),
            (
                "process_open_fds",
                "File descriptors open (sockets among them)",
                open_fds(),
            ),
            (
                "process_max_fds",
                "The most file descriptors the server may open",
                max_fds(),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let metric = ConstGauge::new(value);
                let metric_encoder =
                    encoder.encode_descriptor(name, help, None, metric.metric_type())?;
                metric.encode(metric_encoder)?;
            }
        }
        Ok(())
    }
}

/// utime + stime, fields 14 and 15 of `/proc/self/stat` (after the
/// command name, which may hold spaces, in parentheses).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// `VmRSS` of `/proc/self/status`, which is in KiB.
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_fds() -> Option<i64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_numbers() {
        assert!(cpu_seconds().unwrap() >= 0.0);
        assert!(resident_bytes().unwrap() > 1024 * 1024);
        let open = open_fds().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(open_fds().unwrap() > open, "an open file counts");
        drop(file);
        assert!(max_fds().unwrap() >= open);
    }
}
