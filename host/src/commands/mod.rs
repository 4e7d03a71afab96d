//! The sub-commands, one module each, and what they share: reading the config and the plugins
//! folder the same way.

mod check;
mod plugins;
mod run;
mod spool;

pub use check::check;
pub use plugins::plugins;
pub use run::run;
pub use spool::spool;

use std::path::PathBuf;

use crate::cli::Cli;
use crate::config::{self, Config, ConfigError, SettingsLayer};

/// An error with its causes, `: `-separated, each said once: a cause whose text its error
/// already ends with (as `{source}` in a message) is not repeated.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The config: defaults < file < environment < flags.
fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let (file, env, flags) = config_layers(cli);
    config::load(file, env, flags)
}

/// The config with every problem in its values, for `check` to report them all.
fn load_config_all(cli: &Cli) -> Result<(Config, Vec<String>), ConfigError> {
    let (file, env, flags) = config_layers(cli);
    config::load_all(file, env, flags)
}

/// The user file, the environment and the flags, as [`config::load`] takes them.
fn config_layers(cli: &Cli) -> (Option<(PathBuf, bool)>, SettingsLayer, SettingsLayer) {
    let env = |name: &str| std::env::var(name).ok();
    let flags = SettingsLayer {
        plugin_dir: cli.plugin_dir.clone(),
        state_dir: cli.state_dir.clone(),
        ..SettingsLayer::default()
    };
    (
        config::config_path(cli.config.as_deref(), env),
        SettingsLayer::from_env(env),
        flags,
    )
}
