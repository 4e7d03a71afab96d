use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use calllogger_plugin_abi::{ErrorKind, InstanceBox, PluginError};

use super::*;

/// A library that exports classes but cannot build anything.
struct Unbuildable(PathBuf);

impl InstanceSource for Unbuildable {
    fn instantiate(&self, class: &str, _: &str) -> Result<InstanceBox, PluginError> {
        Err(PluginError::new(
            ErrorKind::Config,
            format!("{class}: missing field `label`"),
        ))
    }

    fn file(&self) -> &Path {
        &self.0
    }

    fn identity(&self) -> String {
        "unbuildable 0".to_owned()
    }
}

/// Class → the one library exporting it.
struct Map(BTreeMap<&'static str, Arc<dyn InstanceSource>>);

impl Exports for Map {
    fn source_for(&self, class: &str) -> Result<Arc<dyn InstanceSource>, ClassError> {
        self.0
            .get(class)
            .cloned()
            .ok_or_else(|| ClassError::Unknown {
                class: class.to_owned(),
                available: self.0.keys().map(|c| (*c).to_owned()).collect(),
            })
    }
}

fn library(file: &str) -> Arc<dyn InstanceSource> {
    Arc::new(Unbuildable(file.into()))
}

fn instance(name: &str, settings_yaml: &str) -> InstanceConfig {
    InstanceConfig {
        name: name.to_owned(),
        class: name.split('@').next().unwrap().to_owned(),
        settings_yaml: settings_yaml.to_owned(),
    }
}

fn spec(class: &str, settings_yaml: &str, source: &Arc<dyn InstanceSource>) -> Spec {
    Spec {
        class: class.to_owned(),
        settings_yaml: settings_yaml.to_owned(),
        source: source.clone(),
    }
}

fn names(list: &[(String, Spec)]) -> Vec<&str> {
    list.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn nothing_running_starts_every_instance_whose_class_is_exported() {
    let a = library("liba.so");
    let exports = Map([("Echo", a.clone())].into());
    let diff = diff(
        &[instance("Echo", "label: x\n"), instance("Echo@b", "")],
        &exports,
        [],
        MissingClass::Waits,
    );
    assert_eq!(names(&diff.start), ["Echo", "Echo@b"]);
    assert!(diff.restart.is_empty() && diff.stop.is_empty() && diff.errors.is_empty());
    assert!(diff.start[0].1.same_as(&spec("Echo", "label: x\n", &a)));
}

#[test]
fn a_changed_section_or_library_restarts_and_a_dropped_instance_stops() {
    let (old, new) = (library("liba.so"), library("liba.so"));
    let exports = Map([("Echo", new.clone()), ("Flaky", old.clone())].into());
    let running = [
        ("Echo".to_owned(), spec("Echo", "", &old)),
        ("Flaky".to_owned(), spec("Flaky", "a: 1\n", &old)),
        ("Flaky@same".to_owned(), spec("Flaky", "", &old)),
        ("Gone".to_owned(), spec("Gone", "", &old)),
    ];
    let diff = diff(
        &[
            instance("Echo", ""),
            instance("Flaky", "a: 2\n"),
            instance("Flaky@same", ""),
        ],
        &exports,
        running.iter().map(|(n, s)| (n.as_str(), s)),
        MissingClass::Waits,
    );
    assert!(diff.start.is_empty());
    assert_eq!(
        names(&diff.restart),
        ["Echo", "Flaky"],
        "a new library, a new section"
    );
    assert_eq!(diff.stop, ["Gone"], "unchanged ones are left alone");
}

#[test]
fn a_class_no_library_exports_waits_or_is_an_error() {
    let exports = Map(BTreeMap::new());
    let old = library("liba.so");
    let running = spec("Echo", "", &old);
    let wanted = [instance("Echo", ""), instance("Echo@b", "")];
    let waits = diff(&wanted, &exports, [("Echo", &running)], MissingClass::Waits);
    assert_eq!(waits.stop, ["Echo"], "its library was removed");
    assert_eq!(waits.waiting.len(), 2);
    assert!(
        waits.waiting[1]
            .why
            .starts_with("instance `Echo@b`: no plugin library exports class `Echo`")
            && waits.waiting[1]
                .why
                .ends_with("added to the plugins folder"),
        "{:?}",
        waits.waiting
    );
    let errors = diff(&wanted, &exports, [], MissingClass::IsError);
    assert!(errors.waiting.is_empty());
    assert_eq!(errors.errors.len(), 2, "{:?}", errors.errors);
}

#[test]
fn a_failed_build_is_named_and_leaves_the_running_instance_alone() {
    let (old, new) = (library("liba.so"), library("libb.so"));
    let exports = Map([("Echo", new)].into());
    let running = spec("Echo", "", &old);
    let plan = build(diff(
        &[instance("Echo", "label: 1\n"), instance("Echo@b", "")],
        &exports,
        [("Echo", &running)],
        MissingClass::Waits,
    ));
    assert!(
        plan.start.is_empty() && plan.stop.is_empty(),
        "nothing changes"
    );
    assert_eq!(
        plan.errors,
        [
            "instance `Echo@b`: Echo: missing field `label`",
            "Echo: missing field `label`"
        ]
    );
    assert_eq!(plan.failed, [PathBuf::from("libb.so")], "named once");
}
