//! Direct delivery: in a trickle, the sole consumer's cursor takes the records just appended
//! from the journal's tail and hands them to its sink before they reach the queue's table.
//!
//! A record the sink then acks never enters the table: the cursor, the applied journal offset
//! and the highest seq move past it in memory, and reach the database with the next save of
//! the acks, in one transaction (`Shared::save_acks`, in `queue.rs`). Until then its line
//! stays in the journal file beyond the applied offset, so a crash applies it again: at least
//! once, as with any ack. A record that is not acked at once (a retry, a refusal, a stop), or
//! that other lines follow into the queue, is inserted into the table first, under the seq
//! its sink saw: the order and the durability of the queue are unchanged.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use crate::error::SqliteError;
use crate::journal::{Found, Taken};
use crate::open::{Db, Shared};
use crate::{applier, Pending};

/// The most records a cursor takes directly; more than that is a backlog, which goes
/// through the table in batches.
const MOST: u64 = 16;

/// Records taken from the journal's tail by one cursor, in order, not in the table.
pub struct Direct {
    /// The cursor that took them.
    pub owner: u64,
    /// Where the first one's line starts in the journal file: the applied offset.
    pub start: u64,
    pub records: VecDeque<Staged>,
    /// The sink has read them; a second read is a retry, and they go to the table first.
    pub handed: bool,
}

/// One record taken directly, and its journal line (with its `\n`).
pub struct Staged {
    pub pending: Pending,
    pub line: Vec<u8>,
}

impl Direct {
    /// The records' lines as the journal holds them, then `next` (the lines after them), and
    /// the seq of the first.
    pub fn followed_by(self, next: Taken) -> (Taken, i64) {
        let first = self.records.front().map_or(0, |r| r.pending.seq);
        let mut bytes: Vec<u8> = self.records.iter().flat_map(|r| r.line.clone()).collect();
        bytes.extend_from_slice(&next.bytes);
        let taken = Taken {
            bytes,
            start: self.start,
            records: self.records.len() as u64 + next.records,
        };
        (taken, first)
    }
}

impl Shared {
    /// For the cursor `owner` of `sink`, about to wait: takes the journal's tail directly
    /// when it may, which is when it is the only cursor, the only consumer, nothing waits in
    /// the table, nothing is being recovered or retried, the journal file is whole, and the
    /// tail is short. Returns whether it took any; their seqs follow the newest, which now
    /// counts them.
    pub(crate) fn take_direct(&self, db: &mut Db, owner: u64, sink: &str) -> bool {
        let alone = db.cursors == 1 && db.consumers.len() == 1 && db.consumers.contains_key(sink);
        if !alone
            || db.direct.is_some()
            || db.recovering.is_some()
            || db.apply_failed
            || db.rotate.is_some()
            || self.pending.load(Ordering::Relaxed) != 0
        {
            return false;
        }
        // As every apply does: a journal file removed, cut short or replaced is repaired
        // (by the apply the cursor does instead) before the records written since are taken.
        if self.journal.waiting() == 0 || self.journal.check() != Found::Intact {
            return false;
        }
        let Some(taken) = self.journal.take_few(MOST) else {
            return false;
        };
        debug_assert_eq!(
            taken.start, db.journal_offset,
            "the tail follows what is applied"
        );
        let mut seq = self.newest.load(Ordering::Relaxed);
        let mut records = VecDeque::new();
        for line in taken.bytes.split_inclusive(|b| *b == b'\n') {
            let parsed = line.strip_suffix(b"\n").and_then(applier::parse_line);
            let Some((kind, _, id, body)) = parsed else {
                // Unreadable: the applier logs and skips it.
                self.journal.give_back(taken);
                return false;
            };
            seq += 1;
            let pending = Pending {
                seq,
                id: id.to_owned(),
                kind,
                body: body.to_owned(),
            };
            records.push_back(Staged {
                pending,
                line: line.to_vec(),
            });
        }
        self.newest.store(seq, Ordering::Relaxed);
        db.direct = Some(Direct {
            owner,
            start: taken.start,
            records,
            handed: false,
        });
        true
    }

    /// The sink acked through `through`: the direct records up to it are done without
    /// entering the table; the applied offset moves past their lines (saved with the acks).
    pub(crate) fn ack_direct(&self, db: &mut Db, through: i64) {
        let Some(direct) = &mut db.direct else {
            return;
        };
        while let Some(done) = direct.records.front().filter(|r| r.pending.seq <= through) {
            direct.start += done.line.len() as u64;
            direct.records.pop_front();
        }
        db.journal_offset = direct.start;
        db.offset_unsaved = true;
        if direct.records.is_empty() {
            db.direct = None;
        } else {
            direct.handed = false;
        }
    }

    /// Inserts the direct records not yet acked into the table, under their seqs. On a
    /// failure their lines go back to the front of the journal's tail, for the applier
    /// (woken for it), which retries and reports it.
    pub(crate) fn insert_direct(&self, db: &mut Db) -> Result<(), SqliteError> {
        let Some(direct) = db.direct.take() else {
            return Ok(());
        };
        let (taken, first) = direct.followed_by(Taken::default());
        match self.insert(db, &taken.bytes, taken.start, first) {
            Ok(_) => {
                self.want_checkpoint();
                Ok(())
            }
            Err(e) => {
                self.journal.give_back(taken);
                // Their seqs are given again when they are applied: a cursor waits for that.
                self.newest.fetch_min(first - 1, Ordering::Relaxed);
                db.apply_failed = true;
                self.journal.wake();
                Err(e)
            }
        }
    }
}
