//! Group commit: the `mqws-log-writer` thread takes whatever the broker link has queued (up to
//! `log.max_batch_messages`), gives each message the next seq, appends the batch and flushes it,
//! and only then hands it to the `mqws-fanout` thread for delivery. A message a client has
//! received is therefore on disk.
//!
//! When the disk fails (full, read-only) the writer keeps the batch, reports not-ready, and
//! retries; nothing is delivered or dropped meanwhile, and the broker link's bounded queue
//! pushes back on the broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use mqws_broker::Inbound;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::index::Index;
use super::store::{LogError, LogStore};
use super::Record;
use crate::fanout::{Hub, Live};
use crate::protocol::server::message_text;

/// Batches in flight between the writer and the fan-out thread.
const FANOUT_QUEUE: usize = 16;
/// Pause between retries of a failed append.
const RETRY: Duration = Duration::from_millis(500);

/// What the writer needs.
pub struct WriterParts {
    /// The log.
    pub store: LogStore,
    /// Messages from the broker.
    pub inbound: mpsc::Receiver<Inbound>,
    /// Where logged batches go.
    pub hub: Arc<Hub>,
    /// Updated after each append, before delivery, so replays see every delivered message.
    pub index: Arc<parking_lot::RwLock<Index>>,
    /// Most messages per group commit.
    pub max_batch: usize,
    /// Cancelled at shutdown.
    pub stop: CancellationToken,
    /// False while the log cannot be written.
    pub healthy: Arc<AtomicBool>,
}

/// Starts the writer and fan-out threads. The returned receiver resolves once the writer has
/// logged what was queued at shutdown and flushed.
pub fn spawn(parts: WriterParts, rt: Handle) -> Result<oneshot::Receiver<()>, LogError> {
    let next_seq = parts.store.next_seq()?;
    let last_ts = match parts.store.last_seq()? {
        Some(seq) => parts.store.get(seq)?.map_or(0, |r| r.ts_ms),
        None => 0,
    };
    let (fan_tx, fan_rx) = std::sync::mpsc::sync_channel::<Vec<Arc<Live>>>(FANOUT_QUEUE);
    let hub = parts.hub.clone();
    std::thread::Builder::new()
        .name("mqws-fanout".to_owned())
        .spawn(move || {
            while let Ok(batch) = fan_rx.recv() {
                let n = hub.dispatch(&batch);
                metrics::counter!("mqws_messages_delivered_total").increment(n);
                metrics::counter!("mqws_messages_dispatched_total").increment(batch.len() as u64);
            }
        })
        .map_err(|e| LogError::Storage(sled::Error::Io(e)))?;
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("mqws-log-writer".to_owned())
        .spawn(move || {
            run(
                parts,
                rt,
                Seqs {
                    next: next_seq,
                    last_ts,
                },
                fan_tx,
            );
            let _ = done_tx.send(());
        })
        .map_err(|e| LogError::Storage(sled::Error::Io(e)))?;
    Ok(done)
}

/// Where the writer is: the next seq to hand out and the last ts used (kept non-decreasing so
/// time lookups can binary-search).
struct Seqs {
    next: u64,
    last_ts: u64,
}

fn run(
    mut parts: WriterParts,
    rt: Handle,
    mut seqs: Seqs,
    fan_tx: std::sync::mpsc::SyncSender<Vec<Arc<Live>>>,
) {
    let mut inbound = Vec::with_capacity(parts.max_batch);
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
        let (records, gaps) = to_records(&mut inbound, &mut seqs);
        if (!records.is_empty() || !gaps.is_empty())
            && !append(&parts, &records, &gaps, seqs.next, stopping)
        {
            break;
        }
        if !records.is_empty() {
            let mut index = parts.index.write();
            for r in &records {
                index.add(&r.topic, r.seq, r.size());
            }
        }
        if !records.is_empty() {
            let lives = records
                .into_iter()
                .map(|record| {
                    let frame = Utf8Bytes::from(message_text(&record, false));
                    Arc::new(Live { record, frame })
                })
                .collect();
            if fan_tx.send(lives).is_err() {
                break;
            }
        }
        if stopping {
            break;
        }
    }
    match parts.store.flush() {
        Ok(()) => info!(next_seq = seqs.next, "log flushed"),
        Err(e) => error!(error = %e, "final log flush failed"),
    }
}

/// Gives each message its seq and ts; a broker drop consumes as many seqs as messages were
/// lost, recorded as a gap so a resume across it is told exactly what is missing.
fn to_records(inbound: &mut Vec<Inbound>, seqs: &mut Seqs) -> (Vec<Record>, Vec<(u64, u64)>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let ts_ms = now.max(seqs.last_ts);
    seqs.last_ts = ts_ms;
    let mut records = Vec::with_capacity(inbound.len());
    let mut gaps = Vec::new();
    for item in inbound.drain(..) {
        match item {
            Inbound::Message(m) => {
                records.push(Record {
                    seq: seqs.next,
                    ts_ms,
                    topic: m.topic,
                    payload: m.payload,
                    retain: m.retain,
                });
                seqs.next += 1;
            }
            Inbound::Dropped { filter, lost } if lost > 0 => {
                let (from, to) = (seqs.next, seqs.next + lost - 1);
                warn!(%filter, lost, from, to, "recording a broker gap");
                gaps.push((from, to));
                seqs.next = to + 1;
            }
            Inbound::Dropped { .. } => {}
        }
    }
    (records, gaps)
}

/// Appends with retries; false when shutdown interrupted a failing append.
fn append(
    parts: &WriterParts,
    records: &[Record],
    gaps: &[(u64, u64)],
    next_seq: u64,
    stopping: bool,
) -> bool {
    loop {
        let started = Instant::now();
        match parts.store.append(records, gaps, next_seq) {
            Ok(()) => {
                metrics::histogram!("mqws_log_append_seconds").record(started.elapsed());
                metrics::histogram!("mqws_log_batch_messages").record(records.len() as f64);
                metrics::counter!("mqws_messages_logged_total").increment(records.len() as u64);
                if !parts.healthy.swap(true, Ordering::Relaxed) {
                    info!("log writes recovered");
                }
                return true;
            }
            Err(e) => {
                metrics::counter!("mqws_log_errors_total").increment(1);
                if parts.healthy.swap(false, Ordering::Relaxed) {
                    error!(error = %e, batch = records.len(), "log append failed; delivery paused, retrying");
                }
                if stopping || parts.stop.is_cancelled() {
                    error!(lost = records.len(), "shutting down with an unwritable log");
                    return false;
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mqws_broker::InboundMessage;

    fn msg(topic: &str) -> Inbound {
        Inbound::Message(InboundMessage {
            topic: topic.to_owned(),
            payload: Bytes::from_static(b"x"),
            retain: false,
        })
    }

    #[test]
    fn broker_drops_consume_seqs_and_become_gaps() {
        let mut seqs = Seqs {
            next: 10,
            last_ts: u64::MAX - 1,
        };
        let mut inbound = vec![
            msg("a"),
            Inbound::Dropped {
                filter: "#".to_owned(),
                lost: 3,
            },
            msg("b"),
            Inbound::Dropped {
                filter: "#".to_owned(),
                lost: 0,
            },
            msg("c"),
        ];
        let (records, gaps) = to_records(&mut inbound, &mut seqs);
        let got: Vec<(u64, &str)> = records.iter().map(|r| (r.seq, r.topic.as_str())).collect();
        assert_eq!(got, vec![(10, "a"), (14, "b"), (15, "c")]);
        assert_eq!(gaps, vec![(11, 13)]);
        assert_eq!(seqs.next, 16);
        assert!(inbound.is_empty());
        assert!(
            records.iter().all(|r| r.ts_ms == u64::MAX - 1),
            "ts never goes backwards"
        );
    }
}
