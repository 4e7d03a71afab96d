//! Watching the plugins folder: a notify watcher that reports, once the folder has been quiet
//! for [`DEBOUNCE`], that a library file arrived (`cp`, write-then-rename, `mv` in), changed,
//! or went.
//!
//! Only creates, removals, renames, attribute changes (a `chmod` that makes a refused file
//! acceptable) and close-after-write (on Windows, any write) count: the host's own reads of the libraries raise
//! open/close-read events that would otherwise trigger a rescan after every rescan. The
//! debounce waits for a `cp` of a large file to finish. Nothing here wakes while the folder is
//! quiet: the watcher's thread sleeps in the kernel, and the debounce thread in a channel
//! receive with no timeout until an event arrives.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher as _};

use crate::loader::is_library_name;
use crate::signals::Event;

/// Quiet time after the last event before the folder is rescanned.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// The watcher; watching ends (and its debounce thread with it) when it is dropped.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

/// What the watcher hands the debounce thread.
enum Seen {
    /// A relevant change to a library file.
    Change,
    /// The watcher failed (e.g. the kernel's watch limit).
    Error(notify::Error),
}

/// Sends [`Event::PluginsChanged`] on `tx` whenever a library in `dir` changed.
pub fn start(dir: &Path, tx: Sender<Event>) -> notify::Result<Watcher> {
    let (seen_tx, seen) = mpsc::channel();
    let mut inner = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let seen = match result {
            Ok(event) if relevant(&event) => Seen::Change,
            Ok(_) => return,
            Err(e) => Seen::Error(e),
        };
        let _ = seen_tx.send(seen);
    })?;
    inner.watch(dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("plugins-watch".into())
        .spawn(move || debounce(&seen, DEBOUNCE, &tx))?;
    Ok(Watcher { _inner: inner })
}

/// Until the watcher is gone: waits for a change, then for `quiet` without one, then sends
/// one [`Event::PluginsChanged`].
fn debounce(seen: &Receiver<Seen>, quiet: Duration, tx: &Sender<Event>) {
    let mut changed = false;
    loop {
        let next = if changed {
            seen.recv_timeout(quiet)
        } else {
            seen.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(Seen::Change) => changed = true,
            Ok(Seen::Error(e)) => tracing::warn!("watching the plugins folder: {e}"),
            Err(RecvTimeoutError::Timeout) => {
                changed = false;
                if tx.send(Event::PluginsChanged).is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn relevant(event: &notify::Event) -> bool {
    let kind = matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    ) || written_on_windows(&event.kind);
    kind && event.paths.iter().any(|p| is_library_name(p))
}

/// Windows reports no close-after-write, only that a file's data changed (`Modify(Any)`, from
/// `ReadDirectoryChangesW`, which is not asked for access times: the host's own reads raise
/// nothing there).
fn written_on_windows(kind: &EventKind) -> bool {
    cfg!(windows) && matches!(kind, EventKind::Modify(ModifyKind::Any))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_burst_of_changes_is_one_event_after_the_quiet_time() {
        let (seen_tx, seen) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        let quiet = Duration::from_millis(100);
        let thread = std::thread::spawn(move || debounce(&seen, quiet, &tx));
        let started = Instant::now();
        for _ in 0..5 {
            seen_tx.send(Seen::Change).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let event = events.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(event, Event::PluginsChanged);
        assert!(
            started.elapsed() >= Duration::from_millis(180),
            "not before the burst's end + quiet time"
        );
        assert!(
            events.recv_timeout(quiet * 3).is_err(),
            "one event for the burst"
        );
        // A later change is reported again; dropping the watcher's side ends the thread.
        seen_tx.send(Seen::Change).unwrap();
        assert_eq!(
            events.recv_timeout(Duration::from_secs(10)).unwrap(),
            Event::PluginsChanged
        );
        drop(seen_tx);
        thread.join().unwrap();
    }

    #[test]
    fn a_library_written_into_the_folder_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, events) = mpsc::channel();
        let _watcher = start(dir.path(), tx).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a library").unwrap();
        assert!(
            events.recv_timeout(DEBOUNCE * 3).is_err(),
            "other files are ignored"
        );
        std::fs::write(dir.path().join("libnew.so"), "bytes").unwrap();
        let event = events.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(event, Event::PluginsChanged);
    }
}
