//! Retention: a background task that has the log remove its oldest messages while it is over
//! `log.max_messages`, `log.max_bytes` or `log.max_age` (the engine works in steps of
//! `log.retention_batch`, so appends never wait long). It also expires idle sessions and
//! publishes the storage gauges. (Retained MQTT values are another matter: `retained_store`.)

use std::sync::Arc;
use std::time::Duration;

use mqws_config::LogConfig;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::session::Sessions;
use crate::storage::{Retention, Storage};

/// How often idle sessions are expired.
const SESSION_SWEEP: Duration = Duration::from_secs(30);
/// Most sessions expired per sweep.
const SESSION_SWEEP_MAX: usize = 10_000;

/// The retention limits of the `log` section.
pub(crate) fn limits(c: &LogConfig) -> Retention {
    Retention {
        max_messages: c.max_messages,
        max_bytes: c.max_bytes.as_u64(),
        max_age: c.max_age,
        batch: c.retention_batch,
    }
}

/// Runs until `stop` is cancelled.
pub(crate) async fn run(
    storage: Storage,
    sessions: Arc<Sessions>,
    limits: Retention,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let log = storage.log.clone();
        match tokio::task::spawn_blocking(move || log.enforce(&limits)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                metrics::counter!("mqws_log_evicted_total").increment(n);
                debug!(removed = n, "retention");
            }
            Ok(Err(e)) => warn!(error = %e, "retention failed"),
            Err(e) => warn!(error = %e, "retention task failed"),
        }
        if last_sweep.elapsed() >= SESSION_SWEEP {
            last_sweep = tokio::time::Instant::now();
            let s = sessions.clone();
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || s.expire(SESSION_SWEEP_MAX)).await
            {
                warn!(error = %e, "session expiry failed");
            }
            let m = storage.mqtt_sessions.clone();
            let now = crate::storage::now_ms();
            let swept = tokio::task::spawn_blocking(move || m.sweep(now, SESSION_SWEEP_MAX));
            match swept.await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => debug!(expired = n, "persistent MQTT sessions expired"),
                Ok(Err(e)) => warn!(error = %e, "MQTT session expiry failed"),
                Err(e) => warn!(error = %e, "MQTT session expiry task failed"),
            }
        }
        let s = storage.clone();
        if let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || s.disk_bytes()).await {
            metrics::gauge!("mqws_log_disk_bytes").set(bytes as f64);
        }
        let stats = storage.log.stats();
        metrics::gauge!("mqws_log_messages").set(stats.messages as f64);
        metrics::gauge!("mqws_log_bytes").set(stats.bytes as f64);
        metrics::gauge!("mqws_sessions").set(sessions.count() as f64);
        metrics::gauge!("mqws_mqtt_sessions").set(storage.mqtt_sessions.count() as f64);
    }
}
