//! Catch-up planning: where a replay starts and what it can promise (`recovered`, `gap`),
//! decided from the log's bounds, lost ranges and time lookup. The reading itself is a
//! [`crate::storage::LogCursor`].

use serde::Serialize;

use crate::storage::{Log, LostReason, StorageError};

/// Where a client asked to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
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
pub(crate) enum Gap {
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
pub(crate) struct Plan {
    /// Replay the matching messages in `(after, cut]`.
    pub(crate) after: u64,
    /// What `welcome.recovered` says.
    pub(crate) recovered: bool,
    /// What `welcome.gap` says when not recovered.
    pub(crate) gap: Option<Gap>,
}

/// Plans a replay of `start` up to `cut` (the session's live start).
pub(crate) fn plan(start: &Start, cut: u64, log: &dyn Log) -> Result<Option<Plan>, StorageError> {
    let epoch = log.epoch();
    // Everything at or below this seq that is not in the log was removed by retention.
    let evicted_through = log.first().map_or(cut, |f| f.saturating_sub(1).min(cut));
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
        Start::Time(ts) => match log.first_at_or_after(*ts)? {
            Some(s) if s <= cut => {
                let after = s - 1;
                let gap =
                    (after == evicted_through && evicted_through > 0 && log.evicted_since(*ts)?)
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
        let (lost, _) = log.lost(after, cut, 1)?;
        gap = lost.first().map(|l| match l.reason {
            LostReason::Evicted => Gap::Evicted {
                from: l.from,
                to: l.to,
            },
            LostReason::Dropped => Gap::Dropped {
                from: l.from,
                to: l.to,
            },
        });
    }
    Ok(Some(Plan {
        after,
        recovered: gap.is_none(),
        gap,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Entry, Storage};
    use bytes::Bytes;

    fn setup(n: u64) -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::storage::tests::open(dir.path());
        crate::storage::tests::fill(&storage, n, |_| "a".to_owned());
        (dir, storage)
    }

    #[test]
    fn plans_report_epoch_eviction_and_drops() {
        let (_d, storage) = setup(10);
        let log = storage.log.as_ref();
        let after = |seq| Start::After {
            epoch: log.epoch().to_owned(),
            seq,
        };
        let p = plan(&after(4), 10, log).expect("plan").expect("some");
        assert_eq!(
            p,
            Plan {
                after: 4,
                recovered: true,
                gap: None
            }
        );
        let other = Start::After {
            epoch: "other".to_owned(),
            seq: 4,
        };
        let p = plan(&other, 10, log).expect("plan").expect("some");
        assert_eq!((p.gap, p.after), (Some(Gap::Epoch), 10));
        assert_eq!(plan(&Start::Latest, 10, log).expect("plan"), None);
        let first_ts = crate::storage::tests::ts_of(&storage, 5);
        let p = plan(&Start::Time(first_ts), 10, log)
            .expect("plan")
            .expect("some");
        assert!(p.recovered && p.after < 5, "{p:?}");
        let mut lost = vec![Entry::Lost(2)];
        log.append(&mut lost).expect("gap");
        let p = plan(&after(9), 12, log).expect("plan").expect("some");
        assert_eq!(p.gap, Some(Gap::Dropped { from: 11, to: 12 }));
        assert_eq!(
            serde_json::to_string(&p.gap).expect("json"),
            r#"{"reason":"dropped","from":11,"to":12}"#
        );
        let limits = crate::storage::Retention {
            max_messages: 5,
            max_bytes: u64::MAX,
            max_age: std::time::Duration::from_secs(3600),
            batch: 100,
        };
        assert_eq!(log.enforce(&limits).expect("retention"), 5);
        let p = plan(&after(2), 12, log).expect("plan").expect("some");
        assert_eq!(p.gap, Some(Gap::Evicted { from: 3, to: 5 }));
        assert_eq!(p.after, 5);
        let mut more = vec![Entry::Message {
            topic: "b".to_owned(),
            payload: Bytes::from_static(b"x"),
            retain: false,
        }];
        log.append(&mut more).expect("append");
        assert_eq!(log.head(), 13);
    }
}
