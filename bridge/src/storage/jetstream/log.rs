//! The log on a JetStream stream: connecting, creating or checking the stream, appends with
//! de-duplicated retries, lookups by subject and time, and the cached counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_nats::header::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;

use super::cursor::JsFeed;
use super::headers::{mqtt_of, put_mqtt, LOST, NODE, RETAIN};
use super::replay::JsCursor;
use super::{js_error, ms_of, Answer, Options, ANSWER_WAIT, OVERHEAD};
use crate::storage::{
    Appended, Entry, Log, LogCursor, LogFeed, LogStats, Lost, LostReason, Record, Retention,
    StorageError,
};

/// Longest subject published: NATS servers refuse protocol lines over 4 KiB by default
/// (`max_control_line`), and a topic's subject can be twice its length (escaping).
const MAX_SUBJECT: usize = 3 * 1024;

/// How long an append waits for each publish acknowledgement before it is retried (with the
/// same message ids, so JetStream stores each message once). When the stream's leader dies,
/// the acknowledgements of what was sent to it never come: this wait is most of the time
/// until acknowledgements resume (5 s, async-nats's default, made a failover take 5–8 s).
/// JetStream acknowledges in milliseconds (p99 58 ms with three replicas on a saturated
/// machine, benches/RESULTS.md), so a retry this early costs a duplicate check, not a loss.
const PUBLISH_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the log, its cursors and its feed share.
pub(crate) struct Inner {
    pub(super) rt: Handle,
    stream_name: String,
    pub(super) js: jetstream::Context,
    /// `js` with [`PUBLISH_ACK_WAIT`] as its wait for publish acknowledgements, for appends.
    publisher: jetstream::Context,
    pub(super) stream: stream::Stream,
    /// `<stream>.m`: the prefix of message subjects.
    pub(super) prefix: String,
    /// `<stream>.x.lost`.
    pub(super) lost_subject: String,
    epoch: String,
    /// This process's id: in message ids (`Nats-Msg-Id`), so retried publishes are stored
    /// once, and in [`NODE`], so the feed knows what this node appended itself.
    pub(super) node: String,
    next_id: AtomicU64,
    /// Ids of an append that failed, reused by its retry: `(entries, first id)`.
    retry: Mutex<Option<(usize, u64)>>,
    /// The highest sequence seen: by an append, the feed or a stream info.
    pub(super) head: AtomicU64,
    /// The stream's first sequence (0 while empty).
    first: AtomicU64,
    stats: Mutex<LogStats>,
    /// `cluster.nats.read_ahead`, at least the largest message: bytes a reader is sent ahead.
    pub(super) read_ahead: usize,
    /// `cluster.nats.max_readers`: the readers catch-ups and queries run at once.
    pub(super) readers: Arc<tokio::sync::Semaphore>,
}

/// The log.
pub(crate) struct JsLog {
    inner: Arc<Inner>,
}

impl JsLog {
    /// Connects to NATS, creates the stream or brings its limits in line, and checks that NATS
    /// carries the largest message. Blocking.
    pub(crate) fn open(opts: &Options, rt: Handle) -> Result<JsLog, StorageError> {
        let (js, stream) = rt.block_on(connect(opts))?;
        let info = stream.cached_info().clone();
        let epoch = {
            let seed = format!("{}:{}", opts.stream, info.created.unix_timestamp_nanos());
            hex::encode(&Sha256::digest(seed.as_bytes())[..16])
        };
        let mut publisher = js.clone();
        publisher.set_timeout(PUBLISH_ACK_WAIT);
        let inner = Arc::new(Inner {
            rt,
            stream_name: opts.stream.clone(),
            js,
            publisher,
            stream,
            prefix: format!("{}.m", opts.stream),
            lost_subject: format!("{}.x.lost", opts.stream),
            epoch,
            node: format!("{:016x}", rand::random::<u64>()),
            next_id: AtomicU64::new(0),
            retry: Mutex::new(None),
            head: AtomicU64::new(info.state.last_sequence),
            first: AtomicU64::new(0),
            stats: Mutex::new(LogStats::default()),
            read_ahead: opts.read_ahead.max(opts.max_payload + OVERHEAD),
            readers: Arc::new(tokio::sync::Semaphore::new(opts.max_readers)),
        });
        inner.note(&info.state);
        Ok(JsLog { inner })
    }
}

async fn connect(opts: &Options) -> Result<(jetstream::Context, stream::Stream), StorageError> {
    let addrs = opts
        .urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| js_error("a URL in cluster.nats.urls", e))?;
    let deadline = tokio::time::Instant::now() + opts.connect_timeout;
    let mut failed = false;
    let client = loop {
        let attempt = async_nats::ConnectOptions::new()
            .connection_timeout(opts.connect_timeout.min(ANSWER_WAIT))
            .connect(addrs.clone())
            .await;
        match attempt {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(js_error("connect", e));
            }
            Err(e) => {
                if !failed {
                    tracing::info!(urls = ?opts.urls, error = %e, "waiting for NATS");
                    failed = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let version = client.server_info().version;
    if !supported(&version) {
        return Err(StorageError::Engine(format!(
            "NATS server {version} is too old: mqws needs 2.10 or later (it reads with \
             consumers of several subject filters)"
        )));
    }
    let need = opts.max_payload + OVERHEAD;
    let offered = client.server_info().max_payload;
    if offered < need {
        return Err(StorageError::Engine(format!(
            "NATS carries messages of at most {offered} bytes; mqws needs {need} \
             (broker.max_payload_size plus subject and headers): raise max_payload in the \
             NATS server configuration or lower broker.max_payload_size"
        )));
    }
    let js = jetstream::new(client);
    // A NATS cluster that just started elects its JetStream leaders a moment after it listens.
    // Each new reason for waiting is logged once, so a slow start shows what it waits on.
    let mut last = String::new();
    loop {
        match open_stream(&js, opts, need).await {
            Ok(stream) => return Ok((js, stream)),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                let why = e.to_string();
                if why != last {
                    tracing::info!(error = %why, "waiting for NATS JetStream");
                    last = why;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
}

/// Whether a NATS server `version` (`2.10.4`, `v2.11.0-beta`) is 2.10 or later.
fn supported(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (2, 10)
}

/// Creates the stream or brings its limits in line with `log.*`.
async fn open_stream(
    js: &jetstream::Context,
    opts: &Options,
    need: usize,
) -> Result<stream::Stream, StorageError> {
    let config = stream::Config {
        name: opts.stream.clone(),
        subjects: vec![format!("{}.>", opts.stream)],
        max_age: opts.max_age,
        max_bytes: i64::try_from(opts.max_bytes).unwrap_or(i64::MAX),
        max_messages: i64::try_from(opts.max_messages).unwrap_or(i64::MAX),
        max_message_size: i32::try_from(need).unwrap_or(i32::MAX),
        num_replicas: opts.replicas,
        allow_direct: true,
        duplicate_window: std::time::Duration::from_secs(120),
        ..Default::default()
    };
    let mut stream = js
        .get_or_create_stream(config.clone())
        .answer("create the stream")
        .await?;
    let current = stream.info().answer("stream info").await?.config.clone();
    let differs = current.max_age != config.max_age
        || current.max_bytes != config.max_bytes
        || current.max_messages != config.max_messages
        || current.max_message_size != config.max_message_size;
    if differs {
        tracing::info!(stream = %config.name, "bringing the stream's limits in line with log.*");
        // Only the limits: the replicas stay what the operator has (replicas when created).
        let config = stream::Config {
            num_replicas: current.num_replicas,
            ..config.clone()
        };
        js.update_stream(&config)
            .answer("update the stream's limits")
            .await?;
        stream = js.get_stream(&config.name).answer("stream info").await?;
    }
    Ok(stream)
}

impl JsLog {
    /// What the key-value stores share with the log (the connection, the runtime).
    pub(super) fn inner(&self) -> Arc<Inner> {
        self.inner.clone()
    }
}

impl Inner {
    /// Runs `f` to completion on the runtime and waits for it, from any thread: a blocking
    /// caller, or a runtime worker whose callers treat the storage as blocking (the worker is
    /// handed over to the other tasks meanwhile).
    pub(super) fn wait<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.rt.block_on(f))
    }

    /// `cluster.nats.stream`.
    pub(super) fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// Takes in the stream's state: first sequence, head, counters.
    fn note(&self, state: &stream::State) {
        let first = if state.messages == 0 {
            0
        } else {
            state.first_sequence
        };
        self.first.store(first, Ordering::Release);
        self.head.fetch_max(state.last_sequence, Ordering::AcqRel);
        *self.stats.lock() = LogStats {
            messages: state.messages,
            bytes: state.bytes,
            topics: state.subjects_count,
        };
    }

    /// Fresh stream state. Blocking.
    pub(super) fn refresh(&self) -> Result<stream::State, StorageError> {
        self.wait(self.refreshed())
    }

    /// Fresh stream state, for code already running on the runtime (waiting there would
    /// nest one `block_on` in another).
    pub(super) async fn refreshed(&self) -> Result<stream::State, StorageError> {
        let info = self.stream.get_info().answer("stream info").await?;
        self.note(&info.state);
        Ok(info.state)
    }

    /// A stored message as a record; `None` for a marker or a subject outside the log.
    pub(super) fn record(
        &self,
        subject: &str,
        seq: u64,
        headers: Option<&HeaderMap>,
        payload: Bytes,
        ts_ms: u64,
    ) -> Option<Record> {
        let topic = mqws_topic::subject_to_topic(&self.prefix, subject).ok()?;
        let retain = headers
            .and_then(|h| h.get(RETAIN))
            .is_some_and(|v| v.as_str() == "1");
        Some(Record {
            seq,
            ts_ms,
            topic,
            payload,
            retain,
            mqtt: headers.and_then(mqtt_of),
        })
    }

    /// Notes a sequence seen in the stream (by an append or the feed); the first one of an
    /// empty stream is its first sequence until the next refresh says otherwise.
    pub(super) fn saw(&self, seq: u64) {
        self.head.fetch_max(seq, Ordering::AcqRel);
        let _ = self
            .first
            .compare_exchange(0, seq, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The first id of an append of `n` entries: a retry of a failed append reuses its ids,
    /// so JetStream stores each message once.
    fn ids_for(&self, n: usize) -> u64 {
        match self.retry.lock().take() {
            Some((len, base)) if len == n => base,
            _ => self.next_id.fetch_add(n as u64, Ordering::Relaxed),
        }
    }

    async fn publish_all(&self, batch: &[Entry], base: u64) -> Result<Vec<u64>, StorageError> {
        let mut acks = Vec::with_capacity(batch.len());
        for (i, entry) in batch.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{}-{}", self.node, base + i as u64));
            headers.insert(NODE, self.node.as_str());
            let (subject, payload) = match entry {
                Entry::Message {
                    topic,
                    payload,
                    retain,
                    mqtt,
                } => {
                    let subject = mqws_topic::topic_to_subject(&self.prefix, topic);
                    if subject.len() > MAX_SUBJECT {
                        // NATS refuses it, and a refused append would be retried forever:
                        // it is logged as one lost message instead, which readers are told of.
                        tracing::warn!(
                            topic_bytes = topic.len(),
                            "topic too long for a NATS subject; logged as a lost message"
                        );
                        headers.insert(LOST, "1");
                        (self.lost_subject.clone(), Bytes::new())
                    } else {
                        if *retain {
                            headers.insert(RETAIN, "1");
                        }
                        if let Some(m) = mqtt {
                            put_mqtt(&mut headers, m);
                        }
                        (subject, payload.clone())
                    }
                }
                Entry::Lost(n) => {
                    headers.insert(LOST, n.to_string());
                    (self.lost_subject.clone(), Bytes::new())
                }
            };
            let ack = self
                .publisher
                .publish_with_headers(subject, headers, payload)
                .answer("publish")
                .await?;
            acks.push(ack);
        }
        let mut seqs = Vec::with_capacity(acks.len());
        for ack in acks {
            let ack = ack.await.map_err(|e| js_error("publish ack", e))?;
            seqs.push(ack.sequence);
        }
        Ok(seqs)
    }
}

/// A direct get's message, `None` when there is none; bounded like every request.
async fn direct(
    get: impl std::future::Future<
        Output = Result<jetstream::message::StreamMessage, stream::DirectGetError>,
    >,
    what: &str,
) -> Result<Option<jetstream::message::StreamMessage>, StorageError> {
    match tokio::time::timeout(ANSWER_WAIT, get).await {
        Ok(Ok(m)) => Ok(Some(m)),
        Ok(Err(e)) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
        Ok(Err(e)) => Err(js_error(what, e)),
        Err(_) => Err(js_error(what, "no answer from NATS")),
    }
}

impl Log for JsLog {
    fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    fn first(&self) -> Option<u64> {
        Some(self.inner.first.load(Ordering::Acquire)).filter(|f| *f > 0)
    }

    fn head(&self) -> u64 {
        self.inner.head.load(Ordering::Acquire)
    }

    fn first_now(&self) -> Result<Option<u64>, StorageError> {
        self.inner.refresh()?;
        Ok(self.first())
    }

    fn append(&self, batch: &mut Vec<Entry>) -> Result<Appended, StorageError> {
        if batch.is_empty() {
            return Ok(Appended::default());
        }
        let base = self.inner.ids_for(batch.len());
        let seqs = match self.inner.wait(self.inner.publish_all(batch, base)) {
            Ok(s) => s,
            Err(e) => {
                *self.inner.retry.lock() = Some((batch.len(), base));
                return Err(e);
            }
        };
        let ts_ms = crate::storage::now_ms();
        let mut out = Appended::default();
        for (entry, seq) in batch.drain(..).zip(seqs) {
            self.inner.saw(seq);
            match entry {
                Entry::Message {
                    topic,
                    payload,
                    retain,
                    mqtt,
                } => out.records.push(Record {
                    seq,
                    ts_ms,
                    topic,
                    payload,
                    retain,
                    mqtt,
                }),
                Entry::Lost(_) => out.lost.push((seq, seq)),
            }
        }
        Ok(out)
    }

    fn cursor(&self, filters: &[String], after: u64, upto: u64) -> Box<dyn LogCursor> {
        Box::new(JsCursor::new(self.inner.clone(), filters, after, upto))
    }

    fn feed(&self, after: u64) -> Option<Box<dyn LogFeed>> {
        Some(Box::new(JsFeed::new(self.inner.clone(), after)))
    }

    fn last_per_topic(&self, filter: &str, limit: usize) -> Result<Vec<Record>, StorageError> {
        let inner = &self.inner;
        let subjects = mqws_topic::filter_to_subjects(&inner.prefix, filter);
        let mut out: Vec<Record> = inner.wait(async {
            let mut out = Vec::new();
            for s in &subjects.subjects {
                let mut listed = inner
                    .stream
                    .info_with_subjects(s)
                    .answer("subjects")
                    .await?;
                let mut names = Vec::new();
                while let Some(item) = listed.next().map(Ok::<_, &str>).answer("subjects").await? {
                    names.push(item.map_err(|e| js_error("subjects", e))?.0);
                }
                for name in names {
                    let last = inner.stream.direct_get_last_for_subject(name);
                    let Some(m) = direct(last, "the last message of a subject").await? else {
                        continue;
                    };
                    let ts = ms_of(m.time);
                    if let Some(r) =
                        inner.record(&m.subject, m.sequence, Some(&m.headers), m.payload, ts)
                    {
                        out.push(r);
                    }
                }
            }
            Ok::<_, StorageError>(out)
        })?;
        out.retain(|r| mqws_topic::matches(filter, &r.topic));
        out.sort_by_key(|r| r.seq);
        out.dedup_by_key(|r| r.seq);
        let keep = out.len().saturating_sub(limit);
        out.drain(..keep);
        Ok(out)
    }

    fn first_at_or_after(&self, ts_ms: u64) -> Result<Option<u64>, StorageError> {
        let state = self.inner.refresh()?;
        if state.messages == 0 || ms_of(state.last_timestamp) < ts_ms {
            return Ok(None);
        }
        if ms_of(state.first_timestamp) >= ts_ms {
            return Ok(Some(state.first_sequence));
        }
        super::cursor::first_at_or_after(&self.inner, ts_ms)
    }

    fn evicted_since(&self, ts_ms: u64) -> Result<bool, StorageError> {
        // JetStream keeps no record of what it removed: when anything was removed (the first
        // sequence is past 1) and the oldest kept message is at or after `ts_ms`, a removed
        // one may have been too. Said when unsure, never hidden.
        let state = self.inner.refresh()?;
        Ok(state.first_sequence > 1 && ms_of(state.first_timestamp) >= ts_ms)
    }

    fn lost(&self, after: u64, upto: u64, limit: usize) -> Result<(Vec<Lost>, bool), StorageError> {
        let mut out = Vec::new();
        if after >= upto || limit == 0 {
            return Ok((out, false));
        }
        let first = self.inner.refresh()?.first_sequence.max(1);
        let evicted_through = (first - 1).min(upto);
        if evicted_through > after {
            out.push(Lost {
                reason: LostReason::Evicted,
                from: after + 1,
                to: evicted_through,
            });
        }
        let inner = &self.inner;
        let mut seq = after.max(evicted_through) + 1;
        let more = inner.wait(async {
            while seq <= upto {
                let next = inner
                    .stream
                    .direct_get_next_for_subject(inner.lost_subject.clone(), Some(seq));
                let Some(m) = direct(next, "the next lost range").await? else {
                    return Ok(false);
                };
                if m.sequence > upto {
                    return Ok(false);
                }
                if out.len() == limit {
                    return Ok(true);
                }
                out.push(Lost {
                    reason: LostReason::Dropped,
                    from: m.sequence,
                    to: m.sequence,
                });
                seq = m.sequence + 1;
            }
            Ok::<_, StorageError>(false)
        })?;
        Ok((out, more))
    }

    fn enforce(&self, _limits: &Retention) -> Result<u64, StorageError> {
        // JetStream enforces the stream's limits itself; this only refreshes the counters.
        self.inner.refresh()?;
        Ok(0)
    }

    fn stats(&self) -> LogStats {
        *self.inner.stats.lock()
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn servers_from_2_10_on_are_supported() {
        for (v, ok) in [
            ("2.9.10", false),
            ("2.10.0", true),
            ("v2.11.3-beta.1", true),
            ("2.15.1", true),
            ("3.0.0", true),
            ("1.4", false),
            ("", false),
        ] {
            assert_eq!(super::supported(v), ok, "{v}");
        }
    }
}
