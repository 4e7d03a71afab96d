//! Supervisor: runs every configured instance on its own thread, restarts one that fails or
//! panics after a decayed timeout (one that fails fatally stays stopped until a reload
//! changes it), and stops them all with a deadline, calling each instance's stop hook.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calllogger_plugin_abi::{
    ErrorKind, HostHandle, InstanceBox, PluginError, StopHookBox, TimeoutSettings,
};
use calllogger_plugin_sdk::Backoff;
use parking_lot::Mutex;
use serde::{Deserialize, Deserializer};

use crate::config::{self, Config, Source, HOUR, WEEK};
use crate::crash::RunningInstance;
use crate::loader::Library;
use crate::stop::Stop;
use crate::telemetry::{InstanceState, Telemetry};

/// The supervisor's settings: the retry timeouts after a failure, and how long instances
/// may take to stop.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(from = "RawSupervisorSettings")]
pub struct SupervisorSettings {
    /// `settings.timeout`, `decay` and `max_timeout`: also what plugins get for their backoff.
    pub retry: TimeoutSettings,
    /// `settings.shutdown_timeout`.
    pub shutdown_timeout: Duration,
}

/// The keys as written.
#[derive(Deserialize)]
struct RawSupervisorSettings {
    #[serde(deserialize_with = "retry_wait")]
    timeout: Duration,
    #[serde(deserialize_with = "decay")]
    decay: f64,
    #[serde(deserialize_with = "retry_wait")]
    max_timeout: Duration,
    #[serde(deserialize_with = "stop_wait")]
    shutdown_timeout: Duration,
}

impl From<RawSupervisorSettings> for SupervisorSettings {
    fn from(raw: RawSupervisorSettings) -> Self {
        Self {
            retry: TimeoutSettings {
                timeout: raw.timeout.as_secs_f64(),
                decay: raw.decay,
                max_timeout: raw.max_timeout.as_secs_f64(),
            },
            shutdown_timeout: raw.shutdown_timeout,
        }
    }
}

fn retry_wait<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    config::seconds(d, 0.05..=WEEK, "seconds, from 0.05 to 604800 (a week)")
}

fn decay<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    config::within(d, 1.0..=100.0, "a factor from 1 to 100")
}

fn stop_wait<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    config::seconds(d, 0.0..=HOUR, "seconds, from 0 to 3600 (an hour)")
}

impl SupervisorSettings {
    /// The problems between keys: `max_timeout` below `timeout` (blaming the one that is set).
    pub fn check(&self, config: &Config) -> Vec<String> {
        let TimeoutSettings {
            timeout,
            max_timeout,
            ..
        } = self.retry;
        if max_timeout >= timeout {
            return Vec::new();
        }
        vec![match config.origin("max_timeout") {
            Source::Defaults => config.problem(
                "timeout",
                format!("({timeout}) must be at most settings.max_timeout ({max_timeout})"),
            ),
            _ => config.problem(
                "max_timeout",
                format!("({max_timeout}) must be at least settings.timeout ({timeout})"),
            ),
        }]
    }
}

/// What builds instances of a class: a loaded library (or, in tests, Rust code).
pub trait InstanceSource: Send + Sync {
    /// Builds an instance of `class` from the YAML text of its section.
    fn instantiate(&self, class: &str, settings_yaml: &str) -> Result<InstanceBox, PluginError>;
    /// The file it was loaded from, for logs and crash reports.
    fn file(&self) -> &Path;
    /// `name version`, for logs and the status page.
    fn identity(&self) -> String;
}

impl InstanceSource for Library {
    fn instantiate(&self, class: &str, settings_yaml: &str) -> Result<InstanceBox, PluginError> {
        Library::instantiate(self, class, settings_yaml)
    }

    fn file(&self) -> &Path {
        &self.file
    }

    fn identity(&self) -> String {
        Library::identity(self)
    }
}

/// What an instance is built from: its class, its settings and the library exporting the class.
#[derive(Clone)]
pub struct Spec {
    pub class: String,
    pub settings_yaml: String,
    pub source: Arc<dyn InstanceSource>,
}

impl Spec {
    /// Whether `other` would build the same instance (same settings, same loaded library).
    pub fn same_as(&self, other: &Spec) -> bool {
        self.class == other.class
            && self.settings_yaml == other.settings_yaml
            && std::ptr::addr_eq(Arc::as_ptr(&self.source), Arc::as_ptr(&other.source))
    }
}

/// One instance, constructed and ready to run.
pub struct Prepared {
    /// `Class` or `Class@label`.
    pub name: String,
    pub spec: Spec,
    pub instance: InstanceBox,
}

/// The stop hook of the instance whose `run` is running, if any.
type HookSlot = Arc<Mutex<Option<StopHookBox>>>;

/// A running instance: its thread's stop flag and stop hook, and a channel that closes when
/// the thread ends.
struct Running {
    spec: Spec,
    stop: Arc<Stop>,
    hook: HookSlot,
    ended: Receiver<()>,
}

/// The host's side of one instance: what its `run` is handed, and what the host does when a
/// run ends. Made by the wiring (the plugin context), so that the supervisor does not know
/// where records go.
pub trait InstanceHost: Send + Sync {
    /// The handle passed to the instance's `run`.
    fn handle(&self) -> HostHandle;
    /// A run ended (returned, failed or panicked).
    fn run_ended(&self);
}

/// Makes the [`InstanceHost`] of instance `name` of `class`, stopped by `stop`, retrying with
/// `retry`.
pub type Contexts =
    Arc<dyn Fn(&str, &str, Arc<Stop>, TimeoutSettings) -> Box<dyn InstanceHost> + Send + Sync>;

/// The running instances, by name.
pub struct Supervisor {
    running: BTreeMap<String, Running>,
    contexts: Contexts,
    telemetry: Arc<Telemetry>,
}

impl Supervisor {
    /// A supervisor whose instances get their host side from `contexts`.
    pub fn new(contexts: Contexts, telemetry: Arc<Telemetry>) -> Self {
        Self {
            running: BTreeMap::new(),
            contexts,
            telemetry,
        }
    }

    /// Starts one thread per instance. An instance of the same name must have been stopped.
    pub fn start(&mut self, instances: Vec<Prepared>, timeouts: TimeoutSettings) {
        for prepared in instances {
            let name = prepared.name.clone();
            let spec = prepared.spec.clone();
            let stop = Arc::new(Stop::default());
            let context = (self.contexts)(&name, &spec.class, stop.clone(), timeouts);
            let telemetry = self.telemetry.clone();
            let (ended_tx, ended) = channel::<()>();
            let hook = HookSlot::default();
            let (thread_stop, thread_hook) = (stop.clone(), hook.clone());
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let life = Life {
                        context: &*context,
                        stop: &thread_stop,
                        hook: &thread_hook,
                        timeouts,
                        telemetry: &telemetry,
                    };
                    life.supervise(prepared);
                    drop(ended_tx);
                });
            match spawned {
                Ok(_) => {
                    self.running.insert(
                        name,
                        Running {
                            spec,
                            stop,
                            hook,
                            ended,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(instance = %name, "cannot start a thread: {e}");
                    self.telemetry.instance_state(
                        &name,
                        &spec.class,
                        InstanceState::Retrying,
                        Some(format!("cannot start a thread: {e}")),
                        None,
                    );
                }
            }
        }
    }

    /// The running instances' names and specs.
    pub fn specs(&self) -> impl Iterator<Item = (&str, &Spec)> {
        self.running
            .iter()
            .map(|(name, r)| (name.as_str(), &r.spec))
    }

    /// Tells the named instances to stop (their flag, then their stop hook) and waits up to
    /// `deadline` for them to leave their loops. Returns the names of those that did not.
    pub fn stop(&mut self, names: &[String], deadline: Duration) -> Vec<String> {
        let stopping: Vec<(String, Running)> = names
            .iter()
            .filter_map(|name| self.running.remove_entry(name))
            .collect();
        for (name, running) in &stopping {
            running.stop.stop();
            if let Some(hook) = running.hook.lock().take() {
                hook.stop();
            }
            self.telemetry.instance_removed(name);
        }
        let until = Instant::now() + deadline;
        stopping
            .into_iter()
            .filter(|(_, running)| {
                let left = until.saturating_duration_since(Instant::now());
                matches!(
                    running.ended.recv_timeout(left),
                    Err(RecvTimeoutError::Timeout)
                )
            })
            .map(|(name, _)| name)
            .collect()
    }

    /// Stops every instance (see [`stop`](Self::stop)).
    pub fn stop_all(mut self, deadline: Duration) -> Vec<String> {
        let names: Vec<String> = self.running.keys().cloned().collect();
        self.stop(&names, deadline)
    }
}

/// What one instance's thread works with.
struct Life<'a> {
    context: &'a dyn InstanceHost,
    stop: &'a Stop,
    hook: &'a HookSlot,
    timeouts: TimeoutSettings,
    telemetry: &'a Telemetry,
}

impl Life<'_> {
    /// One instance's life: run, and after a failure wait the decayed timeout and run a
    /// fresh instance, until told to stop. After a fatal failure, wait for the stop only (a
    /// reload that changes the instance's section or library stops it and starts another).
    fn supervise(&self, prepared: Prepared) {
        let Prepared {
            name,
            spec:
                Spec {
                    class,
                    settings_yaml,
                    source,
                },
            instance,
        } = prepared;
        // A crash on this thread from here on is reported as this instance's at the next start.
        let _running = RunningInstance::enter(&name, &class, source.file());
        let (stop, telemetry) = (self.stop, self.telemetry);
        let mut backoff = Backoff::new(self.timeouts);
        let mut next = Some(instance);
        // A run this long counts as healthy: the next failure starts the backoff over.
        let healthy_after =
            Duration::from_secs_f64(self.timeouts.max_timeout.max(self.timeouts.timeout));
        while stop.running() {
            let mut instance = match next.take() {
                Some(instance) => instance,
                None => match source.instantiate(&class, &settings_yaml) {
                    Ok(instance) => instance,
                    Err(e) if e.kind == ErrorKind::Fatal => {
                        self.failed(&name, &class, "cannot restart", e);
                        break;
                    }
                    Err(e) => {
                        let wait = backoff.advance();
                        tracing::error!(instance = %name, "cannot restart: {e}; next try in {:.1} s", wait.as_secs_f64());
                        if stop.running() {
                            telemetry.instance_state(
                                &name,
                                &class,
                                InstanceState::Retrying,
                                Some(e.message.into_string()),
                                Some(wait),
                            );
                        }
                        stop.wait(wait);
                        continue;
                    }
                },
            };
            // The hook is in place before the stop flag is checked, so a stop either sees
            // it or is seen here.
            *self.hook.lock() = Some(instance.stop_hook());
            if !stop.running() {
                // Told to stop while it was being built: its replacement may be reporting already.
                break;
            }
            tracing::info!(instance = %name, library = %source.identity(), "started");
            telemetry.instance_state(&name, &class, InstanceState::Running, None, None);
            telemetry.instance_library(&name, source.identity());
            let started = Instant::now();
            let result = instance.run(self.context.handle()).into_result();
            self.hook.lock().take();
            drop(instance);
            self.context.run_ended();
            if !stop.running() {
                if let Err(e) = result {
                    tracing::warn!(instance = %name, "failed while stopping: {e}");
                }
                break;
            }
            if let Err(e) = &result {
                if e.kind != ErrorKind::Transient {
                    self.failed(&name, &class, "failed", e.clone());
                    break;
                }
            }
            if started.elapsed() >= healthy_after {
                backoff.reset();
            }
            let wait = backoff.advance();
            let error = match result {
                Ok(()) => {
                    tracing::warn!(instance = %name, "returned while still meant to run; restarting in {:.1} s", wait.as_secs_f64());
                    "returned while still meant to run".to_owned()
                }
                Err(e) => {
                    tracing::error!(instance = %name, "failed: {e}; restarting in {:.1} s", wait.as_secs_f64());
                    e.message.into_string()
                }
            };
            telemetry.instance_state(
                &name,
                &class,
                InstanceState::Retrying,
                Some(error),
                Some(wait),
            );
            stop.wait(wait);
        }
        tracing::info!(instance = %name, "stopped");
    }

    /// The instance failed with a non-transient error: report it and wait for the stop.
    fn failed(&self, name: &str, class: &str, what: &str, error: PluginError) {
        tracing::error!(instance = %name, "{what} ({} error, not retried until its config section or library changes): {error}", error.kind);
        self.telemetry.instance_state(
            name,
            class,
            InstanceState::Failed,
            Some(error.message.into_string()),
            None,
        );
        while self.stop.running() {
            self.stop.wait(Duration::from_secs(3600));
        }
    }
}
#[cfg(test)]
mod tests;
