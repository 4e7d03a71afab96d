//! `/livez` and `/readyz`, for a supervisor that restarts a dead host and a balancer or
//! operator that waits for a working one; unlike `/health`, neither fails while the frontend
//! is down (the host spools then, as it should).
//!
//! Alive: the main loop is waiting for its next event, or has been busy with one (start-up,
//! a reload, a change in the plugins folder) for less than [`BUSY_LIMIT`]; it costs no
//! wake-up. Ready: start-up is done, every instance runs and the spool takes records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// How long the main loop may be busy with one event before the host counts as hung.
const BUSY_LIMIT: Duration = Duration::from_secs(120);

/// A probe's answer.
#[derive(Debug, Serialize)]
pub struct Probe {
    pub ok: bool,
    /// Why not.
    pub problems: Vec<String>,
}

impl Probe {
    pub fn of(problems: Vec<String>) -> Self {
        Self {
            ok: problems.is_empty(),
            problems,
        }
    }
}

/// What the main loop is doing.
pub struct MainLoop {
    /// Busy since when, with what; `None` while it waits for an event.
    busy: Mutex<Option<(Instant, &'static str)>>,
    /// Whether it has waited once: start-up is done.
    started: AtomicBool,
}

impl MainLoop {
    /// Busy starting up.
    pub fn new() -> Self {
        Self {
            busy: Mutex::new(Some((Instant::now(), "starting up"))),
            started: AtomicBool::new(false),
        }
    }

    /// It began handling an event (`what` it is doing, for the problem).
    pub fn busy(&self, what: &'static str) {
        *self.busy.lock() = Some((Instant::now(), what));
    }

    /// It waits for the next event.
    pub fn waiting(&self) {
        *self.busy.lock() = None;
        self.started.store(true, Ordering::Relaxed);
    }

    /// Why the host is not alive at `now`, if it is not.
    pub fn hung(&self, now: Instant) -> Option<String> {
        let (since, what) = (*self.busy.lock())?;
        let busy = now.saturating_duration_since(since);
        (busy > BUSY_LIMIT).then(|| {
            format!(
                "the main loop has been {what} for {} s (more than {} s)",
                busy.as_secs(),
                BUSY_LIMIT.as_secs()
            )
        })
    }

    /// Whether start-up is done.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_past_the_limit_is_hung_waiting_never_and_start_up_ends_at_the_first_wait() {
        let main = MainLoop::new();
        let now = Instant::now();
        assert!(!main.started());
        assert_eq!(main.hung(now), None);
        let late = now + BUSY_LIMIT + Duration::from_secs(5);
        let hung = main.hung(late).unwrap();
        assert!(
            hung.starts_with("the main loop has been starting up for 12"),
            "{hung}"
        );
        main.waiting();
        assert!(main.started());
        assert_eq!(
            main.hung(late),
            None,
            "waiting for events is alive, however long"
        );
        main.busy("reloading");
        assert!(main.hung(late).unwrap().contains("reloading"));
        assert_eq!(main.hung(Instant::now()), None);
    }
}
