//! The spool: every pushed record, durable on disk until the frontend has it.
//!
//! Two files in `state_dir`. `push` appends the record to the [journal](crate::journal) (one
//! `write`, so it survives a crash or SIGKILL of the host once `push` returns; with
//! `spool_fsync: always` also a power loss). The applier moves journal lines, in batches,
//! into `spool.sqlite3`: SQLite in WAL mode (bundled, nothing to install), the ordered queue
//! the sender reads and removes from, readable with any SQLite tool. Records leave in the
//! order they came.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use parking_lot::{Condvar as FairCondvar, Mutex as FairMutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection};

use crate::journal::{self, Journal};
use crate::stop::Stop;
/// Why the spool could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("another calllogger is running with the state folder {0}; give each its own settings.state_dir")]
    Busy(PathBuf),
    #[error("cannot create the state folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
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

struct Db {
    conn: Connection,
    /// How far into the journal has been applied (also in the `meta` table).
    journal_offset: u64,
}

/// The spool, shared by the instances (which append) and the sender (which removes).
pub struct Spool {
    path: PathBuf,
    journal_path: PathBuf,
    journal: Option<Journal>,
    /// Fair, so that the applier, busy under load, hands the queue to the sender in turn.
    db: FairMutex<Db>,
    max_records: u64,
    /// Signalled when records reach the queue.
    appended: FairCondvar,
    /// Set when the journal has lines to apply.
    journaled: (Mutex<bool>, Condvar),
    /// The owner's second connection, which checkpoints the WAL into the database file
    /// outside of `db`'s lock: a checkpoint fsyncs, and must not stall pushes or the sender.
    checkpointer: Option<Mutex<Connection>>,
    _lock: Option<File>,
}

/// The file name of the spool's queue inside `state_dir`.
pub const FILE: &str = "spool.sqlite3";
/// The file name of the spool's journal inside `state_dir`.
pub const JOURNAL: &str = "spool.journal";
/// Past this many applied bytes the journal is emptied.
const ROTATE_AT: u64 = 4 << 20;
/// The shortest time between two applies of the journal (see the applier).
const COALESCE: Duration = Duration::from_millis(5);
/// How often the applier checkpoints the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The most journal bytes applied in one transaction.
const BATCH_BYTES: usize = 64 << 10;

impl Spool {
    /// Opens (or creates) the spool in `state_dir`. The owner also recovers what the journal
    /// holds beyond the queue (after a crash).
    pub fn open(
        state_dir: &Path,
        fsync: Fsync,
        max_records: u64,
        role: Role,
    ) -> Result<Self, SpoolError> {
        let folder = |source| SpoolError::Folder {
            path: state_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(folder)?;
        let lock = match role {
            Role::Owner => Some(lock_state_dir(state_dir)?),
            Role::Reader => None,
        };
        let path = state_dir.join(FILE);
        let err = |source| SpoolError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        let synchronous = match fsync {
            Fsync::Always => "FULL",
            Fsync::Periodic => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(err)?;
        // A small page cache: the queue is written and read at its two ends only.
        conn.pragma_update(None, "cache_size", -256).map_err(err)?;
        conn.execute_batch(
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
             INSERT OR IGNORE INTO meta VALUES ('journal_offset', 0);",
        )
        .map_err(err)?;
        let journal_offset: u64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'journal_offset'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let checkpointer = match role {
            Role::Owner => {
                conn.pragma_update(None, "wal_autocheckpoint", 0)
                    .map_err(err)?;
                let second = Connection::open(&path).map_err(err)?;
                second.busy_timeout(Duration::from_secs(10)).map_err(err)?;
                Some(Mutex::new(second))
            }
            Role::Reader => None,
        };
        let journal_path = state_dir.join(JOURNAL);
        let journal = match role {
            Role::Owner => {
                Some(Journal::open(&journal_path, fsync == Fsync::Always).map_err(folder)?)
            }
            Role::Reader => None,
        };
        let spool = Self {
            path,
            journal_path,
            journal,
            db: FairMutex::new(Db {
                conn,
                journal_offset,
            }),
            max_records,
            appended: FairCondvar::new(),
            journaled: (Mutex::new(false), Condvar::new()),
            checkpointer,
            _lock: lock,
        };
        if role == Role::Owner {
            spool.recover()?;
        }
        Ok(spool)
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

    fn io(&self, source: std::io::Error) -> SpoolError {
        SpoolError::Folder {
            path: self.journal_path.clone(),
            source,
        }
    }

    /// Applies what a crash left in the journal.
    fn recover(&self) -> Result<(), SpoolError> {
        let journal = self.journal.as_ref().expect("the owner has the journal");
        let len = journal.len().map_err(|e| self.io(e))?;
        let mut db = self.db();
        if db.journal_offset > len {
            // Emptied, but the crash came before the queue noted it: nothing was appended since.
            self.set_offset(&mut db, 0)?;
        }
        drop(db);
        let applied = self.apply()?;
        if applied > 0 {
            tracing::info!("recovered {applied} records from the spool journal");
        }
        Ok(())
    }

    /// Stores a record (its JSON with `id`): durable when this returns.
    pub fn append(&self, id: &str, call_type: i32, body: &str) -> Result<(), SpoolError> {
        let journal = self.journal.as_ref().expect("only the owner appends");
        let pushed_at = jiff::Timestamp::now().as_second();
        let line = format!("{call_type}\t{pushed_at}\t{id}\t{body}\n");
        journal.append(line.as_bytes()).map_err(|e| self.io(e))?;
        let (flag, wake) = &self.journaled;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_one();
        Ok(())
    }

    /// Moves journal lines into the queue until the journal is applied, one batch per
    /// transaction (the queue stays usable in between); empties the journal once it is long.
    /// Returns how many records it moved.
    pub fn apply(&self) -> Result<usize, SpoolError> {
        let mut total = 0;
        loop {
            let mut db = self.db();
            let batch = self.apply_batch(&mut db)?;
            if db.journal_offset >= ROTATE_AT {
                // Hold off pushes, take the rest, and start the journal afresh.
                let journal = self.journal.as_ref().expect("only the owner applies");
                let file = journal.hold();
                while let Some(applied) = self.apply_batch(&mut db)? {
                    total += applied;
                }
                file.set_len(0).map_err(|e| self.io(e))?;
                self.set_offset(&mut db, 0)?;
            }
            MutexGuard::unlock_fair(db);
            let Some(applied) = batch else {
                return Ok(total);
            };
            total += applied;
            self.appended.notify_all();
        }
    }

    /// Over the cap: drops the oldest INCOMING ("ringing now") records first, then the oldest.
    fn evict(&self, db: &Connection) -> Result<(), SpoolError> {
        // The cheap upper bound first; the exact count (a full scan) only near the cap.
        if span(db).map_err(|e| self.err(e))? <= self.max_records {
            return Ok(());
        }
        let pending: u64 = db
            .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if pending <= self.max_records {
            return Ok(());
        }
        // Evict a little more than needed, so that this runs once per batch, not per record.
        let excess = pending - self.max_records + (self.max_records / 100).max(1);
        let incoming = db
            .execute(
                "DELETE FROM pending WHERE seq IN (SELECT seq FROM pending WHERE call_type = 0 ORDER BY seq LIMIT ?1)",
                [excess],
            )
            .map_err(|e| self.err(e))? as u64;
        let oldest = db
            .execute(
                "DELETE FROM pending WHERE seq IN (SELECT seq FROM pending ORDER BY seq LIMIT ?1)",
                [excess - incoming],
            )
            .map_err(|e| self.err(e))? as u64;
        tracing::warn!(
            "spool full ({} records, settings.spool_max_records): evicted {incoming} INCOMING and {oldest} other oldest records",
            self.max_records
        );
        Ok(())
    }

    fn set_offset(&self, db: &mut Db, offset: u64) -> Result<(), SpoolError> {
        db.conn
            .execute(
                "UPDATE meta SET value = ?1 WHERE key = 'journal_offset'",
                [offset],
            )
            .map_err(|e| self.err(e))?;
        db.journal_offset = offset;
        Ok(())
    }

    /// Applies one batch of journal lines in one transaction and returns how many records
    /// it moved; `None` when the journal had no more lines.
    fn apply_batch(&self, db: &mut Db) -> Result<Option<usize>, SpoolError> {
        let bytes = journal::read_lines(&self.journal_path, db.journal_offset, BATCH_BYTES)
            .map_err(|e| self.io(e))?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let end = db.journal_offset + bytes.len() as u64;
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
                    Some((call_type, pushed_at, id, body)) => {
                        insert
                            .execute(params![id, call_type, pushed_at, body])
                            .map_err(|e| self.err(e))?;
                        applied += 1;
                    }
                    None => tracing::error!(
                        "spool journal {}: skipped an unreadable line: {}",
                        self.journal_path.display(),
                        String::from_utf8_lossy(line)
                    ),
                }
            }
        }
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'journal_offset'")
            .and_then(|mut update| update.execute([end]))
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        db.journal_offset = end;
        self.evict(&db.conn)?;
        Ok(Some(applied))
    }

    /// Starts the thread that applies the journal as records come, until `stop`; it applies
    /// everything left before it ends.
    pub fn start_applier(self: &Arc<Self>, stop: Arc<Stop>) -> std::io::Result<JoinHandle<()>> {
        let spool = self.clone();
        std::thread::Builder::new()
            .name("spool".into())
            .spawn(move || {
                let (flag, wake) = &spool.journaled;
                let mut checkpointed = std::time::Instant::now();
                let mut last_apply = checkpointed;
                loop {
                    let running = stop.running();
                    {
                        let pending = flag.lock().unwrap_or_else(|e| e.into_inner());
                        let (mut pending, _) = wake
                            .wait_timeout_while(pending, Duration::from_millis(200), |p| {
                                !*p && stop.running()
                            })
                            .unwrap_or_else(|e| e.into_inner());
                        *pending = false;
                    }
                    // Under a steady trickle, gather a few records per transaction: a commit costs
                    // more than the records in it. An idle spool applies at once.
                    let since = last_apply.elapsed();
                    if since < COALESCE && running {
                        std::thread::sleep(COALESCE - since);
                    }
                    last_apply = std::time::Instant::now();
                    if let Err(e) = spool.apply() {
                        tracing::error!("{e}");
                    }
                    if checkpointed.elapsed() >= CHECKPOINT_EVERY || !running {
                        if let Err(e) = spool.checkpoint() {
                            tracing::warn!("{e}");
                        }
                        checkpointed = std::time::Instant::now();
                    }
                    if !running {
                        break;
                    }
                }
            })
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
        self.journaled.1.notify_all();
    }

    /// The oldest `limit` pending records, in order.
    pub fn oldest(&self, limit: usize) -> Result<Vec<Pending>, SpoolError> {
        let db = self.db();
        let mut query = db
            .conn
            .prepare_cached("SELECT seq, id, call_type, body FROM pending ORDER BY seq LIMIT ?1")
            .map_err(|e| self.err(e))?;
        let rows = query
            .query_map([limit as i64], Self::row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e));
        rows
    }

    /// The newest `limit` pending records, oldest first (for `spool tail`).
    pub fn newest(&self, limit: usize) -> Result<Vec<Pending>, SpoolError> {
        let newest_first = {
            let db = self.db();
            let mut query = db
                .conn
                .prepare_cached(
                    "SELECT seq, id, call_type, body FROM pending ORDER BY seq DESC LIMIT ?1",
                )
                .map_err(|e| self.err(e))?;
            let rows = query
                .query_map([limit as i64], Self::row)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| self.err(e));
            rows?
        };
        Ok(newest_first.into_iter().rev().collect())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Pending> {
        Ok(Pending {
            seq: r.get(0)?,
            id: r.get(1)?,
            call_type: r.get(2)?,
            body: r.get(3)?,
        })
    }

    /// Pending records after `seq`, in order (for `spool tail --follow`).
    pub fn after(&self, seq: i64, limit: usize) -> Result<Vec<Pending>, SpoolError> {
        let db = self.db();
        let mut query = db
            .conn
            .prepare_cached(
                "SELECT seq, id, call_type, body FROM pending WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = query
            .query_map(params![seq, limit as i64], Self::row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e));
        rows
    }

    /// Removes delivered records.
    pub fn remove(&self, seqs: &[i64]) -> Result<(), SpoolError> {
        let mut db = self.db();
        let tx = db.conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM pending WHERE seq = ?1")
                .map_err(|e| self.err(e))?;
            for seq in seqs {
                delete.execute([seq]).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
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
        tx.execute("DELETE FROM pending WHERE seq = ?1", [seq])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
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
        tx.commit().map_err(|e| self.err(e))?;
        drop(db);
        self.appended.notify_all();
        Ok(moved)
    }

    /// Pending and dead counts, and the age of the oldest pending record.
    pub fn counts(&self) -> Result<Counts, SpoolError> {
        let db = self.db();
        let (pending, oldest_pending) = db
            .conn
            .query_row("SELECT count(*), min(pushed_at) FROM pending", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        let dead = db
            .conn
            .query_row("SELECT count(*) FROM dead", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let offset: u64 = db
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'journal_offset'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let unapplied = journal::read_lines(&self.journal_path, offset, usize::MAX)
            .map_err(|e| self.io(e))?
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        Ok(Counts {
            pending,
            dead,
            oldest_pending,
            unapplied,
        })
    }

    /// About how many records are pending: exact unless records were removed from the middle
    /// of the queue (dead letters, evictions), never fewer. Cheap at any queue length.
    pub fn pending_estimate(&self) -> Result<u64, SpoolError> {
        span(&self.db().conn).map_err(|e| self.err(e))
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

/// `max(seq) - min(seq) + 1`: two lookups in the seq b-tree, where `count(*)` scans it all.
fn span(db: &Connection) -> rusqlite::Result<u64> {
    // Two subqueries: SQLite answers a lone min() or max() from the b-tree's ends, but scans
    // the table for an expression over both.
    db.query_row(
        "SELECT ifnull((SELECT max(seq) FROM pending) - (SELECT min(seq) FROM pending) + 1, 0)",
        [],
        |r| r.get(0),
    )
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
mod tests {
    use super::*;

    fn owner(dir: &Path, max: u64) -> Spool {
        Spool::open(dir, Fsync::Periodic, max, Role::Owner).unwrap()
    }

    fn push(spool: &Spool, n: usize, call_type: i32) {
        for i in 0..n {
            let id = crate::json::new_id();
            spool
                .append(&id, call_type, &format!(r#"{{"id":"{id}","n":{i}}}"#))
                .unwrap();
        }
    }

    #[test]
    fn what_a_crash_left_in_the_journal_is_recovered_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = owner(dir.path(), 1000);
        push(&spool, 10, 2);
        spool.apply().unwrap();
        push(&spool, 5, 2); // journaled, not applied: then the host dies
        let reader = Spool::open(dir.path(), Fsync::Periodic, 1000, Role::Reader).unwrap();
        let counts = reader.counts().unwrap();
        assert_eq!((counts.pending, counts.unapplied), (10, 5));
        drop(spool);
        let spool = owner(dir.path(), 1000);
        assert_eq!(spool.pending_estimate().unwrap(), 15, "recovered at open");
        drop(spool);
        let spool = owner(dir.path(), 1000);
        assert_eq!(spool.pending_estimate().unwrap(), 15, "and only once");
        let bodies: Vec<String> = spool
            .oldest(100)
            .unwrap()
            .into_iter()
            .map(|p| p.body)
            .collect();
        let order: Vec<i64> = bodies
            .iter()
            .map(|b| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            order,
            (0..10).chain(0..5).collect::<Vec<_>>(),
            "in push order"
        );
    }

    #[test]
    fn a_long_journal_is_emptied_once_applied() {
        let dir = tempfile::tempdir().unwrap();
        let spool = owner(dir.path(), 1_000_000);
        let body = "x".repeat(1000);
        for _ in 0..5000 {
            spool.append(&crate::json::new_id(), 2, &body).unwrap();
        }
        spool.apply().unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len(),
            0
        );
        push(&spool, 3, 2);
        drop(spool);
        assert_eq!(
            owner(dir.path(), 1_000_000).pending_estimate().unwrap(),
            5003
        );
    }

    #[test]
    fn two_hosts_cannot_share_a_state_folder() {
        let dir = tempfile::tempdir().unwrap();
        let _first = owner(dir.path(), 10);
        let second = Spool::open(dir.path(), Fsync::Periodic, 10, Role::Owner);
        assert!(matches!(second, Err(SpoolError::Busy(_))));
        Spool::open(dir.path(), Fsync::Periodic, 10, Role::Reader).expect("readers are welcome");
    }

    #[test]
    fn over_the_cap_ringing_records_go_first_then_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let spool = owner(dir.path(), 100);
        push(&spool, 60, 2);
        push(&spool, 30, 0);
        push(&spool, 30, 2);
        spool.apply().unwrap();
        // 120 > 100: the 20 over the cap (and 1% more) go, ringing records first.
        let kept = spool.oldest(1000).unwrap();
        assert_eq!(kept.len(), 99);
        assert_eq!(kept.iter().filter(|p| p.call_type == 0).count(), 9);
        assert!(
            kept[0].body.contains(r#""n":0}"#),
            "the oldest other record stays"
        );
        // Without ringing records left to evict, the oldest go.
        push(&spool, 50, 2);
        spool.apply().unwrap();
        let kept = spool.oldest(1000).unwrap();
        assert_eq!(kept.len(), 99);
        assert!(kept.iter().all(|p| p.call_type == 2));
        assert!(!kept[0].body.contains(r#""n":0}"#), "the oldest went");
    }
}
