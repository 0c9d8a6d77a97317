//! Catch-up: where a replay starts, what it can promise (`recovered`, `gap`), and reading it in
//! bounded batches whose cost follows what is delivered.
//!
//! A selective replay (the filters match at most [`TOPIC_MODE_LIMIT`] topics) walks the
//! in-memory per-topic index and reads only matching records; a broad one scans the log range
//! and filters. Either way at most one batch is in memory at a time.

use serde::Serialize;

use crate::fanout::trie::Trie;
use crate::log::index::Index;
use crate::log::{LogError, LogStore, Record};

/// Above this many matching topics a replay scans the log instead of merging topic lists.
pub const TOPIC_MODE_LIMIT: usize = 64;

/// Where a client asked to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Live only; no replay.
    Latest,
    /// Everything still retained.
    Earliest,
    /// After `seq` of log `epoch`.
    After {
        /// The epoch the client's seq belongs to.
        epoch: String,
        /// The last seq the client has.
        seq: u64,
    },
    /// Everything logged at or after this time (ms since the Unix epoch).
    Time(u64),
}

/// Why a replay cannot deliver everything asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Gap {
    /// The log is not the one the client's position belongs to (reset or lost).
    Epoch,
    /// Retention removed seqs `from..=to`.
    Evicted {
        /// First removed seq.
        from: u64,
        /// Last removed seq.
        to: u64,
    },
    /// The broker dropped messages that would have had seqs `from..=to`.
    Dropped {
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
}

/// The outcome of planning a replay against the log as of `cut`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Replay the matching messages in `(after, cut]`.
    pub after: u64,
    /// What `welcome.recovered` says.
    pub recovered: bool,
    /// What `welcome.gap` says when not recovered.
    pub gap: Option<Gap>,
}

/// Plans a replay of `start` up to `cut` (the session's live start).
pub fn plan(
    start: &Start,
    epoch: &str,
    cut: u64,
    store: &LogStore,
    first: Option<u64>,
) -> Result<Option<Plan>, LogError> {
    // Everything at or below this seq that is not in the log was removed by retention.
    let evicted_through = first.map_or(cut, |f| f.saturating_sub(1).min(cut));
    let (after, mut gap) = match start {
        Start::Latest => return Ok(None),
        Start::Earliest => (evicted_through, None),
        Start::After { epoch: e, seq } if e != epoch => {
            let _ = seq;
            return Ok(Some(Plan {
                after: cut,
                recovered: false,
                gap: Some(Gap::Epoch),
            }));
        }
        Start::After { seq, .. } => {
            let seq = (*seq).min(cut);
            if seq < evicted_through {
                (
                    evicted_through,
                    Some(Gap::Evicted {
                        from: seq + 1,
                        to: evicted_through,
                    }),
                )
            } else {
                (seq, None)
            }
        }
        Start::Time(ts) => match store.first_at_or_after(*ts)? {
            Some(s) if s <= cut => {
                let after = s - 1;
                let gap = (after == evicted_through
                    && evicted_through > 0
                    && store.evicted_since(*ts)?)
                .then_some(Gap::Evicted {
                    from: 1,
                    to: evicted_through,
                });
                (after, gap)
            }
            _ => (cut, None),
        },
    };
    if gap.is_none() {
        if let Some((from, to)) = store.gap_within(after, cut)? {
            gap = Some(Gap::Dropped { from, to });
        }
    }
    Ok(Some(Plan {
        after,
        recovered: gap.is_none(),
        gap,
    }))
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Retention removed messages this replay still had to send; the client should resume.
    #[error("retention removed messages during the replay")]
    Overtaken,
}

/// A replay in progress: `(after, upto]` of the log, filtered.
#[derive(Debug)]
pub struct Cursor {
    after: u64,
    upto: u64,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Topics(Vec<String>),
    Scan(Trie<()>),
}

impl Cursor {
    /// A cursor over `(after, upto]` for `filters`.
    pub fn new(filters: &[String], after: u64, upto: u64, index: &Index) -> Cursor {
        let mode = match index.topics_matching(filters, TOPIC_MODE_LIMIT) {
            Some(topics) => Mode::Topics(topics),
            None => {
                let mut trie = Trie::default();
                for (i, f) in filters.iter().enumerate() {
                    trie.insert(f, i as u64, ());
                }
                Mode::Scan(trie)
            }
        };
        Cursor { after, upto, mode }
    }

    /// The last seq covered so far.
    pub fn position(&self) -> u64 {
        self.after
    }

    /// True once everything up to `upto` is covered.
    pub fn done(&self) -> bool {
        self.after >= self.upto
    }

    /// The next up-to-`limit` matching records (possibly none while not done).
    pub fn next_batch(
        &mut self,
        store: &LogStore,
        index: &parking_lot::RwLock<Index>,
        limit: usize,
    ) -> Result<Vec<Record>, ReplayError> {
        if self.done() {
            return Ok(Vec::new());
        }
        let first = index.read().first();
        if first.is_some_and(|f| f > self.after + 1) {
            return Err(ReplayError::Overtaken);
        }
        match &self.mode {
            Mode::Topics(topics) => {
                let seqs = index.read().seqs_of(topics, self.after, self.upto, limit);
                if seqs.len() < limit {
                    // Fewer than asked: nothing else matches up to `upto`.
                    self.after = self.upto;
                }
                let mut out = Vec::with_capacity(seqs.len());
                for seq in seqs {
                    match store.get(seq)? {
                        Some(r) => out.push(r),
                        None => return Err(ReplayError::Overtaken),
                    }
                    self.after = self.after.max(seq);
                }
                Ok(out)
            }
            Mode::Scan(trie) => {
                let read = store.read_range(self.after, self.upto, limit)?;
                match read.last() {
                    Some(last) if read.len() == limit => self.after = last.seq,
                    _ => self.after = self.upto,
                }
                Ok(read
                    .into_iter()
                    .filter(|r| {
                        let mut hit = false;
                        trie.for_each_match(&r.topic, |_, _| hit = true);
                        hit
                    })
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use parking_lot::RwLock;

    fn setup(
        n: u64,
        topic_of: impl Fn(u64) -> String,
    ) -> (tempfile::TempDir, LogStore, RwLock<Index>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(dir.path(), 1 << 20, false).expect("open");
        let mut index = Index::default();
        let recs: Vec<Record> = (1..=n)
            .map(|seq| Record {
                seq,
                ts_ms: 1000 + seq,
                topic: topic_of(seq),
                payload: Bytes::from_static(b"x"),
                retain: false,
            })
            .collect();
        store.append(&recs, &[], n + 1).expect("append");
        for r in &recs {
            index.add(&r.topic, r.seq, r.size());
        }
        (dir, store, RwLock::new(index))
    }

    fn drain(c: &mut Cursor, store: &LogStore, index: &RwLock<Index>, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        while !c.done() {
            out.extend(
                c.next_batch(store, index, limit)
                    .expect("batch")
                    .iter()
                    .map(|r| r.seq),
            );
        }
        out
    }

    #[test]
    fn selective_and_scan_modes_agree() {
        let (_d, store, index) = setup(500, |s| format!("t/{}", s % 100));
        let want: Vec<u64> = (1..=500)
            .filter(|s| s % 100 == 7 || s % 100 == 8)
            .filter(|s| *s > 50 && *s <= 450)
            .collect();
        let filters = vec!["t/7".to_owned(), "t/8".to_owned()];
        let mut c = Cursor::new(&filters, 50, 450, &index.read());
        assert!(matches!(c.mode, Mode::Topics(_)));
        assert_eq!(drain(&mut c, &store, &index, 3), want);
        let broad = vec!["t/+".to_owned()];
        let mut c = Cursor::new(&broad, 50, 450, &index.read());
        assert!(matches!(c.mode, Mode::Scan(_)));
        assert_eq!(
            drain(&mut c, &store, &index, 64),
            (51..=450).collect::<Vec<_>>()
        );
    }

    #[test]
    fn plans_report_epoch_eviction_and_drops() {
        let (_d, store, _index) = setup(10, |_| "a".to_owned());
        let after = |seq| Start::After {
            epoch: store.epoch().to_owned(),
            seq,
        };
        let p = plan(&after(4), store.epoch(), 10, &store, Some(1))
            .expect("plan")
            .expect("some");
        assert_eq!(
            p,
            Plan {
                after: 4,
                recovered: true,
                gap: None
            }
        );
        let p = plan(&after(2), store.epoch(), 10, &store, Some(6))
            .expect("plan")
            .expect("some");
        assert_eq!(p.gap, Some(Gap::Evicted { from: 3, to: 5 }));
        assert_eq!(p.after, 5);
        let other = Start::After {
            epoch: "other".to_owned(),
            seq: 4,
        };
        let p = plan(&other, store.epoch(), 10, &store, Some(1))
            .expect("plan")
            .expect("some");
        assert_eq!((p.gap, p.after), (Some(Gap::Epoch), 10));
        assert_eq!(
            plan(&Start::Latest, store.epoch(), 10, &store, Some(1)).expect("plan"),
            None
        );
        let p = plan(&Start::Time(1005), store.epoch(), 10, &store, Some(1))
            .expect("plan")
            .expect("some");
        assert_eq!((p.after, p.recovered), (4, true));
        store.append(&[], &[(11, 12)], 13).expect("gap");
        let p = plan(&after(9), store.epoch(), 13, &store, Some(1))
            .expect("plan")
            .expect("some");
        assert_eq!(p.gap, Some(Gap::Dropped { from: 11, to: 12 }));
        assert_eq!(
            serde_json::to_string(&p.gap).expect("json"),
            r#"{"reason":"dropped","from":11,"to":12}"#
        );
    }
}
