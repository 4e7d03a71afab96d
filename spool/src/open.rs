//! Opening the spool as its owner: the state folder and its lock, the database, the journal
//! checked against it, and the cursors of this run's consumers.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use parking_lot::{Condvar as FairCondvar, Mutex as FairMutex, MutexGuard};
use rusqlite::{params, Connection};

use crate::applier::COALESCE;
use crate::direct::Direct;
use crate::error::{AppendError, JournalError, OpenError, SqliteError};
use crate::fs::Filesystem;
use crate::journal::{self, Header, Journal};
use crate::schema::{self, aside_path, sqlite, Meta, Opened};
use crate::sql;
use crate::trouble::{Part, Troubles};
use crate::{EvictFirst, Fsync, Options, FILE, JOURNAL};

/// The most journal bytes recovered in one transaction.
pub const BATCH_BYTES: usize = 256 << 10;

/// What the writer, the queue and the applier share.
pub struct Shared {
    /// The queue file.
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub journal_path: PathBuf,
    pub journal: Journal,
    /// Fair, so that the applier, busy under load, hands the queue to the sinks in turn.
    pub db: FairMutex<Db>,
    pub max_records: u64,
    pub evict_first: EvictFirst,
    /// Records in the queue (kept with every change, so that nothing counts the table).
    pub pending: AtomicU64,
    /// The newest record's seq in the queue (0: none yet).
    pub newest: AtomicI64,
    /// Signalled when records reach the queue, and by [`Queue::wake`](crate::Queue::wake).
    pub appended: FairCondvar,
    /// How often [`Queue::wake`](crate::Queue::wake) was called.
    pub wakes: AtomicU64,
    /// Records reached the queue since the applier last checkpointed (a cursor that applies
    /// records wakes the applier for the checkpoint when it sets this).
    pub checkpoint_wanted: AtomicBool,
    /// Acks were noted in memory since the applier last saved them (the cursor that notes
    /// the first wakes the applier, which saves them within a second).
    pub acks_wanted: AtomicBool,
    /// A second connection, which checkpoints the WAL into the database file outside of
    /// `db`'s lock: a checkpoint fsyncs, and must not stall appends or the sinks. (Only a
    /// flood that outruns it makes the owner checkpoint under the lock: see `schema.rs`.)
    pub checkpointer: Mutex<Connection>,
    pub troubles: Troubles,
    _lock: File,
}

/// The queue database and what the applier keeps beside it.
pub struct Db {
    pub conn: Connection,
    /// The journal generation applied from (also in the `meta` table).
    pub generation: u64,
    /// How far into that generation's file has been applied (also in `meta`).
    pub journal_offset: u64,
    /// Lines in the journal file that were there at start-up, not yet applied.
    pub recovering: Option<Recovery>,
    /// Start a new journal generation at the next chance.
    pub rotate: Option<Rotation>,
    pub evictions: Evictions,
    /// Where each of this run's consumers has acked to (also in the `cursors` table).
    pub consumers: HashMap<String, i64>,
    /// Every record up to here has been acked by every consumer: it has left the queue.
    pub removed_through: i64,
    /// Every record up to here is deleted from the table too. Those after it, through
    /// `removed_through`, are deleted with the next save of the acks.
    pub deleted_through: i64,
    /// Acks not written yet: each sink's position, saved with the next transaction (see
    /// [`Shared::save_acks`]).
    pub unsaved_acks: HashMap<String, UnsavedAck>,
    /// `journal_offset` moved past records delivered directly: saved with the acks.
    pub offset_unsaved: bool,
    /// Records a cursor took from the journal's tail, not in the table (see
    /// [`direct`](crate::direct)).
    pub direct: Option<Direct>,
    /// The cursors open now, and the number the next one gets.
    pub cursors: usize,
    pub cursor_ids: u64,
    /// Cursors blocked in [`Cursor::wait`](crate::Cursor::wait): an append wakes them to
    /// apply it themselves instead of waking the applier.
    pub waiting: usize,
    /// The last apply failed: only the applier tries again (with its growing wait).
    pub apply_failed: bool,
    /// When records last reached the queue (this run).
    pub applied_at: Option<Instant>,
}

/// A sink's position, acked but not yet written.
#[derive(Debug, Clone, Copy)]
pub struct UnsavedAck {
    pub consuming: bool,
    pub acked: i64,
}

/// Lines of the journal file that the last run left unapplied.
pub struct Recovery {
    pub to: u64,
    pub records: u64,
    /// Ids already in the queue (salvaged from a corrupt database): not inserted twice.
    pub skip: HashSet<String>,
    pub applied: u64,
}

/// Why the journal file is written afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    Due,
    Repair,
}

/// The eviction log's throttle.
#[derive(Default)]
pub struct Evictions {
    pub since_log: u64,
    pub logged_at: Option<Instant>,
}

impl Shared {
    pub fn open(
        fs: Arc<dyn Filesystem>,
        state_dir: &Path,
        options: Options,
    ) -> Result<Self, OpenError> {
        fs.create_private_dir(state_dir)
            .map_err(|source| OpenError::Folder {
                path: state_dir.to_owned(),
                source,
            })?;
        let lock = lock_state_dir(state_dir)?;
        let path = state_dir.join(FILE);
        let journal_path = state_dir.join(JOURNAL);
        let (conn, opened) =
            schema::open_owned(fs.as_ref(), &path, options.fsync, options.evict_first)?;
        let meta = schema::read_meta(&conn).map_err(sqlite(&path))?;
        let checkpointer = schema::open_db(&path).map_err(sqlite(&path))?;
        sql::prepare(&conn, sql::OWNER)
            .and_then(|()| sql::prepare(&checkpointer, &[sql::CHECKPOINT]))
            .map_err(sqlite(&path))?;
        let mut db = Db {
            conn,
            generation: meta.generation,
            journal_offset: meta.journal_offset,
            recovering: None,
            rotate: None,
            evictions: Evictions::default(),
            consumers: HashMap::new(),
            removed_through: 0,
            deleted_through: 0,
            unsaved_acks: HashMap::new(),
            offset_unsaved: false,
            direct: None,
            cursors: 0,
            cursor_ids: 0,
            waiting: 0,
            apply_failed: false,
            applied_at: None,
        };
        let journal = attach_journal(
            fs.clone(),
            &journal_path,
            &mut db,
            &meta,
            opened,
            options.fsync,
        )?;
        let pending =
            attach_consumers(&mut db, &options.consumers, meta.pending).map_err(sqlite(&path))?;
        let newest = newest_seq(&db.conn).map_err(sqlite(&path))?;
        Ok(Self {
            path,
            state_dir: state_dir.to_owned(),
            journal_path,
            journal,
            db: FairMutex::new(db),
            max_records: options.max_records.get(),
            evict_first: options.evict_first,
            pending: AtomicU64::new(pending),
            newest: AtomicI64::new(newest),
            appended: FairCondvar::new(),
            wakes: AtomicU64::new(0),
            checkpoint_wanted: AtomicBool::new(false),
            acks_wanted: AtomicBool::new(false),
            checkpointer: Mutex::new(checkpointer),
            troubles: Troubles::default(),
            _lock: lock,
        })
    }

    pub fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock()
    }

    pub fn err(&self, source: rusqlite::Error) -> SqliteError {
        SqliteError {
            path: self.path.clone(),
            source,
        }
    }

    /// See [`Writer::append`](crate::Writer::append).
    pub fn append(&self, id: &str, kind: i32, body: &str) -> Result<(), AppendError> {
        let mut line = Vec::with_capacity(32 + id.len() + body.len());
        for field in [
            itoa::Buffer::new().format(kind).as_bytes(),
            itoa::Buffer::new().format(schema::unix_now()).as_bytes(),
            id.as_bytes(),
        ] {
            line.extend_from_slice(field);
            line.push(b'\t');
        }
        line.extend_from_slice(body.as_bytes());
        line.push(b'\n');
        match self.journal.append(&line) {
            Ok(()) => {
                self.hand_over();
                self.troubles
                    .clear(Part::Write, "the spool journal takes records again");
                Ok(())
            }
            Err(e) => {
                self.troubles
                    .set(Part::Write, format!("{e}; pushes are held until it can"));
                Err(e)
            }
        }
    }

    /// Has the line just appended applied: in a trickle, by a cursor waiting for records (it
    /// applies the journal's tail itself, so a record wakes one thread fewer on its way to a
    /// sink); otherwise by the applier, which gathers what comes within [`COALESCE`] into
    /// one transaction: when records come faster, when no cursor waits (the sinks are busy,
    /// a backlog), or when the queue is busy right now.
    fn hand_over(&self) {
        if let Some(db) = self.db.try_lock() {
            if db.waiting > 0
                && db.recovering.is_none()
                && !db.apply_failed
                && db.applied_at.is_none_or(|at| at.elapsed() >= COALESCE)
            {
                self.appended.notify_all();
                return;
            }
        }
        self.journal.notify();
    }
}

/// The highest seq the queue has given (0: none yet), whether or not its record is still
/// there: a record delivered directly is only in `sqlite_sequence` and the cursors.
pub fn newest_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT max(
             (SELECT coalesce(max(seq), 0) FROM pending),
             (SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'pending'),
             (SELECT coalesce(max(acked), 0) FROM cursors))",
        [],
        |r| r.get(0),
    )
}

/// Reads (or starts, at the beginning) the cursor of each consumer, and removes what every
/// one of them has acked (the consumers may be fewer than last run). Returns the records in
/// the queue after that.
fn attach_consumers(db: &mut Db, consumers: &[String], pending: u64) -> rusqlite::Result<u64> {
    let tx = db.conn.transaction()?;
    for sink in consumers {
        tx.execute(
            "INSERT INTO cursors VALUES (?1, 1, 0)
             ON CONFLICT (sink) DO UPDATE SET consuming = 1",
            [sink],
        )?;
        let acked: i64 =
            tx.query_row("SELECT acked FROM cursors WHERE sink = ?1", [sink], |r| {
                r.get(0)
            })?;
        db.consumers.insert(sink.clone(), acked);
    }
    let mut pending = pending;
    if let Some(low) = db.consumers.values().min().copied() {
        let removed = tx.execute("DELETE FROM pending WHERE seq <= ?1", [low])? as u64;
        schema::add_pending(&tx, -(removed as i64))?;
        pending -= removed.min(pending);
        db.removed_through = low;
        db.deleted_through = low;
    }
    tx.commit()?;
    Ok(pending)
}

/// Opens the journal and decides, from its header and the database's record of it, what of
/// it still has to be applied; every case a person caused is said in the log.
fn attach_journal(
    fs: Arc<dyn Filesystem>,
    path: &Path,
    db: &mut Db,
    meta: &Meta,
    opened: Opened,
    fsync: Fsync,
) -> Result<Journal, OpenError> {
    let fsync = fsync == Fsync::Always;
    let header = Header::read(fs.as_ref(), path).map_err(|source| JournalError::Read {
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
            fs.rename(path, &aside)
                .map_err(|source| JournalError::Create {
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
            let (journal, len) = Journal::resume(fs, path, generation, fsync)?;
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
            let (journal, start) = Journal::create(fs, path, generation, fsync)?;
            db.generation = generation;
            db.journal_offset = start;
            journal
        }
    };
    let db_path = path.with_file_name(FILE);
    if let Some(salvaged) = opened.salvaged {
        let skip: HashSet<String> = db
            .conn
            .prepare("SELECT id FROM pending UNION SELECT id FROM dead")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(sqlite(&db_path))?;
        tracing::warn!(
            "read {salvaged} records out of the corrupt spool database; the journal's records not among them are applied next; records that were only in unreadable parts of it are lost"
        );
        if let Some(recovery) = &mut db.recovering {
            recovery.skip = skip;
        }
    }
    let tx = db.conn.transaction().map_err(sqlite(&db_path))?;
    let noted = (|| {
        schema::set_meta(&tx, "generation", db.generation)?;
        schema::set_meta(&tx, "journal_offset", db.journal_offset)?;
        schema::set_meta(&tx, "clean", 0)
    })();
    noted.map_err(sqlite(&db_path))?;
    tx.commit().map_err(sqlite(&db_path))?;
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

/// Takes the state folder's lock, so that two hosts never share one spool.
pub fn lock_state_dir(state_dir: &Path) -> Result<File, OpenError> {
    let path = state_dir.join("calllogger.lock");
    let fail = |source| OpenError::Folder {
        path: path.clone(),
        source,
    };
    let file = File::create(&path).map_err(fail)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Busy(state_dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(fail(e)),
    }
}

/// Sets `sink`'s stored cursor to `acked`, creating it when new.
pub fn store_cursor(
    conn: &Connection,
    sink: &str,
    consuming: bool,
    acked: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(sql::STORE_CURSOR)?
        .execute(params![sink, consuming, acked])
        .map(drop)
}
