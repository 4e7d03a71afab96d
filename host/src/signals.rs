//! What the main loop waits for: a reason to shut down, SIGHUP, or a change in the plugins
//! folder.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// A reason to shut down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGINT or SIGTERM (the signal's name).
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
    /// SIGHUP: re-read the config and the plugins folder.
    Reload,
    /// A library was added to, replaced in or removed from the plugins folder.
    PluginsChanged,
}

/// Delivers SIGINT and SIGTERM as [`Event::Shutdown`] and SIGHUP as [`Event::Reload`] on `tx`.
/// A second SIGINT or SIGTERM while shutting down exits at once with status 130.
#[cfg(unix)]
pub fn forward(tx: Sender<Event>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = false;
            for signal in signals.forever() {
                let event = match signal {
                    SIGHUP => Event::Reload,
                    _ if seen => {
                        tracing::warn!("second signal: exiting now");
                        std::process::exit(130);
                    }
                    SIGINT => Event::Shutdown(Shutdown::Signal("SIGINT")),
                    _ => Event::Shutdown(Shutdown::Signal("SIGTERM")),
                };
                seen |= matches!(event, Event::Shutdown(_));
                let _ = tx.send(event);
            }
        })?;
    Ok(())
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
