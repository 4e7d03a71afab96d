//! [`TestHost`]: the host's side of the FFI, in process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RResult, RStr, RString},
};
use calllogger_plugin_abi::{HostApi, HostApi_TO, HostHandle, StopHookBox};
use calllogger_plugin_sdk::{Context, LogLevel, PushError, PushErrorKind, Record, TimeoutSettings};

#[derive(Default)]
struct State {
    stopped: bool,
    /// Why pushes are refused, while they are.
    refusing: Option<String>,
    /// Stop hooks not yet run.
    hooks: Vec<StopHookBox>,
    records: Vec<Record>,
    logs: Vec<(LogLevel, String)>,
    rejected: BTreeMap<String, u64>,
}

/// Where instances keep their durable state.
#[derive(Clone)]
enum StateDir {
    /// A fresh temporary folder, removed with the last clone of the host.
    Temp(Arc<tempfile::TempDir>),
    /// A folder the test chose (kept, so a second host sees what the first left).
    Given(PathBuf),
}

/// A host that keeps what a plugin pushes, logs and rejects, and can be told to stop.
///
/// Cheap to clone; every clone is the same host. [`Runner`](crate::Runner) runs a plugin
/// class on one; [`context`](TestHost::context) gives a bare [`Context`] for testing a
/// function that takes one.
#[derive(Clone)]
pub struct TestHost {
    state: Arc<(Mutex<State>, Condvar)>,
    timeouts: TimeoutSettings,
    state_dir: StateDir,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// A running host with the default timeout settings and a fresh temporary state folder.
    ///
    /// # Panics
    /// If no temporary folder can be made.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("calllogger-test-state-")
            .tempdir()
            .expect("a temporary state folder");
        Self {
            state: Arc::default(),
            timeouts: TimeoutSettings::default(),
            state_dir: StateDir::Temp(Arc::new(dir)),
        }
    }

    /// A running host with these timeout settings (`timeout`, `decay`, `max_timeout`).
    pub fn with_timeouts(timeouts: TimeoutSettings) -> Self {
        Self {
            timeouts,
            ..Self::new()
        }
    }

    /// A running host whose instances keep their state in `dir` (a second host on the same
    /// folder sees what the first left, as after a restart).
    pub fn with_state_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            state: Arc::default(),
            timeouts: TimeoutSettings::default(),
            state_dir: StateDir::Given(dir.into()),
        }
    }

    /// This host with `timeouts` instead of its own.
    pub(crate) fn set_timeouts(self, timeouts: TimeoutSettings) -> Self {
        Self { timeouts, ..self }
    }

    /// The instances' state folder ([`Context::state_dir`]).
    pub fn state_dir(&self) -> &Path {
        match &self.state_dir {
            StateDir::Temp(dir) => dir.path(),
            StateDir::Given(dir) => dir,
        }
    }

    /// A [`Context`] on this host, as a plugin's `run` gets it; what it registers with
    /// [`Context::on_stop`] runs on [`stop`](TestHost::stop).
    pub fn context(&self) -> Context {
        let (context, hook) = calllogger_plugin_sdk::__private::detached_context(self.handle());
        self.add_stop_hook(hook);
        context
    }

    /// The FFI handle the host passes to an instance's `run`.
    pub fn handle(&self) -> HostHandle {
        HostApi_TO::from_ptr(RArc::new(self.clone()), TD_Opaque)
    }

    /// Runs `hook` on [`stop`](TestHost::stop), or now if the host has stopped.
    pub(crate) fn add_stop_hook(&self, hook: StopHookBox) {
        let mut state = self.lock();
        if state.stopped {
            drop(state);
            hook.stop();
        } else {
            state.hooks.push(hook);
        }
    }

    /// Makes every push fail with [`PushErrorKind::Unavailable`] and `reason` (as a host
    /// whose spool cannot store records), or, with `None`, succeed again. (The real host
    /// holds such a push instead, and returns [`PushErrorKind::Stopping`] if the instance
    /// is stopped meanwhile.)
    pub fn refuse_pushes(&self, reason: Option<&str>) {
        self.lock().refusing = reason.map(str::to_owned);
    }

    /// As the host does when it stops an instance: drops the `running` flag, wakes every
    /// [`Context::wait`], then runs the stop hooks on this thread.
    pub fn stop(&self) {
        let hooks = {
            let mut state = self.lock();
            state.stopped = true;
            std::mem::take(&mut state.hooks)
        };
        self.state.1.notify_all();
        for hook in hooks {
            hook.stop();
        }
    }

    /// The records pushed (and accepted) so far.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// The messages logged so far, oldest first.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.lock().logs.clone()
    }

    /// Rejected lines counted so far ([`Context::rejected`]), by stage.
    pub fn rejected(&self) -> BTreeMap<String, u64> {
        self.lock().rejected.clone()
    }

    /// Waits until at least `n` records were pushed and returns all of them.
    ///
    /// # Panics
    /// After `timeout`, with the records and the logs so far in the message.
    pub fn wait_for_records(&self, n: usize, timeout: Duration) -> Vec<Record> {
        self.wait_until(&format!("{n} records"), timeout, |s| s.records.len() >= n)
            .records
            .clone()
    }

    /// Waits until a logged message contains `needle` and returns that message.
    ///
    /// # Panics
    /// After `timeout`, with the logs so far in the message.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let find = |s: &State| {
            s.logs
                .iter()
                .find(|(_, m)| m.contains(needle))
                .map(|(_, m)| m.clone())
        };
        let state = self.wait_until(&format!("a log containing {needle:?}"), timeout, |s| {
            find(s).is_some()
        });
        find(&state).unwrap_or_default()
    }

    /// Waits, woken by every push and log, until `done` holds of the state.
    fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&State) -> bool,
    ) -> MutexGuard<'_, State> {
        let until = Instant::now() + timeout;
        let mut state = self.lock();
        while !done(&state) {
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {timeout:?} waiting for {what}; {} records so far; logs:\n{}",
                state.records.len(),
                state
                    .logs
                    .iter()
                    .map(|(level, m)| format!("  {level:?} {m}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            state = self
                .state
                .1
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes the waiters.
    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.state.1.notify_all();
    }
}

impl HostApi for TestHost {
    fn running(&self) -> bool {
        !self.lock().stopped
    }

    fn wait(&self, seconds: f64) -> bool {
        let timeout = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO);
        let state = self.lock();
        let (state, _) = self
            .state
            .1
            .wait_timeout_while(state, timeout, |s| !s.stopped)
            .unwrap_or_else(|e| e.into_inner());
        !state.stopped
    }

    fn push(&self, record: Record) -> RResult<(), PushError> {
        let mut refused = None;
        self.update(|state| match &state.refusing {
            Some(reason) => {
                refused = Some(PushError::new(PushErrorKind::Unavailable, reason.as_str()))
            }
            None => state.records.push(record),
        });
        match refused {
            Some(e) => RResult::RErr(e),
            None => RResult::ROk(()),
        }
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        self.update(|state| state.logs.push((level, message.to_string())));
    }

    fn log_enabled(&self, _level: LogLevel) -> bool {
        true
    }

    fn timeouts(&self) -> TimeoutSettings {
        self.timeouts
    }

    fn rejected(&self, stage: RStr<'_>) {
        self.update(|state| *state.rejected.entry(stage.to_string()).or_default() += 1);
    }

    fn state_dir(&self) -> RString {
        let dir = self.state_dir();
        let _ = std::fs::create_dir_all(dir);
        dir.to_string_lossy().into_owned().into()
    }
}
