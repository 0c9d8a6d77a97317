//! The storage under the data dir: which device and filesystem (`/proc/mounts`), and how long
//! a small write + fsync takes there (p50/p99), reported beside every figure of a run.
//!
//! mqws acknowledges QoS 1 and delivers only after the log's fsync, so the disk's fsync
//! latency is a floor for its latency; and a data dir on `tmpfs` would make the figures
//! meaningless (a note says so).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use crate::stats;

/// Bytes written before each fsync.
pub const FSYNC_BLOCK: usize = 4096;

/// Where the data dir lives and how fast fsync is there.
#[derive(Debug, Clone, Serialize)]
pub struct StorageInfo {
    /// The directory probed (the parent of the mqws data dir).
    pub path: PathBuf,
    /// Device of the mount holding it (`/proc/mounts` field 1).
    pub device: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount point.
    pub mount_point: String,
    /// write(4 KiB) + fsync rounds measured.
    pub fsync_samples: u64,
    /// Median write + fsync time, µs.
    pub fsync_p50_us: u64,
    /// 99th percentile, µs.
    pub fsync_p99_us: u64,
    /// Slowest, µs.
    pub fsync_max_us: u64,
}

impl StorageInfo {
    /// One line for the reports.
    pub fn line(&self) -> String {
        format!(
            "storage: {} is on {} ({}, mounted at {}); write {} B + fsync ×{}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            self.path.display(),
            self.device,
            self.fstype,
            self.mount_point,
            FSYNC_BLOCK,
            self.fsync_samples,
            self.fsync_p50_us as f64 / 1000.0,
            self.fsync_p99_us as f64 / 1000.0,
            self.fsync_max_us as f64 / 1000.0
        )
    }

    /// Whether the data would live in memory (the figures would not be about a disk).
    pub fn in_memory(&self) -> bool {
        matches!(self.fstype.as_str(), "tmpfs" | "ramfs")
    }
}

/// The mount (device, fstype, mount point) holding `path`: the longest mount point that is a
/// prefix of its canonical form.
pub fn mount_of(path: &Path) -> Option<(String, String, String)> {
    let canon = std::fs::canonicalize(path).ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    best_mount(&mounts, &canon)
}

fn best_mount(mounts: &str, path: &Path) -> Option<(String, String, String)> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, mnt, fs) = (f.next()?, f.next()?, f.next()?);
            // /proc/mounts escapes spaces as \040.
            let mnt = mnt.replace("\\040", " ");
            path.starts_with(&mnt)
                .then(|| (dev.to_string(), fs.to_string(), mnt))
        })
        .max_by_key(|(_, _, m)| m.len())
}

/// Measures `rounds` × (append 4 KiB, fsync) in a fresh file under `dir`, and looks up the
/// mount. The file is removed afterwards.
pub fn probe(dir: &Path, rounds: u64) -> anyhow::Result<StorageInfo> {
    let tmp = tempfile::Builder::new()
        .prefix("mqws-load-fsync-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a probe dir in {}", dir.display()))?;
    let mut f = std::fs::File::create(tmp.path().join("probe"))?;
    let block = vec![0x5a_u8; FSYNC_BLOCK];
    let mut h = stats::new_histogram();
    for _ in 0..rounds.max(1) {
        let t0 = Instant::now();
        f.write_all(&block)?;
        f.sync_all()?;
        h.saturating_record((t0.elapsed().as_micros() as u64).max(1));
    }
    let (device, fstype, mount_point) = mount_of(dir).unwrap_or_else(|| {
        (
            "unknown".to_string(),
            "unknown".to_string(),
            "?".to_string(),
        )
    });
    Ok(StorageInfo {
        path: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        device,
        fstype,
        mount_point,
        fsync_samples: h.len(),
        fsync_p50_us: h.value_at_quantile(0.50),
        fsync_p99_us: h.value_at_quantile(0.99),
        fsync_max_us: h.max(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_mount_wins() {
        let mounts = "/dev/vda / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\ntmpfs /tmpx tmpfs rw 0 0\n";
        let m = best_mount(mounts, Path::new("/tmp/a")).expect("found");
        assert_eq!(m, ("tmpfs".into(), "tmpfs".into(), "/tmp".into()));
        let m = best_mount(mounts, Path::new("/var/tmp")).expect("found");
        assert_eq!(m.0, "/dev/vda");
    }

    #[test]
    fn probe_measures() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = probe(d.path(), 5).expect("probe");
        assert_eq!(s.fsync_samples, 5);
        assert!(s.fsync_p50_us >= 1 && s.fsync_p99_us >= s.fsync_p50_us);
        assert!(s.line().contains("fsync"));
    }
}
