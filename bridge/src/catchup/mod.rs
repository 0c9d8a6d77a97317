//! Catch-up: everything that brings a connection from a past position to the live stream.
//!
//! [`plan`] decides where a replay starts and what it can promise (`recovered`, `gaps`).
//! [`follow`] is a connection's catch-up (one task at a time): it sends what the connection missed
//! (a replay asked for at `hello`, or what it fell behind on while connected) from the in-memory
//! tail or the log, reports what retention removed meanwhile as in-stream `gap` frames, and
//! rejoins the live stream exactly (see `fanout::outbox`). ARCHITECTURE.md draws the flow.

pub(crate) mod follow;
pub(crate) mod plan;

pub(crate) use plan::{plan, Plan};
