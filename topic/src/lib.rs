//! The MQTT topic vocabulary shared by every mqws crate: what a valid topic name and filter
//! are ([`check_topic`], [`check_filter`]), whether a filter matches a topic ([`matches`]), and a
//! trie that finds every filter matching a topic in one walk of its levels ([`Trie`]).
//! The same topics and filters as NATS subjects and subject filters for the cluster log's
//! JetStream stream ([`topic_to_subject`], [`filter_to_subjects`], [`disjoint_groups`]).
//!
//! One crate so the broker proxy, the log's index, fan-out, grants and the benchmarks agree on
//! the rules to the letter.

mod filter;
mod subject;
mod trie;

pub use filter::{
    check_filter, check_topic, check_topic_name, filters_overlap, matches, TopicError, MAX_LEN,
};
pub use subject::{
    disjoint_groups, filter_to_subjects, subject_to_topic, subjects_overlap, topic_to_subject,
    SubjectError, SubjectFilters,
};
pub use trie::Trie;
