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

use crate::json;
use crate::output::RecordSender;
use crate::spool::Spool;
use crate::stop::Stop;

/// Where pushed records go: the spool, and stdout too when no frontend is configured.
#[derive(Clone)]
pub struct Intake {
    pub spool: Arc<Spool>,
    pub echo: Option<RecordSender>,
}

/// One instance's view of the host.
#[derive(Clone)]
pub struct InstanceContext {
    name: Arc<str>,
    stop: Arc<Stop>,
    intake: Intake,
    timeouts: TimeoutSettings,
    echo_lost_reported: Arc<AtomicBool>,
}

impl InstanceContext {
    pub fn new(name: Arc<str>, stop: Arc<Stop>, intake: Intake, timeouts: TimeoutSettings) -> Self {
        Self {
            name,
            stop,
            intake,
            timeouts,
            echo_lost_reported: Arc::default(),
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

    /// Gives the record its id and makes it durable before returning.
    fn push(&self, record: Record) {
        let id = json::new_id();
        let body = json::to_json(&id, &record);
        if let Err(e) = self.intake.spool.append(&id, record.call_type.0, &body) {
            // Not durable: at least the log keeps it.
            tracing::error!(instance = %self.name, "cannot store a record: {e}; the record: {body}");
        }
        if let Some(echo) = &self.intake.echo {
            if echo.push(body).is_err() && !self.echo_lost_reported.swap(true, Ordering::Relaxed) {
                tracing::error!(instance = %self.name, "stdout has stopped: records are only kept in the spool");
            }
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
