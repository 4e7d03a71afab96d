//! The spool of an installation, read back: the one place the tests and the benchmark read it.

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
    /// pending records (oldest first); `None` while nothing was pushed there yet. Every read
    /// of the spool by the tests and the benchmark goes through here (today through
    /// `calllogger spool` and `calllogger spool tail`, the host's own reader).
    pub fn spool(&self, newest: usize) -> Option<Spool> {
        if !self.state_dir().join("spool.sqlite3").exists() {
            return None;
        }
        let (ok, out, err) = self.run_cli(&["spool"]);
        assert!(ok, "calllogger spool failed:\n{out}{err}");
        let count = |prefix: &str| {
            out.lines()
                .find_map(|l| l.trim_start().strip_prefix(prefix))
                .map(|n| {
                    n.trim()
                        .parse()
                        .unwrap_or_else(|e| panic!("{prefix}{n}: {e}"))
                })
        };
        let mut spool = Spool {
            pending: count("pending: ").unwrap_or_else(|| panic!("no pending count:\n{out}")),
            unapplied: count("of which in the journal, not yet in the queue: ").unwrap_or(0),
            dead_letters: count("dead letters: ")
                .unwrap_or_else(|| panic!("no dead letter count:\n{out}")),
            newest: Vec::new(),
        };
        if newest > 0 {
            let (ok, tail, err) = self.run_cli(&["spool", "tail", "-n", &newest.to_string()]);
            assert!(ok, "calllogger spool tail failed:\n{tail}{err}");
            spool.newest = tail
                .lines()
                .map(|l| {
                    serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("not a JSON record ({e}): {l}"))
                })
                .collect();
        }
        Some(spool)
    }
}
