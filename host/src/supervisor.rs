//! Supervisor: runs every configured instance on its own thread, restarts one that fails or
//! panics after a decayed timeout, and stops them all with a deadline.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calllogger_plugin_sdk::ffi::{InstanceBox, TimeoutSettings};
use calllogger_plugin_sdk::Timeout;

use crate::crash::RunningInstance;
use crate::loader::Library;
use crate::plugin_context::{InstanceContext, Intake};
use crate::stop::Stop;
use crate::telemetry::{InstanceState, Telemetry};

/// What an instance is built from: its class, its settings and the library exporting the class.
#[derive(Clone)]
pub struct Spec {
    pub class: String,
    pub settings_yaml: String,
    pub library: Arc<Library>,
}

impl Spec {
    /// Whether `other` would build the same instance (same settings, same loaded library).
    pub fn same_as(&self, other: &Spec) -> bool {
        self.class == other.class
            && self.settings_yaml == other.settings_yaml
            && Arc::ptr_eq(&self.library, &other.library)
    }
}

/// One instance, constructed and ready to run.
pub struct Prepared {
    /// `Class` or `Class@label`.
    pub name: String,
    pub spec: Spec,
    pub instance: InstanceBox,
}

/// A running instance: its thread's stop flag, and a channel that closes when the thread ends.
struct Running {
    spec: Spec,
    stop: Arc<Stop>,
    ended: Receiver<()>,
}

/// The running instances, by name.
pub struct Supervisor {
    running: BTreeMap<String, Running>,
    intake: Intake,
}

impl Supervisor {
    /// A supervisor whose instances push their records into `intake`.
    pub fn new(intake: Intake) -> Self {
        Self {
            running: BTreeMap::new(),
            intake,
        }
    }

    /// Starts one thread per instance. An instance of the same name must have been stopped.
    pub fn start(&mut self, instances: Vec<Prepared>, timeouts: TimeoutSettings) {
        for prepared in instances {
            let name = prepared.name.clone();
            let spec = prepared.spec.clone();
            let stop = Arc::new(Stop::default());
            let context = InstanceContext::new(
                &name,
                &spec.class,
                stop.clone(),
                self.intake.clone(),
                timeouts,
            );
            let telemetry = self.intake.telemetry.clone();
            let (ended_tx, ended) = channel::<()>();
            let thread_stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    supervise(prepared, &context, &thread_stop, timeouts, &telemetry);
                    drop(ended_tx);
                });
            match spawned {
                Ok(_) => {
                    self.running.insert(name, Running { spec, stop, ended });
                }
                Err(e) => {
                    tracing::error!(instance = %name, "cannot start a thread: {e}");
                    self.intake.telemetry.instance_state(
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

    /// Tells the named instances to stop and waits up to `deadline` for them to leave their
    /// loops. Returns the names of those that did not.
    pub fn stop(&mut self, names: &[String], deadline: Duration) -> Vec<String> {
        let stopping: Vec<(String, Running)> = names
            .iter()
            .filter_map(|name| self.running.remove_entry(name))
            .collect();
        for (name, running) in &stopping {
            running.stop.stop();
            self.intake.telemetry.instance_removed(name);
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

/// One instance's life: run, and after a failure wait the decayed timeout and run a fresh
/// instance, until told to stop.
fn supervise(
    prepared: Prepared,
    context: &InstanceContext,
    stop: &Stop,
    timeouts: TimeoutSettings,
    telemetry: &Telemetry,
) {
    let Prepared {
        name,
        spec: Spec {
            class,
            settings_yaml,
            library,
        },
        instance,
    } = prepared;
    // A crash on this thread from here on is reported as this instance's at the next start.
    let _running = RunningInstance::enter(&name, &class, &library.file);
    let mut backoff = Timeout::new(timeouts);
    let mut next = Some(instance);
    // A run this long counts as healthy: the next failure starts the backoff over.
    let healthy_after = Duration::from_secs_f64(timeouts.max_timeout.max(timeouts.timeout));
    while stop.running() {
        let mut instance = match next.take() {
            Some(instance) => instance,
            None => match library.instantiate(&class, &settings_yaml) {
                Ok(instance) => instance,
                Err(e) => {
                    let wait = backoff.advance();
                    tracing::error!(instance = %name, "cannot restart: {e}; next try in {:.1} s", wait.as_secs_f64());
                    if stop.running() {
                        telemetry.instance_state(
                            &name,
                            &class,
                            InstanceState::Retrying,
                            Some(e),
                            Some(wait),
                        );
                    }
                    stop.wait(wait);
                    continue;
                }
            },
        };
        if !stop.running() {
            // Told to stop while it was being built: its replacement may be reporting already.
            break;
        }
        tracing::info!(instance = %name, "started");
        telemetry.instance_state(&name, &class, InstanceState::Running, None, None);
        let started = Instant::now();
        let result = instance.run(context.handle()).into_result();
        drop(instance);
        context.log_held_repeats();
        if !stop.running() {
            if let Err(e) = result {
                tracing::warn!(instance = %name, "failed while stopping: {e}");
            }
            break;
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
                e.into_string()
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
