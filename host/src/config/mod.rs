//! Configuration: the compiled-in `defaults.yml`, a user file merged over it, then environment
//! and command-line overrides. Every layer is a YAML value; the merged `settings:` mapping is
//! deserialized into the structs of the components that use it ([`Config::settings`]), each
//! problem named with the file and line (or variable, or flag) its value came from.
//!
//! This module knows the host's own keys ([`HostSettings`]) and nothing of the components after
//! it: the caller passes the keys they know ([`fields`]), so a mistyped key is refused per file.

mod fields;
mod interpolate;
mod secrets;
mod show;
pub mod state_dir;
mod written;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use yaml_serde::{Mapping, Value};

pub use fields::fields;
pub use state_dir::inspect_state_dir;

/// The defaults, as shipped in the repository's `defaults.yml`.
pub const DEFAULTS: &str = include_str!("../../../defaults.yml");

/// Where a service installation keeps its config when nothing else is named.
#[cfg(not(windows))]
pub const SYSTEM_CONFIG: &str = "/etc/calllogger/config.yml";

/// The warning when no instance is configured (dropped when the config has errors).
#[cfg(not(windows))]
pub const NO_PLUGINS: &str = "no plugin instances configured: set settings.plugins (the host \
                              runs on; SIGHUP after setting it)";
/// The warning when no instance is configured (dropped when the config has errors).
#[cfg(windows)]
pub const NO_PLUGINS: &str = "no plugin instances configured: set settings.plugins (the host \
                              runs on; `calllogger reload` after setting it)";

/// A configuration problem, naming the file (or variable, or flag), key and line at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "config file {path} is empty (nothing but blanks or comments): write the settings into it, \
         or delete it to run on the built-in defaults"
    )]
    Empty { path: PathBuf },
    #[error("config file {origin}: {error}")]
    Syntax {
        origin: String,
        error: yaml_serde::Error,
    },
    /// Every problem found in the settings.
    #[error("{}", problem_list(.0))]
    Invalid(Vec<String>),
}

fn problem_list(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        many => format!(
            "{} problems in the configuration:\n  {}",
            many.len(),
            many.join("\n  ")
        ),
    }
}

/// The environment variables set here that the config reads: `CALLLOGGER_CONFIG`, the
/// short names and every `CALLLOGGER_…` one.
#[cfg(windows)]
pub fn environment_variables() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            name.starts_with("CALLLOGGER_") || SHORT_NAMES.iter().any(|(_, short)| short == name)
        })
        .collect()
}

/// The settings that also have a short environment variable, kept from before
/// `CALLLOGGER_<SETTING>` covered every setting.
pub(crate) const SHORT_NAMES: [(&str, &str); 2] = [("token", "TOKEN"), ("plugins", "PLUGIN")];

/// The keys of the host's own settings (`plugins`, `plugin_dir`, …).
pub fn host_keys() -> Vec<&'static str> {
    fields::<HostSettings>().to_vec()
}

/// The environment variable that sets `key`: `CALLLOGGER_` and the key in capitals.
pub fn env_var(key: &str) -> String {
    format!("CALLLOGGER_{}", key.to_ascii_uppercase())
}

/// Where a setting's value came from, for messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Defaults,
    /// The user file, and the line the key is written on when it could be found.
    File {
        path: PathBuf,
        line: Option<usize>,
    },
    /// An environment variable, by name.
    Env(String),
    /// The command-line flag of a key.
    Flag(&'static str),
    /// A secret read from `file`, which `<key>_file` at `origin` names.
    SecretFile {
        origin: Box<Source>,
        file: PathBuf,
    },
}

impl Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Defaults => f.write_str("defaults.yml (built in)"),
            Self::File {
                path,
                line: Some(line),
            } => write!(f, "config file {}, line {line}", path.display()),
            Self::File { path, line: None } => write!(f, "config file {}", path.display()),
            Self::Env(var) => write!(f, "environment variable {var}"),
            Self::Flag(key) => write!(f, "flag --{}", key.replace('_', "-")),
            Self::SecretFile { origin, file } => {
                write!(f, "{origin}, read from {}", file.display())
            }
        }
    }
}

/// Settings set by the environment or by flags: each key with its value and origin.
#[derive(Debug, Clone, Default)]
pub struct Overrides(Vec<(String, Value, Source)>);

impl Overrides {
    /// The overrides the environment sets: `CALLLOGGER_<KEY>` for each of `keys` (over the
    /// short `TOKEN` and `PLUGIN`), and `CALLLOGGER_<KEY>_FILE` for each secret-named one. A
    /// value is read as YAML (`CALLLOGGER_TIMEOUT=5` is a number), except a secret (or its
    /// file), which stays the text it is, and `plugins`, a comma-separated list.
    pub fn from_env(env: impl Fn(&str) -> Option<String>, keys: &[&'static str]) -> Self {
        let mut overrides = Self::default();
        let files = keys
            .iter()
            .filter(|key| secrets::is_secret(key))
            .map(|key| format!("{key}_file"));
        let named = SHORT_NAMES
            .iter()
            .map(|(key, var)| ((*key).to_owned(), (*var).to_owned()))
            .chain(keys.iter().map(|key| ((*key).to_owned(), env_var(key))))
            .chain(files.map(|key| {
                let var = env_var(&key);
                (key, var)
            }));
        for (key, var) in named {
            let Some(value) = env(&var).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            let value = match key.as_str() {
                "plugins" => value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(Value::from)
                    .collect(),
                _ if secrets::is_secret(&key) || secrets::file_key_of(&key).is_some() => {
                    Value::from(value)
                }
                _ => match yaml_serde::from_str::<Value>(&value) {
                    Ok(parsed) if !parsed.is_null() => parsed,
                    _ => Value::from(value),
                },
            };
            overrides.0.push((key, value, Source::Env(var)));
        }
        overrides
    }

    /// Sets `key` as its command-line flag does.
    pub fn flag(mut self, key: &'static str, value: Option<impl Into<Value>>) -> Self {
        if let Some(value) = value {
            self.0
                .push((key.to_owned(), value.into(), Source::Flag(key)));
        }
        self
    }
}

/// One plugin instance to run.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceConfig {
    /// `Class` or `Class@label`; also the name of its config section.
    pub name: String,
    /// The plugin class.
    pub class: String,
    /// The YAML text of its section (the class section with the instance section over it).
    pub settings_yaml: String,
}

/// The settings the host itself needs, outside any component.
#[derive(Deserialize)]
struct HostSettings {
    /// Instance names; the single-plugin spelling `plugin` is turned into this per layer.
    plugins: Vec<String>,
    plugin_dir: PathBuf,
    state_dir: PathBuf,
    #[serde(deserialize_with = "socket_addr")]
    metrics_addr: Option<SocketAddr>,
}

/// An empty address is none; anything else must be an IP address and port.
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match String::deserialize(d)?.trim() {
        "" => Ok(None),
        addr => addr.parse().map(Some).map_err(|_| {
            D::Error::custom(format!(
                "must be an IP address and port, e.g. 127.0.0.1:9464, not `{addr}`"
            ))
        }),
    }
}

/// The merged configuration: the host's own settings, and the merged `settings:` mapping for
/// the components to take theirs from ([`Config::settings`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// The user file that was read, if any.
    pub file: Option<PathBuf>,
    /// Where plugin libraries are found.
    pub plugin_dir: PathBuf,
    /// The host's private files.
    pub state_dir: PathBuf,
    /// Where `/health`, `/metrics` and the status page are served; `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
    pub instances: Vec<InstanceConfig>,
    /// Every plugin section by name, to point out sections no class claims.
    pub sections: BTreeMap<String, Value>,
    /// Where each setting that is not a default came from, by top-level key.
    pub origins: BTreeMap<String, Source>,
    /// Settings that are allowed but probably not meant, for the log and `check`.
    pub warnings: Vec<String>,
    /// The merged `settings:` mapping.
    settings: Values,
    /// The `settings:` of the defaults alone.
    defaults: Values,
}

/// A `settings:` mapping, whose `Debug` shows its keys only: values may be secrets.
#[derive(Clone, Default)]
struct Values(Mapping);

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.keys().filter_map(Value::as_str))
            .finish()
    }
}

/// Where the user config comes from, in order: `--config`, `$CALLLOGGER_CONFIG`, the system file.
pub fn config_path(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<(PathBuf, bool)> {
    if let Some(path) = flag {
        return Some((path.to_owned(), true));
    }
    if let Some(path) = env("CALLLOGGER_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(path), true));
    }
    let system = system_config();
    system.exists().then_some((system, false))
}

/// The system config file: [`SYSTEM_CONFIG`].
#[cfg(not(windows))]
fn system_config() -> PathBuf {
    PathBuf::from(SYSTEM_CONFIG)
}

/// The system config file on Windows: `%ProgramData%\calllogger\config.yml`.
#[cfg(windows)]
fn system_config() -> PathBuf {
    program_data().join("config.yml")
}

/// `%ProgramData%\calllogger` (`C:\ProgramData\calllogger` if the variable is unset): where
/// Windows keeps a service's config and state.
#[cfg(windows)]
pub fn program_data() -> PathBuf {
    std::env::var_os("ProgramData")
        .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from)
        .join("calllogger")
}

/// On Windows the defaults' Unix folders are `plugins` and `state` in [`program_data`].
#[cfg(windows)]
fn windows_folders(defaults: &mut Mapping) {
    let folder = |name: &str| Value::String(program_data().join(name).display().to_string());
    defaults.insert("plugin_dir".into(), folder("plugins"));
    defaults.insert("state_dir".into(), folder("state"));
}

/// One config file as written: `settings:` plus a section per plugin class or instance.
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    settings: Option<Mapping>,
    #[serde(flatten)]
    sections: BTreeMap<String, Value>,
}

/// Loads defaults, the user file (if any), then `env` and `flags` over them; `known` is every
/// `settings:` key the components take (besides the host's own). The config is returned with
/// every problem in its host settings; only a file that cannot be read, parsed, or that has an
/// unknown key, is an error.
///
/// `file` is `(path, required)`: a required file that is missing is an error. An empty file is
/// always an error: it is more likely half-written than meant.
pub fn load(
    file: Option<(PathBuf, bool)>,
    env: Overrides,
    flags: Overrides,
    known: &[&'static str],
) -> Result<(Config, Vec<String>), ConfigError> {
    let mut known = known.to_vec();
    known.extend(fields::<HostSettings>());
    known.push("plugin");
    // Every problem of the layers, reported together.
    let mut problems = Vec::new();
    #[cfg_attr(not(windows), allow(unused_mut))]
    let (mut defaults, mut sections) =
        parse_layer(&Source::Defaults, DEFAULTS, &known, &mut problems)?;
    #[cfg(windows)]
    windows_folders(&mut defaults);
    let mut settings = defaults.clone();
    let mut origins = BTreeMap::new();
    let mut used_file = None;
    if let Some((path, required)) = file {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if yaml_serde::from_str::<Value>(&text).is_ok_and(|v| v.is_null()) {
                    return Err(ConfigError::Empty { path });
                }
                let at = |keys: &[&str]| Source::File {
                    path: path.clone(),
                    line: written::line_of(&text, keys),
                };
                let (mut user, mut user_sections) =
                    parse_layer(&at(&[]), &text, &known, &mut problems)?;
                let env = |name: &str| std::env::var(name).ok();
                let mut unset = Vec::new();
                each_mapping(&mut user, &mut user_sections, |map, keys| {
                    secrets::check_numbers(map, keys, &text, &at, &mut problems);
                    for (key, value) in map.iter_mut() {
                        let name = format!("{}.{}", keys.join("."), key.as_str().unwrap_or("?"));
                        interpolate::interpolate(value, &name, &env, &mut unset);
                    }
                });
                let mut read = Vec::new();
                if unset.is_empty() {
                    each_mapping(&mut user, &mut user_sections, |map, keys| {
                        let found = secrets::read_files(map, keys, &at, &mut problems);
                        if keys == ["settings"] {
                            read = found;
                        }
                    });
                } else {
                    // A file named with an unset variable is not looked for: that is the problem.
                    let file = at(&[]);
                    problems.extend(unset.into_iter().map(|p| format!("{file}: {p}")));
                }
                for (key, value) in user {
                    let key = key.as_str().unwrap_or_default().to_owned();
                    if value.is_null() {
                        continue;
                    }
                    let origin = match at(&["settings", &key]) {
                        Source::File { line: None, .. } if key == "plugins" => {
                            at(&["settings", "plugin"])
                        }
                        origin => origin,
                    };
                    origins.insert(key.clone(), origin);
                    merge_value(settings.entry(key.into()).or_insert(Value::Null), value);
                }
                origins.extend(read);
                for (name, value) in user_sections {
                    merge_value(sections.entry(name).or_insert(Value::Null), value);
                }
                used_file = Some(path);
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(ConfigError::Read { path, error }),
        }
    }
    let mut env_layer = Mapping::new();
    let mut env_origins = BTreeMap::new();
    for (key, value, source) in env.0 {
        env_layer.insert(key.as_str().into(), value);
        env_origins.insert(key, source);
    }
    let at = |keys: &[&str]| env_origins[keys[1]].clone();
    let read = secrets::read_files(&mut env_layer, &["settings"], &at, &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    env_origins.extend(read);
    let env = env_layer.into_iter().map(|(key, value)| {
        let key = key.as_str().unwrap_or_default().to_owned();
        let source = env_origins[&key].clone();
        (key, value, source)
    });
    for (key, value, source) in env.chain(flags.0) {
        settings.insert(key.as_str().into(), value);
        origins.insert(key, source);
    }
    let mut config = Config {
        file: used_file,
        plugin_dir: PathBuf::new(),
        state_dir: PathBuf::new(),
        metrics_addr: None,
        instances: Vec::new(),
        sections,
        origins,
        warnings: Vec::new(),
        settings: Values(settings),
        defaults: Values(defaults),
    };
    let problems = config.finish();
    Ok((config, problems))
}

/// Parses one layer's text (a syntax error is the error): a `settings:` key no one knows
/// (naming its line) and the two spellings of `plugins` at once are `problems`; turns
/// `plugin: X` into `plugins: [X]`. Returns its `settings:` mapping and its plugin sections.
fn parse_layer(
    origin: &Source,
    text: &str,
    known: &[&str],
    problems: &mut Vec<String>,
) -> Result<(Mapping, BTreeMap<String, Value>), ConfigError> {
    let shown = match origin {
        Source::File { path, .. } => path.display().to_string(),
        other => other.to_string(),
    };
    let syntax = |error| ConfigError::Syntax {
        origin: shown.clone(),
        error,
    };
    let File { settings, sections } = yaml_serde::from_str(text).map_err(syntax)?;
    let settings = settings.unwrap_or_default();
    let at = |key: &str| match origin {
        Source::File { path, .. } => Source::File {
            path: path.clone(),
            line: written::line_of(text, &["settings", key]),
        },
        other => other.clone(),
    };
    for key in settings.keys() {
        let name = key
            .as_str()
            .map_or_else(|| format!("{key:?}"), str::to_owned);
        let reads_secret = secrets::file_key_of(&name).is_some_and(|key| known.contains(&key));
        if !known.contains(&name.as_str()) && !reads_secret {
            let secret_files = known
                .iter()
                .filter(|k| secrets::is_secret(k))
                .map(|k| format!("`{k}_file`"));
            let expected: Vec<String> = known
                .iter()
                .filter(|k| **k != "plugin")
                .map(|k| format!("`{k}`"))
                .chain(secret_files)
                .collect();
            problems.push(format!(
                "{}: settings: unknown field `{name}`, expected one of {}",
                at(&name),
                expected.join(", ")
            ));
        }
    }
    let mut settings = settings;
    if let Some(one) = settings.remove("plugin") {
        if settings.contains_key("plugins") {
            problems.push(format!(
                "{}: settings: give either `plugin` or `plugins`, not both",
                at("plugin")
            ));
        }
        settings.insert("plugins".into(), Value::Sequence(vec![one]));
    }
    Ok((settings, sections))
}

/// Calls `f` with each mapping of a layer and its path: the `settings:` mapping, then each
/// plugin section that is a mapping (one that is not is refused when the instances are built).
fn each_mapping(
    settings: &mut Mapping,
    sections: &mut BTreeMap<String, Value>,
    mut f: impl FnMut(&mut Mapping, &[&str]),
) {
    f(settings, &["settings"]);
    for (name, section) in sections {
        if let Value::Mapping(section) = section {
            f(section, &[name]);
        }
    }
}

/// Merges `over` into `base`: mappings key by key, recursively; an empty (null) value changes
/// nothing; anything else replaces.
pub fn merge_value(base: &mut Value, over: Value) {
    match (base, over) {
        (_, Value::Null) => {}
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                merge_value(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over,
    }
}

impl Config {
    /// Where the value of `settings.{key}` came from.
    pub fn origin(&self, key: &str) -> &Source {
        self.origins.get(key).unwrap_or(&Source::Defaults)
    }

    /// A problem with `settings.{key}`, naming where its value came from.
    pub fn problem(&self, key: &str, message: impl Display) -> String {
        format!("{}: settings.{key} {message}", self.origin(key))
    }

    /// Deserializes the merged settings into a component's struct (which ignores the keys of
    /// the others). Every bad value is a problem naming its origin and key; the default takes
    /// its place, so the struct is always returned.
    pub fn settings<T: DeserializeOwned>(&self) -> (T, Vec<String>) {
        let mut values = self.settings.0.clone();
        let mut problems = Vec::new();
        for _ in 0..=values.len() {
            let error = match serde_path_to_error::deserialize(Value::Mapping(values.clone())) {
                Ok(settings) => return (settings, problems),
                Err(error) => error,
            };
            let path = error.path().to_string();
            let message = error.into_inner().to_string();
            // `must …` reads on from the key; a message of serde's own follows a colon.
            let gap = if message.starts_with("must ") {
                " "
            } else {
                ": "
            };
            let mut segments = path.split('.');
            let top = segments.next().unwrap_or_default().to_owned();
            problems.push(format!(
                "{}: settings.{path}{gap}{message}",
                self.origin(&top)
            ));
            // Recover: drop a bad entry of a mapping, or put the default back.
            let leaf = segments.next();
            match (values.get_mut(top.as_str()), leaf) {
                (Some(Value::Mapping(entries)), Some(leaf)) if segments.next().is_none() => {
                    entries.remove(leaf);
                }
                _ => match self.defaults.0.get(top.as_str()) {
                    Some(default) if values.get(top.as_str()) != Some(default) => {
                        values.insert(top.into(), default.clone());
                    }
                    _ => break,
                },
            }
        }
        let settings = yaml_serde::from_value(Value::Mapping(self.defaults.0.clone()))
            .expect("the built-in defaults deserialize into every settings struct (tested)");
        (settings, problems)
    }

    /// The top-level keys whose merged value differs in `new`.
    pub fn changed_keys<'a>(&'a self, new: &'a Config) -> impl Iterator<Item = &'a str> + 'a {
        let keys = self.settings.0.keys().chain(new.settings.0.keys());
        let mut seen = Vec::new();
        keys.filter_map(Value::as_str).filter(move |key| {
            let fresh = !seen.contains(key);
            seen.push(key);
            fresh && self.settings.0.get(*key) != new.settings.0.get(*key)
        })
    }

    /// Section names that neither a class in `classes` nor a configured instance claims:
    /// probably a typo in a class name.
    pub fn unclaimed_sections<'a>(
        &'a self,
        classes: &'a [&str],
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.sections
            .keys()
            .map(String::as_str)
            .filter(move |name| {
                let class = name.split_once('@').map_or(*name, |(c, _)| c);
                !classes.contains(&class) && !self.instances.iter().any(|i| i.name == *name)
            })
    }

    /// Takes the host's own settings and builds the instances; returns the problems.
    fn finish(&mut self) -> Vec<String> {
        let (host, mut problems) = self.settings::<HostSettings>();
        self.plugin_dir = host.plugin_dir;
        self.state_dir = host.state_dir;
        self.metrics_addr = host.metrics_addr;
        let file_origin = self
            .file
            .as_ref()
            .map_or(Source::Defaults, |path| Source::File {
                path: path.clone(),
                line: None,
            });
        for name in host.plugins {
            let class = name
                .split_once('@')
                .map_or(name.as_str(), |(class, _)| class)
                .to_owned();
            if class.is_empty() || name.ends_with('@') {
                problems.push(self.problem(
                    "plugins",
                    format!("`{name}` is not `Class` or `Class@label`"),
                ));
                continue;
            }
            if self.instances.iter().any(|i| i.name == name) {
                problems.push(self.problem(
                    "plugins",
                    format!("names `{name}` twice; a second instance needs its own name, e.g. `{class}@second`"),
                ));
                continue;
            }
            let mut section = self.sections.get(&class).cloned().unwrap_or(Value::Null);
            if name != class {
                merge_value(
                    &mut section,
                    self.sections.get(&name).cloned().unwrap_or(Value::Null),
                );
            }
            let settings_yaml = match section {
                Value::Null => String::new(),
                Value::Mapping(_) => match yaml_serde::to_string(&section) {
                    Ok(yaml) => yaml,
                    Err(e) => {
                        problems.push(format!("{file_origin}: section `{name}`: {e}"));
                        continue;
                    }
                },
                _ => {
                    problems.push(format!(
                        "{file_origin}: section `{name}` must be a mapping of settings"
                    ));
                    continue;
                }
            };
            self.instances.push(InstanceConfig {
                class,
                name,
                settings_yaml,
            });
        }
        if self.instances.is_empty() && problems.is_empty() {
            self.warnings.push(NO_PLUGINS.to_owned());
        }
        if let Some(addr) = self.metrics_addr.filter(|a| !a.ip().is_loopback()) {
            let warning = self.problem(
                "metrics_addr",
                format!(
                    "{addr} is not a loopback address: /health, /metrics and the status page \
                     are open to the network (use 127.0.0.1, and a reverse proxy to expose them)"
                ),
            );
            self.warnings.push(warning);
        }
        problems
    }
}

/// Deserializes a number in `range`; outside it: "must be {text}, not {value}".
pub fn within<'de, D, T>(
    d: D,
    range: std::ops::RangeInclusive<T>,
    text: &str,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialOrd + Display,
{
    let value = T::deserialize(d)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(D::Error::custom(format!("must be {text}, not {value}")))
    }
}

/// Deserializes seconds in `range` (see [`within`]) as a [`Duration`].
pub fn seconds<'de, D: Deserializer<'de>>(
    d: D,
    range: std::ops::RangeInclusive<f64>,
    text: &str,
) -> Result<Duration, D::Error> {
    within(d, range, text).map(Duration::from_secs_f64)
}

/// A week, in seconds: a longer wait is a typo, and would overflow the host's timers.
pub const WEEK: f64 = 7.0 * 24.0 * 3600.0;
/// An hour, in seconds.
pub const HOUR: f64 = 3600.0;

#[cfg(test)]
mod tests;
