//! The errors that cross the boundary: a failed instance's, and a refused push's.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// What the host does about a plugin's error.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum ErrorKind {
    /// Worth retrying: the host restarts the instance after its decayed timeout.
    #[default]
    Transient = 0,
    /// Retrying cannot help (refused credentials, say): the instance stops, `/health` shows
    /// it, and it is not retried until its config section or its library changes.
    Fatal = 1,
    /// The settings make no sense: refused at construction; from `run`, treated as fatal.
    Config = 2,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transient => "transient",
            Self::Fatal => "fatal",
            Self::Config => "config",
        })
    }
}

/// A plugin's error as the host sees it: its kind, and the whole chain as one message
/// (`outer: cause: root cause`).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    /// What the host does about it.
    pub kind: ErrorKind,
    /// The error and its causes, outermost first.
    pub message: RString,
}

impl PluginError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

/// Why a push did not store its record.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PushErrorKind {
    /// The instance was told to stop before the record could be stored: return from `run`.
    Stopping = 0,
    /// The host cannot store records now and does not hold the push (see the reason).
    Unavailable = 1,
}

/// A push that did not store its record: the record is not kept, so the source must keep it
/// (do not mark it as read).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PushError {
    /// Why.
    pub kind: PushErrorKind,
    /// What the host saw (e.g. the spool's error).
    pub reason: RString,
}

impl PushError {
    /// A push error of `kind` for `reason`.
    pub fn new(kind: PushErrorKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: RString::from(reason.into()),
        }
    }
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PushErrorKind::Stopping => write!(f, "record not stored, stopping: {}", self.reason),
            PushErrorKind::Unavailable => write!(f, "record not stored: {}", self.reason),
        }
    }
}

impl std::error::Error for PushError {}
