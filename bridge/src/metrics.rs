//! The Prometheus recorder: installed once per process, rendered by `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histograms are compacted.
const UPKEEP: Duration = Duration::from_secs(5);

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

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("mqws_ws_connections", "Open WebSocket connections.");
    describe_gauge!(
        "mqws_ws_pending_bytes",
        Unit::Bytes,
        "Bytes queued for all WebSocket connections (bounded by ws.max_total_pending_bytes)."
    );
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
        "mqws_ws_sessions_total",
        "Sessions opened (hello answered)."
    );
    describe_counter!(
        "mqws_ws_refused_total",
        "WebSocket upgrades refused, by reason."
    );
    describe_counter!(
        "mqws_messages_in_total",
        "Messages the broker routed to the bridge."
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
    describe_counter!(
        "mqws_log_errors_total",
        "Failed log appends (each retried)."
    );
    describe_counter!(
        "mqws_broker_dropped_total",
        "Messages the embedded broker dropped for the bridge."
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
        "mqws_errors_total",
        "Error frames and error closes sent, by code."
    );
    describe_counter!(
        "mqws_mqtt_refused_total",
        "MQTT connections refused, by reason."
    );
}
