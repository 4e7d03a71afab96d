//! Errors with a kind, and context on the way up.
//!
//! A plugin's [`Error`] is any error (`?` and `"text".into()` work). What the host does about
//! it depends on its kind, a marker anywhere in its chain: [`transient`] (the default: the host
//! restarts the instance after its decayed timeout), [`fatal`] (the instance stops and
//! `/health` shows it until its config section or library changes) or [`config`] (bad
//! settings). [`ResultExt::context`] wraps an error in a line saying what was being done;
//! the host logs the whole chain, outermost first:
//!
//! ```
//! use calllogger_plugin_sdk::error::{self, kind_of, message, ResultExt};
//! use calllogger_plugin_sdk::{Error, ErrorKind};
//!
//! fn open() -> Result<std::fs::File, Error> {
//!     std::fs::File::open("/nonexistent/cdr.csv").context("opening /nonexistent/cdr.csv")
//! }
//! let e = open().unwrap_err();
//! assert!(message(&*e).starts_with("opening /nonexistent/cdr.csv: No such file"));
//! assert_eq!(kind_of(&*e), ErrorKind::Transient);
//!
//! let refused: Error = error::fatal("the PBX refused the password");
//! let e = Err::<(), _>(refused).context("logging in").unwrap_err();
//! assert_eq!(kind_of(&*e), ErrorKind::Fatal);
//! assert_eq!(message(&*e), "logging in: the PBX refused the password");
//! ```

use std::fmt::{self, Display};

use calllogger_plugin_abi::{ErrorKind, PluginError};

/// The error a plugin's constructor or `run` returns: any error type converts with `?`,
/// and so does a `String` or `&str`.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error marked with the kind that tells the host what to do about it. It displays as
/// the error it wraps.
#[derive(Debug)]
struct Kinded {
    kind: ErrorKind,
    error: Error,
}

impl Display for Kinded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Kinded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// `error`, marked with `kind`.
pub fn with_kind(kind: ErrorKind, error: impl Into<Error>) -> Error {
    Box::new(Kinded {
        kind,
        error: error.into(),
    })
}

/// `error`, marked fatal: retrying cannot help (refused credentials, a missing licence). The
/// instance stops and is not retried until its config section or library changes.
pub fn fatal(error: impl Into<Error>) -> Error {
    with_kind(ErrorKind::Fatal, error)
}

/// `error`, marked transient (what an unmarked error is): the instance is restarted after
/// the host's decayed timeout.
pub fn transient(error: impl Into<Error>) -> Error {
    with_kind(ErrorKind::Transient, error)
}

/// `error`, marked as a settings error: refused at construction, not retried from `run`.
pub fn config(error: impl Into<Error>) -> Error {
    with_kind(ErrorKind::Config, error)
}

/// A line saying what was being done, over the error that stopped it.
#[derive(Debug)]
struct Context {
    context: String,
    source: Error,
}

impl Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Adds context to an error (or to a missing value), keeping the chain below it.
pub trait ResultExt<T> {
    /// Wraps the error in `context`: the message becomes `context: error`.
    fn context(self, context: impl Display) -> Result<T, Error>;

    /// [`context`](ResultExt::context), with the text built only on error.
    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T, Error>;
}

impl<T, E: Into<Error>> ResultExt<T> for Result<T, E> {
    fn context(self, context: impl Display) -> Result<T, Error> {
        self.with_context(|| context)
    }

    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T, Error> {
        self.map_err(|source| {
            Box::new(Context {
                context: context().to_string(),
                source: source.into(),
            }) as Error
        })
    }
}

impl<T> ResultExt<T> for Option<T> {
    /// A `None` becomes the error `context`.
    fn context(self, context: impl Display) -> Result<T, Error> {
        self.ok_or_else(|| context.to_string().into())
    }

    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T, Error> {
        self.ok_or_else(|| context().to_string().into())
    }
}

/// The first kind marked in `error`'s chain, outermost first; unmarked errors are transient.
pub fn kind_of(error: &(dyn std::error::Error + 'static)) -> ErrorKind {
    marked_kind(error).unwrap_or_default()
}

fn marked_kind(error: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(kinded) = e.downcast_ref::<Kinded>() {
            return Some(kinded.kind);
        }
        next = e.source();
    }
    None
}

/// An error and its causes on one line: `outer: cause: root cause`.
pub fn message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Errors that print their source themselves (`format!("…: {e}")`) are not repeated.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `error` as it crosses the boundary; `default` is its kind when none is marked.
pub(crate) fn to_plugin_error(
    error: &(dyn std::error::Error + 'static),
    default: ErrorKind,
) -> PluginError {
    PluginError::new(marked_kind(error).unwrap_or(default), message(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(text: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, text.to_owned())
    }

    #[test]
    fn context_keeps_the_chain_outermost_first() {
        let e = Err::<(), _>(io("No such file or directory"))
            .context("opening /dev/ttyUSB0")
            .with_context(|| format!("starting {}", "Hipath"))
            .unwrap_err();
        assert_eq!(
            message(&*e),
            "starting Hipath: opening /dev/ttyUSB0: No such file or directory"
        );
        assert_eq!(kind_of(&*e), ErrorKind::Transient);
        // The root cause is still there to downcast.
        let root = e.source().and_then(|e| e.source()).unwrap();
        assert!(root.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn the_outermost_marked_kind_wins() {
        let inner = fatal(io("401 Unauthorized"));
        let e = Err::<(), _>(inner).context("polling").unwrap_err();
        assert_eq!(kind_of(&*e), ErrorKind::Fatal);
        assert_eq!(message(&*e), "polling: 401 Unauthorized");
        let e = transient(e);
        assert_eq!(kind_of(&*e), ErrorKind::Transient);
        assert_eq!(kind_of(&*config("rate: 0")), ErrorKind::Config);
        assert_eq!(message(&*config("rate: 0")), "rate: 0");
    }

    #[test]
    fn a_missing_value_becomes_the_context() {
        let e = None::<u8>.context("no `port` in the reply").unwrap_err();
        assert_eq!(message(&*e), "no `port` in the reply");
        assert_eq!(Some(3).context("x").unwrap(), 3);
    }

    #[test]
    fn the_boundary_error_has_kind_and_chain() {
        let e = Err::<(), _>(fatal("bad licence"))
            .context("starting")
            .unwrap_err();
        assert_eq!(
            to_plugin_error(&*e, ErrorKind::Transient),
            PluginError::new(ErrorKind::Fatal, "starting: bad licence")
        );
        let plain: Error = "rate must be positive".into();
        assert_eq!(
            to_plugin_error(&*plain, ErrorKind::Config).kind,
            ErrorKind::Config
        );
    }

    #[test]
    fn flattened_causes_are_not_repeated() {
        let io = io("device gone");
        let outer: Error = format!("reading /dev/ttyUSB0: {io}").into();
        assert_eq!(message(&*outer), "reading /dev/ttyUSB0: device gone");
    }
}
