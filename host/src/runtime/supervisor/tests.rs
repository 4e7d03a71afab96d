//! The supervisor over instances built in-process by the SDK's own glue (no library loaded):
//! each test instance follows a script of what its runs do.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use calllogger_plugin_abi::{InstanceBox, PluginError, TimeoutSettings};
use calllogger_plugin_sdk::error::{fatal, transient};
use calllogger_plugin_sdk::{Context, Plugin};
use parking_lot::Mutex;

use super::*;
use crate::plugin_context::Intake;
use crate::telemetry::{InstanceStatus, SpoolFigures};
use calllogger_spool::{EvictFirst, Fsync, Options, Spool};
use std::num::NonZeroU64;

/// What one run of a scripted instance does.
#[derive(Clone, Copy)]
enum Step {
    Fail,
    Panic,
    Fatal,
    /// Runs until told to stop.
    UntilStopped,
    /// Ignores the stop until the test releases it.
    Stubborn,
    /// Blocks until its stop hook is called (not watching the stop flag).
    UntilHook,
}

#[derive(Default)]
struct Script {
    steps: Mutex<VecDeque<Step>>,
    builds: AtomicUsize,
    runs: Mutex<Vec<Instant>>,
    hooks: AtomicUsize,
    release: Arc<Stop>,
}

/// The scripts by name (a section can only carry text).
static SCRIPTS: LazyLock<Mutex<BTreeMap<String, Arc<Script>>>> = LazyLock::new(Mutex::default);

#[derive(serde::Deserialize)]
struct ScriptedSettings {
    script: String,
}

struct Scripted(Arc<Script>);

impl Plugin for Scripted {
    type Settings = ScriptedSettings;
    const DESCRIPTION: &'static str = "follows its test's script";

    fn new(settings: ScriptedSettings) -> Result<Self, calllogger_plugin_sdk::Error> {
        let script = SCRIPTS.lock()[&settings.script].clone();
        script.builds.fetch_add(1, Ordering::SeqCst);
        Ok(Self(script))
    }

    fn run(&mut self, ctx: &Context) -> Result<(), calllogger_plugin_sdk::Error> {
        let script = &self.0;
        script.runs.lock().push(Instant::now());
        let step = script
            .steps
            .lock()
            .pop_front()
            .unwrap_or(Step::UntilStopped);
        let release = script.release.clone();
        match step {
            Step::Fail => return Err(transient("failed on purpose")),
            Step::Panic => panic!("panicked on purpose"),
            Step::Fatal => return Err(fatal("fatal on purpose")),
            Step::UntilStopped => while ctx.wait(1.0) {},
            Step::Stubborn => {
                while release.running() {
                    release.wait(Duration::from_secs(1));
                }
            }
            Step::UntilHook => {
                let hook_script = script.clone();
                ctx.on_stop(move || {
                    hook_script.hooks.fetch_add(1, Ordering::SeqCst);
                    hook_script.release.stop();
                });
                while release.running() {
                    release.wait(Duration::from_secs(1));
                }
            }
        }
        Ok(())
    }
}

/// Builds [`Scripted`] instances as a loaded library would.
struct InProcess(PathBuf);

impl InstanceSource for InProcess {
    fn instantiate(&self, _: &str, settings_yaml: &str) -> Result<InstanceBox, PluginError> {
        calllogger_plugin_sdk::__private::construct::<Scripted>("Scripted", settings_yaml)
            .into_result()
    }

    fn file(&self) -> &Path {
        &self.0
    }

    fn identity(&self) -> String {
        "in-process 1".to_owned()
    }
}

struct Bench {
    supervisor: Supervisor,
    telemetry: Arc<Telemetry>,
    script: Arc<Script>,
    _dir: tempfile::TempDir,
}

/// A supervisor running one instance `name` that follows `steps`, then runs until stopped.
fn start(name: &str, steps: &[Step]) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Telemetry::new();
    let options = Options {
        max_records: NonZeroU64::new(1000).unwrap(),
        fsync: Fsync::Periodic,
        consumers: Vec::new(),
        evict_first: EvictFirst {
            applies: |_| false,
            what: "none",
        },
    };
    let (writer, _queue, _applier) = Spool::open(&dir.path().join("state"), options).unwrap();
    let intake = Intake {
        spool: writer,
        telemetry: telemetry.clone(),
        plugin_state: dir.path().join("plugins"),
    };
    let script = Arc::new(Script::default());
    script.steps.lock().extend(steps);
    SCRIPTS.lock().insert(name.to_owned(), script.clone());
    let spec = Spec {
        class: "Scripted".to_owned(),
        settings_yaml: format!("script: {name}\n"),
        source: Arc::new(InProcess(dir.path().join("libscripted.so"))),
    };
    let instance = spec
        .source
        .instantiate(&spec.class, &spec.settings_yaml)
        .unwrap();
    let mut supervisor = Supervisor::new(intake.contexts(), telemetry.clone());
    let retry = TimeoutSettings {
        timeout: 0.05,
        decay: 2.0,
        max_timeout: 10.0,
    };
    supervisor.start(
        vec![Prepared {
            name: name.to_owned(),
            spec,
            instance,
        }],
        retry,
    );
    Bench {
        supervisor,
        telemetry,
        script,
        _dir: dir,
    }
}

impl Bench {
    /// The instance's status, once its thread has reported one.
    fn status(&self) -> InstanceStatus {
        let report = || {
            self.telemetry
                .health(SpoolFigures::default(), Duration::from_secs(3600))
                .instances
                .into_iter()
                .next()
        };
        eventually("the instance reports", || report().is_some());
        report().expect("one instance")
    }

    fn runs(&self) -> usize {
        self.script.runs.lock().len()
    }

    fn builds(&self) -> usize {
        self.script.builds.load(Ordering::SeqCst)
    }
}

/// Waits (generously: the machine is shared) until `done`.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < until, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_failing_run_is_retried_by_a_fresh_instance_after_the_decayed_timeout() {
    let bench = start("retried", &[Step::Fail, Step::Fail]);
    eventually("a third run", || bench.runs() == 3);
    let runs = bench.script.runs.lock().clone();
    // The waits are at least 0.05 s, then 0.1 s (× decay); never shorter.
    assert!(runs[1] - runs[0] >= Duration::from_millis(50));
    assert!(runs[2] - runs[1] >= Duration::from_millis(100));
    assert_eq!(bench.builds(), 3, "each retry runs a fresh instance");
    eventually("running again", || {
        bench.status().state == InstanceState::Running
    });
    let status = bench.status();
    assert_eq!(status.restarts, 2);
    assert_eq!(status.last_error.as_deref(), Some("failed on purpose"));
    assert_eq!(status.library.as_deref(), Some("in-process 1"));
    assert!(bench
        .supervisor
        .stop_all(Duration::from_secs(60))
        .is_empty());
}

#[test]
fn a_panicking_run_is_retried_and_the_supervisor_runs_on() {
    let bench = start("panics", &[Step::Panic]);
    eventually("a second run", || bench.runs() == 2);
    assert_eq!(bench.builds(), 2, "the panicked instance is not run again");
    let error = bench.status().last_error.unwrap_or_default();
    assert!(error.contains("panicked on purpose"), "{error}");
    assert!(bench
        .supervisor
        .stop_all(Duration::from_secs(60))
        .is_empty());
}

#[test]
fn a_fatal_error_stops_the_instance_until_it_is_changed() {
    let bench = start("fatal", &[Step::Fatal]);
    eventually("failed", || bench.status().state == InstanceState::Failed);
    // Many retry timeouts (0.05 s) long: a retry would have built a second instance.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!((bench.runs(), bench.builds()), (1, 1));
    assert_eq!(
        bench.status().last_error.as_deref(),
        Some("fatal on purpose")
    );
    assert!(
        bench
            .supervisor
            .stop_all(Duration::from_secs(60))
            .is_empty(),
        "a failed instance still stops"
    );
}

#[test]
fn stop_names_the_instances_that_miss_the_deadline() {
    let mut bench = start("stubborn", &[Step::Stubborn]);
    eventually("running", || bench.runs() == 1);
    let left = bench
        .supervisor
        .stop(&["stubborn".to_owned()], Duration::from_millis(100));
    assert_eq!(left, ["stubborn"]);
    assert!(
        bench.supervisor.specs().next().is_none(),
        "no longer running"
    );
    bench.script.release.stop();
}

#[test]
fn stop_calls_the_stop_hook_of_a_run_blocked_elsewhere() {
    let mut bench = start("hooked", &[Step::UntilHook]);
    eventually("running", || bench.runs() == 1);
    let left = bench
        .supervisor
        .stop(&["hooked".to_owned()], Duration::from_secs(60));
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(bench.script.hooks.load(Ordering::SeqCst), 1);
    assert_eq!(bench.runs(), 1, "not restarted after the stop");
}
