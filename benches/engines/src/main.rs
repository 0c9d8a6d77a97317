//! `mqws-engines`: a stand-alone, rerunnable experiment comparing redb 4.6, redb 5 and fjall 3 as
//! the mqws durable log (issue 22). `run` orchestrates every case, each in a child process of this
//! same binary (hidden subcommands), and prints a markdown report. This module owns the command
//! line only.

mod child;
mod engine;
mod fjall_engine;
mod parent;
mod redb_engine;
mod report;
mod stats;

use anyhow::Result;
use clap::{Parser, Subcommand};
use engine::EngineKind;
use std::path::PathBuf;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Log storage-engine experiment: redb 4.6 vs redb 5 vs fjall 3")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Subcommands: `run` for people, the rest are the child processes `run` starts.
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the whole experiment and print a markdown report.
    Run(parent::RunArgs),
    /// Child: timed appends (prints one JSON line).
    #[command(hide = true)]
    Append {
        #[arg(long)]
        engine: EngineKind,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        group: usize,
        #[arg(long)]
        records: u64,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        max_bytes: u64,
    },
    /// Child: plain file write + fdatasync baseline.
    #[command(hide = true)]
    Baseline {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        max_ops: u64,
        #[arg(long)]
        prealloc: bool,
    },
    /// Child: appends under retention.
    #[command(hide = true)]
    Churn {
        #[arg(long)]
        engine: EngineKind,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        group: usize,
        #[arg(long)]
        budget: u64,
        #[arg(long)]
        factor: u64,
    },
    /// Child: append flat out printing committed sequence numbers until killed.
    #[command(hide = true)]
    CrashWriter {
        #[arg(long)]
        engine: EngineKind,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        max_records: u64,
    },
    /// Child: timed reopen and check of acknowledged records.
    #[command(hide = true)]
    Reopen {
        #[arg(long)]
        engine: EngineKind,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        acked: Option<u64>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let json = match cli.cmd {
        Cmd::Run(args) => return parent::run(&args),
        Cmd::Append {
            engine,
            dir,
            size,
            group,
            records,
            seconds,
            max_bytes,
        } => {
            let limits = child::Limits {
                records,
                seconds,
                max_bytes,
            };
            serde_json::to_string(&child::append(engine, &dir, size, group, limits)?)?
        }
        Cmd::Baseline {
            dir,
            size,
            seconds,
            max_ops,
            prealloc,
        } => serde_json::to_string(&child::baseline(&dir, size, seconds, max_ops, prealloc)?)?,
        Cmd::Churn {
            engine,
            dir,
            size,
            group,
            budget,
            factor,
        } => serde_json::to_string(&child::churn(engine, &dir, size, group, budget, factor)?)?,
        Cmd::CrashWriter {
            engine,
            dir,
            max_records,
        } => return child::crash_writer(engine, &dir, max_records),
        Cmd::Reopen { engine, dir, acked } => {
            serde_json::to_string(&child::reopen(engine, &dir, acked)?)?
        }
    };
    println!("{json}");
    Ok(())
}
