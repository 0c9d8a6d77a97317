//! Replays for one connection (a task beside the reader, so pings and acks keep flowing during a
//! long catch-up) and the `history` and `last` queries. Log reads run on the blocking pool, one
//! bounded batch at a time.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tracing::{info, warn};

use crate::fanout::Outbox;
use crate::log::{LogError, Position, Record};
use crate::protocol::close;
use crate::protocol::server::{message_text, ServerFrame};
use crate::replay::{plan, Cursor, ReplayError, Start};
use crate::state::Shared;

/// Records read per log batch.
const BATCH: usize = 512;

/// Streams `(after, cut]` for `filters`, then `caught_up`, then releases held live messages.
/// On a failure the connection is closed: 4001 when retention overtook the replay (the client
/// resumes and is told what was evicted), 1011 on a storage error.
pub async fn run(
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    filters: Vec<String>,
    after: u64,
    cut: u64,
) {
    let mut cursor = Cursor::new(&filters, after, cut, &shared.index.read());
    let mut sent = 0u64;
    while !cursor.done() {
        let (store, index) = (shared.store.clone(), shared.index.clone());
        let step = tokio::task::spawn_blocking(move || {
            let batch = cursor.next_batch(&store, &index, BATCH);
            (cursor, batch)
        })
        .await;
        let batch = match step {
            Ok((c, Ok(batch))) => {
                cursor = c;
                batch
            }
            Ok((_, Err(ReplayError::Overtaken))) => {
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
        epoch: shared.epoch.clone(),
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
pub enum Page {
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

/// Reads up to `limit` messages matching `filter` from `start` up to the newest logged one.
pub async fn history(
    shared: &Arc<Shared>,
    filter: &str,
    start: Start,
    limit: usize,
) -> Result<Page, LogError> {
    let (upto, first) = {
        let index = shared.index.read();
        (index.last(), index.first())
    };
    let (store, epoch) = (shared.store.clone(), shared.epoch.clone());
    let index = shared.index.clone();
    let filters = vec![filter.to_owned()];
    let page = tokio::task::spawn_blocking(move || -> Result<Page, LogError> {
        let Some(p) = plan(&start, &epoch, upto, &store, first)? else {
            return Ok(Page::Messages {
                messages: Vec::new(),
                next: None,
            });
        };
        if p.gap == Some(crate::replay::Gap::Epoch) {
            return Ok(Page::OtherEpoch);
        }
        let mut cursor = Cursor::new(&filters, p.after, upto, &index.read());
        let mut messages = Vec::new();
        while messages.len() < limit && !cursor.done() {
            let batch = match cursor.next_batch(&store, &index, limit - messages.len()) {
                Ok(b) => b,
                // Retention moved past the page's start: read on from what is left.
                Err(ReplayError::Overtaken) => {
                    let first = index.read().first().map_or(upto, |f| f - 1);
                    cursor =
                        Cursor::new(&filters, first.max(cursor.position()), upto, &index.read());
                    continue;
                }
                Err(ReplayError::Log(e)) => return Err(e),
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
    .map_err(|e| LogError::Storage(sled::Error::Io(std::io::Error::other(e))))??;
    Ok(page)
}

/// The latest logged message of each topic matching `filter` (at most `session.max_history`,
/// the most recent ones), oldest first.
pub async fn last(shared: &Arc<Shared>, filter: &str) -> Result<Vec<Record>, LogError> {
    let mut seqs = shared.index.read().last_of_each(filter);
    let keep = seqs.len().saturating_sub(shared.max_history);
    seqs.drain(..keep);
    let store = shared.store.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<Record>, LogError> {
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(r) = store.get(seq)? {
                out.push(r);
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| LogError::Storage(sled::Error::Io(std::io::Error::other(e))))?
}
