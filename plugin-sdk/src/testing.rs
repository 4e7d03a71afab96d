//! An in-process stand-in for the host, for unit-testing a plugin without loading it.
//!
//! ```
//! use calllogger_plugin_sdk::{testing::TestHost, CallType, Record};
//!
//! let host = TestHost::new();
//! let ctx = host.context();
//! ctx.push(Record::new(CallType::OUTGOING).number("123")).unwrap();
//! host.stop();
//! assert!(!ctx.running());
//! assert_eq!(host.records().len(), 1);
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RResult, RStr, RString},
};
use calllogger_plugin_abi::{HostApi, HostApi_TO, HostHandle};

use crate::context::StopSlot;
use crate::{Context, LogLevel, PushError, PushErrorKind, Record, TimeoutSettings};

#[derive(Default)]
struct State {
    stopped: bool,
    /// Why pushes are refused, while they are.
    refusing: Option<String>,
    /// The stop hooks of the contexts handed out.
    hooks: Vec<Arc<StopSlot>>,
    records: Vec<Record>,
    logs: Vec<(LogLevel, String)>,
    rejected: BTreeMap<String, u64>,
}

/// A host that keeps what a plugin pushes and logs, and can be told to stop.
#[derive(Clone, Default)]
pub struct TestHost {
    state: Arc<(Mutex<State>, Condvar)>,
    timeouts: TimeoutSettings,
    state_dir: Option<PathBuf>,
}

impl TestHost {
    /// A running host with the default timeout settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// A running host with these timeout settings.
    pub fn with_timeouts(timeouts: TimeoutSettings) -> Self {
        Self {
            timeouts,
            ..Self::default()
        }
    }

    /// A running host whose instances keep their durable state in `dir` (a second `TestHost`
    /// on the same folder sees what the first left, as after a restart).
    pub fn with_state_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: Some(dir.into()),
            ..Self::default()
        }
    }

    /// A [`Context`] talking to this host, as a plugin's `run` gets it; its
    /// [`on_stop`](Context::on_stop) hook runs on [`stop`](TestHost::stop).
    pub fn context(&self) -> Context {
        let hook = Arc::new(StopSlot::default());
        self.state.0.lock().unwrap().hooks.push(hook.clone());
        Context::with_stop(self.handle(), hook)
    }

    /// Makes every push fail with [`PushErrorKind::Unavailable`] and `reason` (as a host
    /// that cannot store records would), or, with `None`, succeed again.
    pub fn refuse_pushes(&self, reason: Option<&str>) {
        self.state.0.lock().unwrap().refusing = reason.map(str::to_owned);
    }

    /// The FFI handle the host passes to an instance's `run`.
    pub fn handle(&self) -> HostHandle {
        HostApi_TO::from_ptr(RArc::new(self.clone()), TD_Opaque)
    }

    /// Drops the `running` flag, wakes every waiter and runs the stop hooks.
    pub fn stop(&self) {
        let (state, wake) = &*self.state;
        let hooks = {
            let mut state = state.lock().unwrap();
            state.stopped = true;
            state.hooks.clone()
        };
        wake.notify_all();
        for hook in hooks {
            hook.fire();
        }
    }

    /// The records pushed so far.
    pub fn records(&self) -> Vec<Record> {
        self.state.0.lock().unwrap().records.clone()
    }

    /// The messages logged so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.state.0.lock().unwrap().logs.clone()
    }

    /// Rejected lines counted so far, by stage.
    pub fn rejected(&self) -> BTreeMap<String, u64> {
        self.state.0.lock().unwrap().rejected.clone()
    }
}

impl HostApi for TestHost {
    fn running(&self) -> bool {
        !self.state.0.lock().unwrap().stopped
    }

    fn wait(&self, seconds: f64) -> bool {
        let (state, wake) = &*self.state;
        let guard = state.lock().unwrap();
        let timeout = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO);
        let (guard, _) = wake
            .wait_timeout_while(guard, timeout, |s| !s.stopped)
            .unwrap();
        !guard.stopped
    }

    fn push(&self, record: Record) -> RResult<(), PushError> {
        let mut state = self.state.0.lock().unwrap();
        match &state.refusing {
            Some(reason) => {
                RResult::RErr(PushError::new(PushErrorKind::Unavailable, reason.as_str()))
            }
            None => {
                state.records.push(record);
                RResult::ROk(())
            }
        }
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        self.state
            .0
            .lock()
            .unwrap()
            .logs
            .push((level, message.to_string()));
    }

    fn log_enabled(&self, _level: LogLevel) -> bool {
        true
    }

    fn timeouts(&self) -> TimeoutSettings {
        self.timeouts
    }

    fn rejected(&self, stage: RStr<'_>) {
        *self
            .state
            .0
            .lock()
            .unwrap()
            .rejected
            .entry(stage.to_string())
            .or_default() += 1;
    }

    /// The folder given to [`with_state_dir`](TestHost::with_state_dir), else a fresh one
    /// under the system's temporary folder.
    fn state_dir(&self) -> RString {
        static FRESH: AtomicU64 = AtomicU64::new(0);
        let dir = self.state_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "calllogger-testhost-{}-{}",
                std::process::id(),
                FRESH.fetch_add(1, Ordering::Relaxed)
            ))
        });
        let _ = std::fs::create_dir_all(&dir);
        dir.to_string_lossy().into_owned().into()
    }
}
