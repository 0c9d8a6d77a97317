//! Reading the stream in order through bytes-bounded readers ([`super::reader`]): the
//! messages that [`super::replay`] merges, and the feed that follows the whole stream for the
//! fan-out. A reader is created on the first read, so making a cursor or a feed costs nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;

use super::headers::NODE;
use super::log::Inner;
use super::reader::{permits, Reader};
use super::{js_error, ms_of};
use crate::storage::{Fed, LogFeed, Record, StorageError};

/// Longest wait for a message a reader knows is there (below the head).
pub(super) const READ_WAIT: Duration = Duration::from_secs(5);

/// One stored message, as read.
pub(super) enum Read {
    /// A record, and whether this node appended it.
    Record(Record, bool),
    /// A marker or foreign subject that consumed a seq.
    Skip(u64),
}

impl Read {
    pub(super) fn seq(&self) -> u64 {
        match self {
            Read::Record(r, _) => r.seq,
            Read::Skip(seq) => *seq,
        }
    }
}

/// A reader of every message from `start` (a stream sequence) on.
async fn open(inner: &Inner, start: u64) -> Result<Reader, StorageError> {
    Ok(Reader::open(inner, from_seq(start), Vec::new()).await?.0)
}

/// Delivery from stream sequence `start` on.
pub(super) fn from_seq(start: u64) -> consumer::DeliverPolicy {
    consumer::DeliverPolicy::ByStartSequence {
        start_sequence: start.max(1),
    }
}

/// The next message of `reader` within `wait`; `None` when none came.
pub(super) async fn next(
    inner: &Inner,
    reader: &mut Reader,
    wait: Duration,
) -> Result<Option<Read>, StorageError> {
    Ok(next_counted(inner, reader, wait)
        .await?
        .map(|(read, _)| read))
}

/// Like [`next`], with how many more messages the stream holds for this reader.
pub(super) async fn next_counted(
    inner: &Inner,
    reader: &mut Reader,
    wait: Duration,
) -> Result<Option<(Read, u64)>, StorageError> {
    let Some((m, pending)) = reader.next(wait).await? else {
        return Ok(None);
    };
    let info = m.info().map_err(|e| js_error("message info", e))?;
    let (seq, ts) = (info.stream_sequence, ms_of(info.published));
    inner.saw(seq);
    let headers = m.headers.as_ref();
    let local = headers
        .and_then(|h| h.get(NODE))
        .is_some_and(|v| v.as_str() == inner.node);
    let read = match inner.record(&m.subject, seq, headers, m.payload.clone(), ts) {
        Some(r) => Read::Record(r, local),
        None => Read::Skip(seq),
    };
    Ok(Some((read, pending)))
}

/// How long the feed reads nothing before it asks the stream whether there is more, and if
/// so reads on with a new reader. A reader lives on one NATS server, and its death is not
/// always noticed at once: killing a stream leader under load left the feed silent for good
/// (seen in `cluster_faults`, with async-nats's ordered consumers).
const STALL: Duration = Duration::from_secs(2);

/// Longest wait of the feed for NATS to answer one of its own requests (a new reader, the
/// stream's state). Shorter than [`super::ANSWER_WAIT`]: while a stream leader is being
/// elected neither is answered, and a feed that waited 5 s for each delivered again only
/// about 7.7 s after a leader was killed, however soon the new one was elected.
const FEED_WAIT: Duration = Duration::from_secs(2);

/// `f`, or a failure named `what` after [`FEED_WAIT`].
async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    tokio::time::timeout(FEED_WAIT, f)
        .await
        .unwrap_or_else(|_| Err(js_error(what, "no answer from NATS within 2 s")))
}

/// Follows the stream from `after` on, every message from every node.
pub(super) struct JsFeed {
    inner: Arc<Inner>,
    after: u64,
    msgs: Option<Reader>,
    /// Since when the feed has read nothing.
    idle_since: Option<Instant>,
    /// See [`LogFeed::missed`].
    missed: Option<u64>,
    /// A message read past a removed range while the batch held earlier ones: the next batch
    /// starts with it, so the range is reported between the two.
    pending: Option<Read>,
}

impl JsFeed {
    pub(super) fn new(inner: Arc<Inner>, after: u64) -> JsFeed {
        JsFeed {
            inner,
            after,
            msgs: None,
            idle_since: None,
            missed: None,
            pending: None,
        }
    }

    /// After [`STALL`] without a message: drops the reader when the stream holds messages
    /// past the feed's position (as far as this node knows from its own appends, else as the
    /// stream says), or when the stream does not answer, so the next read starts a new one.
    async fn check_stalled(&mut self) -> Result<(), StorageError> {
        let idle = *self.idle_since.get_or_insert_with(Instant::now);
        if idle.elapsed() < STALL {
            return Ok(());
        }
        self.idle_since = None;
        let mut last = self.inner.head.load(Ordering::Acquire);
        if last <= self.after {
            last = match within("stream info", self.inner.refreshed()).await {
                Ok(state) => state.last_sequence,
                Err(e) => {
                    self.msgs = None;
                    return Err(e);
                }
            };
        }
        if last > self.after {
            tracing::warn!(
                position = self.after,
                head = last,
                "the stream reader went silent with messages to read; reading on with a new one"
            );
            self.msgs = None;
        }
        Ok(())
    }

    async fn read(&mut self, max: usize, wait: Duration) -> Result<Vec<Fed>, StorageError> {
        let inner = self.inner.clone();
        if self.msgs.is_none() {
            self.msgs = Some(within("create a reader", open(&inner, self.after + 1)).await?);
        }
        let Some(msgs) = self.msgs.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        self.missed = None;
        // The first message may take up to `wait`; the rest of the batch only what is ready.
        let mut patience = wait;
        while out.len() < max {
            let read = match self.pending.take() {
                Some(read) => read,
                None => match next(&inner, msgs, patience).await {
                    Ok(Some(read)) => read,
                    Ok(None) => break,
                    Err(e) => {
                        // Start over from the last position on the next call; what was read
                        // (and a removed range found on the way) is handed over first.
                        self.msgs = None;
                        return if out.is_empty() && self.missed.is_none() {
                            Err(e)
                        } else {
                            Ok(out)
                        };
                    }
                },
            };
            // Only what has arrived: waiting for more while messages keep coming (even 1 ms
            // between them) held a batch until it was full, 400 ms at 10,000 msg/s.
            patience = Duration::ZERO;
            self.idle_since = None;
            // The stream only loses messages from its front (retention): a seq beyond the
            // next one means those between were removed before this node read them.
            let seq = read.seq();
            if seq > self.after + 1 {
                if !out.is_empty() {
                    self.pending = Some(read);
                    break;
                }
                tracing::warn!(
                    from = self.after + 1,
                    to = seq - 1,
                    "the stream's retention removed messages before this node read them"
                );
                self.missed = Some(seq - 1);
            }
            match read {
                Read::Record(record, local) if record.seq > self.after => {
                    self.after = record.seq;
                    out.push(Fed { record, local });
                }
                Read::Skip(seq) if seq > self.after => self.after = seq,
                _ => {}
            }
        }
        if out.is_empty() {
            self.check_stalled().await?;
        }
        Ok(out)
    }
}

impl LogFeed for JsFeed {
    fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Fed>, StorageError> {
        let inner = self.inner.clone();
        inner.wait(self.read(max, wait))
    }

    fn position(&self) -> u64 {
        self.after
    }

    fn missed(&self) -> Option<u64> {
        self.missed
    }
}

/// The first sequence stored at or after `ts_ms`, through a reader started by time.
pub(super) fn first_at_or_after(inner: &Inner, ts_ms: u64) -> Result<Option<u64>, StorageError> {
    let nanos = i128::from(ts_ms) * 1_000_000;
    let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|e| js_error("a start time", e))?;
    inner.wait(async {
        let policy = consumer::DeliverPolicy::ByStartTime { start_time };
        let _permit = permits(&inner.readers, 1).await?;
        let (mut reader, _) = Reader::open(inner, policy, Vec::new()).await?;
        match next(inner, &mut reader, READ_WAIT).await? {
            Some(Read::Record(r, _)) => Ok(Some(r.seq)),
            Some(Read::Skip(seq)) => Ok(Some(seq)),
            None => Ok(None),
        }
    })
}
