//! The MQTT topic vocabulary shared by every mqws crate: what a valid topic name and filter
//! are ([`check_topic`], [`check_filter`]), whether a filter matches a topic ([`matches`]), and a
//! trie that finds every filter matching a topic in one walk of its levels ([`Trie`]).
//!
//! One crate so the broker proxy, the log's index, fan-out, grants and the benchmarks agree on
//! the rules to the letter.

mod filter;
mod trie;

pub use filter::{check_filter, check_topic, check_topic_name, matches, TopicError, MAX_LEN};
pub use trie::Trie;
