//! One reader of the stream, bounded in bytes: an ephemeral pull consumer (no acks, one
//! replica, in memory) whose pull requests ask for at most `cluster.nats.read_ahead` bytes, so
//! NATS never sends a reader more than about 1.5 times that ahead of what mqws took (async-nats
//! asks again once half is taken). async-nats's ordered consumers cannot be bounded this way
//! (they pull 500 messages with no byte limit: with 1 MiB messages, hundreds of MiB per
//! reader), so the order they check is checked here: the consumer's own sequence goes up by
//! one per message, and a reader that skips one (its server died and a new one took over)
//! fails, so its owner reads on with a new reader from the last message it got.
//!
//! A catch-up or query holds permits of the node's budget (`cluster.nats.max_readers`), one
//! per reader, while it reads ([`permits`]); the follower is apart.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull, AckPolicy};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::js_error;
use super::log::Inner;
use super::Answer;
use crate::storage::StorageError;

/// Messages per pull request at most: high enough that bytes, not count, bound a batch.
const BATCH: usize = 100_000;
/// How long the server keeps a reader nobody pulls from (mqws dropped it, or died).
const INACTIVE: Duration = Duration::from_secs(30);
/// Idle heartbeat of a pull request: a reader whose server went away fails within about
/// twice this instead of waiting for its request to expire.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long one pull request lasts.
const EXPIRES: Duration = Duration::from_secs(30);

/// A stream reader (see the module).
pub(super) struct Reader {
    msgs: pull::Stream,
    /// The consumer sequence of the last message read.
    consumer_seq: u64,
}

impl Reader {
    /// A reader delivering by `deliver_policy` the messages on `subjects` (all when empty;
    /// they must not overlap), and how many such messages the stream holds for it now.
    pub(super) async fn open(
        inner: &Inner,
        deliver_policy: consumer::DeliverPolicy,
        subjects: Vec<String>,
    ) -> Result<(Reader, u64), StorageError> {
        let config = pull::Config {
            deliver_policy,
            filter_subjects: subjects,
            ack_policy: AckPolicy::None,
            inactive_threshold: INACTIVE,
            num_replicas: 1,
            memory_storage: true,
            ..Default::default()
        };
        let consumer = inner
            .stream
            .create_consumer(config)
            .answer("create a reader")
            .await?;
        let pending = consumer.cached_info().num_pending;
        let msgs = consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .max_bytes_per_batch(inner.read_ahead)
            .heartbeat(HEARTBEAT)
            .expires(EXPIRES)
            .messages()
            .answer("read the stream")
            .await?;
        Ok((
            Reader {
                msgs,
                consumer_seq: 0,
            },
            pending,
        ))
    }

    /// The next message within `wait` (`None` when none came), with how many more the stream
    /// holds for this reader. Fails when the reader ended, NATS reported an error, or a
    /// message was skipped.
    pub(super) async fn next(
        &mut self,
        wait: Duration,
    ) -> Result<Option<(async_nats::jetstream::Message, u64)>, StorageError> {
        // Without patience, only what has arrived: a zero timeout would still wait for the
        // timer's next millisecond tick (tokio rounds deadlines up), and every message arriving
        // meanwhile would hold the batch, so a feed at 10,000 msg/s read its batches 1–2 ms
        // late.
        let next = if wait.is_zero() {
            self.msgs.next().now_or_never()
        } else {
            tokio::time::timeout(wait, self.msgs.next()).await.ok()
        };
        let Some(item) = next else {
            return Ok(None);
        };
        let Some(item) = item else {
            return Err(js_error("read the stream", "the reader ended"));
        };
        let m = item.map_err(|e| js_error("read the stream", e))?;
        let info = m.info().map_err(|e| js_error("message info", e))?;
        let (consumer_seq, pending) = (info.consumer_sequence, info.pending);
        if consumer_seq != self.consumer_seq + 1 {
            return Err(js_error(
                "read the stream",
                format!(
                    "the reader skipped from {} to {consumer_seq}",
                    self.consumer_seq
                ),
            ));
        }
        self.consumer_seq = consumer_seq;
        Ok(Some((m, pending)))
    }
}

/// Permits for `n` readers of one catch-up or query, taken together (taking them one at a
/// time, two catch-ups could each hold some and wait for the rest forever).
pub(super) async fn permits(
    budget: &Arc<Semaphore>,
    n: usize,
) -> Result<OwnedSemaphorePermit, StorageError> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    budget
        .clone()
        .acquire_many_owned(n)
        .await
        .map_err(|_| StorageError::Unavailable)
}
