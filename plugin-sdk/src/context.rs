//! What a running plugin sees of the host.

use std::fmt::Display;
use std::path::PathBuf;

use abi_stable::std_types::RStr;

use crate::ffi::{HostHandle, LogLevel};
use crate::{Record, Timeout};

/// A running instance's view of the host: the `running` flag, `push`, logging and timeouts.
///
/// Cheap to clone; every clone talks to the same host.
#[derive(Clone)]
pub struct Context {
    host: HostHandle,
}

impl Context {
    /// Wraps the host's handle. The SDK's glue does this; plugin tests use
    /// [`testing::TestHost`](crate::testing::TestHost) instead.
    pub fn new(host: HostHandle) -> Self {
        Self { host }
    }

    /// `true` while the instance should keep running; loop on it.
    pub fn running(&self) -> bool {
        self.host.running()
    }

    /// Hands a record to the host, which makes it durable and delivers it.
    pub fn push(&self, record: Record) {
        self.host.push(record);
    }

    /// Waits up to `seconds`, waking at once when the instance is told to stop.
    /// Returns whether it is still running.
    pub fn wait(&self, seconds: f64) -> bool {
        self.host.wait(seconds)
    }

    /// A fresh [`Timeout`] with the host's settings (`timeout`, `decay`, `max_timeout`).
    pub fn timeout(&self) -> Timeout {
        Timeout::new(self.host.timeouts()).with_context(self.clone())
    }

    /// Logs `message` at `level` in the host's log, tagged with this instance.
    pub fn log(&self, level: LogLevel, message: impl Display) {
        self.host.log(level, RStr::from_str(&message.to_string()));
    }

    /// Counts one input line rejected at `stage` (e.g. `decode`, `parse`): the host exports
    /// the count per instance and stage in its metrics. Log the line's details yourself.
    pub fn rejected(&self, stage: &str) {
        self.host.rejected(RStr::from_str(stage));
    }

    /// A folder for this instance's durable state (what it has already pushed, say), created
    /// by the host under its `state_dir` and kept across restarts and upgrades.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(self.host.state_dir().into_string())
    }

    /// Logs at debug level.
    pub fn debug(&self, message: impl Display) {
        self.log(LogLevel::Debug, message);
    }

    /// Logs at info level.
    pub fn info(&self, message: impl Display) {
        self.log(LogLevel::Info, message);
    }

    /// Logs at warn level.
    pub fn warn(&self, message: impl Display) {
        self.log(LogLevel::Warn, message);
    }

    /// Logs at error level.
    pub fn error(&self, message: impl Display) {
        self.log(LogLevel::Error, message);
    }
}
