//! WebSocket sessions: one task per connection reading client frames ([`connection`] for the
//! lifecycle and `hello`, [`requests`] carrying out what the session core decides for the
//! rest), one writer task per connection draining
//! its bounded outbox ([`writer`]), and the connection's catch-up task (`catchup::follow`).
//! When the reader or the writer ends, it ends the others.

pub(crate) mod connection;
pub(crate) mod requests;
pub(crate) mod writer;
