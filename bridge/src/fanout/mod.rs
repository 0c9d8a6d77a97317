//! Fan-out: from logged messages to the connections whose filters match.
//!
//! A topic trie (`mqws_topic::Trie`) indexes filters so a message costs a walk of its topic's
//! levels, not a scan of every session. [`outbox`] is each connection's bounded queue. [`hub`]
//! ties them together and runs on the dedicated fan-out thread. Fan-out knows the logged
//! [`crate::storage::Record`] type and nothing of how or where it is stored.

pub(crate) mod hub;
pub(crate) mod outbox;

pub(crate) use hub::{Hub, Live};
pub(crate) use outbox::{Outbox, Outgoing};
