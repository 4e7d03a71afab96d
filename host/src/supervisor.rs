//! Supervisor: runs every configured instance on its own thread, restarts one that fails or
//! panics after a decayed timeout, and stops them all with a deadline.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calllogger_plugin_sdk::ffi::{InstanceBox, TimeoutSettings};
use calllogger_plugin_sdk::Timeout;

use crate::loader::Library;
use crate::plugin_context::{InstanceContext, Intake};
use crate::stop::Stop;

/// One instance, constructed and ready to run.
pub struct Prepared {
    /// `Class` or `Class@label`.
    pub name: String,
    pub class: String,
    pub settings_yaml: String,
    pub library: Arc<Library>,
    pub instance: InstanceBox,
}

/// The running instances.
pub struct Supervisor {
    stops: Vec<(String, Arc<Stop>)>,
    finished: Receiver<String>,
}

impl Supervisor {
    /// Starts one thread per instance; their records go to `intake`.
    pub fn start(instances: Vec<Prepared>, intake: &Intake, timeouts: TimeoutSettings) -> Self {
        let (done, finished) = channel();
        let mut stops = Vec::new();
        for prepared in instances {
            let name = prepared.name.clone();
            let stop = Arc::new(Stop::default());
            let context =
                InstanceContext::new(name.as_str().into(), stop.clone(), intake.clone(), timeouts);
            let done = done.clone();
            let thread_stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let name = prepared.name.clone();
                    supervise(prepared, &context, &thread_stop, timeouts);
                    let _ = done.send(name);
                });
            match spawned {
                Ok(_) => stops.push((name, stop)),
                Err(e) => tracing::error!(instance = %name, "cannot start a thread: {e}"),
            }
        }
        Self { stops, finished }
    }

    /// Tells every instance to stop and waits up to `deadline` for them to leave their loops.
    /// Returns the names of the instances that did not.
    pub fn stop(self, deadline: Duration) -> Vec<String> {
        for (_, stop) in &self.stops {
            stop.stop();
        }
        let mut waiting: Vec<String> = self.stops.into_iter().map(|(name, _)| name).collect();
        let until = Instant::now() + deadline;
        while !waiting.is_empty() {
            match self
                .finished
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(name) => waiting.retain(|n| *n != name),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        waiting
    }
}

/// One instance's life: run, and after a failure wait the decayed timeout and run a fresh
/// instance, until told to stop.
fn supervise(
    prepared: Prepared,
    context: &InstanceContext,
    stop: &Stop,
    timeouts: TimeoutSettings,
) {
    let Prepared {
        name,
        class,
        settings_yaml,
        library,
        instance,
    } = prepared;
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
                    stop.wait(wait);
                    continue;
                }
            },
        };
        tracing::info!(instance = %name, "started");
        let started = Instant::now();
        let result = instance.run(context.handle()).into_result();
        drop(instance);
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
        match result {
            Ok(()) => {
                tracing::warn!(instance = %name, "returned while still meant to run; restarting in {:.1} s", wait.as_secs_f64())
            }
            Err(e) => {
                tracing::error!(instance = %name, "failed: {e}; restarting in {:.1} s", wait.as_secs_f64())
            }
        }
        stop.wait(wait);
    }
    tracing::info!(instance = %name, "stopped");
}
