//! The write side of the database: one write transaction at a time, the log's journal, and the
//! journaled appends waiting for their redb commit.
//!
//! An append with the journal is durable once its frame is synced there; it is then queued and
//! committed to redb without a sync by whichever thread holds the writer next (the appender
//! itself when the writer is free). A checkpoint (every durable commit) first commits what is
//! queued, moves the journal to its other half, and then commits durably, so appends go on
//! into the journal while it syncs the database file; what they queued meanwhile is committed
//! when it ends. Readers of the log wait for the appends they need to be committed
//! ([`Commits::wait_applied`]). After a failed commit the database must be reopened: appends
//! are refused until [`Commits::reset`] has replayed the journal into the reopened database.
//!
//! Lock order: writer, then journal, then the queue.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tracing::{info, warn};

use super::journal::{self, Frame, Journal};
use super::tables::META;
use super::{be_u64, engine_error};
use crate::storage::StorageError;

/// The generation of journal frames not yet covered by a durable commit.
const JOURNAL_GEN: &str = "journal_gen";
/// Journaled bytes after which a checkpoint is asked for. Small, so that each checkpoint writes
/// little to the database file at once: its writes share the disk with the journal's syncs,
/// which wait behind them (benches/RESULTS.md, 2026-12-08, the journal).
const CHECKPOINT_AFTER: u64 = 256 << 10;

/// A request for a checkpoint, from appends to the thread that makes them.
#[derive(Default)]
pub(super) struct Due {
    asked: Mutex<bool>,
    ready: Condvar,
}

impl Due {
    /// Asks for a checkpoint.
    fn ask(&self) {
        *self.asked.lock() = true;
        self.ready.notify_one();
    }

    /// Waits until a checkpoint is asked for or `within` passes.
    pub(super) fn wait(&self, within: Duration) {
        let mut asked = self.asked.lock();
        if !*asked {
            let _ = self.ready.wait_for(&mut asked, within);
        }
        *asked = false;
    }
}

/// What write transactions share: held for each (redb allows one at a time anyway).
struct Writer {
    /// A commit since the last durable one was not durable.
    unsynced: bool,
}

/// The write side of one database (see the module).
pub(super) struct Commits {
    writer: Mutex<Writer>,
    journal: Mutex<Option<Journal>>,
    /// Journaled appends not yet committed to redb, in order.
    queued: Mutex<VecDeque<Arc<Frame>>>,
    /// Signalled when queued appends are committed, or dropped by a reset.
    applied: Condvar,
    /// A commit failed: the database must be reopened before more appends.
    failed: AtomicBool,
    /// Where appends ask for a checkpoint.
    due: Arc<Due>,
}

impl Commits {
    /// The write side of a database just opened, with its journal (`None`: no journal).
    pub(super) fn new(journal: Option<Journal>, due: Arc<Due>) -> Commits {
        Commits {
            writer: Mutex::new(Writer { unsynced: false }),
            journal: Mutex::new(journal),
            queued: Mutex::new(VecDeque::new()),
            applied: Condvar::new(),
            failed: AtomicBool::new(false),
            due,
        }
    }

    /// Runs `f` in a write transaction and commits it: a durable commit is a checkpoint; the
    /// others become durable with the next one.
    pub(super) fn write<T>(
        &self,
        db: &Database,
        durable: bool,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if durable {
            return self.checkpoint(db, f);
        }
        let mut w = self.writer.lock();
        let out = self.commit(db, &mut w, false, None, f);
        self.release(db, w);
        out
    }

    /// A durable commit of `f` that also commits every queued append first and moves the
    /// journal to its other half, so the frames it covers are never replayed again.
    fn checkpoint<T>(
        &self,
        db: &Database,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut w = self.writer.lock();
        if self.failed.load(Ordering::Acquire) {
            drop(w);
            return Err(reopen_needed());
        }
        let next = {
            let mut journal = self.journal.lock();
            if let Err(e) = self.apply_queued(db, &mut w) {
                drop(journal);
                self.release(db, w);
                return Err(e);
            }
            match journal.as_mut() {
                Some(j) if !j.is_empty() => {
                    let next = j.gen() + 1;
                    j.restart(next);
                    Some(next)
                }
                _ => None,
            }
        };
        let out = self.commit(db, &mut w, true, next, f);
        self.release(db, w);
        out
    }

    /// Makes `frame` durable and commits it (see the module): journaled and queued when there
    /// is a journal and `durable`, else committed at once, durable or not.
    pub(super) fn append(
        &self,
        db: &Database,
        mut frame: Frame,
        durable: bool,
    ) -> Result<(), StorageError> {
        if !durable || self.journal.lock().is_none() {
            if durable {
                return self.checkpoint(db, |tx| frame.apply(tx));
            }
            return self.write(db, false, |tx| frame.apply(tx));
        }
        loop {
            if self.failed.load(Ordering::Acquire) {
                return Err(reopen_needed());
            }
            let mut guard = self.journal.lock();
            let Some(j) = guard.as_mut() else {
                return Err(reopen_needed());
            };
            if j.is_broken() {
                return Err(journal::broken());
            }
            if j.too_large(&frame) {
                drop(guard);
                return self.checkpoint(db, |tx| frame.apply(tx));
            }
            if !j.fits(&frame) {
                // This half is full: a checkpoint moves the journal to the other one.
                drop(guard);
                self.checkpoint(db, |_| Ok(()))?;
                continue;
            }
            j.write(&mut frame)?;
            if j.written() >= CHECKPOINT_AFTER {
                self.due.ask();
            }
            self.queued.lock().push_back(Arc::new(frame));
            break;
        }
        if let Some(w) = self.writer.try_lock() {
            self.release(db, w);
        }
        Ok(())
    }

    /// Waits until every journaled append that writes a seq up to `through` is committed to
    /// redb, so a read sees it. [`StorageError::Unavailable`] after `within`.
    pub(super) fn wait_applied(&self, through: u64, within: Duration) -> Result<(), StorageError> {
        let deadline = Instant::now() + within;
        let mut queued = self.queued.lock();
        while queued.front().is_some_and(|f| f.first() <= through) {
            if self.applied.wait_until(&mut queued, deadline).timed_out() {
                return Err(StorageError::Unavailable);
            }
        }
        Ok(())
    }

    /// True when a checkpoint has work: a commit since the last durable one was not durable,
    /// or the journal holds frames.
    pub(super) fn checkpoint_due(&self) -> bool {
        self.writer.lock().unsynced || self.journal.lock().as_ref().is_some_and(|j| !j.is_empty())
    }

    /// True when a commit failed and the database waits to be reopened.
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Starts over on a database just (re)opened: the journal replayed into it (unless it is
    /// broken: replaying it now would bring back seqs the log has handed out again), the queue
    /// emptied (the replay committed it), appends allowed again.
    pub(super) fn reset(
        &self,
        db: &Database,
        dir: &Path,
        capacity: u64,
    ) -> Result<(), StorageError> {
        let mut w = self.writer.lock();
        let mut journal = self.journal.lock();
        if !journal.as_ref().is_some_and(Journal::is_broken) {
            *journal = start_journal(db, dir, capacity)?;
        }
        self.queued.lock().clear();
        self.applied.notify_all();
        w.unsynced = false;
        self.failed.store(false, Ordering::Release);
        Ok(())
    }

    /// Lets go of the writer, first committing what is queued; a queue that grows after that
    /// is committed by whoever gets the writer next, or here again when it is free.
    fn release<'a>(&'a self, db: &Database, mut w: MutexGuard<'a, Writer>) {
        loop {
            if !self.failed.load(Ordering::Acquire) {
                if let Err(e) = self.apply_queued(db, &mut w) {
                    warn!(error = %e, "committing journaled appends failed; the database will be reopened");
                }
            }
            drop(w);
            if self.failed.load(Ordering::Acquire) || self.queued.lock().is_empty() {
                return;
            }
            match self.writer.try_lock() {
                Some(again) => w = again,
                None => return,
            }
        }
    }

    /// Commits the queued appends (without a sync) in one transaction.
    fn apply_queued(&self, db: &Database, w: &mut Writer) -> Result<(), StorageError> {
        let frames: Vec<Arc<Frame>> = self.queued.lock().iter().cloned().collect();
        if frames.is_empty() {
            return Ok(());
        }
        let committed = self.commit(db, w, false, None, |tx| {
            frames.iter().try_for_each(|f| f.apply(tx))
        });
        if committed.is_err() {
            // They stay queued and readers wait for them: only a reopen brings them in.
            self.failed.store(true, Ordering::Release);
        }
        committed?;
        self.queued.lock().drain(..frames.len());
        self.applied.notify_all();
        Ok(())
    }

    /// One write transaction; `gen`, when given, is stored as the journal generation in force.
    /// A failed commit marks the database for reopening.
    fn commit<T>(
        &self,
        db: &Database,
        w: &mut Writer,
        durable: bool,
        gen: Option<u64>,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let run = || -> Result<T, StorageError> {
            let mut tx = db.begin_write().map_err(engine_error)?;
            if !durable {
                tx.set_durability(Durability::None).map_err(engine_error)?;
            }
            let out = f(&tx)?;
            if let Some(gen) = gen {
                let mut meta = tx.open_table(META).map_err(engine_error)?;
                meta.insert(JOURNAL_GEN, gen.to_be_bytes().as_slice())
                    .map_err(engine_error)?;
            }
            tx.commit().map_err(engine_error)?;
            Ok(out)
        };
        let out = run();
        match &out {
            Ok(_) => w.unsynced = !durable,
            Err(e) if e.engine_failed() || gen.is_some() => {
                self.failed.store(true, Ordering::Release);
            }
            Err(_) => {}
        }
        out
    }
}

/// The refusal of an append while the database waits to be reopened.
fn reopen_needed() -> StorageError {
    StorageError::Io(std::io::Error::other(
        "an earlier write failed; the database must be reopened",
    ))
}

/// Applies the journal's frames of the generation in force and of the next one to `db` and
/// stores the generation after both in the same durable commit, then readies the journal for
/// `capacity` bytes (or removes it when `capacity` is 0). A database without a generation (new,
/// or of format 2) gets a new journal file first, so no older file's frames can be taken for
/// its own.
pub(super) fn start_journal(
    db: &Database,
    dir: &Path,
    capacity: u64,
) -> Result<Option<Journal>, StorageError> {
    let tx = db.begin_write().map_err(engine_error)?;
    let mut meta = tx.open_table(META).map_err(engine_error)?;
    let in_force = meta
        .get(JOURNAL_GEN)
        .map_err(engine_error)?
        .and_then(|v| be_u64(v.value()));
    let mut replayed = 0;
    match (in_force, Journal::existing(dir)?) {
        (Some(gen), Some(file)) => {
            replayed += journal::replay(&file, gen, &tx)?;
            replayed += journal::replay(&file, gen + 1, &tx)?;
        }
        (None, Some(_)) => journal::remove(dir)?,
        _ => {}
    }
    let next = in_force.map_or(1, |g| g + 2);
    meta.insert(JOURNAL_GEN, next.to_be_bytes().as_slice())
        .map_err(engine_error)?;
    drop(meta);
    tx.commit().map_err(engine_error)?;
    if replayed > 0 {
        info!(frames = replayed, "applied the log's journal");
    }
    if capacity == 0 {
        journal::remove(dir)?;
        return Ok(None);
    }
    Journal::ready(dir, capacity, next).map(Some)
}
