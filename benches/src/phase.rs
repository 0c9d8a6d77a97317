//! One measured phase: connect the subscribers, publish for warm-up + duration, drain, collect.
//!
//! The `ws` phase uses WebSocket subscribers on the bridge; the `baseline` phase uses the same
//! number of native MQTT subscribers on the embedded broker; the `sse` phase (with
//! `--sse-subscribers`) uses SSE subscribers on the bridge's `GET /sse`. With `--mosquitto-bin`, the
//! `mosquitto-mqtt` phase uses native MQTT subscribers on Mosquitto and `mosquitto-ws` MQTT over
//! WebSocket subscribers on Mosquitto's WebSocket listener. Publishers are identical in all.
//!
//! With `--mqtt-ws`, publishers and subscribers both speak MQTT over WebSocket: the `mqtt-ws`
//! phase on mqws's `GET /mqtt` (checked against `mqws_messages_logged_total`), and
//! `mosquitto-mqtt-ws` on Mosquitto's WebSocket listener.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rumqttc::QoS;
use serde::Serialize;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use crate::cli::Args;
use crate::mqtt_sub::{self, MqttSubConfig};
use crate::publisher::{self, PubConfig, PubStats};
use crate::stats::{self, Latency, SubStats, Window};
use crate::ws_sub::{self, Ready, SubConfig};
use crate::{payload, procstat, sse_sub};

/// Which subscribers a phase uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// WebSocket subscribers through the bridge.
    Ws,
    /// Native MQTT subscribers on the same broker.
    Baseline,
    /// Native MQTT subscribers on Mosquitto (publishers on Mosquitto too).
    MosquittoMqtt,
    /// MQTT-over-WebSocket subscribers on Mosquitto's WebSocket listener.
    MosquittoWs,
    /// SSE subscribers (`GET /sse`) through the bridge.
    Sse,
    /// Publishers and subscribers over MQTT over WebSocket on mqws's `GET /mqtt`.
    MqttWs,
    /// Publishers and subscribers over MQTT over WebSocket on Mosquitto's WebSocket listener.
    MosquittoMqttWs,
}

impl Kind {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ws => "ws",
            Kind::Baseline => "baseline",
            Kind::MosquittoMqtt => "mosquitto-mqtt",
            Kind::MosquittoWs => "mosquitto-ws",
            Kind::Sse => "sse",
            Kind::MqttWs => "mqtt-ws",
            Kind::MosquittoMqttWs => "mosquitto-mqtt-ws",
        }
    }

    /// Whether the phase measures Mosquitto rather than mqws.
    pub fn is_mosquitto(self) -> bool {
        matches!(
            self,
            Kind::MosquittoMqtt | Kind::MosquittoWs | Kind::MosquittoMqttWs
        )
    }

    /// The `ws://…` URL of the phase's MQTT-over-WebSocket endpoint, when its clients use one
    /// (`publishers`: for the publishers, else for the subscribers).
    fn mqtt_ws_url(self, target: &Target, publishers: bool) -> anyhow::Result<Option<String>> {
        let addr = match self {
            Kind::MqttWs => target.http.context("the mqtt-ws phase needs --http")?,
            Kind::MosquittoMqttWs => target
                .mqtt_ws
                .context("the mosquitto-mqtt-ws phase needs Mosquitto's WebSocket address")?,
            Kind::MosquittoWs if !publishers => target
                .mqtt_ws
                .context("the mosquitto-ws phase needs Mosquitto's WebSocket address")?,
            _ => return Ok(None),
        };
        Ok(Some(format!("ws://{addr}/mqtt")))
    }
}

/// Where the phase sends its traffic.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// mqws HTTP address (needed by the ws and sse phases only).
    pub http: Option<std::net::SocketAddr>,
    /// MQTT broker address.
    pub mqtt: std::net::SocketAddr,
    /// MQTT-over-WebSocket address (Mosquitto's WebSocket listener; mosquitto-ws phase only).
    pub mqtt_ws: Option<std::net::SocketAddr>,
    /// Server process id (mqws, or Mosquitto in its phases), for RSS and CPU.
    pub pid: Option<u32>,
}

/// Results of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// `ws`, `baseline`, `sse`, `mosquitto-mqtt` or `mosquitto-ws`.
    pub phase: Kind,
    /// Subscribers asked for.
    pub subscribers: u32,
    /// Subscribers that completed their opening.
    pub subscribers_connected: u32,
    /// The first subscriber opening error, if any.
    pub subscriber_error: Option<String>,
    /// Messages written by the publishers.
    pub published: u64,
    /// Of those, sent inside the measure window.
    pub published_window: u64,
    /// `published_window` per second.
    pub publish_rate: f64,
    /// PUBACKs (QoS 1).
    pub acked: u64,
    /// Publisher connection errors.
    pub publish_errors: u64,
    /// The first publisher error.
    pub publish_first_error: Option<String>,
    /// Deliveries expected: published × connected subscribers (when the filter matches the
    /// publishers' topics).
    pub expected: u64,
    /// Benchmark messages received by all subscribers, drain included.
    pub delivered: u64,
    /// Received inside the measure window.
    pub delivered_window: u64,
    /// `delivered_window` per second: the delivered rate.
    pub delivered_rate: f64,
    /// `expected − delivered` (never negative).
    pub missing: u64,
    /// Fewest messages one subscriber received.
    pub min_per_subscriber: u64,
    /// Most messages one subscriber received.
    pub max_per_subscriber: u64,
    /// End-to-end latency of messages sent inside the window.
    pub latency: Latency,
    /// WebSocket `seq` not strictly increasing on a connection.
    pub seq_violations: u64,
    /// Per-publisher counter not increasing at a subscriber (reorder/duplicate).
    pub order_violations: u64,
    /// Non-benchmark messages received.
    pub foreign: u64,
    /// Benchmark messages of another phase received (late deliveries), not counted otherwise.
    pub stale: u64,
    /// Benchmark payloads delivered as a JSON string instead of a JSON value.
    pub text_enc: u64,
    /// `error` frames by code.
    pub error_frames: std::collections::BTreeMap<String, u64>,
    /// Unexpected frame types by type.
    pub other_frames: std::collections::BTreeMap<String, u64>,
    /// Subscribers that ended before the phase did, by reason.
    pub ended_early: std::collections::BTreeMap<String, u64>,
    /// Time from the publishers' stop until the subscribers were drained (or gave up).
    pub drain_ms: u64,
    /// Server (mqws, or Mosquitto in its phases) peak RSS (`VmHWM`) at the end of the phase,
    /// KiB; per phase when `hwm_reset`.
    pub server_peak_rss_kib: Option<u64>,
    /// Whether `VmHWM` was reset at the start of the phase.
    pub hwm_reset: bool,
    /// Largest sampled mqws `VmRSS` during the phase, KiB.
    pub server_max_sampled_rss_kib: Option<u64>,
    /// Server (mqws, or Mosquitto in its phases) CPU use during the measure window, % of one
    /// core.
    pub server_cpu_pct: Option<f64>,
    /// Load generator CPU use during the measure window, % of one core.
    pub loadgen_cpu_pct: Option<f64>,
    /// CPU used by everything else on the machine during the window, % of one core (other
    /// work competing with the benchmark; large values make the figures unreliable).
    pub other_cpu_pct: Option<f64>,
    /// The `server` field of `welcome` (ws and sse phases).
    pub server_version: Option<String>,
    /// mqtt-ws phase: the rise of mqws's `mqws_messages_logged_total` from before the
    /// publishers started to after the drain (None: not measured or `/metrics` unreadable).
    pub logged: Option<u64>,
}

/// Whether an MQTT filter matches a topic: the bridge's own reference matcher, so the load
/// generator's expectations follow exactly the rules the server applies.
pub use mqws_topic::matches as topic_matches;

/// Runs one phase.
pub async fn run(
    kind: Kind,
    args: &Args,
    target: Target,
    run_id: &str,
    publishers_rt: &tokio::runtime::Handle,
) -> anyhow::Result<PhaseReport> {
    let subs = match kind {
        Kind::Sse => args.sse_subscribers,
        _ => args.ws_subscribers,
    };
    let qos = if args.qos == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    // A tag unique to this phase, so late messages of another phase are told apart.
    let tag = (payload::now_us() as u32 & 0x7fff_ffff) | 1;
    let window = Arc::new(Window::new(tag));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel::<Ready>(subs.max(1) as usize);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let setup_budget = Duration::from_secs(30 + u64::from(subs) / 20);
    let run_len = Duration::from_secs(args.warmup + args.duration);
    let sub_deadline =
        Instant::now() + setup_budget + run_len + Duration::from_secs(args.grace + 15);

    eprintln!(
        "mqws-load: [{}] connecting {subs} subscriber(s)",
        kind.name()
    );
    let mut live: Vec<Arc<AtomicU64>> = Vec::new();
    let peak = Arc::new(AtomicU64::new(0));
    let mut sub_tasks = Vec::new();
    for i in 0..subs {
        let counter = Arc::new(AtomicU64::new(0));
        live.push(counter.clone());
        let sub = || -> anyhow::Result<SubConfig> {
            Ok(SubConfig {
                http: target
                    .http
                    .with_context(|| format!("the {} phase needs --http", kind.name()))?,
                filter: args.filter.clone(),
                connect_gate: gate.clone(),
                stop: stop_rx.clone(),
                window: window.clone(),
                ready: ready_tx.clone(),
                deadline: sub_deadline,
            })
        };
        let task = match kind {
            Kind::Ws => tokio::spawn(ws_sub::run(sub()?, counter, peak.clone())),
            Kind::Sse => tokio::spawn(sse_sub::run(sub()?, counter, peak.clone())),
            Kind::Baseline
            | Kind::MosquittoMqtt
            | Kind::MosquittoWs
            | Kind::MqttWs
            | Kind::MosquittoMqttWs => tokio::spawn(mqtt_sub::run(
                MqttSubConfig {
                    mqtt: target.mqtt,
                    ws_url: kind.mqtt_ws_url(&target, false)?,
                    client_id: format!("{run_id}-sub-{i}"),
                    filter: args.filter.clone(),
                    qos,
                    payload_bytes: args.payload_bytes,
                    connect_gate: gate.clone(),
                    stop: stop_rx.clone(),
                    window: window.clone(),
                    ready: ready_tx.clone(),
                    deadline: sub_deadline,
                },
                counter,
                peak.clone(),
            )),
        };
        sub_tasks.push(task);
    }
    drop(ready_tx);

    let mut connected = 0u32;
    let mut first_err = None;
    let mut server_version = None;
    let setup_end = Instant::now() + setup_budget;
    for _ in 0..subs {
        match tokio::time::timeout_at(setup_end, ready_rx.recv()).await {
            Ok(Some(Ready { result: Ok(v) })) => {
                connected += 1;
                if matches!(kind, Kind::Ws | Kind::Sse) && server_version.is_none() {
                    server_version = Some(v);
                }
            }
            Ok(Some(Ready { result: Err(e) })) => {
                first_err.get_or_insert_with(|| format!("{e:#}"));
            }
            Ok(None) | Err(_) => break,
        }
    }
    eprintln!(
        "mqws-load: [{}] {connected}/{subs} subscriber(s) ready",
        kind.name()
    );
    if connected == 0 && subs > 0 {
        let _ = stop_tx.send(true);
        bail!(
            "[{}] no subscriber could connect: {}",
            kind.name(),
            first_err.unwrap_or_else(|| "setup timed out".into())
        );
    }
    // Let subscriptions settle in the broker and bridge before the first publish.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let logged_before = match (kind, target.http) {
        (Kind::MqttWs, Some(http)) => logged_total(http).await,
        _ => None,
    };
    let pid = target.pid;
    let hwm_reset = pid.is_some_and(procstat::reset_peak);
    let sampler =
        pid.map(|p| procstat::RssSampler::start(p, Duration::from_millis(args.sample_ms)));

    let lead = Duration::from_millis(100);
    let start = Instant::now() + lead;
    let start_us = payload::now_us() + lead.as_micros() as u64;
    let win_start_us = start_us + args.warmup * 1_000_000;
    window.set(win_start_us, win_start_us + args.duration * 1_000_000);
    let end = start + run_len;
    let published_live = Arc::new(AtomicU64::new(0));
    let rate = publisher::per_publisher_rate(args.rate, args.publishers);
    let mut pub_tasks = Vec::new();
    for id in 0..args.publishers {
        let cfg = PubConfig {
            mqtt: target.mqtt,
            qos,
            payload_bytes: args.payload_bytes,
            rate,
            tick: Duration::from_millis(args.tick_ms),
            topic_prefix: args.topic_prefix.clone(),
            inflight: args.inflight,
            client_prefix: format!("{run_id}-{}", kind.name()),
            ws_url: kind.mqtt_ws_url(&target, true)?,
            lean: args.lean_publisher,
            lean_batch: args.lean_batch.max(1),
        };
        let (w, live) = (window.clone(), published_live.clone());
        let task: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
            if cfg.lean && cfg.ws_url.is_some() {
                Box::pin(crate::lean_publisher::run(id, cfg, start, end, w, live))
            } else {
                Box::pin(publisher::run(id, cfg, start, end, w, live))
            };
        pub_tasks.push(publishers_rt.spawn(task));
    }

    // Progress once a second; CPU snapshots at the window's edges.
    let win_start = start + Duration::from_secs(args.warmup);
    let sum = |v: &[Arc<AtomicU64>]| v.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
    let mut cpu0 = None;
    let mut last = (0u64, 0u64);
    let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
    loop {
        let next = tick.tick().await;
        if cpu0.is_none() && next >= win_start {
            cpu0 = Some((
                pid.and_then(procstat::cpu_seconds),
                procstat::own_cpu_seconds(),
                procstat::machine_busy_seconds(),
            ));
        }
        let (p, d) = (published_live.load(Ordering::Relaxed), sum(&live));
        eprintln!(
            "mqws-load: [{}] t={:>3}s published {p} (+{}/s) delivered {d} (+{}/s) max latency {} µs",
            kind.name(),
            (next - start).as_secs(),
            p - last.0,
            d - last.1,
            peak.swap(0, Ordering::Relaxed)
        );
        last = (p, d);
        if next >= end {
            break;
        }
    }
    let cpu1 = (
        pid.and_then(procstat::cpu_seconds),
        procstat::own_cpu_seconds(),
        procstat::machine_busy_seconds(),
    );
    let measured = (Instant::now() - win_start).as_secs_f64().max(0.001);

    let mut pstats: Vec<PubStats> = Vec::new();
    for t in pub_tasks {
        pstats.push(t.await.unwrap_or_default());
    }
    let published: u64 = pstats.iter().map(|s| s.published).sum();

    // Drain: until every expected delivery arrived, nothing moved for a second, or grace ran out.
    let matching = (0..args.publishers)
        .all(|i| topic_matches(&args.filter, &format!("{}/p{i}", args.topic_prefix)));
    let expected = if matching {
        published * u64::from(connected)
    } else {
        0
    };
    let drain_start = Instant::now();
    let grace_end = drain_start + Duration::from_secs(args.grace);
    let mut last_seen = (sum(&live), Instant::now());
    while Instant::now() < grace_end {
        let d = sum(&live);
        if matching && d >= expected {
            break;
        }
        if d != last_seen.0 {
            last_seen = (d, Instant::now());
        } else if last_seen.1.elapsed() >= Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_ms = drain_start.elapsed().as_millis() as u64;
    let logged = match (logged_before, target.http) {
        (Some(before), Some(http)) => {
            // The log writer may still be behind the subscribers (it is not: delivery follows
            // the log), but give it a moment when the count has not caught up yet.
            let mut after = logged_total(http).await;
            let t0 = Instant::now();
            while after.is_some_and(|a| a - before < published)
                && t0.elapsed() < Duration::from_secs(3)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
                after = logged_total(http).await;
            }
            after.map(|a| a.saturating_sub(before))
        }
        _ => None,
    };

    let server_peak_rss_kib = pid.and_then(|p| procstat::status_kib(p, "VmHWM"));
    let server_max_sampled_rss_kib = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };
    let _ = stop_tx.send(true);
    let mut all: Vec<SubStats> = Vec::new();
    for t in sub_tasks {
        if let Ok(s) = t.await {
            all.push(s);
        }
    }
    let m = stats::merge(&all);
    let published_window: u64 = pstats.iter().map(|s| s.published_window).sum();
    let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(((b - a) / measured * 1000.0).round() / 10.0),
        _ => None,
    };
    let (scpu0, ocpu0, mcpu0) = cpu0.unwrap_or((None, None, None));
    let server_cpu_pct = pct(scpu0, cpu1.0);
    let loadgen_cpu_pct = pct(ocpu0, cpu1.1);
    let other_cpu_pct = pct(mcpu0, cpu1.2).map(|all| {
        let other = all - server_cpu_pct.unwrap_or(0.0) - loadgen_cpu_pct.unwrap_or(0.0);
        (other.max(0.0) * 10.0).round() / 10.0
    });
    let dur = args.duration as f64;
    Ok(PhaseReport {
        phase: kind,
        subscribers: subs,
        subscribers_connected: connected,
        subscriber_error: first_err,
        published,
        published_window,
        publish_rate: published_window as f64 / dur,
        acked: pstats.iter().map(|s| s.acked).sum(),
        publish_errors: pstats.iter().map(|s| s.errors).sum(),
        publish_first_error: pstats.iter().find_map(|s| s.first_error.clone()),
        expected,
        delivered: m.delivered_total,
        delivered_window: m.delivered_window,
        delivered_rate: m.delivered_window as f64 / dur,
        missing: expected.saturating_sub(m.delivered_total),
        min_per_subscriber: m.min_delivered,
        max_per_subscriber: m.max_delivered,
        latency: Latency::from_histogram(&m.hist),
        seq_violations: m.seq_violations,
        order_violations: m.order_violations,
        foreign: m.foreign,
        stale: m.stale,
        text_enc: m.text_enc,
        error_frames: m.error_frames,
        other_frames: m.other_frames,
        ended_early: m.ended_early,
        drain_ms,
        server_peak_rss_kib,
        hwm_reset,
        server_max_sampled_rss_kib,
        server_cpu_pct,
        loadgen_cpu_pct,
        other_cpu_pct,
        server_version,
        logged,
    })
}

/// mqws's `mqws_messages_logged_total` from `GET /metrics` (None when unreadable).
async fn logged_total(http: std::net::SocketAddr) -> Option<u64> {
    let (code, body) =
        tokio::task::spawn_blocking(move || crate::server::http_get(http, "/metrics"))
            .await
            .ok()?
            .ok()?;
    if code != 200 {
        return None;
    }
    parse_counter(&body, "mqws_messages_logged_total")
}

/// The value of an unlabelled counter in a Prometheus text exposition.
fn parse_counter(body: &str, name: &str) -> Option<u64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let v = rest.strip_prefix(' ')?.trim();
        v.parse::<f64>().ok().map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_counter, topic_matches};

    #[test]
    fn counters() {
        let body = "# TYPE mqws_messages_logged_total counter\nmqws_messages_logged_total_x 3\nmqws_messages_logged_total 1234\n";
        assert_eq!(
            parse_counter(body, "mqws_messages_logged_total"),
            Some(1234)
        );
        assert_eq!(parse_counter("", "mqws_messages_logged_total"), None);
    }

    #[test]
    fn filters() {
        assert!(topic_matches("#", "bench/p0"));
        assert!(topic_matches("bench/#", "bench/p0"));
        assert!(topic_matches("bench/#", "bench"));
        assert!(topic_matches("bench/+", "bench/p0"));
        assert!(!topic_matches("bench/+", "bench/p0/x"));
        assert!(!topic_matches("other/#", "bench/p0"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(topic_matches("bench/p0", "bench/p0"));
    }
}
