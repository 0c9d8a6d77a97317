//! Filtered reads of `(after, upto]` for catch-up and queries that read only the messages the
//! client's filters select. Each MQTT filter becomes subject filters
//! ([`mqws_topic::filter_to_subjects`]); JetStream refuses overlapping subject filters on one
//! consumer (error 10138), and MQTT filters overlap all the time, so they are split into
//! groups that do not ([`mqws_topic::disjoint_groups`]), one reader per group,
//! merged here by stream sequence (a message two groups both match is returned once). The MQTT
//! match is applied again to each record: a filter's subjects also match `$` topics that a
//! leading wildcard must not.

use std::sync::Arc;

use mqws_topic::Trie;
use tokio::sync::OwnedSemaphorePermit;

use super::cursor::{from_seq, next_counted, Read, READ_WAIT};
use super::js_error;
use super::log::Inner;
use super::reader::{permits, Reader};
use crate::storage::{LogCursor, Record, StorageError};

/// Most consumers one read runs: past it, one consumer reads every message and the filters
/// are applied here, as cheap as many consumers once most of the log matches anyway.
const MAX_READERS: usize = 4;

/// A filtered read of `(after, upto]`.
pub(super) struct JsCursor {
    inner: Arc<Inner>,
    trie: Trie<()>,
    /// The subject filters of each consumer (one empty group: every message).
    groups: Vec<Vec<String>>,
    after: u64,
    upto: u64,
    /// Opened on the first read.
    sources: Option<Vec<Source>>,
    /// The node's reader budget this read holds, one permit per source, while it lives.
    _permits: Option<OwnedSemaphorePermit>,
}

/// One consumer of the merge.
struct Source {
    subjects: Vec<String>,
    msgs: Reader,
    /// Messages the stream holds for it past the last one read.
    remaining: u64,
    /// Read and not yet merged.
    head: Option<Read>,
    /// Where to start a new consumer if this one dies: past the last message read.
    next_start: u64,
}

impl Source {
    async fn open(
        inner: &Inner,
        subjects: Vec<String>,
        start: u64,
    ) -> Result<Source, StorageError> {
        let (msgs, remaining) = Reader::open(inner, from_seq(start), subjects.clone()).await?;
        Ok(Source {
            subjects,
            msgs,
            remaining,
            head: None,
            next_start: start,
        })
    }

    /// Reads the next message into `head` unless it holds one or the stream has no more.
    async fn fill(&mut self, inner: &Inner) -> Result<(), StorageError> {
        let mut reopened = false;
        while self.head.is_none() && self.remaining > 0 {
            match next_counted(inner, &mut self.msgs, READ_WAIT).await {
                Ok(Some((read, remaining))) => {
                    self.next_start = read.seq() + 1;
                    self.remaining = remaining;
                    self.head = Some(read);
                }
                // The reader may have died with a NATS server (it lives on one), or skipped a
                // message: read on with a new one, once, before giving up.
                Ok(None) | Err(_) if !reopened => {
                    reopened = true;
                    *self = Source::open(inner, self.subjects.clone(), self.next_start).await?;
                }
                Ok(None) => {
                    return Err(js_error("read the stream", "a stored message did not come"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn head_seq(&self) -> Option<u64> {
        self.head.as_ref().map(Read::seq)
    }
}

impl JsCursor {
    pub(super) fn new(inner: Arc<Inner>, filters: &[String], after: u64, upto: u64) -> JsCursor {
        let mut trie = Trie::default();
        let mut subjects = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(f, i as u64, ());
            subjects.extend(mqws_topic::filter_to_subjects(&inner.prefix, f).subjects);
        }
        let mut groups = mqws_topic::disjoint_groups(&subjects);
        if groups.len() > MAX_READERS {
            groups = vec![Vec::new()];
        }
        JsCursor {
            inner,
            trie,
            groups,
            after,
            upto,
            sources: None,
            _permits: None,
        }
    }

    async fn batch(&mut self, limit: usize) -> Result<Vec<Record>, StorageError> {
        let inner = self.inner.clone();
        let started_after = self.after;
        if self.sources.is_none() {
            self._permits = Some(permits(&inner.readers, self.groups.len()).await?);
            let mut sources = Vec::with_capacity(self.groups.len());
            for group in &self.groups {
                sources.push(Source::open(&inner, group.clone(), self.after + 1).await?);
            }
            self.sources = Some(sources);
        }
        let Some(sources) = self.sources.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        while self.after < self.upto && out.len() < limit {
            for s in sources.iter_mut() {
                s.fill(&inner).await?;
            }
            let Some(seq) = sources.iter().filter_map(Source::head_seq).min() else {
                // Every consumer has read all its messages.
                self.after = self.upto;
                break;
            };
            if seq > self.upto {
                self.after = self.upto;
                break;
            }
            let mut read = None;
            for s in sources.iter_mut() {
                if s.head_seq() == Some(seq) {
                    read = s.head.take();
                }
            }
            if seq <= self.after {
                continue;
            }
            self.after = seq;
            if let Some(Read::Record(r, _)) = read {
                let mut hit = false;
                self.trie.for_each_match(&r.topic, |_, _| hit = true);
                if hit {
                    out.push(r);
                }
            }
        }
        // Consumers skip what retention removes while they read: if it removed anything this
        // batch covered, a matching message may be among it.
        if inner.refreshed().await?.first_sequence > started_after + 1 {
            return Err(StorageError::Overtaken);
        }
        Ok(out)
    }
}

impl LogCursor for JsCursor {
    fn next_batch(&mut self, limit: usize) -> Result<Vec<Record>, StorageError> {
        if self.done() {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        inner.wait(self.batch(limit))
    }

    fn position(&self) -> u64 {
        self.after
    }

    fn done(&self) -> bool {
        self.after >= self.upto
    }
}
