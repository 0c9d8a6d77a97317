//! `mqws-append`: the log's append latency against the disk's own write + `fdatasync` of the
//! same size, in one run (issue 22's goal: append p99 ≤ 1.3× the disk's). For each record size
//! and round, alternating: a plain file grown by each write (`disk`), a pre-written file
//! overwritten in place (`disk, pre-written`, as the journal writes), mqws's log with its
//! journal (`append, journal`), and without (`append, no journal`: one durable redb commit per
//! append). Each append holds one record, as a lone message at a low rate makes.

use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "The log's append latency against the disk's write + fdatasync")]
struct Cli {
    /// Where the files go (a fresh directory per case is made and removed under it).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// Record (payload) sizes, bytes.
    #[arg(long, value_delimiter = ',', default_value = "256,65536")]
    sizes: Vec<usize>,
    /// Rounds; the cases alternate inside each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Appends (or writes) per case.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// The journal size of the `journal` case (mqws's default).
    #[arg(long, default_value_t = 16 << 20)]
    journal_bytes: u64,
}

/// The cases, in the order each round runs them.
const CASES: [&str; 4] = [
    "disk",
    "disk, pre-written",
    "append, journal",
    "append, no journal",
];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    println!(
        "mqws-append: {} rounds × {} per case, sizes {:?}, under {}",
        cli.rounds,
        cli.count,
        cli.sizes,
        cli.dir.display()
    );
    for &size in &cli.sizes {
        // rows[case][round] = (p50, p99) in µs
        let mut rows = vec![Vec::new(); CASES.len()];
        for round in 1..=cli.rounds {
            for (i, case) in CASES.iter().enumerate() {
                let dir = tempfile::Builder::new()
                    .prefix("mqws-append-")
                    .tempdir_in(&cli.dir)
                    .context("making a case dir")?;
                let times = run_case(case, dir.path(), size, cli.count, cli.journal_bytes)?;
                let (p50, p99) = quantiles(times);
                eprintln!("size {size} round {round} {case}: p50 {p50} µs, p99 {p99} µs");
                rows[i].push((p50, p99));
            }
        }
        report(size, &rows);
    }
    Ok(())
}

/// One case: `count` timed writes or appends of `size` bytes in `dir`.
fn run_case(
    case: &str,
    dir: &Path,
    size: usize,
    count: usize,
    journal_bytes: u64,
) -> anyhow::Result<Vec<Duration>> {
    let block = vec![0x5a_u8; size];
    match case {
        "disk" => {
            let mut f = std::fs::File::create(dir.join("grown"))?;
            (0..count)
                .map(|_| {
                    let t = Instant::now();
                    f.write_all(&block)?;
                    f.sync_data()?;
                    Ok(t.elapsed())
                })
                .collect()
        }
        "disk, pre-written" => {
            let len = (size * count) as u64;
            let mut f = std::fs::File::create(dir.join("prewritten"))?;
            for _ in 0..count {
                f.write_all(&block)?;
            }
            f.sync_all()?;
            (0..count)
                .map(|i| {
                    let t = Instant::now();
                    f.write_all_at(&block, (i * size) as u64 % len.max(1))?;
                    f.sync_data()?;
                    Ok(t.elapsed())
                })
                .collect()
        }
        "append, journal" => mqws::benching::append_latencies(dir, journal_bytes, size, 1, count)
            .map_err(anyhow::Error::msg),
        _ => mqws::benching::append_latencies(dir, 0, size, 1, count).map_err(anyhow::Error::msg),
    }
}

/// p50 and p99 of `times`, µs.
fn quantiles(mut times: Vec<Duration>) -> (u64, u64) {
    times.sort_unstable();
    let at = |q: f64| {
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_micros() as u64
    };
    (at(0.50), at(0.99))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The Markdown table of one size: medians of the rounds with their spread, and the ratio of
/// each append case's p99 to the disk's p99 of the same round.
fn report(size: usize, rows: &[Vec<(u64, u64)>]) {
    println!("\n### {size} B records, one per append\n");
    println!("| case | p50 µs, median (min–max) | p99 µs, median (min–max) | p99 ÷ disk p99 of the same round, median (each round) |");
    println!("|---|---|---|---|");
    let disk: Vec<u64> = rows[0].iter().map(|r| r.1).collect();
    for (case, r) in CASES.iter().zip(rows) {
        let p50: Vec<u64> = r.iter().map(|x| x.0).collect();
        let p99: Vec<u64> = r.iter().map(|x| x.1).collect();
        let ratios: Vec<f64> = p99
            .iter()
            .zip(&disk)
            .map(|(a, d)| *a as f64 / (*d).max(1) as f64)
            .collect();
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let each: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
        println!(
            "| {case} | {} ({}–{}) | {} ({}–{}) | {:.2}× ({}) |",
            median(p50.clone()),
            p50.iter().min().unwrap_or(&0),
            p50.iter().max().unwrap_or(&0),
            median(p99.clone()),
            p99.iter().min().unwrap_or(&0),
            p99.iter().max().unwrap_or(&0),
            sorted[sorted.len() / 2],
            each.join(", ")
        );
    }
}
