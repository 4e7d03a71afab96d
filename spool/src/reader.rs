//! Looking into a spool from outside its owner (the CLI, tests, the benchmark): while the
//! host runs too, without its lock, never applying the journal or changing the layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection};

use crate::error::{JournalError, OpenError, ReadError, RetryError, SqliteError};
use crate::fs::{Filesystem, RealFilesystem};
use crate::journal::{self, Header};
use crate::open::lock_state_dir;
use crate::queue::pending_row;
use crate::schema::{self, kind_column, sqlite, LAYOUT};
use crate::{Counts, Pending, FILE, JOURNAL};

/// A read-only view of the spool in a state folder.
pub struct SpoolReader {
    fs: Arc<dyn Filesystem>,
    state_dir: PathBuf,
    path: PathBuf,
    journal_path: PathBuf,
    conn: Connection,
}

impl SpoolReader {
    /// Opens the spool in `dir` (created empty when missing, like the owner would).
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let fs: Arc<dyn Filesystem> = Arc::new(RealFilesystem);
        let path = dir.join(FILE);
        fs.create_private_dir(dir)
            .map_err(|source| OpenError::Folder {
                path: dir.to_owned(),
                source,
            })?;
        let conn = schema::open_db(&path).map_err(sqlite(&path))?;
        let found = schema::layout(&conn).map_err(sqlite(&path))?;
        if found > LAYOUT {
            return Err(OpenError::NewerLayout { path, found });
        }
        let has_queue = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(sqlite(&path))?;
        if has_queue == 0 {
            return Err(OpenError::NoQueue(path));
        }
        Ok(Self {
            fs,
            state_dir: dir.to_owned(),
            journal_path: dir.join(JOURNAL),
            path,
            conn,
        })
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> SqliteError {
        SqliteError {
            path: self.path.clone(),
            source,
        }
    }

    /// The queue's figures, and the records the journal holds beyond the queue (left by a
    /// crash, or not yet applied by the running host).
    pub fn counts(&self) -> Result<Counts, ReadError> {
        let meta = schema::read_meta(&self.conn).map_err(|e| self.err(e))?;
        let (dead, oldest_pending) =
            schema::dead_and_oldest(&self.conn, 0).map_err(|e| self.err(e))?;
        Ok(Counts {
            pending: meta.pending,
            dead,
            oldest_pending,
            unapplied: self.unapplied(&meta)?,
        })
    }

    /// Lines in the journal file past what the queue has applied.
    fn unapplied(&self, meta: &schema::Meta) -> Result<u64, JournalError> {
        let read = |source| JournalError::Read {
            path: self.journal_path.clone(),
            source,
        };
        let from = match Header::read(self.fs.as_ref(), &self.journal_path).map_err(read)? {
            Header::Generation(g) if g == meta.generation => meta.journal_offset,
            Header::Generation(g) if g == meta.generation + 1 => {
                journal::header_line(g).len() as u64
            }
            Header::Legacy if meta.generation == 0 => meta.journal_offset,
            _ => return Ok(0),
        };
        let bytes =
            journal::read_to_end(self.fs.as_ref(), &self.journal_path, from).map_err(read)?;
        Ok(bytes.iter().filter(|b| **b == b'\n').count() as u64)
    }

    /// The newest `limit` records in the queue, oldest first (for `spool tail`).
    pub fn newest(&self, limit: usize) -> Result<Vec<Pending>, ReadError> {
        let mut newest_first = self.select("ORDER BY seq DESC LIMIT ?2", 0, limit)?;
        newest_first.reverse();
        Ok(newest_first)
    }

    /// Records after `seq`, in order (for `spool tail --follow`).
    pub fn after(&self, seq: i64, limit: usize) -> Result<Vec<Pending>, ReadError> {
        self.select("WHERE seq > ?1 ORDER BY seq LIMIT ?2", seq, limit)
    }

    fn select(&self, tail: &str, seq: i64, limit: usize) -> Result<Vec<Pending>, ReadError> {
        let err = |e| self.err(e);
        let layout = schema::layout(&self.conn).map_err(err)?;
        let sql = format!(
            "SELECT seq, id, {}, body FROM pending {tail}",
            kind_column(layout)
        );
        let mut select = self.conn.prepare_cached(&sql).map_err(err)?;
        let rows = select
            .query_map(params![seq, limit as i64], pending_row)
            .and_then(Iterator::collect)
            .map_err(err);
        Ok(rows?)
    }

    /// Puts every dead letter (of any sink) back in line as a new record under its id, at
    /// the end of the queue, so that every sink sees it again: at-least-once, the ids let the
    /// receivers drop duplicates. A record several sinks buried comes back once. A record
    /// put back is not among those evicted first. Returns how many came back.
    ///
    /// Takes the state folder's lock (so the host must be stopped: it keeps the queue's
    /// figures in memory), and needs the current layout (which the host brings the spool to).
    pub fn retry_dead(&self) -> Result<u64, RetryError> {
        let _lock = lock_state_dir(&self.state_dir)?;
        let err = |e| self.err(e);
        let found = schema::layout(&self.conn).map_err(err)?;
        if found < LAYOUT {
            return Err(RetryError::OlderLayout {
                path: self.path.clone(),
                found,
            });
        }
        let tx = self.conn.unchecked_transaction().map_err(err)?;
        let moved = tx
            .execute(
                "INSERT INTO pending (id, kind, pushed_at, body)
                 SELECT id, kind, pushed_at, body FROM dead
                 WHERE rowid IN (SELECT min(rowid) FROM dead GROUP BY seq)
                 ORDER BY seq",
                [],
            )
            .map_err(err)? as u64;
        tx.execute("DELETE FROM dead", []).map_err(err)?;
        schema::add_pending(&tx, moved as i64).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(moved)
    }
}
