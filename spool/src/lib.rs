//! The spool: every pushed record, durable on disk until the sinks that consume it have it.
//!
//! Two files in the state folder. [`Writer::append`] writes the record to the journal (one
//! `write`, so it survives a crash or SIGKILL of the host once it returns; with
//! [`Fsync::Always`] also a power loss). The [`Applier`] moves the journal's lines, in
//! batches, into [`FILE`]: SQLite in WAL mode (bundled, nothing to install), the ordered
//! queue the sinks read, readable with any SQLite tool.
//!
//! Each sink reads the queue from its own [`Cursor`], a durable position by sink name. A
//! record leaves the queue once every sink named in [`Options::consumers`] has acked it
//! (with none, records stay until the cap evicts them); a [`Mode::Following`] cursor (a tap,
//! such as an echo to stdout) holds nothing back. An ack is written with the next
//! transaction (the next record's, or the applier's within a second, or when the cursor
//! ends): a host killed in between sends the records of that last second again, under the
//! same ids (at least once, never lost). In a trickle to a sole consumer, a record goes from
//! the journal straight to its sink and, once acked, never enters the table (`direct.rs`):
//! no transaction per record at all.
//!
//! What goes wrong is handled, never hidden: a journal write that fails is an error for the
//! append (the caller holds the record and retries) and shows in [`Queue::trouble`]; a journal
//! removed, cut short or replaced under the host is written afresh from memory; a journal
//! cut short or restored from a backup while the host was stopped is never applied twice; a
//! database that SQLite calls corrupt is moved aside and rebuilt from what can be read of it
//! and from the journal.

mod applier;
mod direct;
mod error;
mod eviction;
pub mod fs;
mod journal;
mod open;
mod queue;
mod reader;
mod schema;
mod sql;
mod trouble;

use std::num::NonZeroU64;
use std::sync::Arc;

pub use applier::{Applier, ApplierThread};
pub use error::{
    AckError, AppendError, CursorError, JournalError, OpenError, ReadError, RetryError, SqliteError,
};
pub use queue::{Cursor, Mode, Queue, COUNTED};
pub use reader::SpoolReader;

use crate::open::Shared;

/// The file name of the spool's queue inside the state folder.
pub const FILE: &str = "spool.sqlite3";
/// The file name of the spool's journal inside the state folder.
pub const JOURNAL: &str = "spool.journal";

/// When commits reach the disk, not just the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Every commit: survives power loss, costs a disk flush per record.
    Always,
    /// At checkpoints: survives a crash of the host, not of the machine.
    Periodic,
}

/// Which records a full spool drops first (before the oldest of the others), decided from a
/// record's kind when it reaches the queue and stored with it.
#[derive(Debug, Clone, Copy)]
pub struct EvictFirst {
    /// Whether a record of this kind goes first.
    pub applies: fn(kind: i32) -> bool,
    /// What those records are, for the log ("ringing INCOMING ones").
    pub what: &'static str,
}

/// How the spool is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The most records the queue holds; past it, records are evicted.
    pub max_records: NonZeroU64,
    pub fsync: Fsync,
    /// The sinks that consume the spool this run: a record leaves once each has acked it.
    pub consumers: Vec<String>,
    pub evict_first: EvictFirst,
}

/// A record in the queue, as JSON with its `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Position in the spool: delivery order.
    pub seq: i64,
    /// The record's unique id (also inside `body`).
    pub id: String,
    /// What the caller said the record is (for the host: its call type).
    pub kind: i32,
    /// The record's JSON, with `id`.
    pub body: String,
}

/// What the spool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Records in the queue.
    pub pending: u64,
    /// Dead letters, of every sink.
    pub dead: u64,
    /// Unix seconds the oldest record in the queue was pushed.
    pub oldest_pending: Option<i64>,
    /// Records in the journal not yet in the queue (the host applies them when it runs).
    pub unapplied: u64,
}

/// Opens the spool as its owner.
pub enum Spool {}

impl Spool {
    /// Opens (or creates) the spool in `dir`: takes the folder's lock, brings the database's
    /// layout up to date, checks the journal against the queue, and leaves what the journal
    /// holds beyond the queue (after a crash) to the [`Applier`], so that start-up does not
    /// wait for it.
    pub fn open(
        dir: &std::path::Path,
        options: Options,
    ) -> Result<(Writer, Queue, Applier), OpenError> {
        Self::open_on(Arc::new(fs::RealFilesystem), dir, options)
    }

    /// [`open`](Spool::open) with the journal and the folder on `filesystem`.
    pub fn open_on(
        filesystem: Arc<dyn fs::Filesystem>,
        dir: &std::path::Path,
        options: Options,
    ) -> Result<(Writer, Queue, Applier), OpenError> {
        let shared = Arc::new(Shared::open(filesystem, dir, options)?);
        Ok((
            Writer {
                shared: shared.clone(),
            },
            Queue::new(shared.clone()),
            Applier { shared },
        ))
    }
}

/// Appends records; one per spool, shared by every instance.
#[derive(Clone)]
pub struct Writer {
    shared: Arc<Shared>,
}

impl Writer {
    /// Stores a record (its JSON with `id`): durable when this returns `Ok`. Waits while the
    /// applier is far behind. On an error the record is not stored (nothing of it stays in
    /// the journal): hold it and try again.
    pub fn append(&self, id: &str, kind: i32, body: &str) -> Result<(), AppendError> {
        self.shared.append(id, kind, body)
    }
}

#[cfg(test)]
mod tests;
