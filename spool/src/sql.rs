//! The statements the spool runs while records flow, compiled once when a connection opens
//! ([`prepare`]) and taken from the connection's statement cache after that.
//!
//! A running spool then never compiles SQL. That saves the compile's CPU on each first use,
//! and it keeps SQLite's parser and code generator, a large share of its code, out of the
//! pages a running host touches: the host hands its start-up code back to the kernel once
//! start-up is done, and a statement compiled for the first record would fault it back in.
//! Statements that run only at open, in a recovery or for the `spool` command are written
//! where they run.

use rusqlite::Connection;

pub(crate) const BEGIN: &str = "BEGIN";
pub(crate) const COMMIT: &str = "COMMIT";
pub(crate) const ROLLBACK: &str = "ROLLBACK";

/// Applies one journal line: `(seq, id, kind, pushed_at, body, evict_first)`.
pub(crate) const INSERT: &str = "INSERT INTO pending (seq, id, kind, pushed_at, body, evict_first)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// The oldest `?2` records after the seq `?1`, in order.
pub(crate) const READ: &str =
    "SELECT seq, id, kind, body FROM pending WHERE seq > ?1 ORDER BY seq LIMIT ?2";
/// The records after the seq `?1`, counted up to `?2`.
pub(crate) const COUNT_AFTER: &str =
    "SELECT count(*) FROM (SELECT 1 FROM pending WHERE seq > ?1 LIMIT ?2)";
/// The records with seqs in `(?1, ?2]`.
pub(crate) const COUNT_BETWEEN: &str = "SELECT count(*) FROM pending WHERE seq > ?1 AND seq <= ?2";
/// Deletes the records with seqs in `(?1, ?2]`.
pub(crate) const DELETE_BETWEEN: &str = "DELETE FROM pending WHERE seq > ?1 AND seq <= ?2";
/// Makes the record of seq `?2` a dead letter of sink `?1`, with status `?3` and answer `?4`.
pub(crate) const BURY: &str = "INSERT OR REPLACE INTO dead
         (sink, seq, id, kind, pushed_at, body, status, response, failed_at)
     SELECT ?1, seq, id, kind, pushed_at, body, ?3, ?4, unixepoch()
     FROM pending WHERE seq = ?2";
/// Sets sink `?1`'s cursor: consuming `?2`, acked through `?3`.
pub(crate) const STORE_CURSOR: &str = "INSERT INTO cursors VALUES (?1, ?2, ?3)
         ON CONFLICT (sink) DO UPDATE SET consuming = ?2, acked = ?3";
/// Sets the `meta` key `?1` to `?2`.
pub(crate) const SET_META: &str =
    "INSERT INTO meta VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";
/// Adds `?1` to the stored count of records in the queue.
pub(crate) const ADD_PENDING: &str = "UPDATE meta SET value = value + ?1 WHERE key = 'pending'";
/// Raises the queue's last seq to `?1` where it is lower.
pub(crate) const RAISE_SEQUENCE: &str =
    "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'pending' AND seq < ?1";
/// Sets the queue's last seq to `?1` where SQLite has none yet.
pub(crate) const START_SEQUENCE: &str =
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'pending', ?1
     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'pending')";
/// Deletes the oldest `?1` records marked to be evicted first.
pub(crate) const EVICT_FIRST: &str = "DELETE FROM pending WHERE seq IN
     (SELECT seq FROM pending WHERE evict_first = 1 ORDER BY seq LIMIT ?1)";
/// Deletes the oldest `?1` records.
pub(crate) const EVICT_OLDEST: &str =
    "DELETE FROM pending WHERE seq IN (SELECT seq FROM pending ORDER BY seq LIMIT ?1)";
/// The push time of the oldest record after the seq `?1`.
pub(crate) const OLDEST_AFTER: &str =
    "SELECT pushed_at FROM pending WHERE seq > ?1 ORDER BY seq LIMIT 1";
pub(crate) const COUNT_DEAD: &str = "SELECT count(*) FROM dead";
/// Copies the WAL into the database file, without holding up the queue.
pub(crate) const CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";

/// What the owner's connection runs while records flow.
pub(crate) const OWNER: &[&str] = &[
    BEGIN,
    COMMIT,
    ROLLBACK,
    INSERT,
    READ,
    COUNT_AFTER,
    COUNT_BETWEEN,
    DELETE_BETWEEN,
    BURY,
    STORE_CURSOR,
    SET_META,
    ADD_PENDING,
    RAISE_SEQUENCE,
    START_SEQUENCE,
    EVICT_FIRST,
    EVICT_OLDEST,
    OLDEST_AFTER,
    COUNT_DEAD,
];

/// Compiles `statements` into `conn`'s statement cache (which must hold them all).
pub(crate) fn prepare(conn: &Connection, statements: &[&str]) -> rusqlite::Result<()> {
    for sql in statements {
        conn.prepare_cached(sql)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_prepares_every_statement_but_the_checkpointers() {
        // A statement left out of the list would be compiled while records flow. (Each one
        // is valid: a spool that cannot prepare them does not open.)
        let names = include_str!("sql.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub(crate) const ")?.split(':').next())
            .filter(|name| !["OWNER", "CHECKPOINT"].contains(name))
            .count();
        let listed: std::collections::HashSet<&str> = OWNER.iter().copied().collect();
        assert_eq!((listed.len(), OWNER.len()), (names, names));
    }
}
