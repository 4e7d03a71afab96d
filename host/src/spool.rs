//! The spool: every pushed record, durable on disk until the frontend has it.
//!
//! Two files in `state_dir`. `push` appends the record to the [journal](crate::journal) (one
//! `write`, so it survives a crash or SIGKILL of the host once `push` returns; with
//! `spool_fsync: always` also a power loss). The applier moves the journal's lines, in
//! batches, into `spool.sqlite3`: SQLite in WAL mode (bundled, nothing to install), the
//! ordered queue the sender reads and removes from, readable with any SQLite tool. Records
//! leave in the order they came.
//!
//! What goes wrong is handled, never hidden: a journal write that fails is an error for the
//! push (the caller holds the record and retries) and shows in [`Spool::trouble`]; a journal
//! removed, cut short or replaced under the host is written afresh from memory; a journal
//! cut short or restored from a backup while the host was stopped is never applied twice; a
//! database that SQLite calls corrupt is moved aside and rebuilt from what can be read of it
//! and from the journal.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use calllogger_plugin_abi::TimeoutSettings;
use calllogger_plugin_sdk::Backoff;
use parking_lot::{Condvar as FairCondvar, Mutex as FairMutex, MutexGuard};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::journal::{self, Found, Header, Journal, JournalError};
use crate::stop::Stop;

/// Why the spool could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The queue database failed.
    #[error("spool {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Another host holds the state folder.
    #[error("another calllogger is running with the state folder {0}; give each its own settings.state_dir")]
    Busy(PathBuf),
    /// The state folder or its lock file could not be created.
    #[error("cannot create {path} (settings.state_dir): {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database was written by a newer calllogger.
    #[error("spool {path} has layout {found}, newer than this calllogger's {LAYOUT}: run the newer calllogger, or move the file aside")]
    NewerLayout { path: PathBuf, found: i64 },
    /// A reader cannot change the spool.
    #[error("the spool is open read-only here")]
    ReadOnly,
}

/// When commits reach the disk, not just the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Every commit: survives power loss, costs a disk flush per record.
    Always,
    /// At checkpoints: survives a crash of the host, not of the machine.
    Periodic,
}

/// A record waiting for delivery, as JSON with its `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Position in the spool: delivery order.
    pub seq: i64,
    /// The record's unique id (also inside `body`).
    pub id: String,
    pub call_type: i32,
    /// The record's JSON, with `id`.
    pub body: String,
}

/// What the spool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub dead: u64,
    /// Unix seconds the oldest pending record was pushed.
    pub oldest_pending: Option<i64>,
    /// Records in the journal not yet in the queue (the host applies them when it runs).
    pub unapplied: u64,
}

/// Whether this process owns the spool (the running host) or only looks into it (the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes the state folder's lock, recovers the journal, and accepts pushes.
    Owner,
    /// Reads the queue and dead letters; never applies the journal.
    Reader,
}

/// The file name of the spool's queue inside `state_dir`.
pub const FILE: &str = "spool.sqlite3";
/// The file name of the spool's journal inside `state_dir`.
pub const JOURNAL: &str = "spool.journal";
/// The database layout this host writes (`PRAGMA user_version`); 0 was calllogger 0.1's.
const LAYOUT: i64 = 1;
/// Past this many applied bytes a new journal generation starts.
const ROTATE_AT: u64 = 4 << 20;
/// The shortest time between two applies of the journal (see the applier).
const COALESCE: Duration = Duration::from_millis(5);
/// How soon after a write the applier checkpoints the WAL into the database file.
const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);
/// The most journal bytes recovered in one transaction.
const BATCH_BYTES: usize = 256 << 10;
/// The most records one eviction deletes, so that it never holds the queue for long.
const EVICT_CHUNK: u64 = 10_000;
/// How often an ongoing eviction is logged.
const EVICTION_LOG_EVERY: Duration = Duration::from_secs(60);
/// The WAL file is cut back to this size after checkpoints.
const WAL_LIMIT: i64 = 32 << 20;
/// The applier's waits after a failure (it knows no settings: 0.1 s doubling to 5 s).
const APPLY_RETRY: TimeoutSettings = TimeoutSettings {
    timeout: 0.1,
    decay: 2.0,
    max_timeout: 5.0,
};

struct Db {
    conn: Connection,
    /// The journal generation applied from (also in the `meta` table).
    generation: u64,
    /// How far into that generation's file has been applied (also in `meta`).
    journal_offset: u64,
    /// Lines in the journal file that were there at start-up, not yet applied.
    recovering: Option<Recovery>,
    /// Start a new journal generation at the next chance.
    rotate: Option<Rotation>,
    evictions: Evictions,
}

/// Lines of the journal file that the last run left unapplied.
struct Recovery {
    to: u64,
    records: u64,
    /// Ids already in the queue (salvaged from a corrupt database): not inserted twice.
    skip: HashSet<String>,
    applied: u64,
}

/// Why the journal file is written afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rotation {
    Due,
    Repair,
}

#[derive(Default)]
struct Evictions {
    since_log: u64,
    logged_at: Option<Instant>,
}

/// A problem the spool has now, for `/health`.
#[derive(Default)]
struct Troubles {
    /// The journal cannot be written: pushes are held.
    write: Option<(String, Instant)>,
    /// The queue cannot be written: records wait in the journal.
    apply: Option<(String, Instant)>,
}

/// The spool, shared by the instances (which append) and the sender (which removes).
pub struct Spool {
    path: PathBuf,
    state_dir: PathBuf,
    journal_path: PathBuf,
    journal: Option<Journal>,
    /// Fair, so that the applier, busy under load, hands the queue to the sender in turn.
    db: FairMutex<Db>,
    max_records: u64,
    /// Records in the queue (kept with every change, so that nothing counts the table).
    pending: AtomicU64,
    /// Signalled when records reach the queue.
    appended: FairCondvar,
    /// The owner's second connection, which checkpoints the WAL into the database file
    /// outside of `db`'s lock: a checkpoint fsyncs, and must not stall pushes or the sender.
    checkpointer: Option<Mutex<Connection>>,
    troubled: AtomicBool,
    troubles: Mutex<Troubles>,
    _lock: Option<File>,
}

impl Spool {
    /// Opens (or creates) the spool in `state_dir`. The owner takes the folder's lock, checks
    /// the journal against the queue, and leaves what the journal holds beyond the queue
    /// (after a crash) to the applier, so that start-up does not wait for it.
    pub fn open(
        state_dir: &Path,
        fsync: Fsync,
        max_records: u64,
        role: Role,
    ) -> Result<Self, SpoolError> {
        create_private_dir(state_dir)?;
        let lock = match role {
            Role::Owner => Some(lock_state_dir(state_dir)?),
            Role::Reader => None,
        };
        let path = state_dir.join(FILE);
        let journal_path = state_dir.join(JOURNAL);
        let (conn, opened) = match role {
            Role::Owner => open_owned(&path, fsync)?,
            Role::Reader => (open_db(&path).map_err(sqlite(&path))?, Opened::default()),
        };
        let meta = read_meta(&conn, role).map_err(sqlite(&path))?;
        let checkpointer = match role {
            Role::Owner => {
                let second = Connection::open(&path).map_err(sqlite(&path))?;
                second
                    .busy_timeout(Duration::from_secs(10))
                    .map_err(sqlite(&path))?;
                Some(Mutex::new(second))
            }
            Role::Reader => None,
        };
        let mut db = Db {
            conn,
            generation: meta.generation,
            journal_offset: meta.journal_offset,
            recovering: None,
            rotate: None,
            evictions: Evictions::default(),
        };
        let journal = match role {
            Role::Owner => Some(attach_journal(
                &journal_path,
                &mut db,
                &meta,
                opened,
                fsync,
            )?),
            Role::Reader => None,
        };
        Ok(Self {
            path,
            state_dir: state_dir.to_owned(),
            journal_path,
            journal,
            db: FairMutex::new(db),
            max_records,
            pending: AtomicU64::new(meta.pending),
            appended: FairCondvar::new(),
            checkpointer,
            troubled: AtomicBool::new(false),
            troubles: Mutex::default(),
            _lock: lock,
        })
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock()
    }

    fn err(&self, source: rusqlite::Error) -> SpoolError {
        SpoolError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn journal(&self) -> Result<&Journal, SpoolError> {
        self.journal.as_ref().ok_or(SpoolError::ReadOnly)
    }

    /// Stores a record (its JSON with `id`): durable when this returns `Ok`. On an error the
    /// record is not stored (nothing of it stays in the journal): hold it and try again.
    pub fn append(&self, id: &str, call_type: i32, body: &str) -> Result<(), SpoolError> {
        let pushed_at = jiff::Timestamp::now().as_second();
        let line = format!("{call_type}\t{pushed_at}\t{id}\t{body}\n");
        match self.journal()?.append(line.as_bytes()) {
            Ok(()) => {
                if self.troubled.load(Ordering::Relaxed) {
                    self.clear_trouble(|t| &mut t.write, "the spool journal takes records again");
                }
                Ok(())
            }
            Err(e) => {
                self.set_trouble(
                    |t| &mut t.write,
                    format!("{e}; pushes are held until it can"),
                );
                Err(e.into())
            }
        }
    }

    fn set_trouble(
        &self,
        slot: impl Fn(&mut Troubles) -> &mut Option<(String, Instant)>,
        what: String,
    ) {
        let mut troubles = self.troubles.lock().unwrap_or_else(|e| e.into_inner());
        let entry = slot(&mut troubles);
        match entry {
            Some((old, _)) => *old = what,
            None => *entry = Some((what, Instant::now())),
        }
        self.troubled.store(true, Ordering::Relaxed);
    }

    fn clear_trouble(
        &self,
        slot: impl Fn(&mut Troubles) -> &mut Option<(String, Instant)>,
        resolved: &str,
    ) {
        let mut troubles = self.troubles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, since)) = slot(&mut troubles).take() {
            tracing::info!(
                "{resolved} (after {:.1} s; nothing was lost)",
                since.elapsed().as_secs_f64()
            );
        }
        let any = troubles.write.is_some() || troubles.apply.is_some();
        self.troubled.store(any, Ordering::Relaxed);
    }

    /// What keeps the spool from taking or storing records right now, with for how long.
    pub fn trouble(&self) -> Vec<String> {
        if !self.troubled.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let troubles = self.troubles.lock().unwrap_or_else(|e| e.into_inner());
        [&troubles.write, &troubles.apply]
            .into_iter()
            .flatten()
            .map(|(what, since)| format!("{what} (for {} s)", since.elapsed().as_secs()))
            .collect()
    }

    /// Moves journal lines into the queue until none wait, one batch per transaction (the
    /// queue stays usable in between); starts a new journal generation when one is due.
    /// Returns how many records it moved.
    pub fn apply(&self) -> Result<usize, SpoolError> {
        let journal = self.journal()?;
        let mut total = 0;
        loop {
            let mut db = self.db();
            let applied = self.apply_batch(journal, &mut db)?;
            self.maintain(journal, &mut db)?;
            MutexGuard::unlock_fair(db);
            let Some(applied) = applied else {
                return Ok(total);
            };
            total += applied;
            self.appended.notify_all();
        }
    }

    /// Applies one batch: lines left by the last run first, then the tail the pushes wrote.
    /// `None` when no lines wait.
    fn apply_batch(&self, journal: &Journal, db: &mut Db) -> Result<Option<usize>, SpoolError> {
        if let Some(recovery) = &db.recovering {
            let bytes = journal.read_lines(db.journal_offset, recovery.to, BATCH_BYTES)?;
            if bytes.is_empty() {
                self.finish_recovery(db);
                return self.apply_batch(journal, db);
            }
            let start = db.journal_offset;
            let applied = self.insert(db, &bytes, start)?;
            if let Some(recovery) = &mut db.recovering {
                recovery.applied += applied as u64;
                recovery.records = recovery.records.saturating_sub(applied as u64);
            }
            return Ok(Some(applied));
        }
        let taken = journal.take();
        if taken.bytes.is_empty() {
            return Ok(None);
        }
        match self.insert(db, &taken.bytes, taken.start) {
            Ok(applied) => Ok(Some(applied)),
            Err(e) => {
                journal.give_back(taken);
                Err(e)
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

    /// Inserts the journal lines `bytes`, which start at `start` in the journal file, in one
    /// transaction that also records how far the journal is applied.
    fn insert(&self, db: &mut Db, bytes: &[u8], start: u64) -> Result<usize, SpoolError> {
        let end = start + bytes.len() as u64;
        let skip = db.recovering.as_ref().map(|r| &r.skip);
        let mut applied = 0;
        let tx = db.conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO pending (id, call_type, pushed_at, body) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.err(e))?;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match parse_line(line) {
                    Some((_, _, id, _)) if skip.is_some_and(|s| s.contains(id)) => {}
                    Some((call_type, pushed_at, id, body)) => {
                        insert
                            .execute(params![id, call_type, pushed_at, body])
                            .map_err(|e| self.err(e))?;
                        applied += 1;
                    }
                    None => tracing::error!(
                        "spool journal {}: skipped an unreadable line: {}",
                        self.journal_path.display(),
                        String::from_utf8_lossy(line).escape_debug()
                    ),
                }
            }
            set_meta(&tx, "journal_offset", end).map_err(|e| self.err(e))?;
            add_pending(&tx, applied as i64).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        db.journal_offset = end;
        self.pending.fetch_add(applied as u64, Ordering::Relaxed);
        self.evict(db)?;
        Ok(applied)
    }

    /// After a batch: notices a journal file that was removed, cut short or replaced, and
    /// starts a new generation (carrying the lines not yet applied) when one is due.
    fn maintain(&self, journal: &Journal, db: &mut Db) -> Result<(), SpoolError> {
        if db.recovering.is_some() {
            return Ok(());
        }
        let mut aside = None;
        match journal.check() {
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
                let moved = self.aside(JOURNAL, "foreign");
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
            let generation = db.generation + 1;
            let start = journal.rotate(generation, aside.as_deref())?;
            let tx = db.conn.transaction().map_err(|e| self.err(e))?;
            set_meta(&tx, "generation", generation).map_err(|e| self.err(e))?;
            set_meta(&tx, "journal_offset", start).map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
            db.generation = generation;
            db.journal_offset = start;
            db.rotate = None;
        }
        Ok(())
    }

    /// A path beside the spool's files for `file` moved out of the way: `file.<why>-<unix time>`.
    fn aside(&self, file: &str, why: &str) -> PathBuf {
        aside_path(&self.state_dir, file, why)
    }

    /// Over the cap: drops the oldest INCOMING ("ringing now") records first, then the oldest;
    /// at most [`EVICT_CHUNK`] at a time, so that the queue is never held for long.
    fn evict(&self, db: &mut Db) -> Result<(), SpoolError> {
        let pending = self.pending.load(Ordering::Relaxed);
        if pending <= self.max_records {
            return Ok(());
        }
        // A little more than needed, so that this runs once per batch, not per record.
        let excess =
            (pending - self.max_records + (self.max_records / 100).max(1)).min(EVICT_CHUNK);
        let tx = db.conn.transaction().map_err(|e| self.err(e))?;
        let incoming = tx
            .execute(
                "DELETE FROM pending WHERE seq IN (SELECT seq FROM pending WHERE call_type = 0 ORDER BY seq LIMIT ?1)",
                [excess],
            )
            .map_err(|e| self.err(e))? as u64;
        let oldest = tx
            .execute(
                "DELETE FROM pending WHERE seq IN (SELECT seq FROM pending ORDER BY seq LIMIT ?1)",
                [excess - incoming],
            )
            .map_err(|e| self.err(e))? as u64;
        add_pending(&tx, -((incoming + oldest) as i64)).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        self.pending.fetch_sub(incoming + oldest, Ordering::Relaxed);
        let log = &mut db.evictions;
        log.since_log += incoming + oldest;
        if log
            .logged_at
            .is_none_or(|at| at.elapsed() >= EVICTION_LOG_EVERY)
        {
            tracing::warn!(
                "spool full ({} records, settings.spool_max_records): evicted {} records (ringing INCOMING ones first, then the oldest){}",
                self.max_records,
                log.since_log,
                if log.logged_at.is_some() { " since the last such message" } else { "" }
            );
            log.since_log = 0;
            log.logged_at = Some(Instant::now());
        }
        Ok(())
    }

    /// Starts the thread that applies the journal as records come, until `stop`; it applies
    /// everything left before it ends. It sleeps while nothing is pushed.
    pub fn start_applier(self: &Arc<Self>, stop: Arc<Stop>) -> std::io::Result<JoinHandle<()>> {
        let spool = self.clone();
        std::thread::Builder::new()
            .name("spool".into())
            .spawn(move || spool.run_applier(&stop))
    }

    fn run_applier(&self, stop: &Stop) {
        let Ok(journal) = self.journal() else {
            return;
        };
        let mut checkpoint_at: Option<Instant> = None;
        let mut last_apply = Instant::now();
        let mut retry = Backoff::new(APPLY_RETRY);
        let mut failing = false;
        loop {
            let running = stop.running();
            if running && !failing && self.db().recovering.is_none() {
                journal.wait_for_lines(checkpoint_at);
            }
            // Under a steady trickle, gather a few records per transaction: a commit costs
            // more than the records in it. An idle spool applies at once.
            let since = last_apply.elapsed();
            if since < COALESCE && running {
                std::thread::sleep(COALESCE - since);
            }
            last_apply = Instant::now();
            match self.apply() {
                Ok(applied) => {
                    if failing {
                        failing = false;
                        retry.reset();
                        self.clear_trouble(|t| &mut t.apply, "the spool queue takes records again");
                    }
                    if applied > 0 {
                        checkpoint_at.get_or_insert_with(|| Instant::now() + CHECKPOINT_AFTER);
                    }
                }
                Err(e) => {
                    let wait = retry.advance();
                    self.set_trouble(
                        |t| &mut t.apply,
                        format!("{e}; records wait in the journal"),
                    );
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
        if let Err(e) = set_meta(&db.conn, "clean", 1) {
            tracing::warn!("spool {}: {e}", self.path.display());
        }
    }

    /// Copies the WAL into the database file (and fsyncs it), without holding up the queue.
    fn checkpoint(&self) -> Result<(), SpoolError> {
        if let Some(checkpointer) = &self.checkpointer {
            let conn = checkpointer.lock().unwrap_or_else(|e| e.into_inner());
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Wakes the applier, e.g. to let it see a stop.
    pub fn wake_applier(&self) {
        if let Some(journal) = &self.journal {
            journal.wake();
        }
    }

    /// The oldest `limit` pending records, in order.
    pub fn oldest(&self, limit: usize) -> Result<Vec<Pending>, SpoolError> {
        self.select(
            "SELECT seq, id, call_type, body FROM pending ORDER BY seq LIMIT ?1",
            params![limit as i64],
        )
    }

    /// The newest `limit` pending records, oldest first (for `spool tail`).
    pub fn newest(&self, limit: usize) -> Result<Vec<Pending>, SpoolError> {
        let mut newest_first = self.select(
            "SELECT seq, id, call_type, body FROM pending ORDER BY seq DESC LIMIT ?1",
            params![limit as i64],
        )?;
        newest_first.reverse();
        Ok(newest_first)
    }

    /// Pending records after `seq`, in order (for `spool tail --follow`).
    pub fn after(&self, seq: i64, limit: usize) -> Result<Vec<Pending>, SpoolError> {
        self.select(
            "SELECT seq, id, call_type, body FROM pending WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![seq, limit as i64],
        )
    }

    fn select(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Pending>, SpoolError> {
        let db = self.db();
        let mut query = db.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = query
            .query_map(params, |r| {
                Ok(Pending {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    call_type: r.get(2)?,
                    body: r.get(3)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e));
        rows
    }

    /// Removes delivered records.
    pub fn remove(&self, seqs: &[i64]) -> Result<(), SpoolError> {
        let mut db = self.db();
        let tx = db.conn.transaction().map_err(|e| self.err(e))?;
        let mut removed = 0;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM pending WHERE seq = ?1")
                .map_err(|e| self.err(e))?;
            for seq in seqs {
                removed += delete.execute([seq]).map_err(|e| self.err(e))? as u64;
            }
        }
        add_pending(&tx, -(removed as i64)).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        self.pending.fetch_sub(removed, Ordering::Relaxed);
        Ok(())
    }

    /// Moves a record the frontend refused into the dead letters, with the status and the
    /// first 1 kB of the response.
    pub fn bury(&self, seq: i64, status: u16, response: &str) -> Result<(), SpoolError> {
        let response: String = response.chars().take(1024).collect();
        let mut db = self.db();
        let tx = db.conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO dead (seq, id, call_type, pushed_at, body, status, response, failed_at)
             SELECT seq, id, call_type, pushed_at, body, ?2, ?3, unixepoch() FROM pending WHERE seq = ?1",
            params![seq, status, response],
        )
        .map_err(|e| self.err(e))?;
        let removed = tx
            .execute("DELETE FROM pending WHERE seq = ?1", [seq])
            .map_err(|e| self.err(e))? as u64;
        add_pending(&tx, -(removed as i64)).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        self.pending.fetch_sub(removed, Ordering::Relaxed);
        Ok(())
    }

    /// Puts every dead letter back in line, in its old place; returns how many.
    pub fn retry_dead(&self) -> Result<u64, SpoolError> {
        let mut db = self.db();
        let tx = db.conn.transaction().map_err(|e| self.err(e))?;
        let moved = tx
            .execute(
                "INSERT INTO pending (seq, id, call_type, pushed_at, body)
                 SELECT seq, id, call_type, pushed_at, body FROM dead",
                [],
            )
            .map_err(|e| self.err(e))? as u64;
        tx.execute("DELETE FROM dead", [])
            .map_err(|e| self.err(e))?;
        add_pending(&tx, moved as i64).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        drop(db);
        self.pending.fetch_add(moved, Ordering::Relaxed);
        self.appended.notify_all();
        Ok(moved)
    }

    /// Pending and dead counts, the age of the oldest pending record, and what the journal
    /// holds beyond the queue. Cheap at any queue length.
    pub fn counts(&self) -> Result<Counts, SpoolError> {
        let db = self.db();
        let oldest_pending = db
            .conn
            .query_row(
                "SELECT pushed_at FROM pending ORDER BY seq LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let dead = db
            .conn
            .query_row("SELECT count(*) FROM dead", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let unapplied = match &self.journal {
            Some(journal) => journal.waiting() + db.recovering.as_ref().map_or(0, |r| r.records),
            None => self.unapplied_on_disk(&db)?,
        };
        Ok(Counts {
            pending: self.pending.load(Ordering::Relaxed),
            dead,
            oldest_pending,
            unapplied,
        })
    }

    /// For readers: lines in the journal file past what the queue has applied.
    fn unapplied_on_disk(&self, db: &Db) -> Result<u64, SpoolError> {
        let read = |source| {
            SpoolError::Journal(JournalError::Read {
                path: self.journal_path.clone(),
                source,
            })
        };
        let from = match Header::read(&self.journal_path).map_err(read)? {
            Header::Generation(g) if g == db.generation => db.journal_offset,
            Header::Generation(g) if g == db.generation + 1 => journal::header_line(g).len() as u64,
            Header::Legacy if db.generation == 0 => db.journal_offset,
            _ => return Ok(0),
        };
        let bytes = journal::read_to_end(&self.journal_path, from).map_err(read)?;
        Ok(bytes.iter().filter(|b| **b == b'\n').count() as u64)
    }

    /// How many records are pending in the queue (kept as they come and go).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Blocks until records reach the queue or `timeout` passes.
    pub fn wait_for_append(&self, timeout: Duration) {
        let mut db = self.db();
        self.appended.wait_for(&mut db, timeout);
    }

    /// Wakes every [`wait_for_append`](Spool::wait_for_append), e.g. to shut down.
    pub fn wake(&self) {
        self.appended.notify_all();
    }
}

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> SpoolError + '_ {
    move |source| SpoolError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// The state folder, created owner-only if missing.
fn create_private_dir(state_dir: &Path) -> Result<(), SpoolError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(state_dir)
        .map_err(|source| SpoolError::Folder {
            path: state_dir.to_owned(),
            source,
        })
}

fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// What opening the owner's database found.
#[derive(Debug, Default, Clone, Copy)]
struct Opened {
    /// A new database: nothing was in the queue before.
    fresh: bool,
    /// The old database was unreadable and moved aside; this many records were read out of it.
    salvaged: Option<u64>,
}

/// Opens the owner's database: the layout brought up to date, the WAL set up; a database
/// SQLite calls corrupt moved aside and replaced by a new one holding what could be read.
fn open_owned(path: &Path, fsync: Fsync) -> Result<(Connection, Opened), SpoolError> {
    match open_layout(path, fsync) {
        Ok(opened) => Ok(opened),
        Err(SpoolError::Sqlite { source, .. }) if is_corrupt(&source) => {
            let state_dir = path.parent().unwrap_or(Path::new("."));
            let aside = aside_path(state_dir, FILE, "corrupt");
            std::fs::rename(path, &aside).map_err(|e| SpoolError::Folder {
                path: aside.clone(),
                source: e,
            })?;
            for suffix in ["-wal", "-shm"] {
                let mut from = path.as_os_str().to_owned();
                from.push(suffix);
                let mut to = aside.as_os_str().to_owned();
                to.push(suffix);
                let _ = std::fs::rename(&from, &to);
            }
            tracing::error!(
                "the spool database {} is corrupt ({source}): moved it to {} and rebuilding the queue from what can be read of it and from the journal",
                path.display(),
                aside.display()
            );
            let (conn, _) = open_layout(path, fsync)?;
            let salvaged = salvage(&aside, &conn).map_err(sqlite(path))?;
            Ok((
                conn,
                Opened {
                    fresh: true,
                    salvaged: Some(salvaged),
                },
            ))
        }
        Err(e) => Err(e),
    }
}

fn is_corrupt(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Opens `path` and creates or upgrades its tables to [`LAYOUT`].
fn open_layout(path: &Path, fsync: Fsync) -> Result<(Connection, Opened), SpoolError> {
    let err = sqlite(path);
    let mut conn = open_db(path).map_err(&err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(&err)?;
    let synchronous = match fsync {
        Fsync::Always => "FULL",
        Fsync::Periodic => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(&err)?;
    // A small page cache: the queue is written and read at its two ends only.
    conn.pragma_update(None, "cache_size", -256).map_err(&err)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(&err)?;
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT)
        .map_err(&err)?;
    let layout: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(&err)?;
    if layout > LAYOUT {
        return Err(SpoolError::NewerLayout {
            path: path.to_owned(),
            found: layout,
        });
    }
    let tx = conn.transaction().map_err(&err)?;
    let fresh = layout == 0
        && tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(&err)?
            == 0;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS pending (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             id TEXT NOT NULL,
             call_type INTEGER NOT NULL,
             pushed_at INTEGER NOT NULL,
             body TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS dead (
             seq INTEGER PRIMARY KEY,
             id TEXT NOT NULL,
             call_type INTEGER NOT NULL,
             pushed_at INTEGER NOT NULL,
             body TEXT NOT NULL,
             status INTEGER NOT NULL,
             response TEXT NOT NULL,
             failed_at INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS pending_incoming ON pending (seq) WHERE call_type = 0;
         INSERT OR IGNORE INTO meta VALUES ('journal_offset', 0), ('generation', 0), ('clean', 1);",
    )
    .map_err(&err)?;
    if layout < 1 {
        // Layout 0 kept no count: take it once.
        tx.execute(
            "INSERT OR REPLACE INTO meta VALUES ('pending', (SELECT count(*) FROM pending))",
            [],
        )
        .map_err(&err)?;
        tx.pragma_update(None, "user_version", LAYOUT)
            .map_err(&err)?;
    }
    tx.commit().map_err(&err)?;
    Ok((
        conn,
        Opened {
            fresh,
            salvaged: None,
        },
    ))
}

/// Copies what can be read of the corrupt database at `aside` into `conn`; returns how many
/// records it copied.
fn salvage(aside: &Path, conn: &Connection) -> rusqlite::Result<u64> {
    let Ok(old) = Connection::open_with_flags(aside, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Ok(0);
    };
    let mut copied = 0;
    for (table, columns) in [
        ("pending", "seq, id, call_type, pushed_at, body"),
        (
            "dead",
            "seq, id, call_type, pushed_at, body, status, response, failed_at",
        ),
    ] {
        let Ok(mut select) = old.prepare(&format!("SELECT {columns} FROM {table} ORDER BY seq"))
        else {
            continue;
        };
        let width = columns.split(',').count();
        let Ok(mut rows) = select.query([]) else {
            continue;
        };
        let placeholders = vec!["?"; width].join(", ");
        let mut insert = conn.prepare(&format!(
            "INSERT OR IGNORE INTO {table} ({columns}) VALUES ({placeholders})"
        ))?;
        // Row by row until the first unreadable page.
        while let Ok(Some(row)) = rows.next() {
            let values: rusqlite::Result<Vec<rusqlite::types::Value>> =
                (0..width).map(|i| row.get(i)).collect();
            let Ok(values) = values else { break };
            copied += insert.execute(rusqlite::params_from_iter(values))? as u64;
        }
    }
    conn.execute(
        "UPDATE meta SET value = (SELECT count(*) FROM pending) WHERE key = 'pending'",
        [],
    )?;
    Ok(copied)
}

/// The `meta` table's figures.
#[derive(Debug, Default)]
struct Meta {
    generation: u64,
    journal_offset: u64,
    pending: u64,
    clean: bool,
}

fn read_meta(conn: &Connection, role: Role) -> rusqlite::Result<Meta> {
    let value = |key: &str| -> rusqlite::Result<Option<u64>> {
        match conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
        {
            // A reader may open a spool that has no tables yet.
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => {
                Ok(None)
            }
            other => other,
        }
    };
    let pending = match value("pending")? {
        Some(pending) => pending,
        // A reader of a layout-0 spool counts.
        None if role == Role::Reader => conn
            .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))
            .or_else(|e| match &e {
                rusqlite::Error::SqliteFailure(_, Some(m)) if m.contains("no such table") => Ok(0),
                _ => Err(e),
            })?,
        None => 0,
    };
    Ok(Meta {
        generation: value("generation")?.unwrap_or(0),
        journal_offset: value("journal_offset")?.unwrap_or(0),
        pending,
        clean: value("clean")?.unwrap_or(1) == 1,
    })
}

fn set_meta(conn: &Connection, key: &str, value: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta VALUES (?1, ?2)")?
        .execute(params![key, value])
        .map(drop)
}

fn add_pending(conn: &Connection, delta: i64) -> rusqlite::Result<()> {
    if delta != 0 {
        conn.prepare_cached("UPDATE meta SET value = value + ?1 WHERE key = 'pending'")?
            .execute([delta])?;
    }
    Ok(())
}

/// `state_dir/file.<why>-<unix time>`: where a file that cannot be used is kept for a person.
fn aside_path(state_dir: &Path, file: &str, why: &str) -> PathBuf {
    state_dir.join(format!(
        "{file}.{why}-{}",
        jiff::Timestamp::now().as_second()
    ))
}

/// Opens the journal and decides, from its header and the database's record of it, what of
/// it still has to be applied; every case a person caused is said in the log.
fn attach_journal(
    path: &Path,
    db: &mut Db,
    meta: &Meta,
    opened: Opened,
    fsync: Fsync,
) -> Result<Journal, SpoolError> {
    let fsync = fsync == Fsync::Always;
    let header = Header::read(path).map_err(|source| JournalError::Read {
        path: path.to_owned(),
        source,
    })?;
    let state_dir = path.parent().unwrap_or(Path::new("."));
    let start_of = |generation: u64| -> u64 {
        if generation == 0 {
            0
        } else {
            journal::header_line(generation).len() as u64
        }
    };
    // (generation to resume, offset to apply from), or None for a fresh generation.
    let resume = match header {
        Header::Missing => {
            if !opened.fresh && !meta.clean {
                tracing::warn!(
                    "the spool journal {} is missing after an unclean stop: records pushed just before that stop which had not yet reached {FILE} are lost",
                    path.display()
                );
            } else if !opened.fresh && (meta.generation > 0 || meta.journal_offset > 0) {
                tracing::warn!(
                    "the spool journal {} is missing; the last stop was clean, so nothing is lost: starting a new one",
                    path.display()
                );
            }
            None
        }
        _ if opened.fresh && opened.salvaged.is_some() => match header {
            Header::Generation(g) => Some((g, start_of(g))),
            Header::Legacy => Some((0, 0)),
            _ => None,
        },
        Header::Legacy if meta.generation == 0 => Some((0, meta.journal_offset)),
        Header::Generation(g) if g == meta.generation && !opened.fresh => {
            Some((g, meta.journal_offset))
        }
        Header::Generation(g) if g == meta.generation + 1 || opened.fresh => {
            // A crash came between starting generation g and noting it: the one before was
            // applied whole. Or a new database beside an old journal: apply it all.
            if opened.fresh {
                tracing::warn!(
                    "the spool journal {} has no queue beside it: applying all of it (records delivered before may be sent again; the frontend drops duplicates by id)",
                    path.display()
                );
            }
            Some((g, start_of(g)))
        }
        Header::Generation(_) | Header::Legacy | Header::Foreign => {
            let aside = aside_path(state_dir, JOURNAL, "foreign");
            std::fs::rename(path, &aside).map_err(|source| JournalError::Create {
                path: aside.clone(),
                source,
            })?;
            tracing::warn!(
                "the spool journal {} is not the one {FILE} was written from (its header does not match): none of it is applied; kept as {}",
                path.display(),
                aside.display()
            );
            None
        }
    };
    let journal = match resume {
        Some((generation, from)) => {
            let (journal, len) = Journal::resume(path, generation, fsync)?;
            if len < from {
                tracing::warn!(
                    "the spool journal {} is shorter ({len} bytes) than the part already applied ({from} bytes): it was cut short or restored from a backup; none of it is applied again",
                    path.display()
                );
                db.rotate = Some(Rotation::Repair);
            } else if len > from {
                db.recovering = Some(Recovery {
                    to: len,
                    records: count_lines(&journal, from, len)?,
                    skip: HashSet::new(),
                    applied: 0,
                });
            }
            if generation == 0 {
                // A calllogger 0.1 journal: start generations once it is applied.
                db.rotate = Some(Rotation::Repair);
            }
            db.generation = generation;
            db.journal_offset = from.min(len);
            journal
        }
        None => {
            let generation = meta.generation + 1;
            let (journal, start) = Journal::create(path, generation, fsync)?;
            db.generation = generation;
            db.journal_offset = start;
            journal
        }
    };
    if let Some(salvaged) = opened.salvaged {
        let skip: HashSet<String> = db
            .conn
            .prepare("SELECT id FROM pending UNION SELECT id FROM dead")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(sqlite(path))?;
        tracing::warn!(
            "read {salvaged} records out of the corrupt spool database; the journal's records not among them are applied next; records that were only in unreadable parts of it are lost"
        );
        if let Some(recovery) = &mut db.recovering {
            recovery.skip = skip;
        }
    }
    let tx = db.conn.transaction().map_err(sqlite(path))?;
    set_meta(&tx, "generation", db.generation).map_err(sqlite(path))?;
    set_meta(&tx, "journal_offset", db.journal_offset).map_err(sqlite(path))?;
    set_meta(&tx, "clean", 0).map_err(sqlite(path))?;
    tx.commit().map_err(sqlite(path))?;
    Ok(journal)
}

/// How many lines the journal file holds between `from` and `to`, read a piece at a time.
fn count_lines(journal: &Journal, mut from: u64, to: u64) -> Result<u64, JournalError> {
    let mut lines = 0;
    while from < to {
        let bytes = journal.read_lines(from, to, BATCH_BYTES)?;
        if bytes.is_empty() {
            break;
        }
        lines += bytes.iter().filter(|b| **b == b'\n').count() as u64;
        from += bytes.len() as u64;
    }
    Ok(lines)
}

/// One journal line: `call_type \t pushed_at \t id \t body`.
fn parse_line(line: &[u8]) -> Option<(i32, i64, &str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.splitn(4, '\t');
    let call_type = fields.next()?.parse().ok()?;
    let pushed_at = fields.next()?.parse().ok()?;
    Some((call_type, pushed_at, fields.next()?, fields.next()?))
}

/// Takes the state folder's lock, so that two hosts never share one spool.
fn lock_state_dir(state_dir: &Path) -> Result<File, SpoolError> {
    let path = state_dir.join("calllogger.lock");
    let fail = |source| SpoolError::Folder {
        path: path.clone(),
        source,
    };
    let file = File::create(&path).map_err(fail)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SpoolError::Busy(state_dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests;
