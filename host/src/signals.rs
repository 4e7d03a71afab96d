//! What the main loop waits for: a reason to shut down, SIGHUP, or a change in the plugins
//! folder.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// What an operator sends to make the host reload: SIGHUP, or on Windows `calllogger reload`.
pub const RELOAD_REQUEST: &str = if cfg!(windows) {
    "`calllogger reload`"
} else {
    "SIGHUP"
};

/// A reason to shut down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGINT or SIGTERM (the signal's name); on Windows the console's control event
    /// (`CTRL_C_EVENT`, `CTRL_BREAK_EVENT`, `CTRL_CLOSE_EVENT`, …) or the service manager's
    /// (`SERVICE_CONTROL_STOP`, `SERVICE_CONTROL_SHUTDOWN`).
    Signal(&'static str),
    /// Something the host cannot run without failed (stdout, the token).
    Failed(String),
}

impl std::fmt::Display for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Signal(name) => write!(f, "{name} received"),
            Self::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Something the main loop acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Shutdown(Shutdown),
    /// SIGHUP, or `calllogger reload` on Windows (what asked): re-read the config and the
    /// plugins folder.
    Reload(&'static str),
    /// A library was added to, replaced in or removed from the plugins folder.
    PluginsChanged,
}

/// How soon after a stop request another one is the same request sent twice, not a second:
/// `timeout`, for one, signals its command and then its own process group, which the command
/// is in, 0.5 ms apart. A person pressing Ctrl-C twice is slower than this.
#[cfg(unix)]
const ECHO: Duration = Duration::from_millis(250);

/// Delivers SIGINT and SIGTERM as [`Event::Shutdown`] and SIGHUP as [`Event::Reload`] on `tx`.
/// Another SIGINT or SIGTERM while shutting down exits at once with status 130, unless it
/// comes within [`ECHO`] of the first.
#[cfg(unix)]
pub fn forward(tx: Sender<Event>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping: Option<std::time::Instant> = None;
            for signal in signals.forever() {
                let name = match signal {
                    SIGHUP => {
                        let _ = tx.send(Event::Reload("SIGHUP"));
                        continue;
                    }
                    SIGINT => "SIGINT",
                    _ => "SIGTERM",
                };
                match stopping {
                    None => {
                        stopping = Some(std::time::Instant::now());
                        let _ = tx.send(Event::Shutdown(Shutdown::Signal(name)));
                    }
                    Some(first) if first.elapsed() < ECHO => {
                        tracing::debug!("{name} again at once: the same stop request");
                    }
                    Some(_) => {
                        tracing::warn!("second signal: exiting now");
                        std::process::exit(130);
                    }
                }
            }
        })?;
    Ok(())
}

/// Delivers the console's control events as [`Event::Shutdown`] on `tx`: Ctrl-C and
/// Ctrl-Break, and the console closing, log-off or system shutdown (for which Windows ends
/// the process once the handler returns, so the handler waits for the host to exit first).
/// A second event while shutting down exits at once with status 130. Under the service
/// manager ([`without_console`]) only [`post`] sends on `tx`.
#[cfg(windows)]
pub fn forward(tx: Sender<Event>) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    use windows_sys::Win32::System::Console::SetConsoleCtrlHandler;
    if EVENTS.set(std::sync::Mutex::new(tx)).is_err() {
        return Err(std::io::Error::other("events are forwarded already"));
    }
    if WITHOUT_CONSOLE.load(Ordering::SeqCst) {
        return Ok(());
    }
    // SAFETY: the handler is a plain function that lives for the whole process; it touches
    // only a static set before it is installed.
    if unsafe { SetConsoleCtrlHandler(Some(on_console_event), 1) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes [`forward`] leave the console's events alone: a service has no console of its own,
/// and is sent `CTRL_LOGOFF_EVENT` whenever any user logs off; the service manager's controls
/// come through [`post`] instead.
#[cfg(windows)]
pub fn without_console() {
    WITHOUT_CONSOLE.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[cfg(windows)]
static WITHOUT_CONSOLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends `event` to the main loop from another source (the service manager's controls), once
/// [`forward`] has been called; before that it is dropped.
#[cfg(windows)]
pub fn post(event: Event) {
    if let Some(tx) = EVENTS.get() {
        let tx = tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = tx.send(event);
    }
}

/// Where [`forward`] sends, set once by it.
#[cfg(windows)]
static EVENTS: std::sync::OnceLock<std::sync::Mutex<Sender<Event>>> = std::sync::OnceLock::new();

/// Windows calls this on a thread of its own for each console control event.
#[cfg(windows)]
unsafe extern "system" fn on_console_event(event: u32) -> windows_sys::core::BOOL {
    use std::sync::atomic::{AtomicBool, Ordering};
    use windows_sys::Win32::System::Console::{
        CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT,
    };
    static SEEN: AtomicBool = AtomicBool::new(false);
    let name = match event {
        CTRL_C_EVENT => "CTRL_C_EVENT",
        CTRL_BREAK_EVENT => "CTRL_BREAK_EVENT",
        CTRL_CLOSE_EVENT => "CTRL_CLOSE_EVENT",
        CTRL_LOGOFF_EVENT => "CTRL_LOGOFF_EVENT",
        CTRL_SHUTDOWN_EVENT => "CTRL_SHUTDOWN_EVENT",
        _ => return 0,
    };
    if SEEN.swap(true, Ordering::SeqCst) {
        tracing::warn!("second stop request: exiting now");
        std::process::exit(130);
    }
    post(Event::Shutdown(Shutdown::Signal(name)));
    if matches!(event, CTRL_C_EVENT | CTRL_BREAK_EVENT) {
        return 1;
    }
    // Returning would end the process now: wait until the host's graceful stop exits it.
    loop {
        std::thread::park();
    }
}

/// Blocks until the next event, or for at most `timeout` (then `None`).
pub fn next(rx: &Receiver<Event>, timeout: Option<Duration>) -> Option<Event> {
    let gone = || Event::Shutdown(Shutdown::Failed("every event source went away".into()));
    match timeout {
        None => Some(rx.recv().unwrap_or_else(|_| gone())),
        Some(timeout) => match rx.recv_timeout(timeout) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(gone()),
        },
    }
}
