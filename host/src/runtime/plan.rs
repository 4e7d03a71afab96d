//! Planning: which instances to start and stop so that what runs matches the config over the
//! libraries loaded. Start-up plans against nothing running; a reload plans against what runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::supervisor::{Prepared, Spec};
use crate::config::InstanceConfig;
use crate::loader::{ClassError, Library, Registry};

/// What a class no loaded library exports means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingClass {
    /// A configuration error (`check`).
    IsError,
    /// The instance waits for a library exporting the class to be added to the folder; a
    /// running one (whose library was removed) stops (`run`).
    Waits,
}

/// The changes that bring the running instances in line with a config and a registry.
#[derive(Default)]
pub struct Plan {
    /// Constructed instances to start, new or replacing a running one of the same name.
    pub start: Vec<Prepared>,
    /// Running instances to stop first: replaced, dropped from the config, or left without a
    /// library.
    pub stop: Vec<String>,
    /// Why an instance could not be built; a running instance of that name runs on unchanged.
    pub errors: Vec<String>,
    /// Instances waiting for a library that exports their class: name, class, and why.
    pub waiting: Vec<(String, String, String)>,
    /// Libraries in which an instance failed to construct.
    pub failed: Vec<Arc<Library>>,
}

impl Plan {
    /// Whether there is nothing to start or stop.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.stop.is_empty()
    }

    /// One line for the log: `restart A; start B; stop C`.
    pub fn summary(&self) -> String {
        let started: Vec<&str> = self.start.iter().map(|p| p.name.as_str()).collect();
        let restart: Vec<&str> = started
            .iter()
            .copied()
            .filter(|n| self.stop.iter().any(|s| s == n))
            .collect();
        let start: Vec<&str> = started
            .iter()
            .copied()
            .filter(|n| !restart.contains(n))
            .collect();
        let stop: Vec<&str> = self
            .stop
            .iter()
            .map(String::as_str)
            .filter(|n| !restart.contains(n))
            .collect();
        [("restart", restart), ("start", start), ("stop", stop)]
            .into_iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(verb, names)| format!("{verb} {}", names.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Plans the configured `instances` over `registry`, given the `running` instances' specs. Every
/// instance to start is constructed here, so a failure is known before anything is stopped.
pub fn plan<'a>(
    instances: &[InstanceConfig],
    registry: &Registry,
    running: impl IntoIterator<Item = (&'a str, &'a Spec)>,
    missing: MissingClass,
) -> Plan {
    let running: BTreeMap<&str, &Spec> = running.into_iter().collect();
    let mut plan = Plan::default();
    for wanted in instances {
        let current = running.get(wanted.name.as_str());
        let named = |e: String| {
            if wanted.name == wanted.class {
                e
            } else {
                format!("instance `{}`: {e}", wanted.name)
            }
        };
        let library = match registry.library_for(&wanted.class) {
            Ok(library) => library,
            Err(e @ ClassError::Unknown { .. }) if missing == MissingClass::Waits => {
                if current.is_some() {
                    plan.stop.push(wanted.name.clone());
                }
                plan.waiting.push((
                    wanted.name.clone(),
                    wanted.class.clone(),
                    named(format!(
                        "{e}; it starts when a library exporting it is added to the plugins folder"
                    )),
                ));
                continue;
            }
            Err(e) => {
                plan.errors.push(named(e.to_string()));
                continue;
            }
        };
        let spec = Spec {
            class: wanted.class.clone(),
            settings_yaml: wanted.settings_yaml.clone(),
            library: library.clone(),
        };
        if current.is_some_and(|c| c.same_as(&spec)) {
            continue;
        }
        match library.instantiate(&spec.class, &spec.settings_yaml) {
            Ok(instance) => {
                if current.is_some() {
                    plan.stop.push(wanted.name.clone());
                }
                plan.start.push(Prepared {
                    name: wanted.name.clone(),
                    spec,
                    instance,
                });
            }
            Err(e) => {
                plan.errors.push(named(e.to_string()));
                if !plan.failed.iter().any(|l| Arc::ptr_eq(l, library)) {
                    plan.failed.push(library.clone());
                }
            }
        }
    }
    for name in running.keys() {
        if !instances.iter().any(|i| i.name == *name) {
            plan.stop.push((*name).to_owned());
        }
    }
    plan
}
