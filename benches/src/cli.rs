//! Command-line interface of `mqws-load`: what to start or attach to, and the scenario to run.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Load generator for mqws: MQTT publishers against WebSocket subscribers, with a native MQTT
/// baseline on the same broker.
#[derive(Debug, Clone, Parser)]
#[command(name = "mqws-load", version, about, long_about = None)]
pub struct Args {
    /// Path of the mqws binary to start (ignored with --http/--mqtt).
    #[arg(long, default_value = "target/release/mqws")]
    pub mqws_bin: PathBuf,

    /// Attach to a running mqws: its HTTP address (needs --mqtt too).
    #[arg(long, requires = "mqtt")]
    pub http: Option<SocketAddr>,

    /// Attach to a running mqws: its MQTT address (needs --http too, unless --no-ws, which
    /// allows measuring any MQTT broker alone).
    #[arg(long)]
    pub mqtt: Option<SocketAddr>,

    /// Process id of an attached mqws, to report its RSS and CPU.
    #[arg(long, requires = "mqtt")]
    pub server_pid: Option<u32>,

    /// Data directory for a started mqws (default: a fresh temporary directory, removed after).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Extra environment for a started mqws, `KEY=VALUE` (repeatable), e.g.
    /// `MQWS_LOG__SYNC=true`.
    #[arg(long = "server-env", value_name = "KEY=VALUE")]
    pub server_env: Vec<String>,

    /// Copy the started mqws's stderr (its logs) to this file.
    #[arg(long)]
    pub server_log: Option<PathBuf>,

    /// Number of MQTT publishers.
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,

    /// QoS of publishes and of native subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,

    /// Size of each MQTT payload in bytes (a JSON object padded to this size; never below the
    /// size of the unpadded object, about 60 bytes).
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,

    /// Total publish rate in messages per second over all publishers; 0 = flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,

    /// Pacing tick in milliseconds: each publisher sends its due messages in one burst per tick.
    #[arg(long, default_value_t = 1)]
    pub tick_ms: u64,

    /// Measured time per phase, in seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,

    /// Warm-up per phase, in seconds: published but not measured.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,

    /// Longest wait after the publishers stop for the subscribers to drain, in seconds.
    #[arg(long, default_value_t = 5)]
    pub grace: u64,

    /// Topic prefix; publisher i publishes to `PREFIX/p{i}`.
    #[arg(long, default_value = "bench")]
    pub topic_prefix: String,

    /// Number of WebSocket subscribers (in the ws phase) and native MQTT subscribers (in the
    /// baseline phase).
    #[arg(long, default_value_t = 1)]
    pub ws_subscribers: u32,

    /// Number of SSE subscribers (`GET /sse?filter=…`) in an extra `sse` phase right after the
    /// ws phase, with the same publishers; 0 (default) runs no SSE phase. Give the same number
    /// as --ws-subscribers to compare SSE with WebSocket per client (the report's sse ÷ ws).
    #[arg(long, default_value_t = 0)]
    pub sse_subscribers: u32,

    /// Subscription filter of every subscriber.
    #[arg(long, default_value = "bench/#")]
    pub filter: String,

    /// Run the native MQTT baseline phase (default on).
    #[arg(long, overrides_with = "no_baseline")]
    pub baseline: bool,

    /// Skip the native MQTT baseline phase.
    #[arg(long, overrides_with = "baseline")]
    pub no_baseline: bool,

    /// Skip the WebSocket phase (baseline only; with --mqtt alone, measures any MQTT broker).
    #[arg(long)]
    pub no_ws: bool,

    /// MQTT over WebSocket end to end: publishers and subscribers connect to mqws's `GET /mqtt`
    /// (subprotocol `mqtt`, binary messages) in one phase, `mqtt-ws`, which replaces all other
    /// phases; with --mosquitto-bin the same clients then run against Mosquitto's WebSocket
    /// listener (`mosquitto-mqtt-ws`). The mqws phase also reads `mqws_messages_logged_total`
    /// before and after, to check that every published (QoS 1: acknowledged) message was logged.
    #[arg(long)]
    pub mqtt_ws: bool,

    /// With --mqtt-ws: publishers write raw MQTT 3.1.1 packets to the WebSocket, up to 32 per
    /// binary message (`--lean-batch`), instead of rumqttc's WebSocket transport, which
    /// costs the load generator about 9.5 µs per message. Used for both servers alike.
    #[arg(long)]
    pub lean_publisher: bool,

    /// With --lean-publisher: PUBLISHes per WebSocket message at most.
    #[arg(long, default_value_t = 32)]
    pub lean_batch: usize,

    /// Whether the baseline runs before or after the WebSocket phase.
    #[arg(long, value_enum, default_value_t = Order::Before)]
    pub baseline_order: Order,

    /// MQTT max in-flight QoS 1 publishes per publisher.
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,

    /// Concurrent WebSocket/MQTT connection attempts while setting up subscribers.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// How often to sample the server's RSS and CPU, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub sample_ms: u64,

    /// Worker threads of the load generator's runtime (default: number of cores).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Write a JSON record of the run to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Also print a Markdown block suitable for benches/RESULTS.md.
    #[arg(long)]
    pub markdown: bool,

    /// A label for this run in the reports (e.g. the scenario name).
    #[arg(long, default_value = "run")]
    pub label: String,

    /// Also measure Mosquitto in the same run: start this binary (e.g. /usr/sbin/mosquitto)
    /// with an MQTT and a WebSocket listener and add the phases `mosquitto-mqtt` (native
    /// subscribers) and `mosquitto-ws` (MQTT-over-WebSocket subscribers), after mqws's phases.
    #[arg(long)]
    pub mosquitto_bin: Option<PathBuf>,

    /// An extra line for the generated mosquitto.conf (repeatable), e.g.
    /// `set_tcp_nodelay true`; the default is Mosquitto's own defaults.
    #[arg(
        long = "mosquitto-conf",
        value_name = "LINE",
        requires = "mosquitto_bin"
    )]
    pub mosquitto_conf: Vec<String>,

    /// write(4 KiB) + fsync rounds measured in the data dir's parent before the phases
    /// (0: skip).
    #[arg(long, default_value_t = 1000)]
    pub fsync_samples: u64,
}

/// When the baseline phase runs relative to the WebSocket phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Baseline first, then WebSocket.
    Before,
    /// WebSocket first, then baseline.
    After,
}

impl Args {
    /// Whether the baseline phase runs.
    pub fn run_baseline(&self) -> bool {
        !self.no_baseline
    }

    /// The attach addresses `(http, mqtt)`, when attaching to a running server (`http` is
    /// None only with `--no-ws`).
    pub fn attach(&self) -> Option<(Option<SocketAddr>, SocketAddr)> {
        self.mqtt.map(|m| (self.http, m))
    }

    /// Checks values clap cannot check on its own.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.publishers >= 1, "--publishers must be at least 1");
        anyhow::ensure!(self.duration >= 1, "--duration must be at least 1 s");
        anyhow::ensure!(self.tick_ms >= 1, "--tick-ms must be at least 1");
        anyhow::ensure!(self.sample_ms >= 10, "--sample-ms must be at least 10");
        anyhow::ensure!(
            self.ws_subscribers <= 19_000,
            "--ws-subscribers {} would not fit under the 20,000 open-files limit of one process; \
             split the load over several mqws-load processes",
            self.ws_subscribers
        );
        anyhow::ensure!(
            self.sse_subscribers <= 19_000,
            "--sse-subscribers {} would not fit under the 20,000 open-files limit of one process",
            self.sse_subscribers
        );
        anyhow::ensure!(
            self.sse_subscribers == 0 || self.mqtt.is_none() || self.http.is_some(),
            "--sse-subscribers needs mqws's HTTP address (--http) when attaching"
        );
        anyhow::ensure!(!self.filter.is_empty(), "--filter must not be empty");
        anyhow::ensure!(
            self.mqtt.is_none() || self.http.is_some() || self.no_ws,
            "--mqtt needs --http too (or --no-ws to measure the broker alone)"
        );
        anyhow::ensure!(
            !(self.no_ws && self.no_baseline && self.sse_subscribers == 0),
            "--no-ws with --no-baseline (and no --sse-subscribers) leaves nothing to run"
        );
        for kv in &self.server_env {
            anyhow::ensure!(kv.contains('='), "--server-env {kv:?} is not KEY=VALUE");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_baseline_is_on() {
        let a = Args::try_parse_from(["mqws-load"]).expect("defaults parse");
        assert!(a.run_baseline());
        assert_eq!(a.filter, "bench/#");
        assert!(a.attach().is_none());
        a.validate().expect("defaults are valid");
    }

    #[test]
    fn no_baseline_and_attach() {
        let a = Args::try_parse_from([
            "mqws-load",
            "--no-baseline",
            "--http",
            "127.0.0.1:8080",
            "--mqtt",
            "127.0.0.1:1883",
        ])
        .expect("parse");
        assert!(!a.run_baseline());
        assert!(a.attach().is_some());
    }

    #[test]
    fn attach_needs_both_addresses() {
        assert!(Args::try_parse_from(["mqws-load", "--http", "127.0.0.1:8080"]).is_err());
        let a = Args::try_parse_from(["mqws-load", "--mqtt", "127.0.0.1:1883"]).expect("parse");
        assert!(a.validate().is_err());
        let a = Args::try_parse_from(["mqws-load", "--mqtt", "127.0.0.1:1883", "--no-ws"])
            .expect("parse");
        a.validate().expect("broker alone is fine");
    }

    #[test]
    fn last_baseline_flag_wins() {
        let a = Args::try_parse_from(["mqws-load", "--no-baseline", "--baseline"]).expect("parse");
        assert!(a.run_baseline());
        let a = Args::try_parse_from(["mqws-load", "--baseline", "--no-baseline"]).expect("parse");
        assert!(!a.run_baseline());
    }

    #[test]
    fn mosquitto_flags() {
        let a = Args::try_parse_from(["mqws-load"]).expect("parse");
        assert!(a.mosquitto_bin.is_none());
        let a = Args::try_parse_from([
            "mqws-load",
            "--mosquitto-bin",
            "/usr/sbin/mosquitto",
            "--mosquitto-conf",
            "set_tcp_nodelay true",
        ])
        .expect("parse");
        assert_eq!(a.mosquitto_conf, ["set_tcp_nodelay true"]);
        assert!(Args::try_parse_from(["mqws-load", "--mosquitto-conf", "x y"]).is_err());
    }

    #[test]
    fn sse_subscribers() {
        let a = Args::try_parse_from(["mqws-load"]).expect("parse");
        assert_eq!(a.sse_subscribers, 0);
        let a = Args::try_parse_from([
            "mqws-load",
            "--sse-subscribers",
            "1",
            "--no-ws",
            "--no-baseline",
        ])
        .expect("parse");
        a.validate()
            .expect("the sse phase alone is something to run");
        let a = Args::try_parse_from([
            "mqws-load",
            "--sse-subscribers",
            "1",
            "--no-ws",
            "--mqtt",
            "127.0.0.1:1883",
        ])
        .expect("parse");
        assert!(a.validate().is_err(), "sse needs --http when attaching");
    }

    #[test]
    fn qos_two_is_refused() {
        assert!(Args::try_parse_from(["mqws-load", "--qos", "2"]).is_err());
    }
}
