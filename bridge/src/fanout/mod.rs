//! Fan-out: from logged messages to the connections whose filters match.
//!
//! Ingest pushes committed batches into the [`tail`] (bounded in bytes, never waiting). The
//! fan-out thread ([`dispatch`]) follows the tail and dispatches through the [`hub`], whose topic trie
//! (`mqws_topic::Trie`) costs a message a walk of its topic's levels. Each connection's
//! [`outbox`] is bounded per connection and in total; a connection that does not keep up falls
//! behind and its catch-up (`catchup::follow`) continues from the tail or the log. Fan-out
//! knows the logged [`crate::storage::Record`] type and nothing of how or where it is stored,
//! and carries the frames `protocol` encoded ([`crate::protocol::Frame`]) without reading them.

pub(crate) mod dispatch;
pub(crate) mod hub;
pub(crate) mod live;
pub(crate) mod outbox;
pub(crate) mod retained;
pub(crate) mod tail;

pub(crate) use hub::Hub;
pub(crate) use live::Live;
pub(crate) use outbox::{Budget, Outbox, Outgoing};
pub(crate) use tail::{Read, Tail};
