//! One error type per operation; their texts are what a person reads in the log.

use std::io;
use std::path::PathBuf;

use crate::schema::LAYOUT;

/// The queue database failed.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SqliteError {
    pub path: PathBuf,
    pub source: rusqlite::Error,
}

/// The journal file could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read back.
    #[error("cannot read the spool journal {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A new generation of the file could not be created.
    #[error("cannot create the spool journal {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    /// A torn last line (a power loss mid-write) could not be cut off.
    #[error("cannot write to the spool journal {path}: {source}")]
    Cut { path: PathBuf, source: io::Error },
}

/// Why [`Spool::open`](crate::Spool::open) or [`SpoolReader::open`](crate::SpoolReader::open)
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Another host holds the state folder.
    #[error("another calllogger is running with the state folder {0}; give each its own settings.state_dir")]
    Busy(PathBuf),
    /// The state folder or its lock file could not be created.
    #[error("cannot create {path} (settings.state_dir): {source}")]
    Folder { path: PathBuf, source: io::Error },
    /// The database was written by a newer calllogger.
    #[error("spool {path} has layout {found}, newer than this calllogger's {LAYOUT}: run the newer calllogger, or move the file aside")]
    NewerLayout { path: PathBuf, found: i64 },
    /// The database has no queue yet: its owner is creating it, or never did.
    #[error("spool {0} holds no queue yet: nothing was pushed there")]
    NoQueue(PathBuf),
}

/// Why a record could not be appended: it is not stored, nothing of it is in the journal.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to the spool journal {path}: {source}")]
pub struct AppendError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Why the journal could not be moved into the queue (the records wait in the journal); it
/// shows in [`Queue::trouble`](crate::Queue::trouble).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Why records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Why an ack or a dead letter was not recorded (the records stay after the cursor).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AckError(#[from] pub SqliteError);

/// Why a cursor could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    /// A consuming cursor for a sink not in [`Options::consumers`](crate::Options::consumers).
    #[error("sink {0} consumes the spool but is not among its consumers (Options::consumers)")]
    NotAConsumer(String),
    /// A following cursor for a sink that is among the consumers.
    #[error("sink {0} is among the spool's consumers: it cannot follow it too")]
    IsAConsumer(String),
}

/// Why `retry-dead` did not put the dead letters back.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    /// The host runs (it holds the state folder), or the lock could not be taken.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The database is of an older layout, which only the host brings up to date.
    #[error("spool {path} has layout {found}, older than this calllogger's {LAYOUT}: start calllogger once to bring it up to date, then retry")]
    OlderLayout { path: PathBuf, found: i64 },
}
