//! The log's journal: `mqws.journal` in the data dir, a file of fixed size in two halves, one
//! frame per append, with one `fdatasync` before the append returns. It is what makes an append
//! durable; the append's redb commit that follows is not durable (no page writes, no fsync), and
//! a durable redb commit (a checkpoint) later makes the journal's frames redundant. Frames are
//! written into one half while a checkpoint of the other runs, so appends never wait for one.
//!
//! Why: a durable redb commit writes every dirty B-tree page and then syncs, about 2–4× the
//! disk's own write + `fdatasync` (benches/RESULTS.md, the log engine experiment); a journal
//! write is one sequential write into blocks that already exist (the file is written with zeros
//! when created), so its `fdatasync` has no metadata to commit.
//!
//! Frames carry a generation, and generation `g` is written in half `g % 2`. A checkpoint moves
//! the journal to the next generation (the other half) and stores that generation in the
//! database's `meta` table in its durable commit (see `commits.rs`), so once it is durable the
//! frames before it can never be replayed. At open the frames of the generation in force and of
//! the next one (written while a checkpoint that did not finish ran) are applied again, each
//! half from its start up to the first frame that is torn, of another generation or absent:
//! applying a frame is idempotent (the same keys and values).
//!
//! Frame: `[body length u32 BE][crc32 u32 BE of generation ‖ body][generation u64 BE][body]`.
//! Body: a sequence of operations, `[1][from u64][to u64]` (a lost range) and
//! `[2][key u64][length u32][chunk]` (a log chunk), all big-endian.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use redb::WriteTransaction;

use super::tables::{GAPS, LOG};
use super::{engine_error, io_error};
use crate::storage::StorageError;

/// The journal's file name in the data dir.
pub(super) const FILE: &str = "mqws.journal";
/// Frame header: length, crc, generation.
const HEAD: usize = 16;
const OP_GAP: u8 = 1;
const OP_CHUNK: u8 = 2;
/// Zeros written at a time when the file is created.
const FILL: usize = 1 << 20;

/// One append's writes to the log's tables, encoded once: the journal writes these bytes and
/// the redb commit inserts slices of them.
pub(super) struct Frame {
    buf: Vec<u8>,
    /// The lowest seq the frame writes.
    first: u64,
}

impl Frame {
    /// An empty frame (its header is filled in when written).
    pub(super) fn new(capacity: usize) -> Frame {
        let mut buf = Vec::with_capacity(HEAD + capacity);
        buf.resize(HEAD, 0);
        Frame {
            buf,
            first: u64::MAX,
        }
    }

    /// The lowest seq the frame writes (`u64::MAX` when it writes none).
    pub(super) fn first(&self) -> u64 {
        self.first
    }

    /// Adds a lost range.
    pub(super) fn gap(&mut self, from: u64, to: u64) {
        self.first = self.first.min(from);
        self.buf.push(OP_GAP);
        self.buf.extend_from_slice(&from.to_be_bytes());
        self.buf.extend_from_slice(&to.to_be_bytes());
    }

    /// Adds a log chunk keyed by `key`, its value written by `encode` into the frame.
    pub(super) fn chunk(&mut self, key: u64, encode: impl FnOnce(&mut Vec<u8>)) {
        self.first = self.first.min(key);
        self.buf.push(OP_CHUNK);
        self.buf.extend_from_slice(&key.to_be_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        encode(&mut self.buf);
        let len = u32::try_from(self.buf.len() - at - 4).unwrap_or(u32::MAX);
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The frame's size on disk.
    pub(super) fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Inserts the frame's operations into the log's tables.
    pub(super) fn apply(&self, tx: &WriteTransaction) -> Result<(), StorageError> {
        apply(tx, &self.buf[HEAD..])
    }
}

/// Inserts the operations of a frame body into the log's tables.
fn apply(tx: &WriteTransaction, mut body: &[u8]) -> Result<(), StorageError> {
    let bad = |detail: &str| StorageError::Corrupt {
        what: "a journal frame".to_owned(),
        detail: detail.to_owned(),
    };
    let mut log = tx.open_table(LOG).map_err(engine_error)?;
    let mut gaps = tx.open_table(GAPS).map_err(engine_error)?;
    while let Some((&op, rest)) = body.split_first() {
        match op {
            OP_GAP => {
                let (from, rest) = take_u64(rest).ok_or_else(|| bad("truncated lost range"))?;
                let (to, rest) = take_u64(rest).ok_or_else(|| bad("truncated lost range"))?;
                gaps.insert(from, to).map_err(engine_error)?;
                body = rest;
            }
            OP_CHUNK => {
                let (key, rest) = take_u64(rest).ok_or_else(|| bad("truncated chunk key"))?;
                let (len, rest) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| bad("truncated chunk length"))?;
                let len = u32::from_be_bytes(*len) as usize;
                let value = rest.get(..len).ok_or_else(|| bad("truncated chunk"))?;
                log.insert(key, value).map_err(engine_error)?;
                body = &rest[len..];
            }
            other => return Err(bad(&format!("unknown operation {other}"))),
        }
    }
    Ok(())
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}

/// The checksum of a frame: its generation and body.
fn checksum(gen: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&gen.to_be_bytes());
    h.update(body);
    h.finalize()
}

/// The open journal file and where its next frame goes.
pub(super) struct Journal {
    file: File,
    /// Bytes of each half.
    half: u64,
    /// Where the next frame starts in the current half; 0 while no frame of `gen` is written.
    end: u64,
    gen: u64,
    /// Set when a failed write could not be undone.
    broken: bool,
}

/// The refusal of a journal whose failed write could not be undone.
pub(super) fn broken() -> StorageError {
    StorageError::Engine(
        "the log's journal could not undo a failed write; restart mqws to replay it".to_owned(),
    )
}

impl Journal {
    /// Opens the journal file of `dir` if there is one, for [`replay`].
    pub(super) fn existing(dir: &Path) -> Result<Option<File>, StorageError> {
        match File::open(dir.join(FILE)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    /// The journal of `dir` at `capacity` bytes for frames of `gen`, written from the start of
    /// its half. The file is (re)created, filled with zeros and synced, when it is missing or of
    /// another size: call this only once no frame in it is needed.
    pub(super) fn ready(dir: &Path, capacity: u64, gen: u64) -> Result<Journal, StorageError> {
        let path = dir.join(FILE);
        let size = std::fs::metadata(&path).map(|m| m.len()).ok();
        if size != Some(capacity) {
            create(dir, &path, capacity)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error)?;
        Ok(Journal {
            file,
            half: capacity / 2,
            end: 0,
            gen,
            broken: false,
        })
    }

    /// The generation frames are written with.
    pub(super) fn gen(&self) -> u64 {
        self.gen
    }

    /// Bytes written in the current half.
    pub(super) fn written(&self) -> u64 {
        self.end
    }

    /// True while no frame is written since the last checkpoint.
    pub(super) fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// True when `frame` fits after the frames written in the current half.
    pub(super) fn fits(&self, frame: &Frame) -> bool {
        self.end + frame.len() <= self.half
    }

    /// True when `frame` would not fit even in an empty half.
    pub(super) fn too_large(&self, frame: &Frame) -> bool {
        frame.len() > self.half
    }

    /// Writes `frame` after the others and syncs it. On failure the frame is undone (see
    /// [`Journal::undo`]).
    pub(super) fn write(&mut self, frame: &mut Frame) -> Result<(), StorageError> {
        if self.broken {
            return Err(broken());
        }
        let body_len = u32::try_from(frame.buf.len() - HEAD).unwrap_or(u32::MAX);
        let crc = checksum(self.gen, &frame.buf[HEAD..]);
        frame.buf[0..4].copy_from_slice(&body_len.to_be_bytes());
        frame.buf[4..8].copy_from_slice(&crc.to_be_bytes());
        frame.buf[8..16].copy_from_slice(&self.gen.to_be_bytes());
        let at = (self.gen % 2) * self.half + self.end;
        let written = self
            .file
            .write_all_at(&frame.buf, at)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.end += frame.len();
                Ok(())
            }
            Err(e) => {
                self.undo(at);
                Err(io_error(e))
            }
        }
    }

    /// Makes the frame at `at`, whose write failed, unreadable (its header zeroed and synced),
    /// so that a replay does not bring back what the caller was told failed; the next frame
    /// goes in its place. When even that fails the journal refuses every further write: the
    /// frame may be replayed at the next start, and seqs handed out meanwhile would collide
    /// with its own.
    fn undo(&mut self, at: u64) {
        let undone = self
            .file
            .write_all_at(&[0; HEAD], at)
            .and_then(|()| self.file.sync_data());
        match undone {
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, "could not undo a failed journal write; appends stop until mqws restarts");
                self.broken = true;
            }
        }
    }

    /// True when an undo failed: the journal refuses writes until mqws restarts.
    pub(super) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Moves on to frames of `gen` (a checkpoint started), written from the start of its half.
    pub(super) fn restart(&mut self, gen: u64) {
        (self.end, self.gen) = (0, gen);
    }
}

/// Applies the frames of `gen` in `file` to `tx`, from the start of its half up to the first
/// that is torn, of another generation or absent. Returns how many were applied.
pub(super) fn replay(file: &File, gen: u64, tx: &WriteTransaction) -> Result<usize, StorageError> {
    let half = file.metadata().map_err(io_error)?.len() / 2;
    let base = (gen % 2) * half;
    let size = base + half;
    let mut at = base;
    let mut applied = 0;
    let mut head = [0u8; HEAD];
    while at + HEAD as u64 <= size {
        file.read_exact_at(&mut head, at).map_err(io_error)?;
        let len = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let frame_gen = u64::from_be_bytes([
            head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
        ]);
        let start = at + HEAD as u64;
        if len == 0 || frame_gen != gen || start + len > size {
            break;
        }
        let mut body = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut body, start).map_err(io_error)?;
        if checksum(gen, &body) != crc {
            break;
        }
        apply(tx, &body)?;
        applied += 1;
        at = start + len;
    }
    Ok(applied)
}

/// Writes a zero-filled journal of `capacity` bytes at `path` (through a temporary file and a
/// rename, then syncing the dir), so overwriting it later changes no file metadata.
fn create(dir: &Path, path: &Path, capacity: u64) -> Result<(), StorageError> {
    let tmp: PathBuf = dir.join(format!("{FILE}.new"));
    let mut f = File::create(&tmp).map_err(io_error)?;
    let zeros = vec![0u8; FILL];
    let mut left = capacity;
    while left > 0 {
        let n = usize::try_from(left.min(FILL as u64)).unwrap_or(FILL);
        f.write_all(&zeros[..n]).map_err(io_error)?;
        left -= n as u64;
    }
    f.sync_all().map_err(io_error)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_error)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error)?;
    Ok(())
}

/// Removes the journal of `dir` (when the journal is turned off, after its frames were applied).
pub(super) fn remove(dir: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(dir.join(FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
