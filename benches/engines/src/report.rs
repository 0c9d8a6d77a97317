//! The markdown report: the per-case medians with their spreads across rounds, the per-round
//! figures, the fdatasync baseline, the churn and crash tables, and the settings used.

use crate::child::{AppendResult, ChurnResult, ReopenResult};
use crate::engine::{EngineKind, CACHE_BYTES, FJALL_MAX_JOURNAL_BYTES, FJALL_MEMTABLE_BYTES};
use crate::parent::RunArgs;
use crate::stats::{Latency, Spread};
use std::fmt::Write;

/// One append case of one round, with the baseline measured just before it.
#[derive(Debug, Clone)]
pub(crate) struct AppendRow {
    /// Engine.
    pub(crate) engine: EngineKind,
    /// Record size, bytes.
    pub(crate) size: usize,
    /// Records per commit.
    pub(crate) group: usize,
    /// Round (0-based).
    pub(crate) round: usize,
    /// Engine figures.
    pub(crate) result: AppendResult,
    /// Plain-file write + fdatasync of `size` bytes, measured just before.
    pub(crate) baseline: Latency,
}

/// One churn case.
#[derive(Debug, Clone)]
pub(crate) struct ChurnRow {
    /// Engine.
    pub(crate) engine: EngineKind,
    /// Figures.
    pub(crate) result: ChurnResult,
}

/// One kill -9 and reopen.
#[derive(Debug, Clone)]
pub(crate) struct CrashRow {
    /// Engine.
    pub(crate) engine: EngineKind,
    /// Highest sequence number the writer reported committed.
    pub(crate) acked: Option<u64>,
    /// Whether the writer died of the kill (not of its own accord).
    pub(crate) killed: bool,
    /// Seconds between start and kill.
    pub(crate) ran_s: f64,
    /// Reopen figures.
    pub(crate) reopen: ReopenResult,
}

/// Everything one `run` measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// The exact command line.
    pub(crate) command: String,
    /// UTC start time.
    pub(crate) started: String,
    /// UTC end time.
    pub(crate) finished: String,
    /// Seconds spent waiting for a quiet machine.
    pub(crate) waited_s: u64,
    /// Whether waiting hit its cap (measured on a busy machine).
    pub(crate) gave_up_waiting: bool,
    /// Append cases.
    pub(crate) appends: Vec<AppendRow>,
    /// Churn cases.
    pub(crate) churns: Vec<ChurnRow>,
    /// Crash cases.
    pub(crate) crashes: Vec<CrashRow>,
}

/// Current UTC time as `date -u` prints it.
pub(crate) fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Formats a spread as `median (min–max)` with `prec` decimals, after scaling by `k`.
fn sp(values: &[f64], k: f64, prec: usize) -> String {
    let s = Spread::of(&values.iter().map(|v| v * k).collect::<Vec<_>>());
    format!("{:.p$} ({:.p$}–{:.p$})", s.median, s.min, s.max, p = prec)
}

/// Bytes as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1_048_576.0)
}

/// Human size label.
fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// The medians table: one row per engine × (size, group).
fn medians(out: &mut String, rep: &Report) {
    let _ = writeln!(out, "| engine | record | group | commits/run | commit p50 ms | commit p99 ms | worst max ms | records/s | MiB/s | peak RSS MiB | disk at end MiB | disk fdatasync p50 / p99 ms (adjacent) |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut keys: Vec<(usize, usize, EngineKind)> = Vec::new();
    for r in &rep.appends {
        if !keys.contains(&(r.size, r.group, r.engine)) {
            keys.push((r.size, r.group, r.engine));
        }
    }
    for (size, group, engine) in keys {
        let rows: Vec<&AppendRow> = rep
            .appends
            .iter()
            .filter(|r| r.size == size && r.group == group && r.engine == engine)
            .collect();
        let f = |g: &dyn Fn(&AppendRow) -> f64| rows.iter().map(|r| g(r)).collect::<Vec<f64>>();
        let worst = f(&|r| r.result.commit.max_us)
            .into_iter()
            .fold(0.0, f64::max);
        let rss = rows
            .iter()
            .map(|r| r.result.peak_rss_kib)
            .max()
            .unwrap_or(0);
        let disk = Spread::of(&f(&|r| r.result.disk_bytes as f64)).median;
        let _ =
            writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {:.1} | {} | {} | {:.0} | {:.0} | {:.3} / {:.3} |",
            engine.name(), size_label(size), group,
            Spread::of(&f(&|r| r.result.commit.count as f64)).median,
            sp(&f(&|r| r.result.commit.p50_us), 1e-3, 3),
            sp(&f(&|r| r.result.commit.p99_us), 1e-3, 3),
            worst / 1e3,
            sp(&f(&|r| r.result.records_per_s), 1.0, 0),
            sp(&f(&|r| r.result.mib_per_s), 1.0, 1),
            rss as f64 / 1024.0,
            disk / 1_048_576.0,
            Spread::of(&f(&|r| r.baseline.p50_us)).median / 1e3,
            Spread::of(&f(&|r| r.baseline.p99_us)).median / 1e3,
        );
    }
}

/// Baseline figures per size over every baseline run.
fn baselines(out: &mut String, rep: &Report) {
    let _ = writeln!(out, "| write size | runs | fdatasync+write p50 ms, median of runs (min–max) | p99 ms, median of runs (min–max) |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut sizes: Vec<usize> = rep.appends.iter().map(|r| r.size).collect();
    sizes.dedup();
    sizes.sort_unstable();
    sizes.dedup();
    for size in sizes {
        let b: Vec<&Latency> = rep
            .appends
            .iter()
            .filter(|r| r.size == size)
            .map(|r| &r.baseline)
            .collect();
        let p50: Vec<f64> = b.iter().map(|l| l.p50_us).collect();
        let p99: Vec<f64> = b.iter().map(|l| l.p99_us).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            size_label(size),
            b.len(),
            sp(&p50, 1e-3, 3),
            sp(&p99, 1e-3, 3)
        );
    }
}

/// Per-round raw figures.
fn per_round(out: &mut String, rep: &Report) {
    let _ = writeln!(out, "| round | engine | record | group | records | s | p50 ms | p99 ms | max ms | records/s | MiB/s | RSS MiB | base p50 / p99 ms |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rep.appends {
        let (c, b) = (&r.result.commit, &r.baseline);
        let _ = writeln!(out, "| {} | {} | {} | {} | {} | {:.1} | {:.3} | {:.3} | {:.1} | {:.0} | {:.1} | {:.0} | {:.3} / {:.3} |",
            r.round + 1, r.engine.name(), size_label(r.size), r.group, r.result.records, r.result.seconds,
            c.p50_us / 1e3, c.p99_us / 1e3, c.max_us / 1e3, r.result.records_per_s, r.result.mib_per_s,
            r.result.peak_rss_kib as f64 / 1024.0, b.p50_us / 1e3, b.p99_us / 1e3);
    }
}

/// Churn and crash tables.
fn churn_crash(out: &mut String, rep: &Report, a: &RunArgs) {
    if !rep.churns.is_empty() {
        let _ = writeln!(
            out,
            "\n### Disk use under retention churn ({} × group {}, keep {} MiB, append {}× that)\n",
            size_label(a.churn_size),
            a.churn_group,
            a.churn_budget_mib,
            a.churn_factor
        );
        let _ = writeln!(out, "| engine | records | s | MiB/s | commit p50 / p99 / max ms | disk at end MiB | 3 s later MiB | max seen MiB | peak RSS MiB |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for c in &rep.churns {
            let r = &c.result;
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.3} / {:.3} / {:.1} | {} | {} | {} | {:.0} |",
                c.engine.name(),
                r.records,
                r.seconds,
                r.mib_per_s,
                r.commit.p50_us / 1e3,
                r.commit.p99_us / 1e3,
                r.commit.max_us / 1e3,
                mib(r.end_disk_bytes),
                mib(r.settled_disk_bytes),
                mib(r.max_disk_bytes),
                r.peak_rss_kib as f64 / 1024.0
            );
        }
    }
    if !rep.crashes.is_empty() {
        let _ = writeln!(
            out,
            "\n### Recovery after kill -9 (256 B × group 64 flat out, SIGKILL after {} s)\n",
            a.crash_after
        );
        let _ = writeln!(out, "| engine | ran s | last acked seq | last key after reopen | reopen ms (open + last key) | verify ms | acked present | acked lost | reopen RSS MiB |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for c in &rep.crashes {
            let r = &c.reopen;
            let expected = c.acked.map_or(0, |n| n + 1);
            let lost = match r.first_missing {
                Some(seq) => format!(
                    "**yes** ({} missing, first {seq})",
                    expected.saturating_sub(r.present)
                ),
                None => "none".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {:.1}{} | {} | {} | {:.1} | {:.1} | {} / {} | {} | {:.0} |",
                c.engine.name(),
                c.ran_s,
                if c.killed { "" } else { " (not killed!)" },
                c.acked.map_or("-".into(), |n| n.to_string()),
                r.last_seq.map_or("-".into(), |n| n.to_string()),
                r.reopen_ms,
                r.verify_ms,
                r.present,
                expected,
                lost,
                r.peak_rss_kib as f64 / 1024.0
            );
        }
    }
}

/// Renders the whole report.
pub(crate) fn render(rep: &Report, a: &RunArgs) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Command: `{}`  \nRan {} → {}; waited {} s for a quiet machine{}.\n",
        rep.command,
        rep.started,
        rep.finished,
        rep.waited_s,
        if rep.gave_up_waiting {
            " and then measured anyway (machine busy)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "Settings: cache {} MiB for every engine; redb `Durability::Immediate` per commit; fjall one \
        `WriteBatch` per commit with `PersistMode::SyncData`, memtable {} MiB, `max_journaling_size` {} MiB, \
        default compression (LZ4) on incompressible payloads; u64 big-endian keys; fresh dir per case.\n",
        CACHE_BYTES >> 20, FJALL_MEMTABLE_BYTES >> 20, FJALL_MAX_JOURNAL_BYTES >> 20);
    if !rep.appends.is_empty() {
        let _ = writeln!(out, "### Append: median of {} rounds (min–max)\n", a.rounds);
        medians(&mut out, rep);
        let kind = if a.baseline_prealloc {
            "overwrite inside a file pre-sized with `set_len` (as fjall's journal)"
        } else {
            "append to a growing file"
        };
        let _ = writeln!(
            out,
            "\n### Disk baseline: plain file, write + `File::sync_data`, {kind}\n"
        );
        baselines(&mut out, rep);
        let _ = writeln!(out, "\n### Append: every round\n");
        per_round(&mut out, rep);
    }
    churn_crash(&mut out, rep, a);
    out
}
