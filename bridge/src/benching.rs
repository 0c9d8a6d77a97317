//! Entry points for `benches/` that time storage below the network: the log's append, as the
//! ingest thread calls it. Not an API for anything else.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::storage::{Entry, Options, Storage};

/// Opens a log in `dir` (a journal of `journal_bytes`, 0 for none; `log.sync` on), appends
/// `appends` batches of `per_append` messages of `payload_bytes` each, and returns how long each
/// append took, in order. The payloads are pseudo-random, so nothing compresses. Blocking.
pub fn append_latencies(
    dir: &Path,
    journal_bytes: u64,
    payload_bytes: usize,
    per_append: usize,
    appends: usize,
) -> Result<Vec<Duration>, String> {
    let storage = Storage::open(&Options {
        dir,
        cache_bytes: 16 << 20,
        sync: true,
        max_retained: 1,
        min_free_bytes: 0,
        journal_bytes,
    })
    .map_err(|e| e.to_string())?;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut payload = || {
        let bytes: Vec<u8> = (0..payload_bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        Bytes::from(bytes)
    };
    let mut out = Vec::with_capacity(appends);
    for i in 0..appends {
        let mut batch: Vec<Entry> = (0..per_append)
            .map(|_| Entry::Message {
                topic: format!("bench/{}", i % 64),
                payload: payload(),
                retain: false,
                mqtt: None,
            })
            .collect();
        let started = Instant::now();
        storage.log.append(&mut batch).map_err(|e| e.to_string())?;
        out.push(started.elapsed());
    }
    storage.flush().map_err(|e| e.to_string())?;
    Ok(out)
}
