//! The runtime: the libraries loaded and the instances running. A change in the plugins
//! folder, or new settings on SIGHUP, is applied to the running instances without losing a
//! record: [`plan::diff`], then [`plan::build`], then a commit.
//!
//! A changed library is loaded from a fresh private copy and its instances are constructed
//! before the old ones are stopped; if either fails, the old instances run on. Every record an
//! old instance pushed is already in the spool when its thread ends, so a restart loses
//! nothing. Libraries are never unloaded (abi_stable cannot): replaced ones are counted and
//! their size logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod plan;
pub mod supervisor;

use crate::config::InstanceConfig;
use crate::loader::trust::LoaderPolicy;
use crate::loader::{self, Library, Refusal, Registry};
use crate::telemetry::{InstanceState, Telemetry};
use plan::{MissingClass, Plan, Waiting};
use supervisor::{Supervisor, SupervisorSettings};

/// The settings the runtime takes again on a reload.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub instances: Vec<InstanceConfig>,
    pub supervisor: SupervisorSettings,
    pub loader: LoaderPolicy,
}

/// The plugin side of a running host: the libraries loaded, the instances running.
pub struct Runtime {
    settings: RuntimeSettings,
    /// The folder watched and loaded from (fixed at start-up).
    plugin_dir: PathBuf,
    registry: Registry,
    supervisor: Supervisor,
    copy_dir: PathBuf,
    /// Libraries loaded earlier and no longer used: still mapped.
    retired: Vec<Arc<Library>>,
    telemetry: Arc<Telemetry>,
}

impl Runtime {
    /// Starts the instances of a start-up plan (which must have no errors).
    pub fn start(
        settings: RuntimeSettings,
        plugin_dir: PathBuf,
        registry: Registry,
        mut supervisor: Supervisor,
        copy_dir: PathBuf,
        plan: Plan,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        supervisor.start(plan.start, settings.supervisor.retry);
        let plugins = Self {
            settings,
            plugin_dir,
            registry,
            supervisor,
            copy_dir,
            retired: Vec::new(),
            telemetry,
        };
        plugins.note_waiting(&plan.waiting);
        plugins.count_libraries();
        trim_heap();
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
        let mut registry = match self.scan(&self.settings.loader, &self.settings.instances) {
            Ok(registry) => registry,
            Err(e) => {
                self.telemetry.reload(false);
                return tracing::error!("plugin folder not rescanned: {e}");
            }
        };
        log_refusals(&registry, &self.registry);
        let mut plan = self.plan(&self.settings.instances, &registry);
        // A new library whose instances do not construct is refused as a whole: the previous
        // version of its file (if any) stays, and the instances are planned over that instead.
        let refused: Vec<Arc<Library>> = plan
            .failed
            .iter()
            .filter_map(|file| registry.library_at(file))
            .filter(|new| {
                !self
                    .registry
                    .libraries
                    .iter()
                    .any(|old| Arc::ptr_eq(old, new))
            })
            .cloned()
            .collect();
        if !refused.is_empty() {
            self.telemetry.reload(false);
            let reason = format!(
                "its instances failed to construct ({})",
                plan.errors.join("; ")
            );
            for library in refused {
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
                    .push(Refusal::after_loading(&library, reason.clone()));
                self.retire(library);
            }
            plan = self.plan(&self.settings.instances, &registry);
        }
        for error in &plan.errors {
            tracing::error!("{error}");
        }
        self.commit(plan, registry);
    }

    /// SIGHUP: new settings, and a rescan of the folder. Instances whose section changed
    /// restart, new ones start, dropped ones stop. A config with any error changes nothing;
    /// returns whether the new settings were taken.
    pub fn reload(&mut self, settings: Result<RuntimeSettings, impl std::fmt::Display>) -> bool {
        let settings = match settings {
            Ok(settings) => settings,
            Err(e) => {
                self.telemetry.reload(false);
                tracing::error!("new config refused, the running one stays: {e}");
                return false;
            }
        };
        let registry = match self.scan(&settings.loader, &settings.instances) {
            Ok(registry) => registry,
            Err(e) => {
                self.telemetry.reload(false);
                tracing::error!("new config refused, the running one stays: {e}");
                return false;
            }
        };
        log_refusals(&registry, &self.registry);
        let plan = self.plan(&settings.instances, &registry);
        if !plan.errors.is_empty() {
            self.telemetry.reload(false);
            tracing::error!(
                "new config refused, the running one stays; {} error{}:\n  {}",
                plan.errors.len(),
                if plan.errors.len() == 1 { "" } else { "s" },
                plan.errors.join("\n  ")
            );
            return false;
        }
        self.settings = settings;
        if plan.is_empty() {
            tracing::info!("config reloaded: no instance to start, restart or stop");
        }
        self.commit(plan, registry);
        true
    }

    /// Stops every instance, waiting up to `settings.shutdown_timeout`; logs those that did
    /// not stop in time.
    pub fn stop(self) {
        let deadline = self.settings.supervisor.shutdown_timeout;
        warn_left_behind(&self.supervisor.stop_all(deadline), deadline);
    }

    /// Rescans the folder, loading the libraries that export a class of `instances`.
    fn scan(
        &self,
        policy: &LoaderPolicy,
        instances: &[InstanceConfig],
    ) -> Result<Registry, loader::LoaderError> {
        loader::scan(
            &self.plugin_dir,
            &self.copy_dir,
            policy,
            &self.registry,
            loader::Hashing::WhenNeeded,
            &classes_of(instances),
        )
    }

    /// Diffs `instances` over `registry` against what runs, and builds what is to start.
    fn plan(&self, instances: &[InstanceConfig], registry: &Registry) -> Plan {
        let diff = plan::diff(
            instances,
            registry,
            self.supervisor.specs(),
            MissingClass::Waits,
        );
        plan::build(diff)
    }

    /// Stops what the plan replaces or drops, then starts its instances (the gap for a
    /// replaced instance is the join of its old thread), retires the libraries no longer in
    /// `registry`, and updates the telemetry.
    fn commit(&mut self, plan: Plan, registry: Registry) {
        if !plan.is_empty() {
            tracing::info!("reloading: {}", plan.summary());
        }
        self.telemetry.reload(true);
        let deadline = self.settings.supervisor.shutdown_timeout;
        warn_left_behind(&self.supervisor.stop(&plan.stop, deadline), deadline);
        self.supervisor
            .start(plan.start, self.settings.supervisor.retry);
        self.note_waiting(&plan.waiting);
        let configured = &self.settings.instances;
        self.telemetry
            .retain_instances(|name| configured.iter().any(|i| i.name == name));
        let old = std::mem::replace(&mut self.registry, registry);
        for library in old.libraries {
            // One only inspected was never mapped here: nothing of it stays.
            if library.is_loaded()
                && !self
                    .registry
                    .libraries
                    .iter()
                    .any(|l| Arc::ptr_eq(l, &library))
            {
                self.retire(library);
            }
        }
        self.count_libraries();
        trim_heap();
    }

    fn count_libraries(&self) {
        self.telemetry
            .libraries(self.registry.loaded(), self.retired.len());
    }

    /// Logs the instances waiting for a library, and shows them as waiting.
    fn note_waiting(&self, waiting: &[Waiting]) {
        for Waiting { name, class, why } in waiting {
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

/// The classes `instances` name: the libraries exporting them are loaded into the host.
pub(crate) fn classes_of(instances: &[InstanceConfig]) -> Vec<String> {
    instances.iter().map(|i| i.class.clone()).collect()
}

/// Returns the heap's free memory at its top and in its free chunks to the system: a scan
/// reads every new library into a buffer, which glibc would otherwise keep for good. Called
/// once a scan's registry is in place (at start and after each commit).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap under its lock; it takes no pointers.
    unsafe {
        nix::libc::malloc_trim(0);
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

/// Names the instances that did not stop within `deadline`, if any.
fn warn_left_behind(stragglers: &[String], deadline: Duration) {
    if !stragglers.is_empty() {
        tracing::warn!(
            "did not stop within {} s (settings.shutdown_timeout), left behind: {}",
            deadline.as_secs_f64(),
            stragglers.join(", ")
        );
    }
}
