//! Fan-out: from logged messages to the connections whose filters match.
//!
//! [`trie`] indexes filters so a message costs a walk of its topic's levels, not a scan of
//! every session. [`outbox`] is each connection's bounded queue. [`hub`] ties them together and
//! runs on the dedicated fan-out thread.

pub mod filter;
pub mod hub;
pub mod outbox;
pub mod trie;

pub use filter::{check_filter, check_topic, TopicError};
pub use hub::{Hub, Live};
pub use outbox::{Outbox, Outgoing};
