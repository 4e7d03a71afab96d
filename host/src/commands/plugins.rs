//! `calllogger plugins`: what the plugins folder offers.

use std::process::ExitCode;

use anyhow::Context as _;

use super::load_config;
use crate::cli::Cli;
use crate::host::scan_plugins;
use crate::loader::{self, Registry};

/// `calllogger plugins`: the class table, then the refused files.
pub fn plugins(cli: &Cli) -> anyhow::Result<ExitCode> {
    let settings = load_config(cli)?;
    let copies = tempfile::tempdir().context("creating a temporary folder")?;
    let registry = scan_plugins(&settings, copies.path(), loader::Hashing::Always)?;
    print!("{}", plugin_table(&registry));
    Ok(ExitCode::SUCCESS)
}

/// The hidden `inspect-library`: the loader's child process (`host/src/loader/inspect.rs`).
pub fn inspect_library() -> ExitCode {
    loader::inspect::child()
}

fn plugin_table(registry: &Registry) -> String {
    use calllogger_plugin_abi::PluginKind;
    let mut rows = vec![[
        "CLASS".to_owned(),
        "LIBRARY".to_owned(),
        "VERSION".to_owned(),
        "SDK".to_owned(),
        "DESCRIPTION".to_owned(),
    ]];
    for (class, exporters) in registry.classes() {
        for (library, info) in exporters {
            let kind = match info.kind {
                PluginKind::Serial => " (serial)",
                PluginKind::Lines => " (lines)",
                PluginKind::Polling => " (polling)",
                PluginKind::Generic => "",
            };
            rows.push([
                class.to_owned(),
                library.file.display().to_string(),
                library.identity(),
                library.sdk_version.clone(),
                format!("{}{kind}", info.description),
            ]);
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(&format!("{cell:width$}  "));
        }
        out.push_str(&row[4]);
        out.push('\n');
    }
    if registry.libraries.is_empty() {
        out.push_str("(no plugin libraries loaded)\n");
    } else {
        out.push_str("\nsha256 (for settings.trusted_plugins):\n");
        for library in &registry.libraries {
            out.push_str(&format!(
                "  {}  {}\n",
                library.sha256.as_deref().unwrap_or("-"),
                library.file.display()
            ));
        }
    }
    if !registry.refused.is_empty() {
        out.push_str("\nRefused:\n");
        for refusal in &registry.refused {
            out.push_str(&format!(
                "  {}: {}\n",
                refusal.file.display(),
                refusal.reason
            ));
        }
    }
    for conflict in registry.conflicts() {
        out.push_str(&format!("\nError: {conflict}\n"));
    }
    out
}
