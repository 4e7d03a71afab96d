//! Planning, in two steps: [`diff`] says which instances to start, restart and stop so that
//! what runs matches the configured instances over the libraries loaded (specs only, nothing
//! is built); [`build`] then constructs the instances to start, so a failure is known before
//! anything is stopped. Start-up plans against nothing running; a reload against what runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::supervisor::{InstanceSource, Prepared, Spec};
use crate::config::InstanceConfig;
use crate::loader::{ClassError, Registry};

/// What a class no loaded library exports means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingClass {
    /// A configuration error (`check`).
    IsError,
    /// The instance waits for a library exporting the class to be added to the folder; a
    /// running one (whose library was removed) stops (`run`).
    Waits,
}

/// Which library exports a class: the [`Registry`], or a map in tests.
pub trait Exports {
    /// The one source exporting `class`.
    fn source_for(&self, class: &str) -> Result<Arc<dyn InstanceSource>, ClassError>;
}

impl Exports for Registry {
    fn source_for(&self, class: &str) -> Result<Arc<dyn InstanceSource>, ClassError> {
        self.library_for(class)
            .map(|library| library.clone() as Arc<dyn InstanceSource>)
    }
}

/// An instance waiting for a library that exports its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub name: String,
    pub class: String,
    /// What to log: the class error, and that it starts once a library exports it.
    pub why: String,
}

/// The changes that bring the running instances in line with the configured ones.
#[derive(Default)]
pub struct Diff {
    /// Instances to start that do not run: name and spec.
    pub start: Vec<(String, Spec)>,
    /// Running instances whose spec changed: name and new spec.
    pub restart: Vec<(String, Spec)>,
    /// Running instances to stop: dropped from the config, or left without a library.
    pub stop: Vec<String>,
    pub waiting: Vec<Waiting>,
    /// Instances whose class no library (or more than one) exports, named.
    pub errors: Vec<String>,
}

/// `error`, prefixed with the instance's name when it is not its class's.
fn named(name: &str, class: &str, error: impl std::fmt::Display) -> String {
    if name == class {
        error.to_string()
    } else {
        format!("instance `{name}`: {error}")
    }
}

/// Compares the configured `instances` over `exports` with the `running` instances' specs.
pub fn diff<'a>(
    instances: &[InstanceConfig],
    exports: &impl Exports,
    running: impl IntoIterator<Item = (&'a str, &'a Spec)>,
    missing: MissingClass,
) -> Diff {
    let running: BTreeMap<&str, &Spec> = running.into_iter().collect();
    let mut diff = Diff::default();
    for wanted in instances {
        let current = running.get(wanted.name.as_str());
        let source = match exports.source_for(&wanted.class) {
            Ok(source) => source,
            Err(e @ ClassError::Unknown { .. }) if missing == MissingClass::Waits => {
                if current.is_some() {
                    diff.stop.push(wanted.name.clone());
                }
                diff.waiting.push(Waiting {
                    name: wanted.name.clone(),
                    class: wanted.class.clone(),
                    why: named(
                        &wanted.name,
                        &wanted.class,
                        format!(
                            "{e}; it starts when a library exporting it is added to the plugins folder"
                        ),
                    ),
                });
                continue;
            }
            Err(e) => {
                diff.errors.push(named(&wanted.name, &wanted.class, e));
                continue;
            }
        };
        let spec = Spec {
            class: wanted.class.clone(),
            settings_yaml: wanted.settings_yaml.clone(),
            source,
        };
        match current {
            Some(current) if current.same_as(&spec) => {}
            Some(_) => diff.restart.push((wanted.name.clone(), spec)),
            None => diff.start.push((wanted.name.clone(), spec)),
        }
    }
    for name in running.keys() {
        if !instances.iter().any(|i| i.name == *name) {
            diff.stop.push((*name).to_owned());
        }
    }
    diff
}

/// A diff with its instances constructed: what to stop, then what to start.
#[derive(Default)]
pub struct Plan {
    /// Constructed instances to start, new or replacing a running one of the same name.
    pub start: Vec<Prepared>,
    /// Running instances to stop first: replaced, dropped from the config, or left without a
    /// library.
    pub stop: Vec<String>,
    /// Why an instance could not be built; a running instance of that name runs on unchanged.
    pub errors: Vec<String>,
    pub waiting: Vec<Waiting>,
    /// The files of the libraries in which an instance failed to construct.
    pub failed: Vec<PathBuf>,
}

/// Constructs the instances `diff` starts and restarts. One that fails is named (instance,
/// class, key, as the plugin says) and not started; a running one of that name runs on.
pub fn build(diff: Diff) -> Plan {
    let mut plan = Plan {
        stop: diff.stop,
        errors: diff.errors,
        waiting: diff.waiting,
        ..Plan::default()
    };
    let restarts = diff.restart.into_iter().map(|(n, s)| (n, s, true));
    for (name, spec, replaces) in diff
        .start
        .into_iter()
        .map(|(n, s)| (n, s, false))
        .chain(restarts)
    {
        match spec.source.instantiate(&spec.class, &spec.settings_yaml) {
            Ok(instance) => {
                if replaces {
                    plan.stop.push(name.clone());
                }
                plan.start.push(Prepared {
                    name,
                    spec,
                    instance,
                });
            }
            Err(e) => {
                plan.errors.push(named(&name, &spec.class, e));
                let file = spec.source.file().to_owned();
                if !plan.failed.contains(&file) {
                    plan.failed.push(file);
                }
            }
        }
    }
    plan
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

#[cfg(test)]
mod tests;
