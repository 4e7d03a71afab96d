//! What keeps the spool from taking or storing records now, for health reports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Which part of the spool has the trouble.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    /// The journal cannot be written: appends are held.
    Write,
    /// The queue cannot be written: records wait in the journal.
    Apply,
}

/// The troubles the spool has now, each with since when.
#[derive(Default)]
pub struct Troubles {
    /// Whether any is set (read without the lock on every append).
    any: AtomicBool,
    slots: Mutex<[Option<(String, Instant)>; 2]>,
}

impl Troubles {
    /// Notes (or updates) `part`'s trouble.
    pub fn set(&self, part: Part, what: String) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match &mut slots[part as usize] {
            Some((old, _)) => *old = what,
            entry => *entry = Some((what, Instant::now())),
        }
        self.any.store(true, Ordering::Relaxed);
    }

    /// Ends `part`'s trouble, logging `resolved` when there was one.
    pub fn clear(&self, part: Part, resolved: &str) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, since)) = slots[part as usize].take() {
            tracing::info!(
                "{resolved} (after {:.1} s; nothing was lost)",
                since.elapsed().as_secs_f64()
            );
        }
        self.any
            .store(slots.iter().any(Option::is_some), Ordering::Relaxed);
    }

    /// Each trouble, with for how long.
    pub fn list(&self) -> Vec<String> {
        if !self.any.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .flatten()
            .map(|(what, since)| format!("{what} (for {} s)", since.elapsed().as_secs()))
            .collect()
    }
}
