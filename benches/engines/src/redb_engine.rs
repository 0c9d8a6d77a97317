//! redb 4.6 and redb 5 behind [`LogEngine`]: one table `log` of `&[u8]` (8-byte big-endian
//! sequence) → `&[u8]`; every commit is `Durability::Immediate`; the page cache is set to
//! [`CACHE_BYTES`]. The two versions share this code through a macro (their APIs used here are
//! the same).

use crate::engine::{decode_key, verify_keys, LogEngine, OpenOptions, Verify, CACHE_BYTES};
use anyhow::Result;
use std::path::Path;

/// Generates the engine type for one redb crate version.
macro_rules! redb_engine {
    ($name:ident, $krate:ident, $label:literal) => {
        #[doc = concat!("The log on ", $label, ".")]
        pub(crate) struct $name {
            db: $krate::Database,
        }

        impl $name {
            /// The one table holding the log.
            const TABLE: $krate::TableDefinition<'static, &'static [u8], &'static [u8]> =
                $krate::TableDefinition::new("log");

            #[doc = concat!("Creates or reopens `", $label, "` at `dir/log.redb`.")]
            pub(crate) fn open(dir: &Path, opts: OpenOptions) -> Result<Self> {
                let path = dir.join("log.redb");
                let mut builder = $krate::Database::builder();
                builder.set_cache_size(CACHE_BYTES);
                let db = if opts.create {
                    builder.create(&path)?
                } else {
                    builder.open(&path)?
                };
                Ok(Self { db })
            }
        }

        impl LogEngine for $name {
            fn commit(
                &mut self,
                first_seq: u64,
                values: &[Vec<u8>],
                trim_below: Option<u64>,
            ) -> Result<()> {
                let mut txn = self.db.begin_write()?;
                txn.set_durability($krate::Durability::Immediate)?;
                {
                    let mut table = txn.open_table(Self::TABLE)?;
                    for (i, value) in values.iter().enumerate() {
                        let key = (first_seq + i as u64).to_be_bytes();
                        table.insert(key.as_slice(), value.as_slice())?;
                    }
                    if let Some(below) = trim_below {
                        let hi = below.to_be_bytes();
                        table.retain_in(..hi.as_slice(), |_, _| false)?;
                    }
                }
                txn.commit()?;
                Ok(())
            }

            fn last_seq(&self) -> Result<Option<u64>> {
                use $krate::{ReadableDatabase, ReadableTable};
                let txn = self.db.begin_read()?;
                let table = match txn.open_table(Self::TABLE) {
                    Ok(t) => t,
                    Err($krate::TableError::TableDoesNotExist(_)) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let last = table.last()?;
                last.map(|(k, _)| decode_key(k.value())).transpose()
            }

            fn verify(&self, upto: u64) -> Result<Verify> {
                use $krate::{ReadableDatabase, ReadableTable};
                let txn = self.db.begin_read()?;
                let table = match txn.open_table(Self::TABLE) {
                    Ok(t) => t,
                    Err($krate::TableError::TableDoesNotExist(_)) => {
                        return verify_keys(std::iter::empty(), upto)
                    }
                    Err(e) => return Err(e.into()),
                };
                let keys = table.iter()?.map(|r| {
                    let (k, _) = r?;
                    decode_key(k.value())
                });
                verify_keys(keys, upto)
            }
        }
    };
}

redb_engine!(Redb4, redb4, "redb 4.6");
redb_engine!(Redb5, redb5, "redb 5");
