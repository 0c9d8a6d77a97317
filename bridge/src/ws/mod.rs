//! WebSocket sessions: one task per connection reading and answering client frames
//! ([`connection`]), one writer task per connection draining its bounded outbox ([`writer`]).
//! When either ends, it ends the other.

pub(crate) mod connection;
pub(crate) mod limits;
pub(crate) mod replay;
pub(crate) mod writer;
