//! The measurements themselves, each run in a child process of this binary so that its peak RSS
//! belongs to one engine and one case: timed appends, the plain-file fdatasync baseline, the
//! retention churn, the crash writer and the timed reopen after a kill. Each prints one JSON line.

use crate::engine::{self, EngineKind, OpenOptions};
use crate::stats::{dir_size, peak_rss_kib, Latency, Payload};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When an append loop stops: whichever limit is hit first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Stop after this many records (`u64::MAX`: no limit).
    pub(crate) records: u64,
    /// Stop after this long.
    pub(crate) seconds: f64,
    /// Stop after this many payload bytes (keeps disk use bounded).
    pub(crate) max_bytes: u64,
}

/// Result of one timed append case.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AppendResult {
    /// Records appended.
    pub(crate) records: u64,
    /// Wall time of the append loop, seconds.
    pub(crate) seconds: f64,
    /// Per-commit latency.
    pub(crate) commit: Latency,
    /// Records per second.
    pub(crate) records_per_s: f64,
    /// Payload MiB per second.
    pub(crate) mib_per_s: f64,
    /// Disk bytes (allocated) of the database at the end, before close.
    pub(crate) disk_bytes: u64,
    /// Peak RSS of the child, KiB.
    pub(crate) peak_rss_kib: u64,
}

/// Appends `size`-byte records in groups of `group`, one durable commit per group.
pub(crate) fn append(
    kind: EngineKind,
    dir: &Path,
    size: usize,
    group: usize,
    limits: Limits,
) -> Result<AppendResult> {
    let mut db = engine::open(
        kind,
        dir,
        OpenOptions {
            create: true,
            ..Default::default()
        },
    )?;
    let mut payload = Payload::new(0x9E37_79B9_7F4A_7C15);
    let mut values = vec![vec![0u8; size]; group];
    let mut samples = Vec::new();
    let mut seq = 0u64;
    let start = Instant::now();
    while seq < limits.records
        && start.elapsed().as_secs_f64() < limits.seconds
        && seq * (size as u64) < limits.max_bytes
    {
        values.iter_mut().for_each(|v| payload.fill(v));
        let t0 = Instant::now();
        db.commit(seq, &values, None)?;
        samples.push(t0.elapsed());
        seq += group as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    let disk_bytes = dir_size(dir).0;
    drop(db);
    Ok(AppendResult {
        records: seq,
        seconds,
        commit: Latency::from_samples(&mut samples),
        records_per_s: seq as f64 / seconds,
        mib_per_s: (seq * size as u64) as f64 / seconds / (1024.0 * 1024.0),
        disk_bytes,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// Size of the pre-sized baseline file (fjall pre-sizes each journal to 64 MiB with `set_len`).
const PREALLOC_BYTES: u64 = 64 * 1024 * 1024;

/// Plain file baseline: `write` `size` bytes then `File::sync_data`, timed per op. Appends to a
/// growing file by default (each fdatasync also commits the new file size); with `prealloc`,
/// overwrites sequentially inside a file first sized with `set_len` as fjall's journal is.
pub(crate) fn baseline(
    dir: &Path,
    size: usize,
    seconds: f64,
    max_ops: u64,
    prealloc: bool,
) -> Result<Latency> {
    use std::io::{Seek, SeekFrom};
    let path = dir.join("baseline.dat");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!prealloc)
        .open(&path)?;
    if prealloc {
        file.set_len(PREALLOC_BYTES)?;
        file.sync_all()?;
    }
    let mut buf = vec![0u8; size];
    let mut payload = Payload::new(7);
    let mut samples = Vec::new();
    let mut pos = 0u64;
    let start = Instant::now();
    while (samples.len() as u64) < max_ops && start.elapsed().as_secs_f64() < seconds {
        payload.fill(&mut buf);
        if prealloc && pos + size as u64 > PREALLOC_BYTES {
            pos = 0;
            file.seek(SeekFrom::Start(0))?;
        }
        let t0 = Instant::now();
        file.write_all(&buf)?;
        file.sync_data()?;
        samples.push(t0.elapsed());
        pos += size as u64;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Latency::from_samples(&mut samples))
}

/// Result of the retention churn.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ChurnResult {
    /// Records appended.
    pub(crate) records: u64,
    /// Records kept by the redb trim (fjall: FIFO limit / size).
    pub(crate) kept_records: u64,
    /// Wall time, seconds.
    pub(crate) seconds: f64,
    /// Payload MiB per second.
    pub(crate) mib_per_s: f64,
    /// Per-commit latency.
    pub(crate) commit: Latency,
    /// Allocated disk bytes right after the last commit.
    pub(crate) end_disk_bytes: u64,
    /// Allocated disk bytes 3 s after the last commit (background work settled).
    pub(crate) settled_disk_bytes: u64,
    /// Largest allocated size seen by the 1 s sampler.
    pub(crate) max_disk_bytes: u64,
    /// Peak RSS of the child, KiB.
    pub(crate) peak_rss_kib: u64,
}

/// Appends `factor × budget` bytes while keeping only ~`budget` bytes of values.
pub(crate) fn churn(
    kind: EngineKind,
    dir: &Path,
    size: usize,
    group: usize,
    budget: u64,
    factor: u64,
) -> Result<ChurnResult> {
    let opts = OpenOptions {
        create: true,
        fifo_limit: Some(budget),
    };
    let mut db = engine::open(kind, dir, opts)?;
    let kept = budget / size as u64;
    let total = factor * kept;
    let max_seen = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (dir, max_seen, stop) = (dir.to_path_buf(), max_seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                max_seen.fetch_max(dir_size(&dir).0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let mut payload = Payload::new(11);
    let mut values = vec![vec![0u8; size]; group];
    let mut samples = Vec::new();
    let mut seq = 0u64;
    let start = Instant::now();
    while seq < total {
        values.iter_mut().for_each(|v| payload.fill(v));
        let end = seq + group as u64;
        let trim = end.checked_sub(kept).filter(|t| *t > 0);
        let t0 = Instant::now();
        db.commit(seq, &values, trim)?;
        samples.push(t0.elapsed());
        seq = end;
    }
    let seconds = start.elapsed().as_secs_f64();
    let end_disk_bytes = dir_size(dir).0;
    std::thread::sleep(Duration::from_secs(3));
    let settled_disk_bytes = dir_size(dir).0;
    stop.store(true, Ordering::Relaxed);
    sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    let max_disk_bytes = max_seen.load(Ordering::Relaxed).max(end_disk_bytes);
    drop(db);
    Ok(ChurnResult {
        records: seq,
        kept_records: kept,
        seconds,
        mib_per_s: (seq * size as u64) as f64 / seconds / (1024.0 * 1024.0),
        commit: Latency::from_samples(&mut samples),
        end_disk_bytes,
        settled_disk_bytes,
        max_disk_bytes,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// Appends 256 B records in groups of 64 flat out, printing the highest committed sequence
/// number after every commit, until killed (or `max_records`).
pub(crate) fn crash_writer(kind: EngineKind, dir: &Path, max_records: u64) -> Result<()> {
    let mut db = engine::open(
        kind,
        dir,
        OpenOptions {
            create: true,
            ..Default::default()
        },
    )?;
    let mut payload = Payload::new(13);
    let mut values = vec![vec![0u8; 256]; 64];
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut seq = 0u64;
    while seq < max_records {
        values.iter_mut().for_each(|v| payload.fill(v));
        db.commit(seq, &values, None)?;
        seq += 64;
        writeln!(out, "{}", seq - 1)?;
        out.flush()?;
    }
    Ok(())
}

/// Result of reopening after a kill.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ReopenResult {
    /// Open plus reading the last key, milliseconds.
    pub(crate) reopen_ms: f64,
    /// The last key found.
    pub(crate) last_seq: Option<u64>,
    /// Time to scan and check every acknowledged key, milliseconds.
    pub(crate) verify_ms: f64,
    /// Acknowledged keys found.
    pub(crate) present: u64,
    /// First acknowledged key missing, if any.
    pub(crate) first_missing: Option<u64>,
    /// Peak RSS of the child, KiB.
    pub(crate) peak_rss_kib: u64,
}

/// Reopens the database, reads its last key, then checks every key in `0..=acked`.
pub(crate) fn reopen(kind: EngineKind, dir: &Path, acked: Option<u64>) -> Result<ReopenResult> {
    let t0 = Instant::now();
    let db = engine::open(kind, dir, OpenOptions::default())?;
    let last_seq = db.last_seq()?;
    let reopen_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let check = match acked {
        Some(upto) => db.verify(upto)?,
        None => engine::Verify::default(),
    };
    let verify_ms = t1.elapsed().as_secs_f64() * 1e3;
    drop(db);
    Ok(ReopenResult {
        reopen_ms,
        last_seq,
        verify_ms,
        present: check.present,
        first_missing: check.first_missing,
        peak_rss_kib: peak_rss_kib(),
    })
}
