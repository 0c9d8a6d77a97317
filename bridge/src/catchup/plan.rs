//! Catch-up planning: where a replay starts and what it can promise (`recovered` and every lost
//! range in `gaps`), decided from the log's bounds, lost ranges and time lookup.

use crate::protocol::{Gap, Start};
use crate::storage::{Log, Lost, LostReason, StorageError};

/// Most gaps `welcome.gaps` lists (contract 2.3); beyond it `gaps_truncated` is set.
pub(crate) const MAX_GAPS: usize = 1000;

/// The outcome of planning a replay against the log as of `cut`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Replay the matching messages after this seq.
    pub(crate) after: u64,
    /// Every lost range intersecting the replay, oldest first, at most [`MAX_GAPS`].
    pub(crate) gaps: Vec<Gap>,
    /// There were more than [`MAX_GAPS`].
    pub(crate) truncated: bool,
}

impl Plan {
    /// What `welcome.recovered` says.
    pub(crate) fn recovered(&self) -> bool {
        self.gaps.is_empty()
    }
}

impl From<Lost> for Gap {
    fn from(l: Lost) -> Gap {
        match l.reason {
            LostReason::Evicted => Gap::Evicted {
                from: l.from,
                to: l.to,
            },
            LostReason::Dropped => Gap::Dropped {
                from: l.from,
                to: l.to,
            },
        }
    }
}

/// Plans a replay of `start` up to `cut` (the session's live start).
pub(crate) fn plan(start: &Start, cut: u64, log: &dyn Log) -> Result<Option<Plan>, StorageError> {
    // Everything at or below this seq that is not in the log was removed by retention.
    let evicted_through = log
        .first_now()?
        .map_or(cut, |f| f.saturating_sub(1).min(cut));
    let mut gaps = Vec::new();
    // `asked`: the position the client's request covers from; `after`: where reading starts.
    let (asked, after) = match start {
        Start::Latest => return Ok(None),
        Start::Earliest => (evicted_through, evicted_through),
        Start::After { epoch, .. } if epoch != log.epoch() => {
            return Ok(Some(Plan {
                after: cut,
                gaps: vec![Gap::Epoch],
                truncated: false,
            }));
        }
        Start::After { seq, .. } => {
            let seq = (*seq).min(cut);
            (seq, seq.max(evicted_through))
        }
        Start::Time(ts) => match log.first_at_or_after(*ts)? {
            Some(s) if s <= cut => {
                let after = s - 1;
                if after == evicted_through && evicted_through > 0 && log.evicted_since(*ts)? {
                    gaps.push(Gap::Evicted {
                        from: 1,
                        to: evicted_through,
                    });
                }
                (after, after)
            }
            _ => (cut, cut),
        },
    };
    let (lost, truncated) = log.lost(asked, cut, MAX_GAPS - gaps.len())?;
    gaps.extend(lost.into_iter().map(Gap::from));
    Ok(Some(Plan {
        after,
        gaps,
        truncated,
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
                gaps: vec![],
                truncated: false
            }
        );
        assert!(p.recovered());
        let other = Start::After {
            epoch: "other".to_owned(),
            seq: 4,
        };
        let p = plan(&other, 10, log).expect("plan").expect("some");
        assert_eq!((p.gaps, p.after), (vec![Gap::Epoch], 10));
        assert_eq!(plan(&Start::Latest, 10, log).expect("plan"), None);
        let first_ts = crate::storage::tests::ts_of(&storage, 5);
        let p = plan(&Start::Time(first_ts), 10, log)
            .expect("plan")
            .expect("some");
        assert!(p.recovered() && p.after < 5, "{p:?}");
        let mut lost = vec![Entry::Lost(2)];
        log.append(&mut lost).expect("gap");
        let p = plan(&after(9), 12, log).expect("plan").expect("some");
        assert_eq!(p.gaps, vec![Gap::Dropped { from: 11, to: 12 }]);
        assert_eq!(
            serde_json::to_string(&p.gaps[0]).expect("json"),
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
        assert_eq!(
            p.gaps,
            vec![
                Gap::Evicted { from: 3, to: 5 },
                Gap::Dropped { from: 11, to: 12 }
            ],
            "every lost range, oldest first"
        );
        assert_eq!(p.after, 5);
        let mut more = vec![Entry::Message {
            topic: "b".to_owned(),
            payload: Bytes::from_static(b"x"),
            retain: false,
            mqtt: None,
        }];
        log.append(&mut more).expect("append");
        assert_eq!(log.head(), 13);
    }
}
