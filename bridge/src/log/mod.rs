//! The durable log: every message the bridge takes from the broker gets a `seq` and is stored
//! before any client sees it.
//!
//! [`store::LogStore`] is the small interface the rest of the bridge uses (append a batch, read
//! a range, head position), so the engine (sled today) could be swapped. [`writer`] runs the
//! group commit on a dedicated thread.

pub mod chunk;
pub mod index;
pub mod record;
pub mod store;
pub mod writer;

pub use record::{Position, Record};
pub use store::{LogError, LogStore};
