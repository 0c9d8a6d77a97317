//! The retained value of each logged topic as of the dispatch cut, for the MQTT subscriptions
//! the proxy serves: the hub updates it with every retained record it dispatches (under its
//! read lock) and a new subscription reads it under the hub's write lock, so what it gets as
//! retained values and what it gets live meet at the same cut: a retained PUBLISH logged after
//! the cut arrives live, one logged before comes as a retained value, never both.
//!
//! It holds the records the tail holds too (shared, not copied), at most `broker.max_retained`
//! topics, as the durable store. At start it is filled from that store (values without a seq:
//! before any cut).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::Live;
use crate::storage::Record;

/// The latest retained record of each topic.
#[derive(Debug)]
pub(crate) struct Retained {
    values: Mutex<HashMap<String, Arc<Live>>>,
    max: usize,
}

impl Retained {
    /// An index of at most `max` topics, holding `initial` (the durable store's values).
    pub(crate) fn new(initial: Vec<Record>, max: usize) -> Retained {
        let values = initial
            .into_iter()
            .take(max)
            .map(|r| (r.topic.clone(), Arc::new(Live::bare(r))))
            .collect();
        Retained {
            values: Mutex::new(values),
            max,
        }
    }

    /// Takes a dispatched record with the retain flag: it replaces its topic's value, or clears
    /// it when the payload is empty.
    pub(crate) fn apply(&self, live: &Arc<Live>) {
        let topic = &live.record.topic;
        let mut values = self.values.lock();
        if live.record.payload.is_empty() {
            values.remove(topic);
        } else if values.len() < self.max || values.contains_key(topic) {
            values.insert(topic.clone(), live.clone());
        }
    }

    /// The values on topics that match any of `filters`.
    pub(crate) fn matching(&self, filters: &[String]) -> Vec<Arc<Live>> {
        let values = self.values.lock();
        // A filter without wildcards names its one topic: no scan.
        if filters.iter().all(|f| !f.contains(['+', '#'])) {
            return filters
                .iter()
                .filter_map(|f| values.get(f).cloned())
                .collect();
        }
        values
            .values()
            .filter(|v| {
                filters
                    .iter()
                    .any(|f| mqws_topic::matches(f, &v.record.topic))
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn live(seq: u64, topic: &str, payload: &'static [u8]) -> Arc<Live> {
        Arc::new(Live::bare(Record {
            seq,
            ts_ms: 0,
            topic: topic.to_owned(),
            payload: Bytes::from_static(payload),
            retain: true,
            mqtt: None,
        }))
    }

    #[test]
    fn keeps_the_latest_clears_on_empty_and_bounds_topics() {
        let r = Retained::new(Vec::new(), 2);
        r.apply(&live(1, "a/1", b"x"));
        r.apply(&live(2, "a/1", b"y"));
        r.apply(&live(3, "a/2", b"z"));
        r.apply(&live(4, "a/3", b"over"));
        let mut got: Vec<u64> = r
            .matching(&["a/+".to_owned()])
            .iter()
            .map(|l| l.record.seq)
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![2, 3], "latest per topic, at most two topics");
        r.apply(&live(5, "a/1", b""));
        assert!(r.matching(&["a/1".to_owned()]).is_empty(), "cleared");
        assert_eq!(r.matching(&["a/2".to_owned()]).len(), 1);
    }
}
