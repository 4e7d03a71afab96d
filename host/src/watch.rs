//! Watching the plugins folder: a debounced notify watcher that reports when a library file
//! arrives (`cp`, write-then-rename, `mv` in), changes, or goes.
//!
//! Only creates, removals, renames, attribute changes (a `chmod` that makes a refused file
//! acceptable) and close-after-write count: the host's own reads of the libraries raise
//! open/close-read events that would otherwise trigger a rescan after every rescan. The
//! debounce waits for a `cp` of a large file, which raises many write events, to finish.

use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use crate::loader::is_library_name;
use crate::signals::Event;

/// Quiet time after the last event before the folder is rescanned.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// The watcher; watching ends when it is dropped.
pub type Watcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Sends [`Event::PluginsChanged`] on `tx` whenever a library in `dir` changed.
pub fn start(dir: &Path, tx: Sender<Event>) -> notify::Result<Watcher> {
    let mut debouncer =
        new_debouncer(
            DEBOUNCE,
            None,
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    if events.iter().any(|e| relevant(&e.event)) {
                        let _ = tx.send(Event::PluginsChanged);
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!("watching the plugins folder: {e}");
                    }
                }
            },
        )?;
    debouncer.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

fn relevant(event: &notify::Event) -> bool {
    let kind = matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    kind && event.paths.iter().any(|p| is_library_name(p))
}
