//! Measurement helpers: latency percentiles, peak RSS, on-disk size of a directory and
//! incompressible record payloads. Owns nothing engine-specific.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// Latency summary of a set of timed operations, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Latency {
    /// Number of timed operations.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50_us: f64,
    /// 99th percentile.
    pub(crate) p99_us: f64,
    /// Slowest operation.
    pub(crate) max_us: f64,
}

impl Latency {
    /// Summarises raw per-operation durations (sorts them in place).
    pub(crate) fn from_samples(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let pick = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            // Nearest-rank percentile.
            let rank = (q * samples.len() as f64).ceil() as usize;
            let idx = rank.clamp(1, samples.len()) - 1;
            samples.get(idx).map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        Self {
            count: samples.len() as u64,
            p50_us: pick(0.50),
            p99_us: pick(0.99),
            max_us: samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        }
    }
}

/// Peak resident set size of this process (VmHWM), in KiB; 0 if unreadable.
pub(crate) fn peak_rss_kib() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes a directory tree occupies: (allocated on disk as `du` counts it, apparent length).
pub(crate) fn dir_size(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut allocated = 0;
    let mut apparent = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // Files can vanish between listing and stat (compaction): skip them.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                allocated += meta.blocks() * 512;
                apparent += meta.len();
            }
        }
    }
    (allocated, apparent)
}

/// A fast xorshift generator filling record payloads with incompressible bytes, so that
/// fjall's LZ4 block compression gains nothing that real (often JSON) payloads might give it.
#[derive(Debug)]
pub(crate) struct Payload {
    state: u64,
}

impl Payload {
    /// A generator with a fixed seed (runs are reproducible).
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed | 1 }
    }

    /// Overwrites `buf` with fresh pseudo-random bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.state = x;
            let bytes = x.to_le_bytes();
            let n = chunk.len();
            chunk.copy_from_slice(bytes.get(..n).unwrap_or(&bytes));
        }
    }
}

/// Median and spread of a handful of figures (one per round).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Spread {
    /// Median (mean of the two middle values for an even count).
    pub(crate) median: f64,
    /// Smallest.
    pub(crate) min: f64,
    /// Largest.
    pub(crate) max: f64,
}

impl Spread {
    /// Median, min and max of `values` (all zero when empty).
    pub(crate) fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Self::default();
        }
        let mid = |i: usize| v.get(i).copied().unwrap_or(0.0);
        let median = if n % 2 == 1 {
            mid(n / 2)
        } else {
            (mid(n / 2 - 1) + mid(n / 2)) / 2.0
        };
        Self {
            median,
            min: mid(0),
            max: mid(n - 1),
        }
    }
}
