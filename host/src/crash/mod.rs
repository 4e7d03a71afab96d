//! The crash marker: when the host dies on a signal from native code (SIGSEGV, SIGBUS, SIGILL,
//! SIGFPE, SIGABRT; on Windows an unhandled exception such as an access violation), a handler
//! writes which instance the crashing thread was running to `state_dir/crash-marker`, and the
//! next start logs it and clears the file.
//!
//! The handler may only do what is async-signal-safe, so everything it writes is prepared
//! beforehand: the marker file is opened at start-up, and every instance thread keeps its line
//! (`instance X (class C, library L)`) in a thread-local while it runs ([`RunningInstance`]).
//! After writing, the handler lets the signal or exception take its course, so the process
//! still dies of it.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

#[cfg(unix)]
#[path = "unix.rs"]
mod sys;
#[cfg(windows)]
#[path = "windows.rs"]
mod sys;

/// The marker's file name in `state_dir`.
const FILE_NAME: &str = "crash-marker";

thread_local! {
    /// The running instance's marker line on this thread (pointer and length), or null.
    static RUNNING: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// The crash marker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CrashMarkerError {
    #[error("cannot open the crash marker {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[cfg(unix)]
    #[error("cannot install a handler for {signal}: {source}")]
    Handler {
        signal: &'static str,
        source: std::io::Error,
    },
}

/// Reports the previous run's crash, if the marker in `state_dir` names one, then clears the
/// marker and installs the handlers that write it.
pub fn arm(state_dir: &Path) -> Result<(), CrashMarkerError> {
    let path = state_dir.join(FILE_NAME);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(report) = report(&text) {
            tracing::error!("{report} (from {}, now cleared)", path.display());
        }
    }
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file: File = options
        .open(&path)
        .map_err(|source| CrashMarkerError::Open {
            path: path.clone(),
            source,
        })?;
    sys::install(file)
}

/// Calls `write` with this thread's running instance's marker line, if it runs one. Safe in
/// the crash handler: it reads one thread-local `Cell` and allocates nothing.
fn with_running_line(write: impl FnOnce(&[u8])) {
    let (line, len) = RUNNING.with(Cell::get);
    if !line.is_null() {
        // SAFETY: `line` and `len` describe the boxed line of this thread's live
        // `RunningInstance`, which clears them before the box is freed, and which cannot
        // drop during this call on its own thread.
        write(unsafe { std::slice::from_raw_parts(line, len) });
    }
}

/// The error line for a marker's text: its first line (the first signal) is the cause.
fn report(text: &str) -> Option<String> {
    let (signal, running) = text.lines().next()?.split_once('\t')?;
    Some(if running.is_empty() {
        format!(
            "the previous run died on {signal} in a thread that runs no instance (the host's, or one a plugin started)"
        )
    } else {
        format!("the previous run died on {signal} while {running} was running plugin code")
    })
}

/// Marks the current thread as running an instance until dropped.
pub struct RunningInstance {
    /// The marker line the thread-local points into.
    _line: Box<[u8]>,
    /// Tied to the thread whose thread-local it set.
    _thread: PhantomData<*const ()>,
}

impl RunningInstance {
    /// Marks the current thread as running instance `name` of `class` from `library`.
    pub fn enter(name: &str, class: &str, library: &Path) -> Self {
        let line = format!(
            "instance {name} (class {class}, library {})",
            library.display()
        )
        .replace(['\n', '\t'], " ")
        .into_bytes()
        .into_boxed_slice();
        RUNNING.with(|running| running.set((line.as_ptr(), line.len())));
        Self {
            _line: line,
            _thread: PhantomData,
        }
    }
}

impl Drop for RunningInstance {
    fn drop(&mut self) {
        RUNNING.with(|running| running.set((std::ptr::null(), 0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_first_signal_and_its_instance() {
        assert_eq!(
            report("SIGSEGV\tinstance A (class A, library /p/liba.so)\nSIGABRT\tinstance A (class A, library /p/liba.so)\n")
                .unwrap(),
            "the previous run died on SIGSEGV while instance A (class A, library /p/liba.so) was running plugin code"
        );
        assert_eq!(
            report("SIGBUS\t\n").unwrap(),
            "the previous run died on SIGBUS in a thread that runs no instance (the host's, or one a plugin started)"
        );
        assert!(report("").is_none());
    }
}
