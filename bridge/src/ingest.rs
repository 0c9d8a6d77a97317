//! Ingest: the `mqws-ingest` thread takes whatever the MQTT proxy and browser publishes have
//! queued (up to `log.max_batch_messages`), appends it to the log as one group commit, answers
//! each message's `done` (only then does the proxy pass the PUBLISH to rumqttd, which
//! acknowledges and routes it), and pushes the logged records into the in-memory tail, which
//! never makes it wait (in cluster mode the follower feeds the tail instead, in the shared
//! log's order). The fan-out thread (`fanout::dispatch`) follows the tail. A message anyone
//! has seen or had acknowledged is therefore durable, and a slow fan-out never slows the log.
//!
//! When the log cannot be written (disk full, I/O error) the batch is kept and retried with
//! backoff, the failure is reported once (ERROR, `mqws_log_errors_total`, `/readyz` 503) and
//! the storage is reopened when it stays failed; nothing is acknowledged, delivered or dropped
//! meanwhile, and the bounded ingress queue stops the proxy from reading publishers. Writing
//! resumes by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqws_broker::Ingress;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::error::BridgeError;
use crate::fanout::Tail;
use crate::protocol::payload::Encodings;
use crate::storage::{Entry, MqttMeta, Record, Storage};

/// First pause after a failed append; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Short, so that an append goes through within about a second of the log being writable
/// again (a new JetStream stream leader elected, disk space freed); a failing attempt costs
/// little and is logged once.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// What ingest needs.
pub(crate) struct Parts {
    /// Where messages are logged.
    pub(crate) storage: Storage,
    /// Messages to log, each with its `done`.
    pub(crate) inbound: mpsc::Receiver<Ingress>,
    /// Where logged batches go.
    pub(crate) tail: Arc<Tail>,
    /// Most messages per group commit.
    pub(crate) max_batch: usize,
    /// Cancelled at shutdown.
    pub(crate) stop: CancellationToken,
    /// False while the log cannot be written.
    pub(crate) healthy: Arc<AtomicBool>,
    /// How payloads are carried in `message` frames (`bridge.encodings`).
    pub(crate) encodings: Arc<Encodings>,
    /// True when the log is shared and the follower feeds the tail.
    pub(crate) followed: bool,
}

/// Starts the ingest thread. The returned receiver resolves once ingest has logged what was
/// queued at shutdown, flushed and closed the tail.
pub(crate) fn spawn(parts: Parts, rt: Handle) -> Result<oneshot::Receiver<()>, BridgeError> {
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("mqws-ingest".to_owned())
        .spawn(move || {
            let tail = parts.tail.clone();
            run(parts, rt);
            tail.close();
            let _ = done_tx.send(());
        })
        .map_err(|source| BridgeError::Spawn {
            what: "the ingest thread",
            source,
        })?;
    Ok(done)
}

fn run(mut parts: Parts, rt: Handle) {
    let mut inbound = Vec::with_capacity(parts.max_batch);
    let mut batch = Vec::with_capacity(parts.max_batch);
    loop {
        let stopping = {
            let recv = parts.inbound.recv_many(&mut inbound, parts.max_batch);
            let stop = parts.stop.cancelled();
            rt.block_on(async {
                tokio::select! {
                    n = recv => n == 0,
                    _ = stop => true,
                }
            })
        };
        if stopping {
            // Log what the broker already handed over, then stop.
            while inbound.len() < parts.max_batch {
                match parts.inbound.try_recv() {
                    Ok(m) => inbound.push(m),
                    Err(_) => break,
                }
            }
        }
        // Each answer keeps its message's share of the ingress byte budget until the append
        // is done, so what is being appended counts against `bridge.inbound_bytes` too.
        let mut dones = Vec::with_capacity(inbound.len());
        if let Some(oldest) = inbound.first() {
            metrics::histogram!("mqws_ingress_wait_seconds").record(oldest.queued_at().elapsed());
        }
        for item in inbound.drain(..) {
            let (message, done) = item.into_parts();
            batch.push(Entry::Message {
                topic: message.topic,
                payload: message.payload,
                retain: message.retain,
                mqtt: Some(MqttMeta {
                    qos: message.qos,
                    origin: message.origin,
                    properties: message.properties,
                }),
            });
            dones.push(done);
        }
        if batch.is_empty() {
            if stopping {
                break;
            }
            continue;
        }
        let Some(records) = append(&parts, &mut batch, stopping) else {
            break;
        };
        for done in dones {
            done.confirm();
        }
        metrics::gauge!("mqws_ingress_queued_messages").set(parts.inbound.len() as f64);
        // With a shared log the follower feeds the tail, in the log's order.
        if !records.is_empty() && !parts.followed {
            parts.tail.push_records(records, &parts.encodings);
        }
        if stopping {
            break;
        }
    }
    match parts.storage.flush() {
        Ok(()) => info!(head = parts.storage.log.head(), "log flushed"),
        Err(e) => error!(error = %e, "final log flush failed"),
    }
}

/// Appends `batch` until it is durable; `None` when shutdown interrupted a failing append.
fn append(parts: &Parts, batch: &mut Vec<Entry>, stopping: bool) -> Option<Vec<Record>> {
    let mut wait = RETRY_MIN;
    loop {
        let started = Instant::now();
        let size = batch.len();
        match parts.storage.log.append(batch) {
            Ok(appended) => {
                metrics::histogram!("mqws_log_append_seconds").record(started.elapsed());
                metrics::histogram!("mqws_log_batch_messages").record(size as f64);
                metrics::counter!("mqws_messages_logged_total")
                    .increment(appended.records.len() as u64);
                if !parts.healthy.swap(true, Ordering::Relaxed) {
                    info!("log writes recovered; delivery continues");
                }
                return Some(appended.records);
            }
            Err(e) => {
                metrics::counter!("mqws_log_errors_total").increment(1);
                if parts.healthy.swap(false, Ordering::Relaxed) {
                    error!(error = %e, batch = size, "log append failed; nothing of it is delivered, retrying");
                }
                if stopping || parts.stop.is_cancelled() {
                    error!(
                        unlogged = size,
                        "shutting down with an unwritable log; these messages are not logged"
                    );
                    return None;
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(RETRY_MAX);
                if e.engine_failed() {
                    if let Err(e) = parts.storage.recover() {
                        debug!(error = %e, "storage not reopened yet");
                    }
                }
            }
        }
    }
}
