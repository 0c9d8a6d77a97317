//! The `history` and `last` queries, for every transport. Log reads run on the blocking pool.

use std::sync::Arc;

use crate::catchup::plan;
use crate::protocol::{Gap, Start};
use crate::storage::{Log, Record, StorageError};

/// One page of `history`.
#[derive(Debug)]
pub(crate) enum Page {
    /// Messages and the seq to continue after, if more may follow.
    Messages {
        /// Oldest first.
        messages: Vec<Record>,
        /// Continue after this seq.
        next: Option<u64>,
    },
    /// `from` named another epoch.
    OtherEpoch,
}

/// Reads up to `limit` messages matching `filter` from `start` up to the head of `log`.
pub(crate) async fn history(
    log: &Arc<dyn Log>,
    filter: &str,
    start: Start,
    limit: usize,
) -> Result<Page, StorageError> {
    let log = log.clone();
    let filters = vec![filter.to_owned()];
    tokio::task::spawn_blocking(move || -> Result<Page, StorageError> {
        let upto = log.head();
        let Some(p) = plan(&start, upto, log.as_ref())? else {
            return Ok(Page::Messages {
                messages: Vec::new(),
                next: None,
            });
        };
        if p.gaps.first() == Some(&Gap::Epoch) {
            return Ok(Page::OtherEpoch);
        }
        let mut cursor = log.cursor(&filters, p.after, upto);
        let mut messages = Vec::new();
        while messages.len() < limit && !cursor.done() {
            let batch = match cursor.next_batch(limit - messages.len()) {
                Ok(b) => b,
                // Retention moved past the page's start: read on from what is left.
                Err(StorageError::Overtaken) => {
                    let first = log.first().map_or(upto, |f| f - 1);
                    cursor = log.cursor(&filters, first.max(cursor.position()), upto);
                    continue;
                }
                Err(e) => return Err(e),
            };
            messages.extend(batch);
        }
        messages.truncate(limit);
        let more = !cursor.done() || messages.len() == limit;
        let next = if more {
            messages.last().map(|r| r.seq)
        } else {
            None
        };
        Ok(Page::Messages { messages, next })
    })
    .await
    .map_err(|e| StorageError::Engine(format!("history task failed: {e}")))?
}

/// The latest logged message of each topic of `log` matching `filter` (at most `limit`, which
/// is `session.max_history`: the most recent ones), oldest first.
pub(crate) async fn last(
    log: &Arc<dyn Log>,
    filter: &str,
    limit: usize,
) -> Result<Vec<Record>, StorageError> {
    let (log, filter) = (log.clone(), filter.to_owned());
    tokio::task::spawn_blocking(move || log.last_per_topic(&filter, limit))
        .await
        .map_err(|e| StorageError::Engine(format!("last task failed: {e}")))?
}
