//! The host's side of a plugin's [`Context`](calllogger_plugin_sdk::Context): what one
//! instance's `running()`, `wait()`, `push()` and logging do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RStr},
};
use calllogger_plugin_sdk::ffi::{HostApi, HostApi_TO, HostHandle, LogLevel, TimeoutSettings};
use calllogger_plugin_sdk::Record;

use crate::output::RecordSender;
use crate::stop::Stop;

/// One instance's view of the host.
#[derive(Clone)]
pub struct InstanceContext {
    name: Arc<str>,
    stop: Arc<Stop>,
    records: RecordSender,
    timeouts: TimeoutSettings,
    lost_reported: Arc<AtomicBool>,
}

impl InstanceContext {
    pub fn new(
        name: Arc<str>,
        stop: Arc<Stop>,
        records: RecordSender,
        timeouts: TimeoutSettings,
    ) -> Self {
        Self {
            name,
            stop,
            records,
            timeouts,
            lost_reported: Arc::default(),
        }
    }

    /// The FFI handle handed to the plugin's `run`.
    pub fn handle(&self) -> HostHandle {
        HostApi_TO::from_ptr(RArc::new(self.clone()), TD_Opaque)
    }
}

impl HostApi for InstanceContext {
    fn running(&self) -> bool {
        self.stop.running()
    }

    fn wait(&self, seconds: f64) -> bool {
        let timeout = Duration::try_from_secs_f64(seconds).unwrap_or(if seconds > 0.0 {
            Duration::MAX
        } else {
            Duration::ZERO
        });
        self.stop.wait(timeout)
    }

    fn push(&self, record: Record) {
        if self.records.push(&self.name, record).is_err()
            && !self.lost_reported.swap(true, Ordering::Relaxed)
        {
            tracing::error!(instance = %self.name, "the output has stopped: records pushed from now on are lost");
        }
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        let (name, message) = (&*self.name, message.as_str());
        match level {
            LogLevel::Trace => tracing::trace!(target: "plugin", instance = %name, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "plugin", instance = %name, "{message}"),
            LogLevel::Info => tracing::info!(target: "plugin", instance = %name, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "plugin", instance = %name, "{message}"),
            LogLevel::Error => tracing::error!(target: "plugin", instance = %name, "{message}"),
        }
    }

    fn timeouts(&self) -> TimeoutSettings {
        self.timeouts
    }
}
