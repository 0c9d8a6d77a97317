//! Durable retained values: the latest retained payload of each topic, kept in the log's
//! database (tree `retained`) and restored into the embedded broker at start-up, because
//! rumqttd forgets retained messages when it restarts.
//!
//! Updates come from the broker side (MQTT clients' retained PUBLISHes seen by the proxy, and
//! browser publishes with `retain`); an empty payload clears a topic, as in MQTT. Each received
//! batch is written and flushed.

use mqws_broker::RetainedUpdate;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::log::{LogError, LogStore};

/// Updates written per batch at most.
const BATCH: usize = 256;

/// The retained-value tree.
#[derive(Debug, Clone)]
pub struct RetainedStore {
    tree: sled::Tree,
    log: LogStore,
    max: usize,
}

impl RetainedStore {
    /// Opens the tree in the log's database; keeps at most `max` topics.
    pub fn open(log: &LogStore, max: usize) -> Result<RetainedStore, LogError> {
        Ok(RetainedStore {
            tree: log.tree("retained")?,
            log: log.clone(),
            max,
        })
    }

    /// Every kept value, for the broker's start-up restore.
    pub fn load(&self) -> Result<Vec<RetainedUpdate>, LogError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            let Ok(topic) = String::from_utf8(k.to_vec()) else {
                continue;
            };
            out.push(RetainedUpdate {
                topic,
                payload: bytes::Bytes::copy_from_slice(&v),
            });
        }
        Ok(out)
    }

    /// Applies updates in order and flushes.
    pub fn apply(&self, updates: &[RetainedUpdate]) -> Result<(), LogError> {
        for u in updates {
            if u.payload.is_empty() {
                self.tree.remove(u.topic.as_bytes())?;
            } else if self.tree.contains_key(u.topic.as_bytes())? || self.tree.len() < self.max {
                self.tree.insert(u.topic.as_bytes(), u.payload.as_ref())?;
            } else {
                metrics::counter!("mqws_retained_refused_total").increment(1);
                warn!(topic = %u.topic, limit = self.max, "retained value not kept: broker.max_retained reached");
            }
        }
        self.log.flush()
    }
}

/// Writes updates until `stop` is cancelled or the broker side ends.
pub async fn run(
    store: RetainedStore,
    mut updates: mpsc::Receiver<RetainedUpdate>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            n = updates.recv_many(&mut batch, BATCH) => n,
            _ = stop.cancelled() => return,
        };
        if n == 0 {
            return;
        }
        let (s, b) = (store.clone(), std::mem::take(&mut batch));
        match tokio::task::spawn_blocking(move || s.apply(&b)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "retained values not saved"),
            Err(e) => warn!(error = %e, "retained task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn u(topic: &str, payload: &'static [u8]) -> RetainedUpdate {
        RetainedUpdate {
            topic: topic.to_owned(),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn keeps_latest_clears_on_empty_and_bounds_topics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path(), 1 << 20, false).expect("open");
        let r = RetainedStore::open(&log, 2).expect("retained");
        r.apply(&[
            u("a", b"1"),
            u("a", b"2"),
            u("b", b"x"),
            u("c", b"over the limit"),
        ])
        .expect("apply");
        let mut got: Vec<(String, Bytes)> = r
            .load()
            .expect("load")
            .into_iter()
            .map(|v| (v.topic, v.payload))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a".to_owned(), Bytes::from_static(b"2")),
                ("b".to_owned(), Bytes::from_static(b"x"))
            ]
        );
        r.apply(&[u("a", b""), u("c", b"now fits")]).expect("apply");
        let mut topics: Vec<String> = r
            .load()
            .expect("load")
            .into_iter()
            .map(|v| v.topic)
            .collect();
        topics.sort();
        assert_eq!(topics, vec!["b", "c"]);
    }
}
