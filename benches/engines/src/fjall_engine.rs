//! fjall 3 behind [`LogEngine`]: one keyspace `log`; each commit is one `WriteBatch` with
//! `PersistMode::SyncData` (one journal `fdatasync` per group). Block cache [`CACHE_BYTES`],
//! memtable [`FJALL_MEMTABLE_BYTES`], journals bounded by [`FJALL_MAX_JOURNAL_BYTES`]; retention
//! (churn scenario) by FIFO compaction, since fjall 3 has no range delete.

use crate::engine::{
    decode_key, verify_keys, LogEngine, OpenOptions, Verify, CACHE_BYTES, FJALL_MAX_JOURNAL_BYTES,
    FJALL_MEMTABLE_BYTES,
};
use anyhow::Result;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::Path;
use std::sync::Arc;

/// The log on fjall 3.
pub(crate) struct Fjall3 {
    db: Database,
    log: Keyspace,
}

impl Fjall3 {
    /// Creates or recovers the database in `dir/fjall`.
    pub(crate) fn open(dir: &Path, opts: OpenOptions) -> Result<Self> {
        let path = dir.join("fjall");
        let db = Database::builder(&path)
            .cache_size(CACHE_BYTES as u64)
            .max_journaling_size(FJALL_MAX_JOURNAL_BYTES)
            .open()?;
        let fifo = opts.fifo_limit;
        let log = db.keyspace("log", move || {
            let ks = KeyspaceCreateOptions::default().max_memtable_size(FJALL_MEMTABLE_BYTES);
            match fifo {
                Some(limit) => {
                    ks.compaction_strategy(Arc::new(fjall::compaction::Fifo::new(limit, None)))
                }
                None => ks,
            }
        })?;
        Ok(Self { db, log })
    }
}

impl LogEngine for Fjall3 {
    fn commit(
        &mut self,
        first_seq: u64,
        values: &[Vec<u8>],
        _trim_below: Option<u64>,
    ) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for (i, value) in values.iter().enumerate() {
            let key = (first_seq + i as u64).to_be_bytes();
            batch.insert(&self.log, key.as_slice(), value.as_slice());
        }
        batch.commit()?;
        Ok(())
    }

    fn last_seq(&self) -> Result<Option<u64>> {
        match self.log.last_key_value() {
            Some(guard) => Ok(Some(decode_key(&guard.key()?)?)),
            None => Ok(None),
        }
    }

    fn verify(&self, upto: u64) -> Result<Verify> {
        let keys = self.log.iter().map(|g| decode_key(&g.key()?));
        verify_keys(keys, upto)
    }
}
