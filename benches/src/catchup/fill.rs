//! Filling the log: MQTT publishers (QoS 1, many in flight) paced by what the bridge has
//! logged.
//!
//! rumqttd acknowledges a QoS 1 publish once its router has it in memory, before the bridge
//! logs it, and a bridge link that falls more than a few in-memory segments behind silently
//! loses messages (counted as `mqws_broker_dropped_total`). So the publishers share one window:
//! at most `window` messages may be published and not yet logged (or reported dropped), read
//! from `/metrics` every 20 ms. The fill is then as fast as the log writer, and loss-free.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use serde::Serialize;
use tokio::time::Instant;

use super::common::{CpuMark, CpuUse};
use super::metrics;
use crate::payload::{self, Stamp};
use crate::publisher::{max_packet_for, mqtt_options, set_nodelay};

/// What publisher `p` sends as its `k`-th message: `(topic, stamp.p, stamp.n)`.
pub type MessageFn = dyn Fn(u32, u64) -> (String, u32, u64) + Send + Sync;

/// What to publish.
#[derive(Clone)]
pub struct FillSpec {
    /// Messages per publisher (its length is the number of publishers).
    pub counts: Vec<u64>,
    /// Topic and stamp of each message.
    pub message: Arc<MessageFn>,
}

impl std::fmt::Debug for FillSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillSpec")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl FillSpec {
    /// All messages.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Splits `total` over `publishers` as evenly as possible.
pub fn split(total: u64, publishers: u32) -> Vec<u64> {
    let p = u64::from(publishers.max(1));
    (0..p)
        .map(|i| total / p + u64::from(i < total % p))
        .collect()
}

/// How to fill.
#[derive(Debug, Clone)]
pub struct FillConfig {
    /// mqws HTTP address (for `/metrics`).
    pub http: SocketAddr,
    /// mqws MQTT address.
    pub mqtt: SocketAddr,
    /// mqws pid (CPU).
    pub pid: u32,
    /// Payload size.
    pub payload_bytes: usize,
    /// In flight per publisher.
    pub inflight: u16,
    /// Most published-but-not-logged messages.
    pub window: u64,
    /// Messages per second in total, 0 = as fast as the window allows.
    pub rate: u64,
    /// Longest the fill may take.
    pub timeout: Duration,
    /// Client id prefix.
    pub client_prefix: String,
    /// The payloads' phase tag.
    pub tag: u32,
}

/// What a fill did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FillReport {
    /// Messages asked for.
    pub target: u64,
    /// Messages handed to the MQTT clients.
    pub published: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Increase of `mqws_messages_logged_total`.
    pub logged: u64,
    /// Increase of `mqws_messages_dispatched_total`.
    pub dispatched: u64,
    /// Increase of `mqws_broker_dropped_total` (messages rumqttd lost for the bridge).
    pub broker_dropped: u64,
    /// Seconds from the first publish until everything was logged.
    pub seconds: f64,
    /// `logged / seconds`.
    pub logged_per_s: f64,
    /// Publisher connection errors.
    pub publisher_errors: u64,
    /// The first of them.
    pub first_error: Option<String>,
    /// Whether every message was logged and dispatched in time.
    pub complete: bool,
    /// CPU during the fill.
    pub cpu: CpuUse,
}

#[derive(Debug, Default)]
struct Shared {
    sent: AtomicU64,
    logged: AtomicU64,
    dropped: AtomicU64,
    stop: AtomicBool,
}

/// Publishes `spec` and waits until the bridge has logged and dispatched all of it.
pub async fn fill(cfg: &FillConfig, spec: &FillSpec) -> anyhow::Result<FillReport> {
    let target = spec.total();
    let m0 = metrics::scrape(cfg.http).await?;
    let (logged0, dropped0) = (
        m0.count("mqws_messages_logged_total"),
        m0.count("mqws_broker_dropped_total"),
    );
    let dispatched0 = m0.count("mqws_messages_dispatched_total");
    let shared = Arc::new(Shared::default());
    let deadline = Instant::now() + cfg.timeout;
    let cpu = CpuMark::now(cfg.pid);
    let t0 = Instant::now();

    // The window's other side: what the bridge has logged (or lost), every 20 ms.
    let poller = {
        let (shared, http) = (shared.clone(), cfg.http);
        tokio::spawn(async move {
            let mut last_print = Instant::now();
            while !shared.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(m) = metrics::scrape(http).await {
                    let logged = m
                        .count("mqws_messages_logged_total")
                        .saturating_sub(logged0);
                    let dropped = m
                        .count("mqws_broker_dropped_total")
                        .saturating_sub(dropped0);
                    shared.logged.store(logged, Ordering::Relaxed);
                    shared.dropped.store(dropped, Ordering::Relaxed);
                    if last_print.elapsed() >= Duration::from_secs(10) {
                        last_print = Instant::now();
                        eprintln!(
                            "mqws-catchup: fill: {logged}/{target} logged ({:.0}/s so far){}",
                            logged as f64 / t0.elapsed().as_secs_f64(),
                            if dropped > 0 {
                                format!(", {dropped} DROPPED by the broker")
                            } else {
                                String::new()
                            }
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut tasks = Vec::new();
    let per_publisher_rate = cfg.rate as f64 / spec.counts.len().max(1) as f64;
    for (p, &count) in spec.counts.iter().enumerate() {
        let (cfg, spec, shared) = (cfg.clone(), spec.clone(), shared.clone());
        let pace = Pace {
            start: t0,
            rate: per_publisher_rate,
            deadline,
        };
        tasks.push(tokio::spawn(async move {
            publish(p as u32, count, &cfg, &spec, &shared, pace).await
        }));
    }
    let mut report = FillReport {
        target,
        ..FillReport::default()
    };
    for t in tasks {
        let (acked, errors, first) = t.await.unwrap_or((0, 1, Some("task panicked".into())));
        report.acked += acked;
        report.publisher_errors += errors;
        if report.first_error.is_none() {
            report.first_error = first;
        }
    }
    report.published = shared.sent.load(Ordering::Relaxed);

    let left = deadline.saturating_duration_since(Instant::now());
    let (logged_abs, logged_all) = metrics::wait_count(
        cfg.http,
        "mqws_messages_logged_total",
        |v| v >= logged0 + target,
        Duration::from_millis(20),
        Duration::from_secs(30),
        left,
    )
    .await?;
    report.seconds = t0.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    let _ = poller.await;
    // Wait until everything logged was handed to live delivery too, so a resume after this
    // cuts at or above the last message.
    let (_, dispatched_all) = metrics::wait_count(
        cfg.http,
        "mqws_messages_dispatched_total",
        |v| v >= dispatched0 + (logged_abs - logged0),
        Duration::from_millis(20),
        Duration::from_secs(30),
        Duration::from_secs(60),
    )
    .await?;
    let m1 = metrics::scrape(cfg.http).await?;
    report.logged = m1
        .count("mqws_messages_logged_total")
        .saturating_sub(logged0);
    report.dispatched = m1
        .count("mqws_messages_dispatched_total")
        .saturating_sub(dispatched0);
    report.broker_dropped = m1
        .count("mqws_broker_dropped_total")
        .saturating_sub(dropped0);
    report.logged_per_s = report.logged as f64 / report.seconds.max(1e-6);
    report.complete = logged_all && dispatched_all && report.logged == target;
    report.cpu = cpu.since(cfg.pid);
    eprintln!(
        "mqws-catchup: fill done: {} of {} logged in {:.1} s ({:.0}/s), {} dropped by the broker",
        report.logged, target, report.seconds, report.logged_per_s, report.broker_dropped
    );
    Ok(report)
}

/// When a publisher may send its k-th message.
#[derive(Debug, Clone, Copy)]
struct Pace {
    start: Instant,
    /// Messages per second for this publisher; 0 = unpaced.
    rate: f64,
    deadline: Instant,
}

/// One publisher; returns (acked, errors, first error).
async fn publish(
    p: u32,
    count: u64,
    cfg: &FillConfig,
    spec: &FillSpec,
    shared: &Shared,
    pace: Pace,
) -> (u64, u64, Option<String>) {
    let deadline = pace.deadline;
    let mut opts = mqtt_options(
        &format!("{}-{p}", cfg.client_prefix),
        cfg.mqtt,
        max_packet_for(cfg.payload_bytes),
    );
    opts.set_inflight(cfg.inflight.max(1));
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    set_nodelay(&mut eventloop);
    let acked = Arc::new(AtomicU64::new(0));
    let el_acked = acked.clone();
    let hard_stop = deadline + Duration::from_secs(10);
    let el = tokio::spawn(async move {
        let (mut errors, mut first) = (0u64, None::<String>);
        loop {
            match tokio::time::timeout_at(hard_stop, eventloop.poll()).await {
                Err(_) => break,
                Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => {
                    el_acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    errors += 1;
                    first.get_or_insert_with(|| e.to_string());
                    if Instant::now() >= deadline || errors > 100 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        (errors, first)
    });
    let mut buf = Vec::with_capacity(cfg.payload_bytes.max(64));
    'all: for k in 0..count {
        if pace.rate > 0.0 {
            let due = pace.start + Duration::from_secs_f64(k as f64 / pace.rate);
            if due > deadline {
                break 'all;
            }
            tokio::time::sleep_until(due).await;
        }
        // Flow control: wait while the bridge is `window` or more behind.
        loop {
            let sent = shared.sent.load(Ordering::Relaxed);
            let done =
                shared.logged.load(Ordering::Relaxed) + shared.dropped.load(Ordering::Relaxed);
            if sent.saturating_sub(done) < cfg.window {
                break;
            }
            if Instant::now() >= deadline {
                break 'all;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (topic, sp, sn) = (spec.message)(p, k);
        let stamp = Stamp {
            t_us: payload::now_us(),
            r: cfg.tag,
            p: sp,
            n: sn,
        };
        payload::build(&mut buf, stamp, cfg.payload_bytes);
        shared.sent.fetch_add(1, Ordering::Relaxed);
        if client
            .publish(topic, QoS::AtLeastOnce, false, buf.clone())
            .await
            .is_err()
        {
            break;
        }
    }
    // Wait (bounded) for the PUBACKs, then disconnect behind them.
    let t0 = Instant::now();
    while acked.load(Ordering::Relaxed) < count && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = client.disconnect().await;
    let (errors, first) = el.await.unwrap_or((1, Some("event loop panicked".into())));
    (acked.load(Ordering::Relaxed), errors, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_evenly() {
        assert_eq!(split(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(split(8, 4), vec![2, 2, 2, 2]);
        assert_eq!(split(3, 1), vec![3]);
        assert_eq!(split(1_000_000, 4).iter().sum::<u64>(), 1_000_000);
    }
}
