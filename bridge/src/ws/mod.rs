//! WebSocket sessions: one task per connection reading and answering client frames
//! ([`connection`]), one writer task per connection draining its bounded outbox ([`writer`]).
//! When either ends, it ends the other.

pub mod connection;
pub mod limits;
pub mod replay;
pub mod writer;
