//! Command line of `mqws-catchup`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Catch-up benchmarks for mqws: replay speed, reconnect storms, disk use under retention.
#[derive(Debug, Clone, Parser)]
#[command(name = "mqws-catchup", version, about, long_about = None)]
pub struct Cli {
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub common: Common,
    /// The benchmark to run.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Settings shared by every subcommand (accepted before or after the subcommand).
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Path of the mqws binary to start.
    #[arg(long, global = true, default_value = "target/release/mqws")]
    pub mqws_bin: PathBuf,

    /// Data directory of the started mqws (default: a fresh temporary directory, removed
    /// after the run). Must be empty or absent: the benchmarks count from an empty log.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,

    /// Extra environment for every mqws started, `KEY=VALUE` (repeatable).
    #[arg(long = "server-env", global = true, value_name = "KEY=VALUE")]
    pub server_env: Vec<String>,

    /// Copy the started mqws's stderr to this file (a restarted server writes `FILE.2`).
    #[arg(long, global = true)]
    pub server_log: Option<PathBuf>,

    /// MQTT publishers filling the log.
    #[arg(long, global = true, default_value_t = 4)]
    pub publishers: u32,

    /// QoS 1 publishes in flight per publisher (mqws's broker allows 100 by default).
    #[arg(long, global = true, default_value_t = 100)]
    pub inflight: u16,

    /// Flow control of the fill: most messages published but not yet logged by the bridge.
    /// rumqttd acknowledges QoS 1 before the bridge logs, and drops for the bridge when it
    /// falls a few tens of thousands behind, so this keeps the fill loss-free.
    #[arg(long, global = true, default_value_t = 20_000)]
    pub window: u64,

    /// Pace the fill at this many messages per second in total (0: as fast as the bridge
    /// logs, within --window).
    #[arg(long, global = true, default_value_t = 0)]
    pub rate: u64,

    /// Size of each MQTT payload (a JSON object padded to this size).
    #[arg(long, global = true, default_value_t = 256)]
    pub payload_bytes: usize,

    /// Worker threads of the benchmark's runtime (default: number of cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,

    /// Write a JSON record of the run to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,

    /// Also print a Markdown block for benches/RESULTS.md.
    #[arg(long, global = true)]
    pub markdown: bool,
}

/// The benchmarks.
#[derive(Debug, Clone, Subcommand)]
pub enum Cmd {
    /// Fill a log, then time a full replay (`from:"earliest"` on `bench/#`) and a selective
    /// one (one topic of 100).
    Replay(ReplayArgs),
    /// C sessions subscribe, disconnect, miss M messages each, then all resume at once.
    Storm(StormArgs),
    /// Append far more than `log.max_bytes` and watch the engine's size on disk.
    Retention(RetentionArgs),
}

/// `mqws-catchup replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Messages in the log.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,

    /// Topics `bench/t/0..T-1`; the n-th message of each publisher goes to `bench/t/{n % T}`.
    #[arg(long, default_value_t = 100)]
    pub topics: u64,

    /// The topic the selective replay subscribes to (`bench/t/K`).
    #[arg(long, default_value_t = 7)]
    pub selective_topic: u64,

    /// Environment for the fill only, `KEY=VALUE` (repeatable), e.g. `MQWS_LOG__SYNC=false`.
    /// When given, mqws is stopped after the fill and restarted on the same data dir without
    /// it, so the replays are measured on a server with the normal settings.
    #[arg(long = "fill-env", value_name = "KEY=VALUE")]
    pub fill_env: Vec<String>,

    /// Longest a replay may take, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,

    /// Longest the fill may take, in seconds.
    #[arg(long, default_value_t = 900)]
    pub fill_timeout: u64,
}

/// How storm clients subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// Client i subscribes to `storm/i`; the log holds C × M messages and every client
    /// replays its own M (selective replay, C × M distinct records read).
    Own,
    /// Every client subscribes to `storm/all`; the log holds M messages and every client
    /// replays the same M (C × M deliveries from M records).
    Shared,
}

/// Which clients a storm resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// WebSocket clients with server-held sessions (`session` + `resume_token`).
    Ws,
    /// MQTT 3.1.1 clients with persistent sessions (clean session 0).
    Mqtt,
    /// Both, one after the other on fresh servers, and the ratio of their times.
    Both,
}

/// `mqws-catchup storm`.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// WebSocket sessions, MQTT persistent sessions, or both in one run.
    #[arg(long, value_enum, default_value_t = Protocol::Ws)]
    pub protocol: Protocol,

    /// Clients (server-held sessions).
    #[arg(long, default_value_t = 1000)]
    pub clients: u32,

    /// Messages each client misses while disconnected.
    #[arg(long, default_value_t = 1000)]
    pub missed: u64,

    /// Own topic per client, or one shared topic.
    #[arg(long, value_enum, default_value_t = Topology::Own)]
    pub topology: Topology,

    /// Concurrent connection attempts while the sessions are first created (the resume
    /// storm itself opens all connections at once).
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,

    /// Environment for the fill only, `KEY=VALUE`; when given, mqws is restarted without it
    /// before the storm (sessions survive restarts).
    #[arg(long = "fill-env", value_name = "KEY=VALUE")]
    pub fill_env: Vec<String>,

    /// Longest the storm may take, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,

    /// Longest the fill may take, in seconds.
    #[arg(long, default_value_t = 900)]
    pub fill_timeout: u64,
}

/// `mqws-catchup retention`.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Messages appended.
    #[arg(long, default_value_t = 5_000_000)]
    pub messages: u64,

    /// `log.max_bytes` of the server (`MQWS_LOG__MAX_BYTES`).
    #[arg(long, default_value = "64MiB")]
    pub max_bytes: String,

    /// Topics `bench/t/0..T-1`.
    #[arg(long, default_value_t = 100)]
    pub topics: u64,

    /// Sampling interval, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub sample_ms: u64,

    /// Seconds to keep sampling after the last message was logged.
    #[arg(long, default_value_t = 15)]
    pub settle: u64,

    /// Rows of the printed series (the samples are thinned to about this many).
    #[arg(long, default_value_t = 25)]
    pub rows: usize,

    /// Longest the fill may take, in seconds.
    #[arg(long, default_value_t = 1200)]
    pub fill_timeout: u64,
}

impl Cli {
    /// Checks values clap cannot check on its own.
    pub fn validate(&self) -> anyhow::Result<()> {
        let c = &self.common;
        anyhow::ensure!(c.publishers >= 1, "--publishers must be at least 1");
        anyhow::ensure!(c.inflight >= 1, "--inflight must be at least 1");
        anyhow::ensure!(c.window >= 100, "--window must be at least 100");
        let all_env = c.server_env.iter().chain(match &self.cmd {
            Cmd::Replay(a) => a.fill_env.iter(),
            Cmd::Storm(a) => a.fill_env.iter(),
            Cmd::Retention(_) => [].iter(),
        });
        for kv in all_env {
            anyhow::ensure!(kv.contains('='), "{kv:?} is not KEY=VALUE");
        }
        match &self.cmd {
            Cmd::Replay(a) => {
                anyhow::ensure!(a.messages >= 1, "--messages must be at least 1");
                anyhow::ensure!(a.topics >= 1, "--topics must be at least 1");
                anyhow::ensure!(
                    a.selective_topic < a.topics,
                    "--selective-topic must be below --topics"
                );
            }
            Cmd::Storm(a) => {
                anyhow::ensure!(a.clients >= 1, "--clients must be at least 1");
                anyhow::ensure!(a.missed >= 1, "--missed must be at least 1");
                anyhow::ensure!(
                    a.clients <= 9_000,
                    "--clients {} would not fit under the 20,000 open-files limit (each \
                     client holds one socket here and one in mqws, plus the handshakes)",
                    a.clients
                );
                anyhow::ensure!(a.connect_concurrency >= 1, "--connect-concurrency >= 1");
            }
            Cmd::Retention(a) => {
                anyhow::ensure!(a.messages >= 1, "--messages must be at least 1");
                anyhow::ensure!(a.topics >= 1, "--topics must be at least 1");
                anyhow::ensure!(a.sample_ms >= 100, "--sample-ms must be at least 100");
                anyhow::ensure!(a.rows >= 2, "--rows must be at least 2");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Cli::try_parse_from(["mqws-catchup", "replay"]).expect("parses");
        c.validate().expect("valid");
        match c.cmd {
            Cmd::Replay(a) => assert_eq!((a.messages, a.topics), (1_000_000, 100)),
            _ => panic!("replay expected"),
        }
        let c = Cli::try_parse_from(["mqws-catchup", "storm", "--publishers", "2"]).expect("ok");
        assert_eq!(c.common.publishers, 2);
        c.validate().expect("valid");
        let c = Cli::try_parse_from(["mqws-catchup", "retention"]).expect("parses");
        c.validate().expect("valid");
    }

    #[test]
    fn limits() {
        let c = Cli::try_parse_from(["mqws-catchup", "storm", "--clients", "20000"]).expect("ok");
        assert!(c.validate().is_err());
        let c = Cli::try_parse_from(["mqws-catchup", "replay", "--selective-topic", "100"])
            .expect("parses");
        assert!(c.validate().is_err());
        let c = Cli::try_parse_from(["mqws-catchup", "replay", "--fill-env", "X"]).expect("ok");
        assert!(c.validate().is_err());
    }
}
