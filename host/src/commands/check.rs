//! `calllogger check`: the config and the plugins, every instance built, nothing started.

use std::process::ExitCode;

use anyhow::Context as _;

use super::{error_chain, load_config_all};
use crate::cli::Cli;
use crate::host::{inspect_state_dir, prepare, scan_plugins};
use crate::loader;
use crate::runtime::plan::MissingClass;

/// `calllogger check`: everything `run` would do before starting the instances, every
/// problem reported at once.
pub fn check(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (settings, mut problems) = load_config_all(cli)?;
    let config = &settings.config;
    match &config.file {
        Some(file) => println!("config: {} over the built-in defaults", file.display()),
        None => println!("config: built-in defaults only"),
    }
    let mut warnings = config.warnings.clone();
    match inspect_state_dir(config) {
        Ok((state, _)) => {
            println!("state folder: {state}");
            if let Err(e) = loader::state_dir::check(&settings.loader, &config.state_dir) {
                problems.push(e.to_string());
            }
        }
        Err(problem) => problems.push(problem),
    }
    println!("plugin folder: {}", config.plugin_dir.display());
    let copies = tempfile::tempdir().context("creating a temporary folder")?;
    match scan_plugins(&settings, copies.path(), loader::Hashing::WhenNeeded) {
        Ok(registry) => {
            problems.extend(
                registry
                    .refused
                    .iter()
                    .map(|r| format!("plugin library {} refused: {}", r.file.display(), r.reason)),
            );
            problems.extend(registry.conflicts().iter().map(ToString::to_string));
            match prepare(config, &registry, MissingClass::IsError) {
                Ok(plan) => {
                    for instance in plan.start {
                        println!(
                            "would run: {} (class {} from {})",
                            instance.name,
                            instance.spec.class,
                            instance.spec.source.file().display()
                        );
                    }
                }
                Err(errors) => problems.extend(errors),
            }
            let classes: Vec<&str> = registry.classes().into_keys().collect();
            warnings.extend(config.unclaimed_sections(&classes).map(|section| {
                format!(
                    "config section `{section}` matches no plugin class and no configured instance"
                )
            }));
        }
        Err(e) => problems.push(error_chain(&e)),
    }
    if settings.sender.delivers() {
        println!("records go to: {} (token set)", settings.sender.frontend);
    } else {
        println!("records go to: the spool and stdout (no frontend and token configured)");
    }
    match config.metrics_addr {
        Some(addr) => println!("status page, /health and /metrics: http://{addr}/"),
        None => println!("status page, /health and /metrics: off (settings.metrics_addr)"),
    }
    for warning in &warnings {
        println!("warning: {warning}");
    }
    if problems.is_empty() {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        for problem in &problems {
            println!("error: {problem}");
        }
        println!(
            "{} problem{} found",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        Ok(ExitCode::FAILURE)
    }
}
