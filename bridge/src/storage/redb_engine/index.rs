//! In-memory index of the log, rebuilt from disk at start-up: the seqs of each topic (so a
//! selective replay or `history` reads only what it returns, and `last` is a lookup), plus the
//! message count and byte total that retention enforces.
//!
//! Memory: about 1–3 bytes per retained message ([`seqs`]) plus one entry per distinct topic;
//! both are bounded by `log.max_messages`.

mod seqs;

use std::collections::HashMap;

use mqws_topic::matches;

use seqs::Seqs;

/// The index. Writers (the log writer, retention) take it mutably; readers share it.
#[derive(Debug, Default)]
pub(super) struct Index {
    topics: HashMap<String, Seqs>,
    count: u64,
    bytes: u64,
    first: Option<u64>,
    last: u64,
}

impl Index {
    /// Records a new message (seqs arrive in ascending order).
    pub(super) fn add(&mut self, topic: &str, seq: u64, size: u64) {
        match self.topics.get_mut(topic) {
            Some(seqs) => seqs.push(seq),
            None => {
                self.topics.insert(topic.to_owned(), Seqs::new(seq));
            }
        }
        self.count += 1;
        self.bytes += size;
        self.first.get_or_insert(seq);
        self.last = self.last.max(seq);
    }

    /// The newest indexed (logged) seq, 0 before the first.
    pub(super) fn last(&self) -> u64 {
        self.last
    }

    /// Forgets the oldest message (retention removes in seq order).
    pub(super) fn remove_oldest(
        &mut self,
        topic: &str,
        seq: u64,
        size: u64,
        next_first: Option<u64>,
    ) {
        if self
            .topics
            .get_mut(topic)
            .is_some_and(|seqs| seqs.remove(seq))
        {
            self.topics.remove(topic);
        }
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size);
        self.first = next_first;
    }

    /// Messages indexed.
    pub(super) fn count(&self) -> u64 {
        self.count
    }

    /// Topic and payload bytes indexed.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The oldest retained seq.
    pub(super) fn first(&self) -> Option<u64> {
        self.first
    }

    /// Distinct topics.
    pub(super) fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Topics that any of `filters` matches, up to `limit` (None when there are more).
    pub(super) fn topics_matching(&self, filters: &[String], limit: usize) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for topic in self.topics.keys() {
            if filters.iter().any(|f| matches(f, topic)) {
                if out.len() == limit {
                    return None;
                }
                out.push(topic.clone());
            }
        }
        Some(out)
    }

    /// Up to `limit` seqs in `(after, upto]` of `topics`, ascending.
    pub(super) fn seqs_of(
        &self,
        topics: &[String],
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Vec<u64> {
        let mut out = Vec::new();
        for t in topics {
            let Some(seqs) = self.topics.get(t) else {
                continue;
            };
            seqs.collect_range(after, upto, limit, &mut out);
        }
        out.sort_unstable();
        out.truncate(limit);
        out
    }

    /// The latest seq of each topic matching `filter`, ascending.
    pub(super) fn last_of_each(&self, filter: &str) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .topics
            .iter()
            .filter(|(t, _)| matches(filter, t))
            .filter_map(|(_, seqs)| seqs.last())
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_by_topic_and_last() {
        let mut ix = Index::default();
        for (seq, t) in [(1, "a/x"), (2, "b"), (3, "a/y"), (4, "a/x"), (5, "b")] {
            ix.add(t, seq, 10);
        }
        let topics = ix.topics_matching(&["a/+".to_owned()], 10).expect("few");
        let mut sorted = topics.clone();
        sorted.sort();
        assert_eq!(sorted, vec!["a/x", "a/y"]);
        assert_eq!(ix.seqs_of(&topics, 1, 10, 10), vec![3, 4]);
        assert_eq!(ix.seqs_of(&topics, 0, 3, 10), vec![1, 3]);
        assert_eq!(ix.seqs_of(&topics, 0, 10, 2), vec![1, 3]);
        assert_eq!(ix.last_of_each("#"), vec![3, 4, 5]);
        assert_eq!((ix.count(), ix.bytes(), ix.first()), (5, 50, Some(1)));
        ix.remove_oldest("a/x", 1, 10, Some(2));
        assert_eq!((ix.count(), ix.bytes(), ix.first()), (4, 40, Some(2)));
        assert_eq!(ix.topics_matching(&["#".to_owned()], 1), None);
    }
}
