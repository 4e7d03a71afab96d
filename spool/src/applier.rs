//! The applier: the thread that moves the journal's lines into the queue, in batches, and
//! keeps the journal and the database in shape (generations, repairs, checkpoints).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;
use rusqlite::params;

use crate::error::{ApplyError, SqliteError};
use crate::journal::Found;
use crate::open::{Db, Rotation, Shared, BATCH_BYTES};
use crate::queue;
use crate::schema::{self, aside_path};
use crate::sql;
use crate::trouble::Part;
use crate::JOURNAL;

/// Past this many applied bytes a new journal generation starts.
pub(crate) const ROTATE_AT: u64 = 4 << 20;
/// The shortest time between two applies of the journal by the applier (see
/// [`Applier::start`]); records closer together than this go through the applier.
pub(crate) const COALESCE: Duration = Duration::from_millis(5);
/// How soon after a write the applier saves the acks noted in memory and, when records
/// reached the table, checkpoints the WAL into the database file.
const SAVE_AFTER: Duration = Duration::from_secs(1);
/// How soon after a save of acks alone the applier checkpoints the WAL. Such a save only
/// spares records a second delivery, so its checkpoint (an fsync of the WAL and of the
/// database, the WAL cut back) can wait: in a trickle delivered directly from the journal
/// (nothing enters the table), once a minute instead of once a second.
const ACKS_CHECKPOINT_AFTER: Duration = Duration::from_secs(60);
/// The applier's first wait after a failure; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Moves the journal into the queue; see [`start`](Applier::start).
pub struct Applier {
    pub(crate) shared: Arc<Shared>,
}

/// The running applier.
pub struct ApplierThread {
    thread: JoinHandle<()>,
    stop: Arc<StopFlag>,
    shared: Arc<Shared>,
}

/// Set once to end the applier; its waits end at once.
#[derive(Default)]
struct StopFlag {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl StopFlag {
    fn running(&self) -> bool {
        !*self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    /// Waits up to `timeout` or until stopped.
    fn wait(&self, timeout: Duration) {
        let stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(stopped, timeout, |stopped| !*stopped);
    }
}

impl Applier {
    /// Starts the thread that applies the journal as records come, recovering first what
    /// the last run left in it. It sleeps while nothing is appended, and retries (with a
    /// growing wait, the trouble shown in [`Queue::trouble`](crate::Queue::trouble)) while
    /// the queue cannot be written.
    pub fn start(self) -> std::io::Result<ApplierThread> {
        let stop = Arc::new(StopFlag::default());
        let thread = {
            let (shared, stop) = (self.shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("spool".into())
                .spawn(move || shared.run_applier(&stop))?
        };
        Ok(ApplierThread {
            thread,
            stop,
            shared: self.shared,
        })
    }
}

impl ApplierThread {
    /// Applies everything appended so far, checkpoints, notes a clean stop (when the last
    /// apply succeeded) and ends the thread. Append nothing after calling this.
    pub fn stop(self) -> std::thread::Result<()> {
        self.stop.stop();
        self.shared.journal.wake();
        self.thread.join()
    }
}

impl Shared {
    /// Moves journal lines into the queue until none wait (see [`apply_locked`]).
    ///
    /// [`apply_locked`]: Shared::apply_locked
    pub(crate) fn apply(&self) -> Result<usize, ApplyError> {
        self.apply_locked(&mut self.db())
    }

    /// Moves journal lines into the queue until none wait, one batch per transaction (between
    /// two, the queue goes to whoever waits for it); checks the journal file after each batch
    /// and starts a new generation when one is due. Returns how many records it moved. Notes
    /// a failure in `apply_failed`, which keeps the cursors from applying until the applier
    /// succeeds again.
    pub(crate) fn apply_locked(&self, db: &mut MutexGuard<'_, Db>) -> Result<usize, ApplyError> {
        let mut total = 0;
        let mut checked = false;
        let applied = loop {
            let applied = match self.apply_batch(db) {
                Ok(applied) => applied,
                Err(e) => break Err(e),
            };
            // After each batch, and once when there was none (an idle wake-up, the end of a
            // recovery, during which it does nothing).
            if applied.is_some() || !checked {
                checked = db.recovering.is_none();
                if let Err(e) = self.maintain(db) {
                    break Err(e);
                }
            }
            let Some(applied) = applied else {
                break Ok(total);
            };
            total += applied;
            db.applied_at = Some(Instant::now());
            self.appended.notify_all();
            MutexGuard::bump(db);
        };
        db.apply_failed = applied.is_err();
        applied
    }

    /// For a cursor about to wait: applies the journal's tail itself when lines wait there
    /// and nothing else is under way (a recovery, the applier's retries). Returns whether it
    /// moved any record. A failure is left to the applier (woken for it), which retries and
    /// reports it.
    pub(crate) fn apply_waiting(&self, db: &mut MutexGuard<'_, Db>) -> bool {
        if db.recovering.is_some() || db.apply_failed || self.journal.waiting() == 0 {
            return false;
        }
        match self.apply_locked(db) {
            Ok(0) => false,
            Ok(_) => {
                self.want_checkpoint();
                true
            }
            Err(_) => {
                self.journal.wake();
                false
            }
        }
    }

    /// Records reached the table: asks the applier for a checkpoint (which saves the acks
    /// not yet written first), waking it unless it has been asked already.
    pub(crate) fn want_checkpoint(&self) {
        if !self.checkpoint_wanted.swap(true, Ordering::SeqCst) {
            self.journal.wake(); // the applier schedules the checkpoint
        }
    }

    /// Acks were noted in memory: asks the applier to save them, waking it unless it has
    /// been asked already.
    pub(crate) fn want_ack_save(&self) {
        if !self.acks_wanted.swap(true, Ordering::SeqCst) {
            self.journal.wake(); // the applier schedules the save
        }
    }

    /// Applies one batch: lines left by the last run first, then the tail the appends wrote.
    /// `None` when no lines wait.
    fn apply_batch(&self, db: &mut Db) -> Result<Option<usize>, ApplyError> {
        if let Some(recovery) = &db.recovering {
            let bytes = self
                .journal
                .read_lines(db.journal_offset, recovery.to, BATCH_BYTES)?;
            if bytes.is_empty() {
                self.finish_recovery(db);
                return self.apply_batch(db);
            }
            let start = db.journal_offset;
            let next = self.newest.load(Ordering::Relaxed) + 1;
            let applied = self.insert(db, &bytes, start, next)?;
            if let Some(recovery) = &mut db.recovering {
                recovery.applied += applied as u64;
                recovery.records = recovery.records.saturating_sub(applied as u64);
            }
            return Ok(Some(applied));
        }
        let taken = self.journal.take();
        if taken.bytes.is_empty() {
            return Ok(None);
        }
        // Lines a cursor took directly come before these: they go first, under their seqs.
        let (taken, next) = match db.direct.take() {
            None => (taken, self.newest.load(Ordering::Relaxed) + 1),
            Some(direct) => direct.followed_by(taken),
        };
        match self.insert(db, &taken.bytes, taken.start, next) {
            Ok(applied) => Ok(Some(applied)),
            Err(e) => {
                self.journal.give_back(taken);
                // Lines taken directly get their seqs again when they are applied.
                self.newest.fetch_min(next - 1, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    fn finish_recovery(&self, db: &mut Db) {
        if let Some(recovery) = db.recovering.take() {
            if recovery.applied > 0 {
                tracing::info!(
                    "recovered {} records from the spool journal {}",
                    recovery.applied,
                    self.journal_path.display()
                );
            }
        }
    }

    /// Inserts the journal lines `bytes`, which start at `start` in the journal file, under
    /// the seqs from `next` on, in one transaction that also records how far the journal is
    /// applied and saves the acks not yet written.
    pub(crate) fn insert(
        &self,
        db: &mut Db,
        bytes: &[u8],
        start: u64,
        next: i64,
    ) -> Result<usize, SqliteError> {
        let end = start + bytes.len() as u64;
        let skip = db.recovering.as_ref().map(|r| &r.skip);
        let mut applied = 0;
        let mut seq = next;
        let tx = schema::Tx::begin(&db.conn).map_err(|e| self.err(e))?;
        {
            self.save_acks(&tx, db).map_err(|e| self.err(e))?;
            let mut insert = tx.prepare_cached(sql::INSERT).map_err(|e| self.err(e))?;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match parse_line(line) {
                    Some((_, _, id, _)) if skip.is_some_and(|s| s.contains(id)) => {}
                    Some((kind, pushed_at, id, body)) => {
                        let first = (self.evict_first.applies)(kind);
                        insert
                            .execute(params![seq, id, kind, pushed_at, body, first])
                            .map_err(|e| self.err(e))?;
                        seq += 1;
                        applied += 1;
                    }
                    None => tracing::error!(
                        "spool journal {}: skipped an unreadable line: {}",
                        self.journal_path.display(),
                        String::from_utf8_lossy(line).escape_debug()
                    ),
                }
            }
            schema::set_meta(&tx, "journal_offset", end).map_err(|e| self.err(e))?;
            schema::add_pending(&tx, applied as i64).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        queue::acks_saved(db);
        db.journal_offset = end;
        self.pending.fetch_add(applied as u64, Ordering::Relaxed);
        self.newest.fetch_max(seq - 1, Ordering::Relaxed);
        self.evict(db)?;
        Ok(applied)
    }

    /// After a batch: notices a journal file that was removed, cut short or replaced, and
    /// starts a new generation (carrying the lines not yet applied) when one is due.
    fn maintain(&self, db: &mut Db) -> Result<(), ApplyError> {
        if db.recovering.is_some() {
            return Ok(());
        }
        let mut aside = None;
        match self.journal.check() {
            Found::Intact => {}
            Found::Vanished => {
                tracing::warn!(
                    "the spool journal {} was removed while the host ran: writing it afresh from memory (nothing is lost)",
                    self.journal_path.display()
                );
                db.rotate = Some(Rotation::Repair);
            }
            Found::Shrunk { len } => {
                tracing::warn!(
                    "the spool journal {} was cut short to {len} bytes while the host ran: writing it afresh from memory (nothing is lost)",
                    self.journal_path.display()
                );
                db.rotate = Some(Rotation::Repair);
            }
            Found::Replaced => {
                let moved = aside_path(&self.state_dir, JOURNAL, "foreign");
                tracing::warn!(
                    "the spool journal {} was replaced by another file while the host ran: none of its lines are applied; it is kept as {}, and the journal is written afresh from memory (nothing is lost)",
                    self.journal_path.display(),
                    moved.display()
                );
                aside = Some(moved);
                db.rotate = Some(Rotation::Repair);
            }
        }
        if db.rotate.is_none() && db.journal_offset >= ROTATE_AT {
            db.rotate = Some(Rotation::Due);
        }
        if db.rotate.is_some() {
            // The new file carries only the tail: lines taken directly go to the table first.
            self.insert_direct(db)?;
            let generation = db.generation + 1;
            let start = self.journal.rotate(generation, aside.as_deref())?;
            let tx = schema::Tx::begin(&db.conn).map_err(|e| self.err(e))?;
            self.save_acks(&tx, db).map_err(|e| self.err(e))?;
            schema::set_meta(&tx, "generation", generation).map_err(|e| self.err(e))?;
            schema::set_meta(&tx, "journal_offset", start).map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
            queue::acks_saved(db);
            db.generation = generation;
            db.journal_offset = start;
            db.rotate = None;
        }
        Ok(())
    }

    fn run_applier(&self, stop: &StopFlag) {
        let mut save_at: Option<Instant> = None;
        let mut checkpoint_at: Option<Instant> = None;
        let mut last_apply = Instant::now();
        let mut retry = FIRST_RETRY;
        let mut failing = false;
        loop {
            let running = stop.running();
            if running && !failing && self.db().recovering.is_none() {
                self.journal
                    .wait_for_lines(save_at.into_iter().chain(checkpoint_at).min());
            }
            // Under a steady trickle, gather a few records per transaction: a commit costs
            // more than the records in it. An idle spool applies at once.
            let since = last_apply.elapsed();
            if since < COALESCE && running {
                std::thread::sleep(COALESCE - since);
            }
            last_apply = Instant::now();
            if !running {
                // Everything pushed reaches the table before a stop; a failure is the apply's.
                let _ = self.insert_direct(&mut self.db());
            }
            match self.apply() {
                Ok(applied) => {
                    if failing {
                        failing = false;
                        retry = FIRST_RETRY;
                        self.troubles
                            .clear(Part::Apply, "the spool queue takes records again");
                    }
                    if applied > 0 {
                        self.checkpoint_wanted.store(true, Ordering::SeqCst);
                    }
                    if self.checkpoint_wanted.load(Ordering::SeqCst)
                        || self.acks_wanted.load(Ordering::SeqCst)
                    {
                        save_at.get_or_insert_with(|| Instant::now() + SAVE_AFTER);
                    }
                }
                Err(e) => {
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    self.troubles
                        .set(Part::Apply, format!("{e}; records wait in the journal"));
                    tracing::error!(
                        "cannot move records into the spool queue: {e}; they stay in the journal, retrying in {:.1} s",
                        wait.as_secs_f64()
                    );
                    failing = true;
                    if running {
                        stop.wait(wait);
                        continue;
                    }
                }
            }
            if save_at.is_some_and(|at| at <= Instant::now()) || !running {
                // Cleared first: a record applied or acked meanwhile asks for the next save.
                self.acks_wanted.store(false, Ordering::SeqCst);
                let records = self.checkpoint_wanted.swap(false, Ordering::SeqCst);
                if let Err(e) = self.save_acks_now() {
                    tracing::warn!("{e}; acks are saved with the next record");
                }
                let after = if records {
                    Duration::ZERO
                } else {
                    ACKS_CHECKPOINT_AFTER
                };
                let due = Instant::now() + after;
                checkpoint_at = Some(checkpoint_at.map_or(due, |at| at.min(due)));
                save_at = None;
            }
            if checkpoint_at.is_some_and(|at| at <= Instant::now()) || !running {
                if let Err(e) = self.checkpoint() {
                    tracing::warn!("{e}");
                }
                checkpoint_at = None;
            }
            if !running {
                if !failing {
                    self.mark_clean();
                }
                break;
            }
        }
    }

    /// Notes that the journal holds nothing the queue lacks (a clean stop).
    fn mark_clean(&self) {
        let db = self.db();
        if let Err(e) = schema::set_meta(&db.conn, "clean", 1) {
            tracing::warn!("spool {}: {e}", self.path.display());
        }
    }

    /// Copies the WAL into the database file (and fsyncs it), without holding up the queue.
    pub(crate) fn checkpoint(&self) -> Result<(), crate::SqliteError> {
        let conn = self.checkpointer.lock().unwrap_or_else(|e| e.into_inner());
        conn.prepare_cached(sql::CHECKPOINT)
            .and_then(|mut s| s.query_row([], |_| Ok(())))
            .map_err(|e| self.err(e))
    }
}

/// One journal line: `kind \t pushed_at \t id \t body`.
pub(crate) fn parse_line(line: &[u8]) -> Option<(i32, i64, &str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.splitn(4, '\t');
    let kind = fields.next()?.parse().ok()?;
    let pushed_at = fields.next()?.parse().ok()?;
    Some((kind, pushed_at, fields.next()?, fields.next()?))
}
