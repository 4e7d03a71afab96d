//! The spool of an installation, read back: the one place the tests and the benchmark read it.

use calllogger_spool::{OpenError, SpoolReader};
use serde_json::Value;

use crate::Install;

/// What an installation's spool holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Spool {
    /// Records waiting for delivery, `unapplied` included.
    pub pending: u64,
    /// Of those, the ones in the journal, not yet in the queue (the host applies them when it
    /// runs).
    pub unapplied: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// The newest pending records, oldest first (as many as asked for).
    pub newest: Vec<Value>,
}

impl Install {
    /// Reads the spool in this installation's state folder: its counts and its `newest`
    /// pending records (oldest first); `None` while nothing was pushed there yet (no queue, or the
    /// host is still creating it). Every read
    /// of the spool by the tests and the benchmark goes through here, with the spool crate's
    /// own reader (`calllogger_spool::SpoolReader`, as `calllogger spool` reads it).
    pub fn spool(&self, newest: usize) -> Option<Spool> {
        let dir = self.state_dir();
        if !dir.join(calllogger_spool::FILE).exists() {
            return None;
        }
        let reader = match SpoolReader::open(&dir) {
            Ok(reader) => reader,
            // The host is creating it.
            Err(OpenError::NoQueue(_)) => return None,
            Err(e) => panic!("opening the spool in {}: {e}", dir.display()),
        };
        let counts = reader.counts().expect("the spool's counts");
        let records = if newest > 0 {
            reader.newest(newest).expect("the spool's newest records")
        } else {
            Vec::new()
        };
        Some(Spool {
            pending: counts.pending + counts.unapplied,
            unapplied: counts.unapplied,
            dead_letters: counts.dead,
            newest: records
                .iter()
                .map(|r| {
                    serde_json::from_str(&r.body)
                        .unwrap_or_else(|e| panic!("not a JSON record ({e}): {}", r.body))
                })
                .collect(),
        })
    }
}
