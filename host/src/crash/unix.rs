//! The crash handler on Unix: a signal handler for the signals native code dies of.

use std::fs::File;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use nix::libc;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::CrashMarkerError;

/// The signals native code dies of, and their names as the marker spells them.
const FATAL: [(Signal, &str); 5] = [
    (Signal::SIGSEGV, "SIGSEGV"),
    (Signal::SIGBUS, "SIGBUS"),
    (Signal::SIGILL, "SIGILL"),
    (Signal::SIGFPE, "SIGFPE"),
    (Signal::SIGABRT, "SIGABRT"),
];

/// The marker file's descriptor (opened once, never closed), or -1 before [`install`].
static MARKER_FD: AtomicI32 = AtomicI32::new(-1);

/// The actions the handler replaced (the standard library's stack overflow report for SIGSEGV
/// and SIGBUS), by [`FATAL`] index: a fault is handed on to them.
static PREVIOUS: [OnceLock<SigAction>; FATAL.len()] = [const { OnceLock::new() }; FATAL.len()];

/// Keeps `marker` open for good and installs the handlers that write to it.
pub(super) fn install(marker: File) -> Result<(), CrashMarkerError> {
    // Kept open for the life of the process: the handler may write to it at any time.
    MARKER_FD.store(marker.into_raw_fd(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::SigAction(on_fatal_signal),
        SaFlags::SA_SIGINFO | SaFlags::SA_RESETHAND | SaFlags::SA_ONSTACK,
        SigSet::empty(),
    );
    for (index, (signal, name)) in FATAL.iter().enumerate() {
        // SAFETY: the handler only calls async-signal-safe functions (write, sigaction,
        // raise) and reads a thread-local and statics that are set before it is installed.
        let previous =
            unsafe { sigaction(*signal, &action) }.map_err(|e| CrashMarkerError::Handler {
                signal: name,
                source: e.into(),
            })?;
        let _ = PREVIOUS[index].set(previous);
    }
    Ok(())
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
        super::with_running_line(|line| write_all(fd, line));
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
