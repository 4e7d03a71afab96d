//! An in-process stand-in for the host, for unit-testing a plugin without loading it.
//!
//! ```
//! use calllogger_plugin_sdk::{testing::TestHost, CallType, Record};
//!
//! let host = TestHost::new();
//! let ctx = host.context();
//! ctx.push(Record::new(CallType::OUTGOING).number("123"));
//! host.stop();
//! assert!(!ctx.running());
//! assert_eq!(host.records().len(), 1);
//! ```

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RStr},
};

use crate::ffi::{HostApi, HostApi_TO, HostHandle, LogLevel, TimeoutSettings};
use crate::{Context, Record};

#[derive(Default)]
struct State {
    stopped: bool,
    records: Vec<Record>,
    logs: Vec<(LogLevel, String)>,
}

/// A host that keeps what a plugin pushes and logs, and can be told to stop.
#[derive(Clone, Default)]
pub struct TestHost {
    state: Arc<(Mutex<State>, Condvar)>,
    timeouts: TimeoutSettings,
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

    /// A [`Context`] talking to this host, as a plugin's `run` gets it.
    pub fn context(&self) -> Context {
        Context::new(self.handle())
    }

    /// The FFI handle the host passes to an instance's `run`.
    pub fn handle(&self) -> HostHandle {
        HostApi_TO::from_ptr(RArc::new(self.clone()), TD_Opaque)
    }

    /// Drops the `running` flag and wakes every waiter.
    pub fn stop(&self) {
        let (state, wake) = &*self.state;
        state.lock().unwrap().stopped = true;
        wake.notify_all();
    }

    /// The records pushed so far.
    pub fn records(&self) -> Vec<Record> {
        self.state.0.lock().unwrap().records.clone()
    }

    /// The messages logged so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.state.0.lock().unwrap().logs.clone()
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

    fn push(&self, record: Record) {
        self.state.0.lock().unwrap().records.push(record);
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        self.state
            .0
            .lock()
            .unwrap()
            .logs
            .push((level, message.to_string()));
    }

    fn timeouts(&self) -> TimeoutSettings {
        self.timeouts
    }
}
