//! Reloading: applies a change in the plugins folder, or a new config on SIGHUP, to the running
//! instances without losing a record.
//!
//! A changed library is loaded from a fresh private copy and its instances are constructed
//! before the old ones are stopped; if either fails, the old instances run on. Every record an
//! old instance pushed is already in the spool when its thread ends, so a restart loses
//! nothing. Libraries are never unloaded (abi_stable cannot): replaced ones are counted and
//! their size logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::loader::{self, Library, Refusal, Registry};
use crate::plan::{plan, MissingClass, Plan};
use crate::supervisor::Supervisor;
use crate::telemetry::{InstanceState, Telemetry};

/// The plugin side of a running host: its config, the libraries loaded, the instances running.
pub struct Plugins {
    config: Config,
    registry: Registry,
    supervisor: Supervisor,
    copy_dir: PathBuf,
    /// Libraries loaded earlier and no longer used: still mapped.
    retired: Vec<Arc<Library>>,
    telemetry: Arc<Telemetry>,
}

impl Plugins {
    /// Starts the instances of a start-up plan (which must have no errors).
    pub fn start(
        config: Config,
        registry: Registry,
        mut supervisor: Supervisor,
        copy_dir: PathBuf,
        plan: Plan,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        supervisor.start(plan.start, config.timeouts);
        let plugins = Self {
            config,
            registry,
            supervisor,
            copy_dir,
            retired: Vec::new(),
            telemetry,
        };
        plugins.note_waiting(&plan.waiting);
        plugins.count_libraries();
        plugins
    }

    /// The running instances' names.
    pub fn names(&self) -> Vec<String> {
        self.supervisor.specs().map(|(n, _)| n.to_owned()).collect()
    }

    /// The plugins folder changed: load new and changed libraries, start, restart and stop
    /// instances accordingly. A library that is refused, or whose instances fail to
    /// construct, leaves the previous version running.
    pub fn folder_changed(&mut self) {
        let mut registry = match self.scan(&self.config.plugin_policy) {
            Ok(registry) => registry,
            Err(e) => {
                self.telemetry.reload(false);
                return tracing::error!("plugin folder not rescanned: {e}");
            }
        };
        log_refusals(&registry, &self.registry);
        loop {
            let plan = plan(
                &self.config,
                &registry,
                self.supervisor.specs(),
                MissingClass::Waits,
            );
            // A new library whose instances do not construct is refused as a whole.
            let refused: Vec<Arc<Library>> = plan
                .failed
                .iter()
                .filter(|new| {
                    !self
                        .registry
                        .libraries
                        .iter()
                        .any(|old| Arc::ptr_eq(old, new))
                })
                .cloned()
                .collect();
            if refused.is_empty() {
                for error in &plan.errors {
                    tracing::error!("{error}");
                }
                return self.apply(plan, registry);
            }
            self.telemetry.reload(false);
            for library in refused {
                let reason = format!(
                    "its instances failed to construct ({})",
                    plan.errors.join("; ")
                );
                tracing::warn!(
                    file = %library.file.display(),
                    "plugin library refused: {reason}; the previous version, if any, runs on"
                );
                let previous = self.registry.library_at(&library.file).cloned();
                registry.libraries.retain(|l| !Arc::ptr_eq(l, &library));
                registry.libraries.extend(previous);
                registry.refused.retain(|r| r.file != library.file);
                registry
                    .refused
                    .push(Refusal::after_loading(&library, reason));
                self.retire(library);
            }
        }
    }

    /// SIGHUP: re-read the config and the folder. Instances whose section changed restart, new
    /// ones start, dropped ones stop. A config with any error changes nothing.
    pub fn reload(&mut self, config: Result<Config, ConfigError>) {
        let config = match config {
            Ok(config) => config,
            Err(e) => {
                self.telemetry.reload(false);
                return tracing::error!("new config refused, the running one stays: {e}");
            }
        };
        let registry = match self.scan(&config.plugin_policy) {
            Ok(registry) => registry,
            Err(e) => {
                self.telemetry.reload(false);
                return tracing::error!("new config refused, the running one stays: {e}");
            }
        };
        log_refusals(&registry, &self.registry);
        let plan = plan(
            &config,
            &registry,
            self.supervisor.specs(),
            MissingClass::Waits,
        );
        if !plan.errors.is_empty() {
            self.telemetry.reload(false);
            tracing::error!(
                "new config refused, the running one stays; {} error{}:\n  {}",
                plan.errors.len(),
                if plan.errors.len() == 1 { "" } else { "s" },
                plan.errors.join("\n  ")
            );
            return;
        }
        let restart_only = self.config.restart_only_changes(&config);
        if !restart_only.is_empty() {
            tracing::warn!(
                "changed settings that take effect only after a restart: {}",
                restart_only.join(", ")
            );
        }
        self.config = Config {
            // The folder being watched stays the one loaded from.
            plugin_dir: self.config.plugin_dir.clone(),
            ..config
        };
        if plan.is_empty() {
            tracing::info!("config reloaded: no instance to start, restart or stop");
        }
        self.apply(plan, registry);
    }

    /// Stops every instance; returns those that did not stop within `deadline`.
    pub fn stop(self, deadline: Duration) -> Vec<String> {
        self.supervisor.stop_all(deadline)
    }

    fn scan(&self, policy: &loader::trust::Policy) -> Result<Registry, loader::LoaderError> {
        loader::scan(
            &self.config.plugin_dir,
            &self.copy_dir,
            policy,
            &self.registry,
            loader::Hashing::WhenNeeded,
        )
    }

    /// Stops what the plan replaces or drops, then starts its instances: the gap for a
    /// replaced instance is the join of its old thread.
    fn apply(&mut self, plan: Plan, registry: Registry) {
        if !plan.is_empty() {
            tracing::info!("reloading: {}", plan.summary());
        }
        self.telemetry.reload(true);
        let deadline = Duration::from_secs_f64(self.config.shutdown_timeout);
        let stragglers = self.supervisor.stop(&plan.stop, deadline);
        if !stragglers.is_empty() {
            tracing::warn!(
                "did not stop within {} s (settings.shutdown_timeout), left behind: {}",
                self.config.shutdown_timeout,
                stragglers.join(", ")
            );
        }
        self.supervisor.start(plan.start, self.config.timeouts);
        self.note_waiting(&plan.waiting);
        let configured = &self.config.instances;
        self.telemetry
            .retain_instances(|name| configured.iter().any(|i| i.name == name));
        let old = std::mem::replace(&mut self.registry, registry);
        for library in old.libraries {
            if !self
                .registry
                .libraries
                .iter()
                .any(|l| Arc::ptr_eq(l, &library))
            {
                self.retire(library);
            }
        }
        self.count_libraries();
    }

    fn count_libraries(&self) {
        self.telemetry
            .libraries(self.registry.libraries.len(), self.retired.len());
    }

    /// Logs the instances waiting for a library, and shows them as waiting.
    fn note_waiting(&self, waiting: &[(String, String, String)]) {
        for (name, class, why) in waiting {
            tracing::warn!("{why}");
            self.telemetry.instance_state(
                name,
                class,
                InstanceState::WaitingForLibrary,
                None,
                None,
            );
        }
    }

    fn retire(&mut self, library: Arc<Library>) {
        self.retired.push(library);
        let bytes: u64 = self.retired.iter().map(|l| l.size).sum();
        tracing::info!(
            "retired libraries stay mapped (abi_stable never unloads): {} ({:.1} MiB)",
            self.retired.len(),
            bytes as f64 / (1024.0 * 1024.0)
        );
        self.count_libraries();
    }
}

/// Logs the refusals in `new` that `old` did not already report.
fn log_refusals(new: &Registry, old: &Registry) {
    for refusal in &new.refused {
        let known = old
            .refused
            .iter()
            .any(|r| r.file == refusal.file && r.reason == refusal.reason);
        if known {
            continue;
        }
        match new.library_at(&refusal.file) {
            Some(_) => tracing::warn!(
                file = %refusal.file.display(),
                "plugin library refused: {}; the previous version runs on",
                refusal.reason
            ),
            None => tracing::warn!(
                file = %refusal.file.display(),
                "plugin library refused: {}",
                refusal.reason
            ),
        }
    }
}
