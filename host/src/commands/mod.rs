//! The sub-commands, one module each, and what they share: reading the config and the plugins
//! folder the same way.

mod check;
mod health;
mod plugins;
mod run;
#[cfg(windows)]
mod service;
mod spool;

pub use check::check;
pub use health::health;
pub use plugins::{inspect_library, plugins};
pub use run::run;
#[cfg(windows)]
pub use service::service;
pub use spool::spool;

/// `calllogger config`: the effective config, or with `--defaults` the built-in one.
pub fn config(cli: &Cli, defaults: bool) -> anyhow::Result<std::process::ExitCode> {
    if defaults {
        print!("{}", config::DEFAULTS);
    } else {
        print!("{}", load_config(cli)?.config.to_effective_yaml());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `calllogger completions SHELL`: the shell's completion script, from the command line's
/// definition.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<std::process::ExitCode> {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "calllogger", &mut std::io::stdout());
    Ok(std::process::ExitCode::SUCCESS)
}

/// `calllogger man`: the manual page, from the command line's definition.
pub fn man() -> anyhow::Result<std::process::ExitCode> {
    let command = <Cli as clap::CommandFactory>::command();
    match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
        // `calllogger man | head`: the reader has what it wanted.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(std::process::ExitCode::SUCCESS),
    }
}

/// `calllogger reload` (Windows): asks the host running with the configured `state_dir` to
/// reload, through its named pipe (`host/src/control.rs`).
#[cfg(windows)]
pub fn reload(cli: &Cli) -> anyhow::Result<std::process::ExitCode> {
    let config = load_config(cli)?.config;
    crate::control::request_reload(&config.state_dir)?;
    Ok(std::process::ExitCode::SUCCESS)
}

use std::path::PathBuf;

use crate::cli::Cli;
use crate::config::{self, ConfigError, Overrides};
use crate::settings::{self, Settings};

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
fn load_config(cli: &Cli) -> Result<Settings, ConfigError> {
    let (file, env, flags) = config_layers(cli);
    settings::load(file, env, flags)
}

/// The config with every problem in its values, for `check` to report them all.
fn load_config_all(cli: &Cli) -> Result<(Settings, Vec<String>), ConfigError> {
    let (file, env, flags) = config_layers(cli);
    settings::load_all(file, env, flags)
}

/// The user file, the environment and the flags, as [`settings::load`] takes them.
fn config_layers(cli: &Cli) -> (Option<(PathBuf, bool)>, Overrides, Overrides) {
    let env = |name: &str| std::env::var(name).ok();
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
    let flags = Overrides::default()
        .flag("plugin_dir", path(&cli.plugin_dir))
        .flag("state_dir", path(&cli.state_dir));
    (
        config::config_path(cli.config.as_deref(), env),
        Overrides::from_env(env, &settings::keys()),
        flags,
    )
}
