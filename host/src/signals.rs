//! Why the host shuts down: a signal, or a failed output.

use std::sync::mpsc::{Receiver, Sender};

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

/// Delivers SIGINT and SIGTERM as [`Shutdown::Signal`] on `tx`. A second one while shutting
/// down exits at once with status 130.
#[cfg(unix)]
pub fn forward(tx: Sender<Shutdown>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = false;
            for signal in signals.forever() {
                if seen {
                    tracing::warn!("second signal: exiting now");
                    std::process::exit(130);
                }
                seen = true;
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                let _ = tx.send(Shutdown::Signal(name));
            }
        })?;
    Ok(())
}

/// Blocks until a reason to shut down arrives.
pub fn wait(rx: &Receiver<Shutdown>) -> Shutdown {
    rx.recv()
        .unwrap_or_else(|_| Shutdown::Failed("every shutdown source went away".into()))
}
