//! Retention: a background task that removes the oldest messages while the log is over
//! `log.max_messages`, `log.max_bytes` or `log.max_age`, at most `log.retention_batch` per step
//! so appends never wait long. It also expires idle sessions.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mqws_config::LogConfig;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::log::index::Index;
use crate::log::{LogError, LogStore};
use crate::session::Sessions;

/// How often idle sessions are expired.
const SESSION_SWEEP: Duration = Duration::from_secs(30);

/// Limits as plain numbers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `log.max_messages`.
    pub max_messages: u64,
    /// `log.max_bytes`.
    pub max_bytes: u64,
    /// `log.max_age`.
    pub max_age: Duration,
    /// `log.retention_batch`.
    pub batch: usize,
}

impl Limits {
    /// From the config section.
    pub fn from_config(c: &LogConfig) -> Limits {
        Limits {
            max_messages: c.max_messages,
            max_bytes: c.max_bytes.as_u64(),
            max_age: c.max_age,
            batch: c.retention_batch,
        }
    }
}

/// Runs until `stop` is cancelled.
pub async fn run(
    store: LogStore,
    index: Arc<RwLock<Index>>,
    sessions: Arc<Sessions>,
    limits: Limits,
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
        let (s, ix) = (store.clone(), index.clone());
        let removed = tokio::task::spawn_blocking(move || enforce(&s, &ix, limits)).await;
        match removed {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => debug!(removed = n, "retention"),
            Ok(Err(e)) => warn!(error = %e, "retention failed"),
            Err(e) => warn!(error = %e, "retention task failed"),
        }
        if last_sweep.elapsed() >= SESSION_SWEEP {
            last_sweep = tokio::time::Instant::now();
            let s = sessions.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.expire()).await {
                warn!(error = %e, "session expiry failed");
            }
        }
        if let Ok(bytes) = store.size_on_disk() {
            metrics::gauge!("mqws_log_disk_bytes").set(bytes as f64);
        }
        let ix = index.read();
        metrics::gauge!("mqws_log_messages").set(ix.count() as f64);
        metrics::gauge!("mqws_log_bytes").set(ix.bytes() as f64);
        metrics::gauge!("mqws_sessions").set(sessions.count() as f64);
    }
}

/// Removes old messages until every limit holds, one bounded step at a time with the index
/// lock released between steps. Returns how many were removed.
pub fn enforce(store: &LogStore, index: &RwLock<Index>, limits: Limits) -> Result<u64, LogError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let too_old =
        now_ms.saturating_sub(u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX));
    let mut total = 0;
    loop {
        let (mut count, mut bytes) = {
            let ix = index.read();
            (ix.count(), ix.bytes())
        };
        if count <= limits.max_messages && bytes <= limits.max_bytes {
            // Only age can still apply; check the oldest record before reading a batch.
            match store.oldest(1)?.first() {
                Some(r) if r.ts_ms < too_old => {}
                _ => return Ok(total),
            }
        }
        let oldest = store.oldest(limits.batch)?;
        let mut doomed = Vec::new();
        for r in &oldest {
            if count > limits.max_messages || bytes > limits.max_bytes || r.ts_ms < too_old {
                count -= 1;
                bytes = bytes.saturating_sub(r.size());
                doomed.push(r);
            } else {
                break;
            }
        }
        let Some(last) = doomed.last() else {
            return Ok(total);
        };
        store.remove_through(last.seq)?;
        store.note_evicted(last.ts_ms)?;
        {
            let next_first = oldest
                .get(doomed.len())
                .map(|r| r.seq)
                .or(store.first_seq()?);
            let mut ix = index.write();
            for r in &doomed {
                ix.remove_oldest(&r.topic, r.seq, r.size(), next_first);
            }
            debug!(through = last.seq, first = ?ix.first(), count = ix.count(), "retention step");
        }
        total += doomed.len() as u64;
        metrics::counter!("mqws_log_evicted_total").increment(doomed.len() as u64);
        if doomed.len() < oldest.len() || oldest.len() < limits.batch {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Record;
    use bytes::Bytes;

    #[test]
    fn enforces_count_bytes_and_age_in_bounded_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(dir.path(), 1 << 20, false).expect("open");
        let index = RwLock::new(Index::default());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        let recs: Vec<Record> = (1..=100)
            .map(|seq| Record {
                seq,
                ts_ms: if seq <= 10 { now - 3_600_000 } else { now },
                topic: format!("t/{}", seq % 3),
                payload: Bytes::from(vec![0u8; 7]),
                retain: false,
            })
            .collect();
        store.append(&recs, &[], 101).expect("append");
        for r in &recs {
            index.write().add(&r.topic, r.seq, r.size());
        }
        let limits = Limits {
            max_messages: 1000,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(60),
            batch: 3,
        };
        assert_eq!(enforce(&store, &index, limits).expect("age"), 10);
        assert_eq!(store.first_seq().expect("first"), Some(11));
        assert!(store.evicted_since(now - 3_600_000).expect("ts"));
        let limits = Limits {
            max_messages: 50,
            ..limits
        };
        assert_eq!(enforce(&store, &index, limits).expect("count"), 40);
        assert_eq!(index.read().count(), 50);
        assert_eq!(index.read().first(), Some(51));
        let per = recs[0].size();
        let limits = Limits {
            max_bytes: per * 20,
            ..limits
        };
        assert_eq!(enforce(&store, &index, limits).expect("bytes"), 30);
        assert_eq!(store.first_seq().expect("first"), Some(81));
        assert_eq!(index.read().bytes(), per * 20);
        assert_eq!(enforce(&store, &index, limits).expect("idle"), 0);
    }
}
