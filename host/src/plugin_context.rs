//! The host's side of a plugin's `Context` (the ABI's `HostApi`): what one instance's
//! `running()`, `wait()`, `push()` and logging do.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RResult, RStr, RString},
};
use calllogger_plugin_abi::{
    HostApi, HostApi_TO, HostHandle, LogLevel, PushError, PushErrorKind, Record, TimeoutSettings,
};
use calllogger_plugin_sdk::Timeout;

use crate::json;
use crate::output::RecordSender;
use crate::spool::Spool;
use crate::stop::Stop;
use crate::telemetry::{PushCounter, Telemetry};

/// Where pushed records go (the spool, and stdout too when no frontend is configured), and
/// what instances share: telemetry and the folder for their state.
#[derive(Clone)]
pub struct Intake {
    pub spool: Arc<Spool>,
    pub echo: Option<RecordSender>,
    pub telemetry: Arc<Telemetry>,
    /// `state_dir/plugins`: one folder per instance below it.
    pub plugin_state: PathBuf,
}

/// One instance's view of the host.
#[derive(Clone)]
pub struct InstanceContext {
    name: Arc<str>,
    stop: Arc<Stop>,
    intake: Intake,
    timeouts: TimeoutSettings,
    pushed: PushCounter,
    echo_lost_reported: Arc<AtomicBool>,
}

impl InstanceContext {
    /// The context of instance `name` of `class`.
    pub fn new(
        name: &str,
        class: &str,
        stop: Arc<Stop>,
        intake: Intake,
        timeouts: TimeoutSettings,
    ) -> Self {
        Self {
            name: name.into(),
            pushed: intake.telemetry.push_counter(name, class),
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

    /// Gives the record its id and makes it durable before returning. While the spool cannot
    /// store it (a full disk, an I/O error), the push is held and retried with the instance's
    /// decayed timeout, so the plugin stops reading and its source keeps what follows; told
    /// to stop meanwhile, it returns `Stopping` and the plugin keeps the record unread.
    fn push(&self, record: Record) -> RResult<(), PushError> {
        let id = json::new_id();
        let body = json::to_json(&id, &record);
        let mut retry: Option<Timeout> = None;
        while let Err(e) = self.intake.spool.append(&id, record.call_type.0, &body) {
            self.intake.telemetry.push_stalled();
            let wait = retry
                .get_or_insert_with(|| Timeout::new(self.timeouts))
                .advance();
            if !self.stop.running() {
                tracing::warn!(instance = %self.name, "cannot store a record while stopping: {e}; handed back to the plugin");
                return RResult::RErr(PushError::new(PushErrorKind::Stopping, e.to_string()));
            }
            tracing::error!(instance = %self.name, "cannot store a record: {e}; the push is held and retried in {:.1} s (nothing is dropped)", wait.as_secs_f64());
            self.stop.wait(wait);
        }
        self.pushed.add();
        if let Some(echo) = &self.intake.echo {
            if echo.push(body).is_err() && !self.echo_lost_reported.swap(true, Ordering::Relaxed) {
                tracing::error!(instance = %self.name, "stdout has stopped: records are only kept in the spool");
            }
        }
        RResult::ROk(())
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

    fn log_enabled(&self, level: LogLevel) -> bool {
        match level {
            LogLevel::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            LogLevel::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            LogLevel::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        }
    }

    fn timeouts(&self) -> TimeoutSettings {
        self.timeouts
    }

    fn rejected(&self, stage: RStr<'_>) {
        self.intake.telemetry.rejected(&self.name, stage.as_str());
    }

    /// `state_dir/plugins/<instance>`, created (owner-only) on first use.
    fn state_dir(&self) -> RString {
        let dir = self.intake.plugin_state.join(&*self.name);
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        if let Err(e) = builder.create(&dir) {
            tracing::error!(instance = %self.name, "cannot create its state folder {}: {e}", dir.display());
        }
        dir.to_string_lossy().into_owned().into()
    }
}
