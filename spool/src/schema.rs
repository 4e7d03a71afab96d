//! The queue database: its layout and the migrations to it, the `meta` figures, and the
//! rebuild of a database SQLite calls corrupt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::error::{OpenError, SqliteError};
use crate::fs::Filesystem;
use crate::sql;
use crate::{EvictFirst, Fsync, FILE};

/// The database layout this spool writes (`PRAGMA user_version`): 0 was calllogger 0.1's, 1
/// had one consumer and no cursors, 2 has named cursors and dead letters per sink.
pub const LAYOUT: i64 = 2;
/// About the most the WAL holds: the owner checkpoints as it commits past this size (the
/// applier's own checkpoints keep the WAL far smaller unless a flood outruns them; a reader
/// holding a snapshot, such as an outside `sqlite3` shell, keeps it from starting over), and
/// the file is cut back to it when the WAL starts over.
pub(crate) const WAL_LIMIT: i64 = 32 << 20;

/// `map_err` for SQLite errors on the database at `path`.
pub fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> SqliteError + '_ {
    move |source| SqliteError {
        path: path.to_owned(),
        source,
    }
}

/// Opens the database at `path` with a busy timeout and a stable query plan.
///
/// Without the stable plan, SQLite looks at the value bound to a `LIMIT ?` when it plans the
/// statement, so every new binding planned the statement again: a sink's read of the queue
/// was parsed anew for each record (a tenth of the sink's CPU at live rates).
pub fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// The database's layout.
pub fn layout(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// The name of the records' kind column: `call_type` before layout 2.
pub fn kind_column(layout: i64) -> &'static str {
    if layout < 2 {
        "call_type"
    } else {
        "kind"
    }
}

/// What opening the owner's database found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Opened {
    /// A new database: nothing was in the queue before.
    pub fresh: bool,
    /// The old database was unreadable and moved aside; this many records were read out of it.
    pub salvaged: Option<u64>,
}

/// Opens the owner's database: the layout brought up to date, the WAL set up; a database
/// SQLite calls corrupt moved aside and replaced by a new one holding what could be read.
pub fn open_owned(
    fs: &dyn Filesystem,
    path: &Path,
    fsync: Fsync,
    evict_first: EvictFirst,
) -> Result<(Connection, Opened), OpenError> {
    match open_layout(path, fsync, evict_first) {
        Ok(opened) => Ok(opened),
        Err(OpenError::Sqlite(SqliteError { source, .. })) if is_corrupt(&source) => {
            let state_dir = path.parent().unwrap_or(Path::new("."));
            let aside = aside_path(state_dir, FILE, "corrupt");
            fs.rename(path, &aside).map_err(|e| OpenError::Folder {
                path: aside.clone(),
                source: e,
            })?;
            for suffix in ["-wal", "-shm"] {
                let mut from = path.as_os_str().to_owned();
                from.push(suffix);
                let mut to = aside.as_os_str().to_owned();
                to.push(suffix);
                let _ = fs.rename(Path::new(&from), Path::new(&to));
            }
            tracing::error!(
                "the spool database {} is corrupt ({source}): moved it to {} and rebuilding the queue from what can be read of it and from the journal",
                path.display(),
                aside.display()
            );
            let (conn, _) = open_layout(path, fsync, evict_first)?;
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

/// Layout 1, which calllogger 0.1's tables are brought to first.
const LAYOUT_1: &str = "CREATE TABLE IF NOT EXISTS pending (
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
     INSERT OR IGNORE INTO meta VALUES ('journal_offset', 0), ('generation', 0), ('clean', 1);
     INSERT OR REPLACE INTO meta VALUES ('pending', (SELECT count(*) FROM pending));";

/// From layout 1 to 2: the kind column named for what the spool knows of it, the eviction
/// mark stored per record, dead letters per sink (those of layout 1 have no sink: ''), and
/// the cursors.
const LAYOUT_2: &str = "ALTER TABLE pending RENAME COLUMN call_type TO kind;
     ALTER TABLE pending ADD COLUMN evict_first INTEGER NOT NULL DEFAULT 0;
     DROP INDEX IF EXISTS pending_incoming;
     CREATE INDEX pending_evict_first ON pending (seq) WHERE evict_first = 1;
     CREATE TABLE dead_by_sink (
         sink TEXT NOT NULL,
         seq INTEGER NOT NULL,
         id TEXT NOT NULL,
         kind INTEGER NOT NULL,
         pushed_at INTEGER NOT NULL,
         body TEXT NOT NULL,
         status INTEGER NOT NULL,
         response TEXT NOT NULL,
         failed_at INTEGER NOT NULL,
         PRIMARY KEY (sink, seq));
     INSERT INTO dead_by_sink
         SELECT '', seq, id, call_type, pushed_at, body, status, response, failed_at FROM dead;
     DROP TABLE dead;
     ALTER TABLE dead_by_sink RENAME TO dead;
     CREATE TABLE cursors (
         sink TEXT PRIMARY KEY,
         consuming INTEGER NOT NULL,
         acked INTEGER NOT NULL);";

/// Opens `path` and creates or upgrades its tables to [`LAYOUT`].
fn open_layout(
    path: &Path,
    fsync: Fsync,
    evict_first: EvictFirst,
) -> Result<(Connection, Opened), OpenError> {
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
    // Room for every statement the owner runs, so that none is parsed again.
    conn.set_prepared_statement_cache_capacity(32);
    // The applier checkpoints on its own connection, outside the queue's lock. A flood can
    // outrun it, and a WAL that grows with the flood is a disk filling up: past WAL_LIMIT
    // each commit checkpoints, under the lock so that no write slips in, until the WAL can
    // start over. That copy (about 32 MiB and its fsyncs) holds up the sinks and `counts`
    // meanwhile, as it does an open after a crash mid-flood.
    let page_size: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .map_err(&err)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_LIMIT / page_size)
        .map_err(&err)?;
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT)
        .map_err(&err)?;
    let found = layout(&conn).map_err(&err)?;
    if found > LAYOUT {
        return Err(OpenError::NewerLayout {
            path: path.to_owned(),
            found,
        });
    }
    let tx = conn.transaction().map_err(&err)?;
    let fresh = found == 0
        && tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(&err)?
            == 0;
    if found < 1 {
        // Layout 0 kept no count: take it once.
        tx.execute_batch(LAYOUT_1).map_err(&err)?;
    }
    if found < 2 {
        tx.execute_batch(LAYOUT_2).map_err(&err)?;
        let kinds: Vec<i32> = tx
            .prepare("SELECT DISTINCT kind FROM pending")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(&err)?;
        for kind in kinds.into_iter().filter(|k| (evict_first.applies)(*k)) {
            tx.execute("UPDATE pending SET evict_first = 1 WHERE kind = ?1", [kind])
                .map_err(&err)?;
        }
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
    let old_layout = layout(&old).unwrap_or(LAYOUT);
    let kind = kind_column(old_layout);
    let (dead, evict) = if old_layout < 2 {
        ("''", "0")
    } else {
        ("sink", "evict_first")
    };
    let mut copied = 0;
    for (table, columns, select, counts) in [
        (
            "pending",
            "seq, id, kind, pushed_at, body, evict_first",
            format!("seq, id, {kind}, pushed_at, body, {evict}"),
            true,
        ),
        (
            "dead",
            "sink, seq, id, kind, pushed_at, body, status, response, failed_at",
            format!("{dead}, seq, id, {kind}, pushed_at, body, status, response, failed_at"),
            true,
        ),
        (
            "cursors",
            "sink, consuming, acked",
            "sink, consuming, acked".to_owned(),
            false,
        ),
    ] {
        let Ok(mut select) = old.prepare(&format!("SELECT {select} FROM {table}")) else {
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
            let n = insert.execute(rusqlite::params_from_iter(values))? as u64;
            if counts {
                copied += n;
            }
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
pub struct Meta {
    pub generation: u64,
    pub journal_offset: u64,
    pub pending: u64,
    pub clean: bool,
}

/// Reads the `meta` figures; a database without tables (a reader's view of a spool being
/// created) reads as empty, and one of layout 0 has its records counted.
pub fn read_meta(conn: &Connection) -> rusqlite::Result<Meta> {
    let no_table = |e: &rusqlite::Error| matches!(e, rusqlite::Error::SqliteFailure(_, Some(m)) if m.contains("no such table"));
    let value = |key: &str| -> rusqlite::Result<Option<u64>> {
        match conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
        {
            Err(e) if no_table(&e) => Ok(None),
            other => other,
        }
    };
    let pending = match value("pending")? {
        Some(pending) => pending,
        None => conn
            .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))
            .or_else(|e| if no_table(&e) { Ok(0) } else { Err(e) })?,
    };
    Ok(Meta {
        generation: value("generation")?.unwrap_or(0),
        journal_offset: value("journal_offset")?.unwrap_or(0),
        pending,
        clean: value("clean")?.unwrap_or(1) == 1,
    })
}

/// A write transaction whose `BEGIN`, `COMMIT` and `ROLLBACK` are prepared once per
/// connection: at a record or two per transaction, parsing them each time (as rusqlite's
/// `Connection::transaction` does) was a measurable share of the spool's CPU. Rolls back
/// unless [`commit`](Tx::commit)ted.
pub struct Tx<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> Tx<'c> {
    pub fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached(sql::BEGIN)?.execute([])?;
        Ok(Self { conn, open: true })
    }

    pub fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql::COMMIT)?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // A failed statement may have ended the transaction already: nothing to undo then.
        if self.open && !self.conn.is_autocommit() {
            let _ = self
                .conn
                .prepare_cached(sql::ROLLBACK)
                .and_then(|mut s| s.execute([]));
        }
    }
}

/// Sets `key` in the `meta` table; an existing row is updated in place (a replace would
/// rewrite its index page too: one more WAL frame per applied batch).
pub fn set_meta(conn: &Connection, key: &str, value: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(sql::SET_META)?
        .execute(params![key, value])
        .map(drop)
}

/// Adds `delta` to the stored count of records in the queue.
pub fn add_pending(conn: &Connection, delta: i64) -> rusqlite::Result<()> {
    if delta != 0 {
        conn.prepare_cached(sql::ADD_PENDING)?.execute([delta])?;
    }
    Ok(())
}

/// Makes the queue's next seq larger than `seq` (SQLite keeps it in `sqlite_sequence`).
pub fn raise_sequence(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    let raised = conn.prepare_cached(sql::RAISE_SEQUENCE)?.execute([seq])?;
    if raised == 0 {
        conn.prepare_cached(sql::START_SEQUENCE)?.execute([seq])?;
    }
    Ok(())
}

/// The dead letters and the push time of the oldest record in the queue after `removed`
/// (the records up to it have left the queue, but may not be deleted yet).
pub fn dead_and_oldest(conn: &Connection, removed: i64) -> rusqlite::Result<(u64, Option<i64>)> {
    let oldest = conn
        .prepare_cached(sql::OLDEST_AFTER)?
        .query_row([removed], |r| r.get(0))
        .optional()?;
    let dead = conn
        .prepare_cached(sql::COUNT_DEAD)?
        .query_row([], |r| r.get(0))?;
    Ok((dead, oldest))
}

/// `state_dir/file.<why>-<unix time>`: where a file that cannot be used is kept for a person.
pub fn aside_path(state_dir: &Path, file: &str, why: &str) -> PathBuf {
    state_dir.join(format!("{file}.{why}-{}", unix_now()))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_tx_keeps_what_it_commits_and_undoes_what_it_drops() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x UNIQUE)").unwrap();
        let tx = Tx::begin(&conn).unwrap();
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        tx.commit().unwrap();
        {
            let tx = Tx::begin(&conn).unwrap();
            tx.execute("INSERT INTO t VALUES (2)", []).unwrap();
            // A failed statement inside: the rest of the transaction is still undone.
            tx.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        }
        assert!(conn.is_autocommit());
        assert_eq!(count(&conn), 1);
        // The cached BEGIN runs again after a rollback.
        let tx = Tx::begin(&conn).unwrap();
        tx.execute("INSERT INTO t VALUES (3)", []).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(&conn), 2);
    }

    #[test]
    fn the_bundled_sqlite_leaves_out_what_the_spool_never_uses() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // Set in `.cargo/config.toml` (LIBSQLITE3_FLAGS).
        for left_out in [
            "ENABLE_FTS3",
            "ENABLE_FTS5",
            "ENABLE_RTREE",
            "ENABLE_STAT4",
            "ENABLE_DBSTAT_VTAB",
            "SOUNDEX",
            "ENABLE_COLUMN_METADATA",
        ] {
            assert!(
                !options.iter().any(|o| o == left_out),
                "{left_out}: {options:?}"
            );
        }
        for wanted in ["OMIT_JSON", "DEFAULT_MEMSTATUS=0"] {
            assert!(options.iter().any(|o| o == wanted), "{wanted}: {options:?}");
        }
        conn.execute_batch("SELECT json('[]')").unwrap_err();
    }
}
