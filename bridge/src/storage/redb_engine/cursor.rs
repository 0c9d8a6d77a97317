//! Filtered reads of `(after, upto]` in bounded batches whose cost follows what they return.
//!
//! When the filters match at most [`TOPIC_MODE_LIMIT`] topics the cursor walks the in-memory
//! per-topic index and reads only matching records; otherwise it scans the range and filters
//! with a trie. Either way at most one batch is in memory.

use std::sync::Arc;

use mqws_topic::Trie;

use super::log::Inner;
use crate::storage::{LogCursor, Record, StorageError};

/// Above this many matching topics a read scans the log instead of merging topic lists.
const TOPIC_MODE_LIMIT: usize = 64;

/// A read in progress.
pub(super) struct RedbCursor {
    log: Arc<Inner>,
    after: u64,
    upto: u64,
    mode: Mode,
}

enum Mode {
    Topics(Vec<String>),
    Scan(Trie<()>),
}

impl RedbCursor {
    pub(super) fn new(log: Arc<Inner>, filters: &[String], after: u64, upto: u64) -> RedbCursor {
        let topics = log.index.read().topics_matching(filters, TOPIC_MODE_LIMIT);
        let mode = match topics {
            Some(topics) => Mode::Topics(topics),
            None => {
                let mut trie = Trie::default();
                for (i, f) in filters.iter().enumerate() {
                    trie.insert(f, i as u64, ());
                }
                Mode::Scan(trie)
            }
        };
        RedbCursor {
            log,
            after,
            upto,
            mode,
        }
    }

    #[cfg(test)]
    pub(super) fn selective(&self) -> bool {
        matches!(self.mode, Mode::Topics(_))
    }
}

impl LogCursor for RedbCursor {
    fn position(&self) -> u64 {
        self.after
    }

    fn done(&self) -> bool {
        self.after >= self.upto
    }

    fn next_batch(&mut self, limit: usize) -> Result<Vec<Record>, StorageError> {
        if self.done() {
            return Ok(Vec::new());
        }
        let first = self.log.index.read().first();
        if first.is_some_and(|f| f > self.after + 1) {
            return Err(StorageError::Overtaken);
        }
        match &self.mode {
            Mode::Topics(topics) => {
                let seqs = self
                    .log
                    .index
                    .read()
                    .seqs_of(topics, self.after, self.upto, limit);
                if seqs.len() < limit {
                    // Fewer than asked: nothing else matches up to `upto`.
                    self.after = self.upto;
                }
                let mut out = Vec::with_capacity(seqs.len());
                for seq in seqs {
                    match self.log.get(seq)? {
                        Some(r) => out.push(r),
                        None => return Err(StorageError::Overtaken),
                    }
                    self.after = self.after.max(seq);
                }
                Ok(out)
            }
            Mode::Scan(trie) => {
                let read = self.log.read_range(self.after, self.upto, limit)?;
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
