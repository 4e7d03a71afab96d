//! The crash marker: when the host dies on a signal from native code (SIGSEGV, SIGBUS, SIGILL,
//! SIGFPE, SIGABRT), a signal handler writes which instance the crashing thread was running to
//! `state_dir/crash-marker`, and the next start logs it and clears the file.
//!
//! The handler may only do what is async-signal-safe, so everything it writes is prepared
//! beforehand: the marker file is opened at start-up, and every instance thread keeps its line
//! (`instance X (class C, library L)`) in a thread-local while it runs ([`RunningInstance`]).
//! After writing, the handler lets the signal take its course, so the process still dies of it.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use nix::libc;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The marker's file name in `state_dir`.
const FILE_NAME: &str = "crash-marker";

/// The signals native code dies of, and their names as the marker spells them.
const FATAL: [(Signal, &str); 5] = [
    (Signal::SIGSEGV, "SIGSEGV"),
    (Signal::SIGBUS, "SIGBUS"),
    (Signal::SIGILL, "SIGILL"),
    (Signal::SIGFPE, "SIGFPE"),
    (Signal::SIGABRT, "SIGABRT"),
];

/// The marker file's descriptor (opened once, never closed), or -1 before [`arm`].
static MARKER_FD: AtomicI32 = AtomicI32::new(-1);

/// The actions the handler replaced (the standard library's stack overflow report for SIGSEGV
/// and SIGBUS), by [`FATAL`] index: a fault is handed on to them.
static PREVIOUS: [OnceLock<SigAction>; FATAL.len()] = [const { OnceLock::new() }; FATAL.len()];

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
    #[error("cannot install a handler for {signal}: {source}")]
    Handler {
        signal: &'static str,
        source: nix::errno::Errno,
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
    let file: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| CrashMarkerError::Open {
            path: path.clone(),
            source,
        })?;
    // Kept open for the life of the process: the handler may write to it at any time.
    MARKER_FD.store(file.into_raw_fd(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::SigAction(on_fatal_signal),
        SaFlags::SA_SIGINFO | SaFlags::SA_RESETHAND | SaFlags::SA_ONSTACK,
        SigSet::empty(),
    );
    for (index, (signal, name)) in FATAL.iter().enumerate() {
        // SAFETY: the handler only calls async-signal-safe functions (write, sigaction,
        // raise) and reads a thread-local and statics that are set before it is installed.
        let previous =
            unsafe { sigaction(*signal, &action) }.map_err(|source| CrashMarkerError::Handler {
                signal: name,
                source,
            })?;
        let _ = PREVIOUS[index].set(previous);
    }
    Ok(())
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

/// Writes `bytes` to `fd` in as many writes as it takes; gives up on an error.
fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: write(2) reads `bytes.len()` bytes from a live slice; it is async-signal-safe.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// The handler: writes `SIGNAME\t<the running instance's line>\n` to the marker, then lets the
/// signal kill the process.
extern "C" fn on_fatal_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _: *mut libc::c_void,
) {
    let index = FATAL.iter().position(|(s, _)| *s as libc::c_int == signal);
    let fd = MARKER_FD.load(Ordering::SeqCst);
    if let (Some(index), true) = (index, fd >= 0) {
        write_all(fd, FATAL[index].1.as_bytes());
        write_all(fd, b"\t");
        let (line, len) = RUNNING.with(Cell::get);
        if !line.is_null() {
            // SAFETY: `line` and `len` describe the boxed line of this thread's live
            // `RunningInstance`, which clears them before the box is freed.
            write_all(fd, unsafe { std::slice::from_raw_parts(line, len) });
        }
        write_all(fd, b"\n");
    }
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let sent = unsafe { (*info).si_code } <= 0;
    let previous = index.and_then(|i| Some((FATAL[i].0, PREVIOUS[i].get()?)));
    match previous {
        // A fault (not a kill or raise): give it back to the handler we replaced, and return
        // to the faulting instruction, which faults again into that handler.
        Some((signal, previous))
            if !sent && matches!(previous.handler(), SigHandler::SigAction(_)) =>
        {
            // SAFETY: sigaction(2) is async-signal-safe; `previous` was returned by it.
            let _ = unsafe { sigaction(signal, previous) };
        }
        // SA_RESETHAND restored the default action: raised again, the signal is delivered as
        // soon as the handler returns (a fault would fault again anyway).
        _ => {
            // SAFETY: raise(3) is async-signal-safe.
            unsafe { libc::raise(signal) };
        }
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
