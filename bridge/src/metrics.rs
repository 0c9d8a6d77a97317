//! The Prometheus recorder: installed once per process, rendered by `/metrics`.
//!
//! The `metrics` crate exports a series only after its first use, so [`handle`] registers every
//! metric the process can emit (at zero, or for gauges without changing them) right after it
//! installs the recorder: a fresh server's `/metrics` then lists every name, and dashboards and
//! alerts (`deploy/`) see zeros instead of missing series. [`configured`] exports the limits
//! the alerts compare against, and [`scrape`] the values read when `/metrics` is rendered.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use mqws_config::Config;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histograms are compacted.
const UPKEEP: Duration = Duration::from_secs(5);

/// Counters without labels (the broker crate's included: the recorder is global).
const COUNTERS: &[&str] = &[
    "mqws_auth_expired_total",
    "mqws_bytes_out_total",
    "mqws_fanout_fell_behind_total",
    "mqws_gaps_sent_total",
    "mqws_log_errors_total",
    "mqws_log_evicted_total",
    "mqws_messages_delivered_total",
    "mqws_messages_dispatched_total",
    "mqws_messages_logged_total",
    "mqws_replay_messages_total",
    "mqws_replay_unrecovered_total",
    "mqws_retained_refused_total",
    "mqws_sessions_evicted_total",
    "mqws_sessions_expired_total",
    "mqws_sessions_restored_from_token_total",
    "mqws_slow_consumer_closes_total",
    "mqws_ws_fell_behind_total",
    "mqws_mqtt_served_lost_total",
    "mqws_mqtt_bypassed_total",
    "mqws_mqtt_sessions_expired_total",
    "mqws_mqtt_sessions_log_replaced_total",
    "mqws_ws_pong_timeouts_total",
    "mqws_ws_publishes_total",
    "mqws_http_publishes_total",
    "mqws_sse_streams_total",
    "mqws_ws_rate_limited_total",
    "mqws_ws_sessions_total",
];

/// Counters with one label, and every value the code gives that label.
const LABELLED_COUNTERS: &[(&str, &str, &[&str])] = &[
    (
        "mqws_auth_refused_total",
        "reason",
        &[
            "missing",
            "expired",
            "malformed",
            "too_long",
            "bad_signature",
            "bad_algorithm",
            "bad_audience",
            "bad_issuer",
            "missing_exp",
            "not_yet_valid",
            "bad_claims",
            "bad_grant",
            "unknown_token",
            "invalid",
        ],
    ),
    (
        "mqws_errors_total",
        "code",
        &[
            "bad_request",
            "hello_required",
            "bad_filter",
            "bad_topic",
            "unauthorized",
            "forbidden",
            "too_large",
            "rate_limited",
            "unavailable",
            "internal",
            "protocol",
            "invalid_utf8",
        ],
    ),
    ("mqws_forbidden_total", "what", &["publish", "subscribe"]),
    (
        "mqws_http_refused_total",
        "reason",
        &["tls", "handshake_timeout"],
    ),
    (
        "mqws_mqtt_refused_total",
        "reason",
        &[
            "auth",
            "client_id",
            "protocol",
            "connect_timeout",
            "max_connections",
            "max_pending_connects",
            "max_pending_per_source",
        ],
    ),
    (
        "mqws_mqtt_filters_refused_total",
        "quota",
        &["per_connection", "per_login", "per_source", "total"],
    ),
    (
        "mqws_mqtt_broker_copies_kept_total",
        "why",
        &["duplicate", "too_large"],
    ),
    (
        "mqws_mqtt_ws_refused_total",
        "reason",
        &["subprotocol", "origin"],
    ),
    ("mqws_storage_errors_total", "store", &["retained"]),
    (
        "mqws_ws_refused_total",
        "reason",
        &["subprotocol", "origin", "max_connections"],
    ),
    (
        "mqws_sse_refused_total",
        "reason",
        &["origin", "unauthorized", "max_connections"],
    ),
];

/// Gauges. They are registered with `increment(0.0)`, which leaves a value something else
/// already set (the connection count, the retention task's figures) as it is.
const GAUGES: &[&str] = &[
    "mqws_mqtt_served_connections",
    "mqws_mqtt_sessions",
    "mqws_ingress_queued_messages",
    "mqws_log_bytes",
    "mqws_log_disk_bytes",
    "mqws_log_messages",
    "mqws_log_writable",
    "mqws_ready",
    "mqws_sessions",
    "mqws_sse_connections",
    "mqws_ws_connections",
    "mqws_ws_pending_bytes",
];

/// Histograms (rendered as summaries: quantiles, `_sum` and `_count`).
const HISTOGRAMS: &[&str] = &[
    "mqws_ingress_wait_seconds",
    "mqws_log_append_seconds",
    "mqws_log_batch_messages",
    "mqws_fanout_wait_seconds",
    "mqws_mqtt_served_wait_seconds",
    "mqws_follower_delay_seconds",
];

/// The process's recorder handle. The first call installs it; later calls (tests that run the
/// server twice in one process) share it.
pub(crate) fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours renders nothing,
            // which is visible but harmless.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register();
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(UPKEEP);
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// Registers every metric so that it is exported before its first event.
fn register() {
    for name in COUNTERS {
        metrics::counter!(*name).increment(0);
    }
    for (name, label, values) in LABELLED_COUNTERS {
        for value in *values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
    for name in GAUGES {
        metrics::gauge!(*name).increment(0.0);
    }
    for name in HISTOGRAMS {
        // Registering is enough: an empty summary renders its `_sum` and `_count` as 0.
        let _ = metrics::histogram!(*name);
    }
}

/// Exports the configured limits that dashboards and alerts compare the live figures with.
/// Called by every run (a test process may run servers with different configurations).
pub(crate) fn configured(config: &Config) {
    metrics::gauge!("mqws_log_max_bytes").set(config.log.max_bytes.as_u64() as f64);
    metrics::gauge!("mqws_log_max_messages").set(config.log.max_messages as f64);
    metrics::gauge!("mqws_ingress_queue_capacity").set(config.bridge.inbound_queue as f64);
    metrics::gauge!("mqws_ws_max_connections").set(config.ws.max_connections as f64);
    metrics::gauge!("mqws_ws_max_total_pending_bytes")
        .set(config.ws.max_total_pending_bytes.as_u64() as f64);
}

/// Sets the gauges read when `/metrics` is rendered: the bytes all outbound queues hold, and
/// whether `/readyz` says ready and the log can be written.
pub(crate) fn scrape(pending_bytes: usize, ready: bool, log_writable: bool) {
    metrics::gauge!("mqws_ws_pending_bytes").set(pending_bytes as f64);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    metrics::gauge!("mqws_ready").set(flag(ready));
    metrics::gauge!("mqws_log_writable").set(flag(log_writable));
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "mqws_ws_connections",
        "Open WebSocket connections and SSE streams (both count against ws.max_connections)."
    );
    describe_gauge!("mqws_sse_connections", "Open GET /sse streams.");
    describe_counter!("mqws_sse_streams_total", "GET /sse streams opened.");
    describe_counter!(
        "mqws_sse_refused_total",
        "GET /sse requests refused, by reason (bad requests and forbidden filters not counted)."
    );
    describe_gauge!(
        "mqws_ws_pending_bytes",
        Unit::Bytes,
        "Bytes queued for all WebSocket connections (bounded by ws.max_total_pending_bytes)."
    );
    describe_gauge!(
        "mqws_ready",
        "1 while /readyz answers 200 (broker link up, log writable, not shutting down), else 0."
    );
    describe_gauge!(
        "mqws_log_writable",
        "1 while the log accepts writes, 0 while appends fail (disk full, I/O error)."
    );
    describe_gauge!(
        "mqws_ingress_queued_messages",
        "Messages waiting for the log after the latest group commit (bounded by bridge.inbound_queue)."
    );
    describe_gauge!(
        "mqws_ingress_queue_capacity",
        "Configured bridge.inbound_queue."
    );
    describe_gauge!(
        "mqws_log_max_bytes",
        Unit::Bytes,
        "Configured log.max_bytes (retention limit on topic + payload bytes)."
    );
    describe_gauge!("mqws_log_max_messages", "Configured log.max_messages.");
    describe_gauge!("mqws_ws_max_connections", "Configured ws.max_connections.");
    describe_gauge!(
        "mqws_ws_max_total_pending_bytes",
        Unit::Bytes,
        "Configured ws.max_total_pending_bytes."
    );
    describe_gauge!(
        "mqws_log_bytes",
        Unit::Bytes,
        "Topic + payload bytes in the log (what log.max_bytes bounds)."
    );
    describe_gauge!("mqws_log_messages", "Messages in the log.");
    describe_gauge!(
        "mqws_log_disk_bytes",
        Unit::Bytes,
        "Size of the database on disk, as of the last retention pass."
    );
    describe_gauge!("mqws_sessions", "Server-held sessions.");
    describe_counter!(
        "mqws_ws_fell_behind_total",
        "Times a connection fell behind the live stream and continued from the tail or the log."
    );
    describe_counter!(
        "mqws_gaps_sent_total",
        "In-stream gap frames: ranges retention removed before a lagging client read them."
    );
    describe_counter!(
        "mqws_fanout_fell_behind_total",
        "Times the fan-out thread fell behind the in-memory tail (every connection caught up from the log)."
    );
    describe_counter!(
        "mqws_sessions_restored_from_token_total",
        "Sessions never saved (the server died first) restored from their signed resume token."
    );
    describe_counter!(
        "mqws_sessions_evicted_total",
        "Sessions forgotten because session.max was reached."
    );
    describe_counter!(
        "mqws_sessions_expired_total",
        "Sessions forgotten after session.ttl unused."
    );
    describe_counter!(
        "mqws_ws_sessions_total",
        "Sessions opened (hello answered)."
    );
    describe_counter!(
        "mqws_ws_refused_total",
        "WebSocket upgrades refused, by reason."
    );
    describe_counter!(
        "mqws_http_refused_total",
        "HTTP connections refused (TLS handshake failure, header deadline), by reason."
    );
    describe_counter!(
        "mqws_auth_refused_total",
        "WebSocket hellos refused for a missing or invalid token, by reason."
    );
    describe_counter!(
        "mqws_auth_expired_total",
        "Connections closed with 4003 when their token expired."
    );
    describe_counter!(
        "mqws_forbidden_total",
        "Publishes and subscriptions refused by the grant, by what."
    );
    describe_counter!(
        "mqws_ws_rate_limited_total",
        "Browser publishes refused by ws.publish_rate."
    );
    describe_counter!(
        "mqws_messages_logged_total",
        "Messages appended to the durable log."
    );
    describe_counter!(
        "mqws_messages_dispatched_total",
        "Logged messages handed to fan-out (live, or to every connection's catch-up when fan-out fell behind the tail)."
    );
    describe_counter!(
        "mqws_messages_delivered_total",
        "Message frames queued to connections."
    );
    describe_counter!(
        "mqws_replay_messages_total",
        "Messages sent from the log or the tail to resuming or lagging connections."
    );
    describe_counter!(
        "mqws_replay_unrecovered_total",
        "Resumes answered recovered:false (part of what was asked for is gone)."
    );
    describe_counter!(
        "mqws_bytes_out_total",
        Unit::Bytes,
        "Bytes of frames written to WebSocket clients."
    );
    describe_histogram!(
        "mqws_log_append_seconds",
        Unit::Seconds,
        "Time to append and flush one group commit."
    );
    describe_histogram!("mqws_log_batch_messages", "Messages per group commit.");
    describe_histogram!(
        "mqws_ingress_wait_seconds",
        Unit::Seconds,
        "Time the oldest message of each group commit waited in the ingress queue (for the commit before it)."
    );
    describe_histogram!(
        "mqws_fanout_wait_seconds",
        Unit::Seconds,
        "Time from a batch's entry into the tail (logged) until the fan-out thread dispatched it."
    );
    describe_histogram!(
        "mqws_mqtt_served_wait_seconds",
        Unit::Seconds,
        "Time from logged until an MQTT connection's driver took the message (live ones, 1 in 16)."
    );
    describe_histogram!(
        "mqws_follower_delay_seconds",
        Unit::Seconds,
        "Cluster mode: age of the oldest message of each batch the follower reads from the shared log (wall clock, milliseconds)."
    );
    describe_counter!(
        "mqws_log_errors_total",
        "Failed log appends (each retried)."
    );
    describe_counter!(
        "mqws_log_evicted_total",
        "Messages retention removed from the log."
    );
    describe_counter!(
        "mqws_storage_errors_total",
        "Failed writes to other stores (retained values), by store."
    );
    describe_counter!(
        "mqws_retained_refused_total",
        "Retained values not kept because broker.max_retained was reached."
    );
    describe_counter!(
        "mqws_slow_consumer_closes_total",
        "Connections closed with 4001."
    );
    describe_counter!(
        "mqws_ws_pong_timeouts_total",
        "Connections dropped for a late pong."
    );
    describe_counter!(
        "mqws_ws_publishes_total",
        "Browser publishes taken by the broker."
    );
    describe_counter!(
        "mqws_http_publishes_total",
        "POST /publish requests taken by the broker."
    );
    describe_counter!(
        "mqws_errors_total",
        "Error frames and error closes sent, by code."
    );
    describe_counter!(
        "mqws_mqtt_refused_total",
        "MQTT connections refused, by reason."
    );
    describe_counter!(
        "mqws_mqtt_bypassed_total",
        "Logged MQTT PUBLISHes kept from the embedded broker because no filter it holds could match (acknowledged by the proxy once durable)."
    );
    describe_counter!(
        "mqws_mqtt_broker_copies_kept_total",
        "PUBLISHes of the embedded broker kept from an MQTT client: a copy of a logged message a served filter already delivers, or one over the client's Maximum Packet Size (acknowledged to the broker by the proxy)."
    );
    describe_counter!(
        "mqws_mqtt_served_lost_total",
        "Messages retention removed before an MQTT subscriber served by the proxy read them (MQTT cannot report a gap)."
    );
    describe_gauge!(
        "mqws_mqtt_sessions",
        "Persistent MQTT sessions stored (connected or not)."
    );
    describe_counter!(
        "mqws_mqtt_sessions_expired_total",
        "Persistent MQTT sessions found expired when their client came back."
    );
    describe_counter!(
        "mqws_mqtt_sessions_log_replaced_total",
        "Persistent MQTT sessions resumed on a log other than the one their position belongs to (what was logged meanwhile is unknown)."
    );
    describe_gauge!(
        "mqws_mqtt_served_connections",
        "MQTT connections whose subscriptions to logged topics the proxy serves from the stream core."
    );
    describe_counter!(
        "mqws_mqtt_filters_refused_total",
        "MQTT SUBSCRIBE filters refused for a quota of new filters, by quota."
    );
    describe_counter!(
        "mqws_mqtt_ws_refused_total",
        "MQTT over WebSocket handshakes refused at /mqtt, by reason."
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{COUNTERS, GAUGES, HISTOGRAMS, LABELLED_COUNTERS};

    /// Every `.rs` file under `dir`, recursively.
    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("read source dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push((path.display().to_string(), text));
            }
        }
    }

    /// The metric names and literal label values used with `counter!`, `gauge!` and
    /// `histogram!` in the bridge and broker crates are all registered at start, so a new
    /// metric cannot be forgotten here (and stay missing from a fresh `/metrics`).
    #[test]
    fn every_metric_in_the_code_is_registered() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        sources(&root.join("src"), &mut files);
        sources(&root.join("../broker/src"), &mut files);
        let registered = |name: &str| {
            COUNTERS.contains(&name)
                || GAUGES.contains(&name)
                || HISTOGRAMS.contains(&name)
                || LABELLED_COUNTERS.iter().any(|(n, _, _)| *n == name)
        };
        let mut missing = Vec::new();
        let mut seen = 0;
        for (file, text) in &files {
            for mac in ["counter!(", "gauge!(", "histogram!("] {
                for (at, _) in text.match_indices(mac) {
                    let before = text[..at].chars().next_back().unwrap_or(' ');
                    if before.is_alphanumeric() || before == '_' {
                        continue; // `describe_counter!(`
                    }
                    let call = text[at + mac.len()..].trim_start();
                    let Some(call) = call.strip_prefix('"') else {
                        continue; // a variable, as in `register` above
                    };
                    let Some(end) = call.find('"') else { continue };
                    let name = &call[..end];
                    // This file sets the configured limits and scrape-time gauges itself.
                    if !name.starts_with("mqws_")
                        || file.ends_with("tests.rs")
                        || file.ends_with("metrics.rs")
                    {
                        continue;
                    }
                    seen += 1;
                    if !registered(name) {
                        missing.push(format!("{name} ({file})"));
                        continue;
                    }
                    // A literal label value: `"label" => "value"`.
                    let args = &call[end + 1..call.find(')').unwrap_or(call.len())];
                    let value = args
                        .split_once("=>")
                        .map(|(_, v)| v.trim())
                        .and_then(|v| v.strip_prefix('"'))
                        .and_then(|v| v.split('"').next());
                    if let Some(value) = value {
                        let known = LABELLED_COUNTERS
                            .iter()
                            .any(|(n, _, values)| *n == name && values.contains(&value));
                        if !known {
                            missing.push(format!("{name}{{{value}}} ({file})"));
                        }
                    }
                }
            }
        }
        assert!(seen >= 30, "only {seen} metric uses found");
        assert!(missing.is_empty(), "not registered at start: {missing:#?}");
    }
}
