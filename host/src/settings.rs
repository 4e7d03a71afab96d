//! Every component's settings, taken from one merged config: the host's own in [`Config`],
//! and a struct per component, each defining its keys once.

use std::path::PathBuf;

use crate::config::{self, fields, Config, ConfigError, Overrides};
use crate::loader::trust::LoaderPolicy;
use crate::logging::LogSettings;
use crate::runtime::supervisor::SupervisorSettings;
use crate::sinks::frontend::SenderSettings;
use crate::spool_settings::SpoolSettings;

/// The validated settings of a host.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub loader: LoaderPolicy,
    pub supervisor: SupervisorSettings,
    pub spool: SpoolSettings,
    pub sender: SenderSettings,
    pub log: LogSettings,
}

/// Every setting's key: the host's own and the components'.
pub fn keys() -> Vec<&'static str> {
    let mut keys = config::host_keys();
    keys.extend(known());
    keys
}

/// The components' keys.
fn known() -> Vec<&'static str> {
    [
        fields::<LoaderPolicy>(),
        fields::<SupervisorSettings>(),
        fields::<SpoolSettings>(),
        fields::<SenderSettings>(),
        fields::<LogSettings>(),
    ]
    .concat()
}

/// Loads the config (see [`config::load`]); any problem is an error.
pub fn load(
    file: Option<(PathBuf, bool)>,
    env: Overrides,
    flags: Overrides,
) -> Result<Settings, ConfigError> {
    match load_all(file, env, flags)? {
        (settings, problems) if problems.is_empty() => Ok(settings),
        (_, problems) => Err(ConfigError::Invalid(problems)),
    }
}

/// As [`load`], but settings whose values are wrong are returned with every problem found (the
/// defaults in place of the wrong values); only a file that cannot be read or parsed is an
/// error.
pub fn load_all(
    file: Option<(PathBuf, bool)>,
    env: Overrides,
    flags: Overrides,
) -> Result<(Settings, Vec<String>), ConfigError> {
    let (mut config, mut problems) = config::load(file, env, flags, &known())?;
    let (loader, found) = config.settings::<LoaderPolicy>();
    problems.extend(found);
    let (supervisor, found) = config.settings::<SupervisorSettings>();
    problems.extend(found);
    problems.extend(supervisor.check(&config));
    let (spool, found) = config.settings::<SpoolSettings>();
    problems.extend(found);
    let (sender, found) = config.settings::<SenderSettings>();
    problems.extend(found);
    problems.extend(sender.check(&config));
    let (log, found) = config.settings::<LogSettings>();
    problems.extend(found);
    if !problems.is_empty() {
        config.warnings.retain(|w| w != config::NO_PLUGINS);
    }
    let settings = Settings {
        config,
        loader,
        supervisor,
        spool,
        sender,
        log,
    };
    Ok((settings, problems))
}

impl Settings {
    /// The settings that differ in `new` but apply only at start-up: every key but the ones
    /// a reload takes (the instances, the supervisor's, the loader's and the log level).
    pub fn restart_only_changes(&self, new: &Settings) -> Vec<String> {
        let reloaded = [
            fields::<SupervisorSettings>(),
            fields::<LoaderPolicy>(),
            fields::<LogSettings>(),
            &["plugins"],
        ]
        .concat();
        self.config
            .changed_keys(&new.config)
            .filter(|key| !reloaded.contains(key))
            .map(|key| format!("settings.{key}"))
            .collect()
    }
}

#[cfg(test)]
mod tests;
