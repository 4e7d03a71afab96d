//! What a running plugin sees of the host.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use abi_stable::std_types::RStr;
use calllogger_plugin_abi::{HostHandle, LogLevel, PushError};

use crate::{Backoff, Record};

/// A running instance's view of the host: the `running` flag, `push`, logging and timeouts.
///
/// Cheap to clone; every clone talks to the same host.
#[derive(Clone)]
pub struct Context {
    host: HostHandle,
    stop: Arc<StopSlot>,
}

impl Context {
    /// Wraps the host's handle. The SDK's glue does this; plugin tests use the
    /// `calllogger-plugin-test` crate's `TestHost` instead.
    pub fn new(host: HostHandle) -> Self {
        Self::with_stop(host, Arc::default())
    }

    /// A context whose [`on_stop`](Context::on_stop) hook goes into `stop`.
    pub(crate) fn with_stop(host: HostHandle, stop: Arc<StopSlot>) -> Self {
        Self { host, stop }
    }

    /// `true` while the instance should keep running; loop on it.
    pub fn running(&self) -> bool {
        self.host.running()
    }

    /// Hands a record to the host, which makes it durable and delivers it. `Ok` means it is
    /// stored. While the host cannot store it (a full disk), the call waits; if the instance
    /// is told to stop first, it returns [`PushErrorKind::Stopping`](crate::PushErrorKind):
    /// the record is not kept, so do not mark it as read at the source, and return.
    pub fn push(&self, record: Record) -> Result<(), PushError> {
        self.host.push(record).into_result()
    }

    /// Waits up to `seconds`, waking at once when the instance is told to stop.
    /// Returns whether it is still running.
    pub fn wait(&self, seconds: f64) -> bool {
        self.host.wait(seconds)
    }

    /// Registers `hook`, run once on the host's thread when the instance must stop (shutdown,
    /// reload), while `run` may still be blocked: shut a socket down, write to a wake pipe.
    /// A plugin that neither returns nor wakes is left behind after `shutdown_timeout` and
    /// named in the log. Registering after the stop runs the hook at once.
    pub fn on_stop(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.stop.set(Box::new(hook));
    }

    /// A fresh [`Backoff`] with the host's settings (`timeout`, `decay`, `max_timeout`).
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.host.timeouts()).with_context(self.clone())
    }

    /// The 0.2 name of [`backoff`](Context::backoff), kept so 0.2 plugin code compiles.
    pub fn timeout(&self) -> Backoff {
        self.backoff()
    }

    /// Logs `message` at `level` in the host's log, tagged with this instance. Nothing is
    /// formatted when the host would drop the message.
    pub fn log(&self, level: LogLevel, message: impl Display) {
        if self.log_enabled(level) {
            self.host.log(level, RStr::from_str(&message.to_string()));
        }
    }

    /// Whether the host logs messages at `level`.
    pub fn log_enabled(&self, level: LogLevel) -> bool {
        self.host.log_enabled(level)
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

    /// Logs at trace level.
    pub fn trace(&self, message: impl Display) {
        self.log(LogLevel::Trace, message);
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

/// A stop hook's place: empty until the plugin registers one, fired once.
#[derive(Default)]
pub(crate) struct StopSlot {
    state: Mutex<(bool, Option<StopFn>)>,
}

type StopFn = Box<dyn Fn() + Send + Sync>;

impl StopSlot {
    /// Keeps `hook` for [`fire`](Self::fire), or runs it now if the stop came first.
    fn set(&self, hook: StopFn) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 {
            drop(state);
            crate::plugin::run_stop_hook(&hook);
        } else {
            state.1 = Some(hook);
        }
    }

    /// Runs the registered hook, if any; later registrations run at once.
    pub(crate) fn fire(&self) {
        let hook = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.0 = true;
            state.1.take()
        };
        if let Some(hook) = hook {
            crate::plugin::run_stop_hook(&hook);
        }
    }
}
