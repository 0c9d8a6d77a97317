//! The small log interface every engine under test implements (append a group of records in one
//! durable commit, optionally trimming the oldest, read the head back, verify a prefix), and the
//! engine settings shared by all scenarios.

use anyhow::Result;
use std::path::Path;

/// Block/page cache given to every engine (redb's default of 1 GiB must be overridden).
pub(crate) const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// fjall: memtable size of the log keyspace (its write buffer).
pub(crate) const FJALL_MEMTABLE_BYTES: u64 = 32 * 1024 * 1024;
/// fjall: bound on all journals together (64 MiB is the smallest fjall accepts).
pub(crate) const FJALL_MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// Which engine a case runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub(crate) enum EngineKind {
    /// redb 4.6 (the engine mqws uses today).
    Redb4,
    /// redb 5.
    Redb5,
    /// fjall 3.
    Fjall3,
}

impl EngineKind {
    /// Short name used in reports and on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Redb4 => "redb4",
            Self::Redb5 => "redb5",
            Self::Fjall3 => "fjall3",
        }
    }
}

/// How to open an engine.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpenOptions {
    /// fjall only: FIFO compaction limit in bytes (retention by whole tables).
    pub(crate) fifo_limit: Option<u64>,
    /// Create a fresh database (true) or reopen an existing one (false).
    pub(crate) create: bool,
}

/// Outcome of checking that every sequence number up to a bound is present.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Verify {
    /// Keys found in `0..=upto`.
    pub(crate) present: u64,
    /// First missing sequence number in `0..=upto`, if any.
    pub(crate) first_missing: Option<u64>,
}

/// A log keyed by `u64` big-endian sequence numbers.
pub(crate) trait LogEngine {
    /// Appends `values` with keys `first_seq..` in one durable commit; when `trim_below` is set,
    /// the same commit deletes every key below it (redb; fjall retains by FIFO compaction and
    /// ignores it).
    fn commit(&mut self, first_seq: u64, values: &[Vec<u8>], trim_below: Option<u64>)
        -> Result<()>;
    /// The highest key stored, if any.
    fn last_seq(&self) -> Result<Option<u64>>;
    /// Checks that every key in `0..=upto` is present.
    fn verify(&self, upto: u64) -> Result<Verify>;
}

/// Opens (or creates) the engine's database inside `dir`.
pub(crate) fn open(kind: EngineKind, dir: &Path, opts: OpenOptions) -> Result<Box<dyn LogEngine>> {
    Ok(match kind {
        EngineKind::Redb4 => Box::new(crate::redb_engine::Redb4::open(dir, opts)?),
        EngineKind::Redb5 => Box::new(crate::redb_engine::Redb5::open(dir, opts)?),
        EngineKind::Fjall3 => Box::new(crate::fjall_engine::Fjall3::open(dir, opts)?),
    })
}

/// Decodes an 8-byte big-endian key.
pub(crate) fn decode_key(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| anyhow::anyhow!("key of {} bytes, expected 8", key.len()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Walks keys in ascending order and checks they are exactly `0..=upto`.
pub(crate) fn verify_keys(keys: impl Iterator<Item = Result<u64>>, upto: u64) -> Result<Verify> {
    let mut out = Verify::default();
    let mut expect = 0u64;
    for key in keys {
        let key = key?;
        if key > upto {
            break;
        }
        if key != expect && out.first_missing.is_none() {
            out.first_missing = Some(expect);
        }
        out.present += 1;
        expect = key + 1;
    }
    if expect <= upto && out.first_missing.is_none() {
        out.first_missing = Some(expect);
    }
    Ok(out)
}
