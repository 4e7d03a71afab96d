//! The queue as the sinks see it: one durable cursor per sink, by name.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::direct::Direct;
use crate::error::{AckError, CursorError, ReadError, SqliteError};
use crate::open::{store_cursor, Db, Shared, UnsavedAck};
use crate::schema;
use crate::sql;
use crate::{Counts, Pending};

/// The most records [`Cursor::backlog`] counts behind the queue's front: far more than a
/// sink reads at once, or needs to see to call it a backlog.
pub const COUNTED: u64 = 10_000;

/// An ack that takes a span of this many seqs out of the table is written at once, in a
/// transaction of its own: a backlog's batch, whose commit costs little per record, and which
/// a crash would otherwise send again with everything else acked in that second.
const SAVE_AT_ONCE: i64 = 16;

/// How a sink's cursor holds records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Records are kept until this sink has acked them (the sink is one of
    /// [`Options::consumers`](crate::Options::consumers)).
    Consuming,
    /// A tap: holds nothing back; a new one starts at the newest record.
    Following,
}

/// The sinks' side of the spool. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub(crate) shared: Arc<Shared>,
}

impl Queue {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The cursor of `sink`, where it was left (durable across runs). A consumer not seen
    /// before starts at the beginning, a new follower at the newest record.
    pub fn cursor(&self, sink: &str, mode: Mode) -> Result<Cursor, CursorError> {
        let mut db = self.shared.db();
        let consumer = db.consumers.get(sink).copied();
        let position = match (mode, consumer) {
            (Mode::Consuming, Some(acked)) => acked,
            (Mode::Consuming, None) => return Err(CursorError::NotAConsumer(sink.to_owned())),
            (Mode::Following, Some(_)) => return Err(CursorError::IsAConsumer(sink.to_owned())),
            (Mode::Following, None) => {
                let err = |e| self.shared.err(e);
                let stored: Option<i64> = db
                    .conn
                    .query_row("SELECT acked FROM cursors WHERE sink = ?1", [sink], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(err)?;
                match stored {
                    Some(acked) => {
                        store_cursor(&db.conn, sink, false, acked).map_err(err)?;
                        acked
                    }
                    None => {
                        let newest = self.shared.newest.load(Ordering::Relaxed);
                        store_cursor(&db.conn, sink, false, newest).map_err(err)?;
                        newest
                    }
                }
            }
        };
        db.cursors += 1;
        db.cursor_ids += 1;
        let id = db.cursor_ids;
        drop(db);
        Ok(Cursor {
            shared: self.shared.clone(),
            id,
            sink: sink.to_owned(),
            mode,
            position,
            seen_wakes: AtomicU64::new(self.shared.wakes.load(Ordering::SeqCst)),
        })
    }

    /// Wakes every cursor's [`wait`](Cursor::wait), e.g. to stop.
    pub fn wake(&self) {
        self.shared.wakes.fetch_add(1, Ordering::SeqCst);
        let _db = self.shared.db();
        self.shared.appended.notify_all();
    }

    /// Records in the queue and the journal, dead letters, the oldest record's age. Cheap at
    /// any queue length.
    pub fn counts(&self) -> Result<Counts, ReadError> {
        let db = self.shared.db();
        let (dead, oldest_pending) = schema::dead_and_oldest(&db.conn, db.removed_through)
            .map_err(|e| self.shared.err(e))?;
        let unapplied = self.shared.journal.waiting()
            + db.recovering.as_ref().map_or(0, |r| r.records)
            + db.direct.as_ref().map_or(0, |d| d.records.len() as u64);
        Ok(Counts {
            pending: self.shared.pending.load(Ordering::Relaxed),
            dead,
            oldest_pending,
            unapplied,
        })
    }

    /// What keeps the spool from taking or storing records right now, with for how long.
    pub fn trouble(&self) -> Vec<String> {
        self.shared.troubles.list()
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

/// One sink's position in the queue. Reads never move it; [`ack`](Cursor::ack) does.
pub struct Cursor {
    shared: Arc<Shared>,
    /// Tells this cursor's direct records from another's.
    id: u64,
    sink: String,
    mode: Mode,
    /// Every record up to here is acked by this sink.
    position: i64,
    /// [`Queue::wake`] calls this cursor has seen.
    seen_wakes: AtomicU64,
}

impl Cursor {
    /// The sink's name.
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// How many records in the queue are after this cursor, counted up to [`COUNTED`] when
    /// the cursor lags behind the queue's front (a follower, a consumer behind another):
    /// counting a backlog costs a scan of it, and a sink that read it in batches counted it
    /// again for every batch. Free of SQL at the front, where a sole consumer always is.
    pub fn backlog(&self) -> u64 {
        let mut db = self.shared.db();
        if let Some(direct) = self.direct(&mut db) {
            return direct.records.len() as u64;
        }
        if self.position <= db.removed_through {
            return self.shared.pending.load(Ordering::Relaxed);
        }
        db.conn
            .prepare_cached(sql::COUNT_AFTER)
            .and_then(|mut s| s.query_row(params![self.position, COUNTED], |r| r.get(0)))
            .unwrap_or_else(|e| {
                tracing::warn!("{}", self.shared.err(e));
                self.shared.pending.load(Ordering::Relaxed)
            })
    }

    /// The oldest `limit` records after the cursor, in order.
    pub fn read(&self, limit: usize) -> Result<Vec<Pending>, ReadError> {
        let mut db = self.shared.db();
        if let Some(direct) = self.direct(&mut db) {
            if !direct.handed {
                direct.handed = true;
                let records = direct.records.iter().take(limit);
                return Ok(records.map(|r| r.pending.clone()).collect());
            }
            // Read again: a retry. They wait in the table like any other record (a failure
            // leaves them to the applier, and the read finds none for now).
            let _ = self.shared.insert_direct(&mut db);
        }
        let mut select = db
            .conn
            .prepare_cached(sql::READ)
            .map_err(|e| self.shared.err(e))?;
        let rows = select
            .query_map(params![self.position, limit as i64], pending_row)
            .and_then(Iterator::collect)
            .map_err(|e| self.shared.err(e));
        Ok(rows?)
    }

    /// Blocks until a record after the cursor reaches the queue, [`Queue::wake`] is called,
    /// or `timeout` (when given) passes. A record appended while the cursor waits is taken
    /// by the cursor itself (on the sink's thread, which wakes for it anyway), not by the
    /// applier: straight from the journal when this is the only cursor and nothing else
    /// waits (the next [`read`](Cursor::read) has it, and it enters the table only if it is
    /// not acked at once), into the table otherwise.
    pub fn wait(&self, timeout: Option<Duration>) {
        let mut db = self.shared.db();
        let seen = self.seen_wakes.load(Ordering::SeqCst);
        let mut waited = false;
        while self.shared.wakes.load(Ordering::SeqCst) == seen
            && self.shared.newest.load(Ordering::Relaxed) <= self.position
        {
            if self.shared.take_direct(&mut db, self.id, &self.sink)
                || self.shared.apply_waiting(&mut db)
            {
                continue;
            }
            if waited && timeout.is_some() {
                break;
            }
            db.waiting += 1;
            match timeout {
                Some(timeout) => drop(self.shared.appended.wait_for(&mut db, timeout)),
                None => self.shared.appended.wait(&mut db),
            }
            db.waiting -= 1;
            waited = true;
        }
        self.seen_wakes
            .store(self.shared.wakes.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Notes that this sink is done with every record through `through_seq`; a record every
    /// consumer is done with leaves the queue at once. Written to disk with the next
    /// transaction: the next record's, the applier's within a second, or the cursor's drop;
    /// an ack of a batch (16 records or more) at once.
    pub fn ack(&mut self, through_seq: i64) -> Result<(), AckError> {
        self.advance(through_seq, None)
    }

    /// Keeps the record `seq` as this sink's dead letter (with the status and the first 1 kB
    /// of the response), then acks through it.
    pub fn bury(&mut self, seq: i64, status: u16, response: &str) -> Result<(), AckError> {
        self.advance(seq, Some((status, response)))
    }

    /// The records this cursor took directly, if any.
    fn direct<'d>(&self, db: &'d mut Db) -> Option<&'d mut Direct> {
        db.direct.as_mut().filter(|d| d.owner == self.id)
    }

    /// Moves the cursor to `through` at once, in memory: the records every consumer has now
    /// acked leave the queue (they are no longer counted, read by a consumer or evicted). The
    /// change reaches the database with the next transaction (the next record's apply, or
    /// the applier's save of the acks within a second), so that a record in a trickle costs one
    /// transaction, not two; a host killed before that sends those records again, under
    /// their ids. A dead letter, and an ack of [`SAVE_AT_ONCE`] records or more, are written
    /// at once.
    fn advance(&mut self, through: i64, dead: Option<(u16, &str)>) -> Result<(), AckError> {
        let mut db = self.shared.db();
        if self.direct(&mut db).is_some() {
            if dead.is_some() {
                // A dead letter is a row of the table. On a failure the record waits in the
                // journal, to be applied and offered again.
                self.shared.insert_direct(&mut db)?;
            } else {
                self.shared.ack_direct(&mut db, through);
            }
        }
        let err = |e| self.shared.err(e);
        let position = self.position.max(through);
        let low = match self.mode {
            Mode::Consuming => db
                .consumers
                .iter()
                .map(|(sink, acked)| if *sink == self.sink { position } else { *acked })
                .min()
                .unwrap_or(position),
            Mode::Following => db.removed_through,
        };
        let from = db.removed_through;
        let pending = self.shared.pending.load(Ordering::Relaxed);
        let at_once = pending > 0 && low - from >= SAVE_AT_ONCE;
        let mut removed = 0;
        if low > from && pending > 0 && !at_once {
            removed = db
                .conn
                .prepare_cached(sql::COUNT_BETWEEN)
                .and_then(|mut s| s.query_row([from, low], |r| r.get::<_, i64>(0)))
                .map_err(err)? as u64;
        }
        if let Some((status, response)) = dead {
            let response: String = response.chars().take(1024).collect();
            db.conn
                .prepare_cached(sql::BURY)
                .and_then(|mut s| s.execute(params![self.sink, through, status, response]))
                .map_err(err)?;
        }
        let ack = UnsavedAck {
            consuming: self.mode == Mode::Consuming,
            acked: position,
        };
        match db.unsaved_acks.get_mut(&self.sink) {
            Some(unsaved) => *unsaved = ack,
            None => {
                db.unsaved_acks.insert(self.sink.clone(), ack);
            }
        }
        if self.mode == Mode::Consuming {
            if let Some(acked) = db.consumers.get_mut(&self.sink) {
                *acked = position;
            }
        }
        self.position = position;
        if at_once {
            let tx = schema::Tx::begin(&db.conn).map_err(err)?;
            self.shared.save_acks(&tx, &db).map_err(err)?;
            let deleted = delete_acked(&tx, from, low).map_err(err)?;
            tx.commit().map_err(err)?;
            acks_saved(&mut db);
            (db.removed_through, db.deleted_through) = (low, low);
            self.shared.pending.fetch_sub(deleted, Ordering::Relaxed);
            return Ok(());
        }
        if low > from {
            db.removed_through = low;
            self.shared.pending.fetch_sub(removed, Ordering::Relaxed);
        }
        drop(db);
        self.shared.want_ack_save();
        Ok(())
    }
}

impl Drop for Cursor {
    /// Puts the records it took directly and did not ack into the table, and saves the acks
    /// not yet written: a sink that ends has them in the database.
    fn drop(&mut self) {
        let mut db = self.shared.db();
        db.cursors -= 1;
        if self.direct(&mut db).is_some() {
            // A failure leaves them in the journal, applied by the applier or the next start.
            let _ = self.shared.insert_direct(&mut db);
        }
        drop(db);
        if let Err(e) = self.shared.save_acks_now() {
            tracing::warn!("{e}; the records after the last saved ack will be delivered again");
        }
    }
}

/// Deletes the records with seqs in `(after, through]` inside the transaction `tx`, keeping
/// the stored count; returns how many there were.
fn delete_acked(tx: &Connection, after: i64, through: i64) -> rusqlite::Result<u64> {
    let deleted = tx
        .prepare_cached(sql::DELETE_BETWEEN)?
        .execute([after, through])? as u64;
    schema::add_pending(tx, -(deleted as i64))?;
    Ok(deleted)
}

/// After the transaction that [`Shared::save_acks`] wrote into has committed.
pub(crate) fn acks_saved(db: &mut Db) {
    db.unsaved_acks.clear();
    db.offset_unsaved = false;
    db.deleted_through = db.removed_through;
}

impl Shared {
    /// Writes, inside the transaction `tx`, the acks noted since the last save: the cursors,
    /// and the deletion of what every consumer has acked. Call [`acks_saved`] once `tx`
    /// commits.
    pub(crate) fn save_acks(&self, tx: &Connection, db: &Db) -> rusqlite::Result<()> {
        for (sink, ack) in &db.unsaved_acks {
            store_cursor(tx, sink, ack.consuming, ack.acked)?;
        }
        if db.offset_unsaved {
            // Past records delivered directly: their seqs are never given again.
            schema::set_meta(tx, "journal_offset", db.journal_offset)?;
            schema::raise_sequence(tx, self.newest.load(Ordering::Relaxed))?;
        }
        if db.removed_through > db.deleted_through {
            delete_acked(tx, db.deleted_through, db.removed_through)?;
        }
        Ok(())
    }

    /// Writes the acks not yet written, in a transaction of their own.
    pub(crate) fn save_acks_now(&self) -> Result<(), SqliteError> {
        let mut db = self.db();
        if db.unsaved_acks.is_empty()
            && db.removed_through == db.deleted_through
            && !db.offset_unsaved
        {
            return Ok(());
        }
        let tx = schema::Tx::begin(&db.conn).map_err(|e| self.err(e))?;
        self.save_acks(&tx, &db).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        acks_saved(&mut db);
        Ok(())
    }
}

/// A `seq, id, kind, body` row.
pub(crate) fn pending_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Pending> {
    Ok(Pending {
        seq: r.get(0)?,
        id: r.get(1)?,
        kind: r.get(2)?,
        body: r.get(3)?,
    })
}
