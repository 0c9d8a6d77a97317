//! The durable store of retained values: the latest retained payload of each topic, kept by
//! the storage layer and restored into the embedded broker at start-up, because rumqttd
//! forgets retained messages when it restarts. (Not the log's retention, which is
//! `retention`, nor the hub's in-memory index of retained values, `fanout::retained`.)
//!
//! Updates come from the broker side (MQTT clients' retained PUBLISHes seen by the proxy, and
//! browser publishes with `retain`); an empty payload clears a topic, as in MQTT. Each write
//! waits for its batch to be durable before it is answered, and the PUBLISH behind it waits for
//! that answer, so an acknowledged retained value survives kill -9. While storage fails the
//! batch is retried (the storage is reopened when needed) and the publishers wait.

use std::sync::Arc;
use std::time::Duration;

use mqws_broker::{RetainedUpdate, RetainedWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::storage::{RetainedValue, Storage, StorageError};

/// Updates written per batch at most.
const BATCH: usize = 256;
/// Pause before the first retry of a failed write; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Every kept value.
pub(crate) fn load(storage: &Storage) -> Result<Vec<RetainedValue>, StorageError> {
    storage.retained.load()
}

/// The values as the broker's start-up restore takes them.
pub(crate) fn restore(values: &[RetainedValue]) -> Vec<RetainedUpdate> {
    values
        .iter()
        .map(|v| RetainedUpdate {
            topic: v.topic.clone(),
            payload: v.payload.clone(),
            qos: v.qos.unwrap_or(0),
            properties: v.properties.clone(),
        })
        .collect()
}

/// The values as the hub's retained index takes them at start: records before any cut,
/// their expiry counted from now (the store keeps no time).
pub(crate) fn records(values: Vec<RetainedValue>, now_ms: u64) -> Vec<crate::storage::Record> {
    values
        .into_iter()
        .map(|v| crate::storage::Record {
            seq: 0,
            ts_ms: now_ms,
            mqtt: v.qos.map(|qos| crate::storage::MqttMeta {
                qos,
                origin: None,
                properties: v.properties,
            }),
            topic: v.topic,
            payload: v.payload,
            retain: true,
        })
        .collect()
}

/// Writes updates until `stop` is cancelled or the broker side ends.
pub(crate) async fn run(
    storage: Storage,
    mut writes: mpsc::Receiver<RetainedWrite>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            n = writes.recv_many(&mut batch, BATCH) => n,
            _ = stop.cancelled() => return,
        };
        if n == 0 {
            return;
        }
        let values: Vec<RetainedValue> = batch
            .iter()
            .map(|w| RetainedValue {
                topic: w.update.topic.clone(),
                payload: w.update.payload.clone(),
                qos: Some(w.update.qos),
                properties: w.update.properties.clone(),
            })
            .collect();
        let values = Arc::new(values);
        if !write(&storage, values.clone(), &stop).await {
            return;
        }
        for w in batch.drain(..) {
            let _ = w.done.send(());
        }
    }
}

/// Applies `values` until it succeeds; false when shutdown came first (nothing is answered).
async fn write(
    storage: &Storage,
    values: Arc<Vec<RetainedValue>>,
    stop: &CancellationToken,
) -> bool {
    let mut wait = RETRY_MIN;
    let mut failed = false;
    loop {
        let (s, v) = (storage.clone(), Arc::clone(&values));
        let result = tokio::task::spawn_blocking(move || {
            let r = s.retained.apply(&v);
            if r.as_ref().is_err_and(StorageError::engine_failed) {
                // A poisoned engine is reopened here so the next try can succeed.
                let _ = s.recover();
            }
            r
        })
        .await;
        match result {
            Ok(Ok(refused)) => {
                if refused > 0 {
                    metrics::counter!("mqws_retained_refused_total").increment(refused as u64);
                    warn!(
                        refused,
                        "retained values not kept: broker.max_retained reached"
                    );
                }
                if failed {
                    info!("retained values are written again");
                }
                return true;
            }
            Ok(Err(e)) => {
                metrics::counter!("mqws_storage_errors_total", "store" => "retained").increment(1);
                if !failed {
                    warn!(error = %e, "retained values not saved; retrying, their publishers wait");
                }
                failed = true;
            }
            Err(e) => {
                warn!(error = %e, "retained write task failed");
                failed = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return false,
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}
