//! Building data dirs for tests of the real binary. Today's ingress never loses a message, but
//! data dirs written by earlier releases hold lost ranges; tests that check how they are
//! reported build such a dir with [`seed_log`]. Not an API for anything else.

use std::path::Path;

use bytes::Bytes;

use crate::storage::{Entry, Options, Storage, StorageError};

/// One thing to append.
#[derive(Debug, Clone)]
pub enum Seed {
    /// A message on `topic`.
    Message {
        /// MQTT topic.
        topic: String,
        /// Payload bytes.
        payload: Vec<u8>,
    },
    /// `n` seqs lost before they could be logged.
    Lost(u64),
}

/// Creates (or extends) the log in `dir` with `seeds`, in order, and closes it. Returns the
/// log's epoch. Blocking.
pub fn seed_log(dir: &Path, seeds: &[Seed]) -> Result<String, StorageError> {
    let storage = Storage::open(&Options {
        dir,
        cache_bytes: 8 << 20,
        sync: true,
        max_retained: 1000,
        min_free_bytes: 0,
        journal_bytes: 1 << 20,
    })?;
    let mut batch: Vec<Entry> = seeds
        .iter()
        .map(|s| match s {
            Seed::Message { topic, payload } => Entry::Message {
                topic: topic.clone(),
                payload: Bytes::from(payload.clone()),
                retain: false,
                mqtt: None,
            },
            Seed::Lost(n) => Entry::Lost(*n),
        })
        .collect();
    storage.log.append(&mut batch)?;
    storage.flush()?;
    Ok(storage.log.epoch().to_owned())
}
