//! Pieces the three scenarios share: starting mqws on a known data dir, CPU accounting over a
//! phase, disk usage of a directory, percentiles and formatting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::time::Instant;

use super::cli::Common;
use super::metrics;
use crate::procstat;
use crate::server::{Server, SpawnOptions, StopInfo};

/// The data directory of a run: a temporary one (removed on drop) or the one given.
#[derive(Debug)]
pub struct DataDir {
    /// The data dir (the database file lives there).
    pub path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl DataDir {
    /// `--data-dir`, or a fresh temporary directory.
    pub fn new(given: Option<&Path>) -> anyhow::Result<Self> {
        match given {
            Some(p) => {
                let empty = match std::fs::read_dir(p) {
                    Ok(mut d) => d.next().is_none(),
                    Err(_) => true,
                };
                anyhow::ensure!(
                    empty,
                    "--data-dir {} is not empty; the benchmarks count from an empty log",
                    p.display()
                );
                Ok(Self {
                    path: p.to_path_buf(),
                    _tmp: None,
                })
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("mqws-catchup-")
                    .tempdir()
                    .context("creating a temporary data dir")?;
                Ok(Self {
                    path: t.path().join("data"),
                    _tmp: Some(t),
                })
            }
        }
    }
}

/// A started mqws with what the benchmarks need to reach it.
#[derive(Debug)]
pub struct Running {
    /// The process.
    pub server: Server,
    /// HTTP address.
    pub http: SocketAddr,
    /// MQTT address.
    pub mqtt: SocketAddr,
    /// Process id.
    pub pid: u32,
    /// Milliseconds from start until `/readyz` answered 200 (includes rebuilding the
    /// in-memory index from an existing log).
    pub ready_ms: u64,
}

/// Starts mqws on `dir` with `env` (later entries win), waits until it is ready.
pub async fn start(
    common: &Common,
    dir: &Path,
    env: &[String],
    log_file: Option<&Path>,
) -> anyhow::Result<Running> {
    let t0 = Instant::now();
    let server = tokio::task::block_in_place(|| {
        Server::spawn(&SpawnOptions {
            bin: &common.mqws_bin,
            data_dir: Some(dir),
            env,
            log_file,
        })
    })?;
    let http = server.http.context("mqws printed no HTTP address")?;
    let (mqtt, pid) = (server.mqtt, server.pid.context("no pid")?);
    metrics::wait_ready(http).await?;
    Ok(Running {
        server,
        http,
        mqtt,
        pid,
        ready_ms: t0.elapsed().as_millis() as u64,
    })
}

/// Stops a started mqws (SIGTERM, bounded) and says how it went.
pub fn stop(mut r: Running) -> anyhow::Result<Option<StopInfo>> {
    tokio::task::block_in_place(|| r.server.stop())
}

/// The stderr log file for the `n`-th server of a run (1-based): `FILE`, then `FILE.2`, …
pub fn log_file(common: &Common, n: u32) -> Option<PathBuf> {
    common.server_log.as_ref().map(|p| {
        if n <= 1 {
            p.clone()
        } else {
            let mut s = p.clone().into_os_string();
            s.push(format!(".{n}"));
            PathBuf::from(s)
        }
    })
}

/// CPU counters at the start of a phase.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    wall: Instant,
    server: Option<f64>,
    own: Option<f64>,
    machine: Option<f64>,
}

/// CPU used over a phase, in % of one core.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    /// mqws.
    pub server_pct: Option<f64>,
    /// This benchmark process.
    pub bench_pct: Option<f64>,
    /// Everything else on the machine (another build, …); large values disturb the figures.
    pub other_pct: Option<f64>,
}

impl CpuMark {
    /// Reads the counters now.
    pub fn now(pid: u32) -> Self {
        Self {
            wall: Instant::now(),
            server: procstat::cpu_seconds(pid),
            own: procstat::own_cpu_seconds(),
            machine: procstat::machine_busy_seconds(),
        }
    }

    /// CPU used since the mark.
    pub fn since(&self, pid: u32) -> CpuUse {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-6);
        let d = |a: Option<f64>, b: Option<f64>| Some((b? - a?).max(0.0));
        let server = d(self.server, procstat::cpu_seconds(pid));
        let own = d(self.own, procstat::own_cpu_seconds());
        let machine = d(self.machine, procstat::machine_busy_seconds());
        let other = match (machine, server, own) {
            (Some(m), Some(s), Some(o)) => Some((m - s - o).max(0.0)),
            _ => None,
        };
        let pct = |v: Option<f64>| v.map(|v| v / wall * 100.0);
        CpuUse {
            server_pct: pct(server),
            bench_pct: pct(own),
            other_pct: pct(other),
        }
    }
}

/// Peak RSS of a phase: resets `VmHWM` at the start, samples `VmRSS` meanwhile.
#[derive(Debug)]
pub struct RssWatch {
    pid: u32,
    reset: bool,
    start_kib: Option<u64>,
    sampler: procstat::RssSampler,
}

/// What [`RssWatch`] saw.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RssUse {
    /// `VmRSS` at the start of the phase, KiB.
    pub start_kib: Option<u64>,
    /// `VmHWM` at the end, KiB (the phase's peak when `hwm_reset`, else since start).
    pub peak_kib: Option<u64>,
    /// Whether `VmHWM` was reset at the start of the phase.
    pub hwm_reset: bool,
    /// Largest `VmRSS` sampled every 100 ms, KiB.
    pub max_sampled_kib: u64,
    /// `VmRSS` at the end, KiB.
    pub end_kib: Option<u64>,
}

impl RssWatch {
    /// Starts watching `pid` (call inside the runtime).
    pub fn start(pid: u32) -> Self {
        let start_kib = procstat::status_kib(pid, "VmRSS");
        let reset = procstat::reset_peak(pid);
        Self {
            pid,
            reset,
            start_kib,
            sampler: procstat::RssSampler::start(pid, Duration::from_millis(100)),
        }
    }

    /// Stops and reports.
    pub async fn finish(self) -> RssUse {
        let max_sampled_kib = self.sampler.finish().await;
        RssUse {
            start_kib: self.start_kib,
            peak_kib: procstat::status_kib(self.pid, "VmHWM"),
            hwm_reset: self.reset,
            max_sampled_kib,
            end_kib: procstat::status_kib(self.pid, "VmRSS"),
        }
    }
}

/// `du -sb DIR`: apparent size in bytes (files and directories), as the `du` tool reports it.
pub fn du_sb(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("du")
        .arg("-sb")
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Bytes actually allocated on disk under `dir` (st_blocks × 512; lower than the apparent
/// size when files are sparse). Bounded by the directory's size; errors count as 0.
pub fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// The `q`-quantile (0..=1) of `v` (sorted in place); None when empty.
pub fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    v.get(i).copied()
}

/// Formats an optional number with `d` decimals, `-` when absent.
pub fn opt(v: Option<f64>, d: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.d$}"))
}

/// KiB to MiB, formatted.
pub fn mib_kib(kib: Option<u64>) -> String {
    opt(kib.map(|k| k as f64 / 1024.0), 1)
}

/// Bytes to MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS` (no time-zone database needed).
pub fn utc_now() -> String {
    let secs = crate::payload::now_us() / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes `value` as pretty JSON to `path` when given.
pub fn write_json(path: Option<&Path>, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(p) = path {
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut v, 0.0), Some(1.0));
        assert_eq!(quantile(&mut v, 0.5), Some(3.0));
        assert_eq!(quantile(&mut v, 1.0), Some(5.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn utc_format() {
        let s = utc_now();
        assert_eq!(s.len(), 19);
        assert!(s.starts_with("20"));
    }

    #[test]
    fn disk_usage_of_a_dir() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("a"), vec![1u8; 10_000]).expect("write");
        assert!(du_sb(d.path()).is_some_and(|b| b >= 10_000));
        assert!(allocated_bytes(d.path()) >= 8192);
    }
}
