//! What can go wrong below the storage interfaces, said precisely enough for the caller to
//! decide: retry (I/O, full, unavailable), give up on one read (overtaken), or refuse to start
//! (format, locked, corrupt).

use std::path::PathBuf;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk is full (ENOSPC). Writes are retried; nothing unwritten is acknowledged.
    #[error("the disk holding the data dir is full")]
    Full,
    /// Writing would leave less free disk space than `log.min_free_disk`; refused before the
    /// engine was touched. Writes are retried once space frees up.
    #[error(
        "the data dir's disk has {free} bytes free; log.min_free_disk keeps {reserve} bytes free"
    )]
    Reserve {
        /// Bytes free now.
        free: u64,
        /// Bytes kept free.
        reserve: u64,
    },
    /// The engine's reads or writes failed with an I/O error.
    #[error("storage I/O failed: {0}")]
    Io(#[source] std::io::Error),
    /// The engine reported something it should never do (a bug or an unsupported operation).
    #[error("storage engine failure: {0}")]
    Engine(String),
    /// Stored bytes did not decode: the data dir is damaged or was written by something else.
    #[error("stored data is corrupt ({what}): {detail}")]
    Corrupt {
        /// Which structure (a log chunk at a seq, a session, the engine's own files).
        what: String,
        /// Why it did not decode.
        detail: String,
    },
    /// A value could not be encoded or decoded as its type (a session's JSON).
    #[error("could not encode or decode a stored value: {0}")]
    Encoding(String),
    /// The data dir was written in a storage format this build does not read.
    #[error(
        "the data dir {dir} holds storage format {found}; this build reads format {supported} \
         (use the mqws release that wrote it, or point log.dir at a new directory)"
    )]
    Format {
        /// The data dir.
        dir: PathBuf,
        /// The format found on disk.
        found: u32,
        /// The format this build reads and writes.
        supported: u32,
    },
    /// A data dir of storage format 1 (a sled database) could not be upgraded: the disk has
    /// too little room for the backup copy and the new database.
    #[error(
        "upgrading the data dir {dir} from storage format 1 needs {need} bytes free (a backup \
         copy of the old files and the new database, plus log.min_free_disk); the disk has \
         {free}: free some space and start again"
    )]
    UpgradeSpace {
        /// The data dir.
        dir: PathBuf,
        /// Bytes the upgrade needs free.
        need: u64,
        /// Bytes free.
        free: u64,
    },
    /// A data dir of storage format 1 (a sled database) could not be read or converted. The
    /// old files are unchanged; the next start tries again.
    #[error("could not upgrade the data dir {dir} from storage format 1 (sled): {detail}")]
    Upgrade {
        /// The data dir.
        dir: PathBuf,
        /// What failed.
        detail: String,
    },
    /// Another process holds the data dir.
    #[error("the data dir {dir} is in use by another process (another mqws?); stop it or set log.dir to another directory")]
    Locked {
        /// The data dir.
        dir: PathBuf,
    },
    /// The data dir could not be opened or created.
    #[error("cannot open the data dir {dir}: {detail}")]
    Open {
        /// The data dir.
        dir: PathBuf,
        /// Why.
        detail: String,
    },
    /// The shared log (NATS JetStream, cluster mode) refused a request or did not answer:
    /// NATS unreachable, a stream without a leader during an election. Retried; there is
    /// nothing local to reopen.
    #[error("the shared log on NATS JetStream: {0}")]
    Shared(String),
    /// The engine is closed while it is being reopened after a failure; try again shortly.
    #[error("storage is being reopened after a failure")]
    Unavailable,
    /// Retention removed records this read still needed (the reader should start over from
    /// what is left and report the loss).
    #[error("retention removed records during the read")]
    Overtaken,
}

impl StorageError {
    /// True when the engine itself failed a write and may need reopening.
    pub(crate) fn engine_failed(&self) -> bool {
        matches!(self, StorageError::Full | StorageError::Io(_))
    }
}
