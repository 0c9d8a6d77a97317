//! Memory and CPU of a process from `/proc`: peak RSS (`VmHWM`), sampled RSS, CPU time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Linux `USER_HZ`: the unit of utime/stime in `/proc/PID/stat` (100 on every mainstream arch).
const USER_HZ: f64 = 100.0;

/// A field of `/proc/PID/status` in KiB (e.g. `VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&text, field)
}

fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS, so a phase can read its own
/// peak. Returns false when the kernel refused (then `VmHWM` is the peak since start).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// User + system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&text)
}

/// CPU seconds of this process (the load generator).
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}

/// CPU seconds all processes on the machine have used so far (busy time of all cores, from
/// the first line of `/proc/stat`).
pub fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(&text)
}

fn parse_machine_busy(text: &str) -> Option<f64> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0);
    Some(busy as f64 / USER_HZ)
}

fn parse_stat_cpu(text: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name, field 3 (state) has index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Samples a process's `VmRSS` in the background and keeps the largest value seen.
#[derive(Debug)]
pub struct RssSampler {
    max_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> Self {
        let max_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max_kib.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut iv = tokio::time::interval(every);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            // Bounded by the caller's stop, and by the process disappearing.
            while !s.load(Ordering::Relaxed) {
                iv.tick().await;
                match status_kib(pid, "VmRSS") {
                    Some(kib) => {
                        m.fetch_max(kib, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
        });
        Self {
            max_kib,
            stop,
            task,
        }
    }

    /// Stops sampling; returns the largest `VmRSS` seen, in KiB.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        self.max_kib.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tmqws\nVmHWM:\t   12345 kB\nVmRSS:\t    2345 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(2345));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
        let proc_stat = "cpu  100 5 50 1000 7 3 2 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_machine_busy(proc_stat), Some(1.7));
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmRSS").is_some_and(|k| k > 0));
        assert!(own_cpu_seconds().is_some());
    }
}
