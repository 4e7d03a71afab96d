//! Over the cap: the queue drops the records marked to go first (see
//! [`EvictFirst`](crate::EvictFirst)), then the oldest.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::SqliteError;
use crate::open::{Db, Shared};
use crate::{schema, sql};

/// The most records one eviction deletes, so that it never holds the queue for long.
const EVICT_CHUNK: u64 = 10_000;
/// How often an ongoing eviction is logged.
const EVICTION_LOG_EVERY: Duration = Duration::from_secs(60);

impl Shared {
    /// Drops the oldest records marked to go first, then the oldest; at most [`EVICT_CHUNK`]
    /// at a time, so that the queue is never held for long.
    pub(crate) fn evict(&self, db: &mut Db) -> Result<(), SqliteError> {
        let pending = self.pending.load(Ordering::Relaxed);
        if pending <= self.max_records {
            return Ok(());
        }
        // A little more than needed, so that this runs once per batch, not per record.
        let excess =
            (pending - self.max_records + (self.max_records / 100).max(1)).min(EVICT_CHUNK);
        let tx = schema::Tx::begin(&db.conn).map_err(|e| self.err(e))?;
        let first = tx
            .prepare_cached(sql::EVICT_FIRST)
            .and_then(|mut s| s.execute([excess]))
            .map_err(|e| self.err(e))? as u64;
        let oldest = tx
            .prepare_cached(sql::EVICT_OLDEST)
            .and_then(|mut s| s.execute([excess - first]))
            .map_err(|e| self.err(e))? as u64;
        schema::add_pending(&tx, -((first + oldest) as i64)).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        self.pending.fetch_sub(first + oldest, Ordering::Relaxed);
        let log = &mut db.evictions;
        log.since_log += first + oldest;
        if log
            .logged_at
            .is_none_or(|at| at.elapsed() >= EVICTION_LOG_EVERY)
        {
            tracing::warn!(
                "spool full ({} records, settings.spool_max_records): evicted {} records ({} first, then the oldest){}",
                self.max_records,
                log.since_log,
                self.evict_first.what,
                if log.logged_at.is_some() { " since the last such message" } else { "" }
            );
            log.since_log = 0;
            log.logged_at = Some(Instant::now());
        }
        Ok(())
    }
}
