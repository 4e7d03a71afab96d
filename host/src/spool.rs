//! The spool: every pushed record, durable on disk until the frontend has it.
//!
//! SQLite in WAL mode (bundled, so nothing to install): a record is committed before `push`
//! returns, so it survives a crash or SIGKILL of the host; with `spool_fsync: always` every
//! commit is also fsync'd and survives power loss. It is one file in `state_dir`, readable
//! with any SQLite tool, and the crate builds everywhere. Records leave in the order they came.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection};

/// Why the spool could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
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
}

/// The spool file, shared by the instances (which append) and the sender (which removes).
pub struct Spool {
    path: PathBuf,
    db: Mutex<Connection>,
    max_records: u64,
    appended: Condvar,
}

/// The file name of the spool inside `state_dir`.
pub const FILE: &str = "spool.sqlite3";

impl Spool {
    /// Opens (or creates) the spool in `state_dir`.
    pub fn open(state_dir: &Path, fsync: Fsync, max_records: u64) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(state_dir).map_err(|source| SpoolError::Folder {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(FILE);
        let err = |source| SpoolError::Sqlite {
            path: path.clone(),
            source,
        };
        let db = Connection::open(&path).map_err(err)?;
        db.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        let synchronous = match fsync {
            Fsync::Always => "FULL",
            Fsync::Periodic => "NORMAL",
        };
        db.pragma_update(None, "synchronous", synchronous)
            .map_err(err)?;
        // A small page cache: the spool is written and read at its two ends only.
        db.pragma_update(None, "cache_size", -256).map_err(err)?;
        // One b-tree (by seq) and no secondary index: each push writes as few pages as it can.
        // Ids are UUIDv7s, unique by construction.
        db.execute_batch(
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
                 failed_at INTEGER NOT NULL);",
        )
        .map_err(err)?;
        Ok(Self {
            path,
            db: Mutex::new(db),
            max_records,
            appended: Condvar::new(),
        })
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> SpoolError {
        SpoolError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores a record (its JSON with `id`); committed when this returns. Evicts the oldest
    /// records first if the spool is over its cap.
    pub fn append(&self, id: &str, call_type: i32, body: &str) -> Result<(), SpoolError> {
        let db = self.db();
        db.prepare_cached(
            "INSERT INTO pending (id, call_type, pushed_at, body) VALUES (?1, ?2, unixepoch(), ?3)",
        )
        .and_then(|mut insert| insert.execute(params![id, call_type, body]))
        .map_err(|e| self.err(e))?;
        let seq = db.last_insert_rowid();
        // The first rows of a fresh spool have small seqs: only count when the cap could be near.
        if seq as u64 > self.max_records {
            self.evict(&db)?;
        }
        drop(db);
        self.appended.notify_all();
        Ok(())
    }

    /// Over the cap: drops the oldest INCOMING ("ringing now") records first, then the oldest.
    fn evict(&self, db: &Connection) -> Result<(), SpoolError> {
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

    /// The oldest `limit` pending records, in order.
    pub fn oldest(&self, limit: usize) -> Result<Vec<Pending>, SpoolError> {
        let db = self.db();
        let mut query = db
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
        let tx = db.transaction().map_err(|e| self.err(e))?;
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

    /// Removes pending INCOMING records (stale once there is a backlog); returns how many.
    pub fn drop_incoming(&self) -> Result<u64, SpoolError> {
        self.db()
            .execute("DELETE FROM pending WHERE call_type = 0", [])
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Moves a record the frontend refused into the dead letters, with the status and the
    /// first 1 kB of the response.
    pub fn bury(&self, seq: i64, status: u16, response: &str) -> Result<(), SpoolError> {
        let response: String = response.chars().take(1024).collect();
        let mut db = self.db();
        let tx = db.transaction().map_err(|e| self.err(e))?;
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
        let tx = db.transaction().map_err(|e| self.err(e))?;
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
            .query_row("SELECT count(*), min(pushed_at) FROM pending", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        let dead = db
            .query_row("SELECT count(*) FROM dead", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(Counts {
            pending,
            dead,
            oldest_pending,
        })
    }

    /// The number of pending records.
    pub fn pending(&self) -> Result<u64, SpoolError> {
        self.db()
            .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Blocks until a record is appended or `timeout` passes.
    pub fn wait_for_append(&self, timeout: Duration) {
        let db = self.db();
        let _ = self.appended.wait_timeout(db, timeout);
    }

    /// Wakes every [`wait_for_append`](Spool::wait_for_append), e.g. to shut down.
    pub fn wake(&self) {
        self.appended.notify_all();
    }
}
