//! Replays for one connection (a task beside the reader, so pings and acks keep flowing during a
//! long catch-up) and the `history` and `last` queries. Log reads run on the blocking pool, one
//! bounded batch at a time.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tracing::{info, warn};

use crate::catchup::{plan, Gap, Start};
use crate::fanout::Outbox;
use crate::protocol::close;
use crate::protocol::server::{message_text, ServerFrame};
use crate::state::Shared;
use crate::storage::{Position, Record, StorageError};

/// Records read per log batch.
const BATCH: usize = 512;

/// Streams `(after, cut]` for `filters`, then `caught_up`, then releases held live messages.
/// On a failure the connection is closed: 4001 when retention overtook the replay (the client
/// resumes and is told what was evicted), 1011 on a storage error.
pub(crate) async fn run(
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    filters: Vec<String>,
    after: u64,
    cut: u64,
) {
    let mut cursor = shared.storage.log.cursor(&filters, after, cut);
    let mut sent = 0u64;
    while !cursor.done() {
        let step = tokio::task::spawn_blocking(move || {
            let batch = cursor.next_batch(BATCH);
            (cursor, batch)
        })
        .await;
        let batch = match step {
            Ok((c, Ok(batch))) => {
                cursor = c;
                batch
            }
            Ok((_, Err(StorageError::Overtaken))) => {
                info!("retention overtook the replay; closing 4001 so the client resumes");
                outbox.abort(close::SLOW_CONSUMER);
                return;
            }
            Ok((_, Err(e))) => {
                warn!(error = %e, "replay read failed");
                outbox.abort(close::INTERNAL);
                return;
            }
            Err(e) => {
                warn!(error = %e, "replay task failed");
                outbox.abort(close::INTERNAL);
                return;
            }
        };
        for record in batch {
            let text = Utf8Bytes::from(message_text(&record, true));
            if !outbox.push_replay(record.seq, text).await {
                return;
            }
            sent += 1;
        }
    }
    metrics::counter!("mqws_replay_messages_total").increment(sent);
    let position = Position {
        epoch: shared.epoch().to_owned(),
        seq: cut,
    };
    let caught_up = ServerFrame::CaughtUp {
        position: &position,
    }
    .to_text();
    if outbox.push_replay(0, Utf8Bytes::from(caught_up)).await {
        outbox.release(cut);
    }
}

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

/// Reads up to `limit` messages matching `filter` from `start` up to the log's head.
pub(crate) async fn history(
    shared: &Arc<Shared>,
    filter: &str,
    start: Start,
    limit: usize,
) -> Result<Page, StorageError> {
    let log = shared.storage.log.clone();
    let filters = vec![filter.to_owned()];
    tokio::task::spawn_blocking(move || -> Result<Page, StorageError> {
        let upto = log.head();
        let Some(p) = plan(&start, upto, log.as_ref())? else {
            return Ok(Page::Messages {
                messages: Vec::new(),
                next: None,
            });
        };
        if p.gap == Some(Gap::Epoch) {
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

/// The latest logged message of each topic matching `filter` (at most `session.max_history`,
/// the most recent ones), oldest first.
pub(crate) async fn last(shared: &Arc<Shared>, filter: &str) -> Result<Vec<Record>, StorageError> {
    let (log, filter, limit) = (
        shared.storage.log.clone(),
        filter.to_owned(),
        shared.max_history,
    );
    tokio::task::spawn_blocking(move || log.last_per_topic(&filter, limit))
        .await
        .map_err(|e| StorageError::Engine(format!("last task failed: {e}")))?
}
