//! Orchestration of `run`: waits for a quiet machine, starts every case as a child process in a
//! fresh directory under the work dir (removed afterwards), alternates the fdatasync baseline with
//! the engine cases and the engines with each other, kills the crash writer, and hands the
//! collected results to the report.

use crate::child::{AppendResult, ChurnResult, ReopenResult};
use crate::engine::EngineKind;
use crate::report::{self, AppendRow, ChurnRow, CrashRow, Report};
use crate::stats::Latency;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Processes whose presence means the machine is busy (the brief's list).
const BUSY_PATTERN: &str = "ci/run|rustc|cargo-clippy|mqws serve|mqws-catchup|mqws-load";

/// Options of `run`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// Parent of the per-case temp dirs (same disk as /work); removed at the end if empty.
    #[arg(long, default_value = "/work/tmp-engines")]
    pub(crate) work_dir: PathBuf,
    /// Engines, in the order they alternate.
    #[arg(long, value_delimiter = ',', default_value = "redb4,redb5,fjall3")]
    pub(crate) engines: Vec<EngineKind>,
    /// Record sizes in bytes for the append cases.
    #[arg(long, value_delimiter = ',', default_value = "256,65536")]
    pub(crate) sizes: Vec<usize>,
    /// Records per durable commit for the append cases.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub(crate) groups: Vec<usize>,
    /// Rounds of every append and crash case (engines alternate within a round).
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Append case length in seconds (the case also stops at --records or --max-mib).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Exact number of records per append case (default: run for --seconds).
    #[arg(long)]
    pub(crate) records: Option<u64>,
    /// Payload MiB cap per append case (bounds disk use).
    #[arg(long, default_value_t = 512)]
    pub(crate) max_mib: u64,
    /// Length of each baseline run in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) baseline_seconds: f64,
    /// Retention budget (values kept) for the churn case, MiB.
    #[arg(long, default_value_t = 64)]
    pub(crate) churn_budget_mib: u64,
    /// The churn case appends this many times the budget.
    #[arg(long, default_value_t = 4)]
    pub(crate) churn_factor: u64,
    /// Record size of the churn case.
    #[arg(long, default_value_t = 256)]
    pub(crate) churn_size: usize,
    /// Records per commit in the churn case.
    #[arg(long, default_value_t = 64)]
    pub(crate) churn_group: usize,
    /// Seconds before the crash writer gets SIGKILL.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) crash_after: f64,
    /// Baseline overwrites a file pre-sized with `set_len` (like fjall's journal) instead of
    /// appending to a growing file.
    #[arg(long)]
    pub(crate) baseline_prealloc: bool,
    /// Skip the append cases.
    #[arg(long)]
    pub(crate) skip_append: bool,
    /// Skip the churn cases.
    #[arg(long)]
    pub(crate) skip_churn: bool,
    /// Skip the crash cases.
    #[arg(long)]
    pub(crate) skip_crash: bool,
    /// Do not wait for a quiet machine before each case.
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// Give up waiting for a quiet machine after this many minutes in total.
    #[arg(long, default_value_t = 25)]
    pub(crate) max_wait_mins: u64,
    /// Also write the markdown report here.
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
}

/// Waits before each measurement until none of [`BUSY_PATTERN`] runs, within a total budget.
#[derive(Debug)]
struct Quiet {
    enabled: bool,
    waited: Duration,
    cap: Duration,
    gave_up: bool,
}

impl Quiet {
    /// Blocks until the machine looks quiet (polling every 30 s) or the budget is spent.
    fn wait(&mut self) {
        while self.enabled && !self.gave_up {
            let busy = Command::new("pgrep")
                .args(["-f", BUSY_PATTERN])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            if busy.is_empty() {
                return;
            }
            if self.waited >= self.cap {
                eprintln!(
                    "machine still busy after {:?}: measuring anyway",
                    self.waited
                );
                self.gave_up = true;
                return;
            }
            eprintln!("busy ({}), waiting 30 s", busy.replace('\n', " "));
            std::thread::sleep(Duration::from_secs(30));
            self.waited += Duration::from_secs(30);
        }
    }
}

/// Runs this binary with `args`, returning the last line of its stdout.
fn child(args: Vec<String>) -> Result<String> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).args(&args).output()?;
    if !out.status.success() {
        bail!(
            "child {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.lines().last().unwrap_or_default().to_owned())
}

/// A fresh, empty case directory.
fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Builds an argument vector from displayable parts.
macro_rules! argv {
    ($($a:expr),* $(,)?) => { vec![$($a.to_string()),*] };
}

/// One baseline run of `size` bytes.
fn baseline(a: &RunArgs, q: &mut Quiet, size: usize) -> Result<Latency> {
    let dir = fresh_dir(&a.work_dir, "baseline")?;
    q.wait();
    let mut args = argv![
        "baseline",
        "--dir",
        dir.display(),
        "--size",
        size,
        "--seconds",
        a.baseline_seconds,
        "--max-ops",
        100_000
    ];
    if a.baseline_prealloc {
        args.push("--prealloc".to_owned());
    }
    let line = child(args)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(serde_json::from_str(&line)?)
}

/// One append case.
fn append(
    a: &RunArgs,
    q: &mut Quiet,
    e: EngineKind,
    size: usize,
    group: usize,
) -> Result<AppendResult> {
    let dir = fresh_dir(&a.work_dir, &format!("append-{}", e.name()))?;
    q.wait();
    let line = child(argv![
        "append",
        "--engine",
        e.name(),
        "--dir",
        dir.display(),
        "--size",
        size,
        "--group",
        group,
        "--records",
        a.records.unwrap_or(u64::MAX),
        "--seconds",
        if a.records.is_some() {
            f64::MAX
        } else {
            a.seconds
        },
        "--max-bytes",
        a.max_mib * 1024 * 1024
    ])?;
    std::fs::remove_dir_all(&dir)?;
    Ok(serde_json::from_str(&line)?)
}

/// One churn case.
fn churn(a: &RunArgs, q: &mut Quiet, e: EngineKind) -> Result<ChurnResult> {
    let dir = fresh_dir(&a.work_dir, &format!("churn-{}", e.name()))?;
    q.wait();
    let line = child(argv![
        "churn",
        "--engine",
        e.name(),
        "--dir",
        dir.display(),
        "--size",
        a.churn_size,
        "--group",
        a.churn_group,
        "--budget",
        a.churn_budget_mib * 1024 * 1024,
        "--factor",
        a.churn_factor
    ])?;
    std::fs::remove_dir_all(&dir)?;
    Ok(serde_json::from_str(&line)?)
}

/// One crash case: start the writer, SIGKILL it, reopen and check.
fn crash(a: &RunArgs, q: &mut Quiet, e: EngineKind) -> Result<CrashRow> {
    let dir = fresh_dir(&a.work_dir, &format!("crash-{}", e.name()))?;
    q.wait();
    let exe = std::env::current_exe()?;
    let mut writer = Command::new(exe)
        .args(argv![
            "crash-writer",
            "--engine",
            e.name(),
            "--dir",
            dir.display(),
            "--max-records",
            4_000_000
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = writer.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut acked: Option<u64> = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            acked = line.trim().parse().ok().or(acked);
        }
        acked
    });
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.crash_after));
    writer.kill()?; // SIGKILL on Unix
    let status = writer.wait()?;
    let acked = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let ran_s = started.elapsed().as_secs_f64();
    let mut args = argv!["reopen", "--engine", e.name(), "--dir", dir.display()];
    if let Some(n) = acked {
        args.extend(argv!["--acked", n]);
    }
    let reopen: ReopenResult = serde_json::from_str(&child(args)?)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(CrashRow {
        engine: e,
        acked,
        killed: !status.success(),
        ran_s,
        reopen,
    })
}

/// Runs the whole experiment.
pub(crate) fn run(a: &RunArgs) -> Result<()> {
    let command: Vec<String> = std::env::args().collect();
    std::fs::create_dir_all(&a.work_dir)?;
    let mut q = Quiet {
        enabled: !a.no_wait,
        waited: Duration::ZERO,
        cap: Duration::from_secs(a.max_wait_mins * 60),
        gave_up: false,
    };
    let mut rep = Report {
        command: command.join(" "),
        started: report::utc_now(),
        ..Default::default()
    };
    for round in 0..a.rounds {
        if a.skip_append {
            break;
        }
        for &size in &a.sizes {
            for &group in &a.groups {
                for &e in &a.engines {
                    let base = baseline(a, &mut q, size)?;
                    let res = append(a, &mut q, e, size, group)?;
                    eprintln!("round {round} {} {size} B x{group}: p50 {:.0} us, {:.0} rec/s (disk p50 {:.0} us)",
                        e.name(), res.commit.p50_us, res.records_per_s, base.p50_us);
                    rep.appends.push(AppendRow {
                        engine: e,
                        size,
                        group,
                        round,
                        result: res,
                        baseline: base,
                    });
                }
            }
        }
    }
    if !a.skip_churn {
        for &e in &a.engines {
            let result = churn(a, &mut q, e)?;
            eprintln!(
                "churn {}: max disk {} MiB",
                e.name(),
                result.max_disk_bytes >> 20
            );
            rep.churns.push(ChurnRow { engine: e, result });
        }
    }
    for _ in 0..a.rounds {
        if a.skip_crash {
            break;
        }
        for &e in &a.engines {
            let row = crash(a, &mut q, e)?;
            eprintln!(
                "crash {}: acked {:?}, reopen {:.1} ms",
                e.name(),
                row.acked,
                row.reopen.reopen_ms
            );
            rep.crashes.push(row);
        }
    }
    let _ = std::fs::remove_dir(&a.work_dir);
    rep.waited_s = q.waited.as_secs();
    rep.gave_up_waiting = q.gave_up;
    rep.finished = report::utc_now();
    let md = report::render(&rep, a);
    println!("{md}");
    if let Some(path) = &a.report {
        std::fs::write(path, &md)?;
    }
    Ok(())
}
