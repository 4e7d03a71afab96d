//! A [`Source`] over the host's single-queue spool (`crate::spool`), until the spool has a
//! cursor per sink: a consuming cursor removes what it acks (the frontend), a following one
//! only moves past it (the stdout echo, which starts at the newest record).

use std::collections::BTreeSet;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use calllogger_plugin_abi::TimeoutSettings;
use parking_lot::Mutex;

use super::{Pending, Sink, SinkEvent, Source};
use crate::spool::{self, Spool, SpoolError};
use crate::stop::Stop;
use crate::telemetry::Telemetry;

/// Why a sink did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the spool cursor of sink {sink}: {source}")]
    Cursor { sink: String, source: SpoolError },
    #[error("cannot start the thread of sink {sink}: {source}")]
    Thread {
        sink: String,
        source: std::io::Error,
    },
}

/// Starts `sink` (see [`super::start`]) over its own cursor into `spool`, with its metrics.
pub fn start<K: Sink + 'static, E: From<SinkEvent> + Send + 'static>(
    sink: K,
    mode: Mode,
    retry: TimeoutSettings,
    spool: &Arc<Spool>,
    stop: &Arc<Stop>,
    telemetry: &Telemetry,
    events: &Sender<E>,
) -> Result<JoinHandle<()>, StartError> {
    let name = sink.name().to_owned();
    let cursor =
        SpoolCursor::new(spool.clone(), &name, mode).map_err(|source| StartError::Cursor {
            sink: name.clone(),
            source,
        })?;
    let metrics = telemetry.sink(&name);
    super::start(sink, cursor, retry, stop.clone(), metrics, events.clone())
        .map_err(|source| StartError::Thread { sink: name, source })
}

/// How a cursor treats the records it acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Acked records leave the spool; refused ones go to its dead letters.
    Consuming,
    /// Records stay in the spool; the cursor only moves past them (a refused one is skipped).
    Following,
}

/// One sink's cursor into a [`Spool`].
pub struct SpoolCursor {
    spool: Arc<Spool>,
    sink: String,
    mode: Mode,
    /// Following: the last seq acked.
    after: i64,
    /// Consuming: the seqs read and not yet acked (the spool removes by seq).
    read: Mutex<BTreeSet<i64>>,
}

impl SpoolCursor {
    /// A cursor for `sink`; a following one starts after the newest record.
    pub fn new(spool: Arc<Spool>, sink: &str, mode: Mode) -> Result<Self, SpoolError> {
        let after = match mode {
            Mode::Consuming => i64::MIN,
            Mode::Following => spool.newest(1)?.first().map_or(0, |p| p.seq),
        };
        Ok(Self {
            spool,
            sink: sink.to_owned(),
            mode,
            after,
            read: Mutex::default(),
        })
    }
}

fn pending(p: spool::Pending) -> Pending {
    Pending {
        seq: p.seq,
        id: p.id,
        kind: p.call_type,
        body: p.body,
    }
}

impl Source for SpoolCursor {
    type Error = SpoolError;

    fn sink(&self) -> &str {
        &self.sink
    }

    /// Consuming: the records pending. Following: the same count, an upper bound (this spool
    /// cannot count past a seq cheaply).
    fn backlog(&self) -> u64 {
        self.spool.pending()
    }

    fn read(&self, limit: usize) -> Result<Vec<Pending>, SpoolError> {
        let records = match self.mode {
            Mode::Consuming => self.spool.oldest(limit)?,
            Mode::Following => self.spool.after(self.after, limit)?,
        };
        if self.mode == Mode::Consuming {
            self.read.lock().extend(records.iter().map(|p| p.seq));
        }
        Ok(records.into_iter().map(pending).collect())
    }

    fn wait(&self, timeout: Duration) {
        self.spool.wait_for_append(timeout);
    }

    fn ack(&mut self, through_seq: i64) -> Result<(), SpoolError> {
        match self.mode {
            Mode::Following => self.after = self.after.max(through_seq),
            Mode::Consuming => {
                let mut read = self.read.lock();
                let done: Vec<i64> = read.range(..=through_seq).copied().collect();
                self.spool.remove(&done)?;
                read.retain(|seq| *seq > through_seq);
            }
        }
        Ok(())
    }

    fn bury(&mut self, seq: i64, status: u16, response: &str) -> Result<(), SpoolError> {
        if self.mode == Mode::Consuming {
            self.spool.bury(seq, status, response)?;
        }
        self.ack(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Fsync, Role};

    fn push(spool: &Spool, kinds: &[i32]) {
        for (n, kind) in kinds.iter().enumerate() {
            spool
                .append(&format!("id-{n}"), *kind, &format!(r#"{{"n":{n}}}"#))
                .unwrap();
        }
        spool.apply().unwrap();
    }

    #[test]
    fn a_consuming_cursor_removes_what_it_acks_and_buries_what_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), Fsync::Periodic, 100, Role::Owner).unwrap());
        push(&spool, &[2, 0, 2, 2]);
        let mut cursor = SpoolCursor::new(spool.clone(), "frontend", Mode::Consuming).unwrap();
        assert_eq!(cursor.sink(), "frontend");
        assert_eq!(cursor.backlog(), 4);
        let read = cursor.read(3).unwrap();
        assert_eq!(read.iter().map(|p| p.kind).collect::<Vec<_>>(), [2, 0, 2]);
        // Through the third: the second (skipped by policy) goes with it.
        cursor.ack(read[2].seq).unwrap();
        assert_eq!(cursor.backlog(), 1);
        let last = cursor.read(10).unwrap();
        assert_eq!(last[0].body, r#"{"n":3}"#);
        cursor.bury(last[0].seq, 422, "bad").unwrap();
        let counts = spool.counts().unwrap();
        assert_eq!((counts.pending, counts.dead), (0, 1));
        assert!(cursor.read(10).unwrap().is_empty());
    }

    #[test]
    fn a_following_cursor_starts_after_the_newest_record_and_keeps_what_it_acks() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), Fsync::Periodic, 100, Role::Owner).unwrap());
        push(&spool, &[2, 2]);
        let mut cursor = SpoolCursor::new(spool.clone(), "stdout", Mode::Following).unwrap();
        assert!(cursor.read(10).unwrap().is_empty(), "what was there before");
        push(&spool, &[2, 0]);
        let fresh = cursor.read(10).unwrap();
        assert_eq!(fresh.len(), 2);
        cursor.ack(fresh[0].seq).unwrap();
        cursor.bury(fresh[1].seq, 500, "").unwrap();
        assert!(cursor.read(10).unwrap().is_empty());
        let counts = spool.counts().unwrap();
        assert_eq!(
            (counts.pending, counts.dead),
            (4, 0),
            "a tap holds nothing back"
        );
    }
}
