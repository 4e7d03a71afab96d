//! Configuration: the compiled-in `defaults.yml`, a user file merged over it, then environment
//! and command-line overrides; validated into [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use calllogger_plugin_abi::TimeoutSettings;

use calllogger_plugin_sdk::Secret;

use crate::loader::trust::Policy;
use calllogger_spool::Fsync;

/// The defaults, as shipped in the repository's `defaults.yml`.
pub const DEFAULTS: &str = include_str!("../../defaults.yml");

/// Where a service installation keeps its config when nothing else is named.
pub const SYSTEM_CONFIG: &str = "/etc/calllogger/config.yml";

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
        error: serde_yaml::Error,
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

/// The `settings:` keys of one layer (defaults, file, environment, flags); absent = inherit.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SettingsLayer {
    pub timeout: Option<f64>,
    pub decay: Option<f64>,
    pub max_timeout: Option<f64>,
    pub plugins: Option<Vec<String>>,
    /// The Python original's single-plugin spelling of `plugins`.
    pub plugin: Option<String>,
    pub plugin_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub shutdown_timeout: Option<f64>,
    pub token: Option<Secret>,
    pub frontend: Option<String>,
    pub request_timeout: Option<f64>,
    pub backlog_trigger: Option<u64>,
    pub batch_size: Option<usize>,
    pub drop_stale_incoming: Option<bool>,
    pub spool_max_records: Option<u64>,
    pub spool_fsync: Option<Fsync>,
    pub strict_plugin_permissions: Option<bool>,
    pub trusted_plugins: Option<BTreeMap<String, String>>,
    pub metrics_addr: Option<String>,
}

/// One config file: `settings:` plus a section per plugin class or instance.
#[derive(Deserialize, Default)]
struct Layer {
    #[serde(default)]
    settings: Option<SettingsLayer>,
    #[serde(flatten)]
    sections: BTreeMap<String, Value>,
}

/// The settings the environment overrides, and the variable for each.
const ENVIRONMENT: [(&str, &str); 6] = [
    ("token", "TOKEN"),
    ("plugins", "PLUGIN"),
    ("plugin_dir", "CALLLOGGER_PLUGIN_DIR"),
    ("state_dir", "CALLLOGGER_STATE_DIR"),
    ("frontend", "CALLLOGGER_FRONTEND"),
    ("metrics_addr", "CALLLOGGER_METRICS_ADDR"),
];

fn env_var(key: &str) -> &'static str {
    ENVIRONMENT
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, var)| var)
}

/// Where a setting's value came from, for messages.
#[derive(Debug, Clone)]
pub enum Source {
    Defaults,
    /// The user file, and the line the key is written on when it could be found.
    File {
        path: PathBuf,
        line: Option<usize>,
    },
    /// The environment variable of a key.
    Env(&'static str),
    /// The command-line flag of a key.
    Flag(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Defaults => f.write_str("defaults.yml (built in)"),
            Self::File {
                path,
                line: Some(line),
            } => write!(f, "config file {}, line {line}", path.display()),
            Self::File { path, line: None } => write!(f, "config file {}", path.display()),
            Self::Env(key) => write!(f, "environment variable {}", env_var(key)),
            Self::Flag(key) => write!(f, "flag --{}", key.replace('_', "-")),
        }
    }
}

impl SettingsLayer {
    /// Takes every key `over` sets; returns those keys.
    fn merge(&mut self, over: SettingsLayer) -> Vec<&'static str> {
        let mut taken = Vec::new();
        macro_rules! take {
            ($($field:ident),+) => { $( if over.$field.is_some() {
                self.$field = over.$field;
                taken.push(stringify!($field));
            } )+ };
        }
        take!(
            timeout,
            decay,
            max_timeout,
            plugin_dir,
            state_dir,
            shutdown_timeout,
            token,
            frontend,
            request_timeout,
            backlog_trigger,
            batch_size,
            drop_stale_incoming,
            spool_max_records,
            spool_fsync,
            strict_plugin_permissions,
            trusted_plugins,
            metrics_addr
        );
        // `plugin` (one) and `plugins` (a list) are two spellings of one setting.
        if let Some(one) = over.plugin {
            self.plugins = Some(vec![one]);
            taken.push("plugins");
        }
        if over.plugins.is_some() {
            self.plugins = over.plugins;
            taken.push("plugins");
        }
        taken
    }

    /// The overrides containers set through the environment.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        let var = |key: &str| env(env_var(key)).filter(|v| !v.trim().is_empty());
        Self {
            token: var("token").map(Secret::from),
            plugins: var("plugins").map(|list| {
                list.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            }),
            plugin_dir: var("plugin_dir").map(PathBuf::from),
            state_dir: var("state_dir").map(PathBuf::from),
            frontend: var("frontend"),
            metrics_addr: var("metrics_addr"),
            ..Self::default()
        }
    }
}

/// The line (from 1) on which `key` is written under the top-level `settings:` of a YAML
/// text, in block or flow style.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let mut in_settings = false;
    for (index, line) in text.lines().enumerate() {
        let code = line.split(" #").next().unwrap_or_default();
        if !code.trim().is_empty() && !code.starts_with([' ', '\t', '#', '}', ']', ',']) {
            let name = code.trim_start_matches(['"', '\'']);
            in_settings = name.starts_with("settings")
                && name["settings".len()..]
                    .trim_start_matches(['"', '\''])
                    .trim_start()
                    .starts_with(':');
        }
        if !in_settings {
            continue;
        }
        let found = code.match_indices(key).any(|(at, _)| {
            let before = code[..at].chars().next_back();
            let after = code[at + key.len()..].trim_start_matches(['"', '\'']);
            before.is_none_or(|c| matches!(c, ' ' | '\t' | '{' | ',' | '"' | '\''))
                && after.trim_start().starts_with(':')
        });
        if found {
            return Some(index + 1);
        }
    }
    None
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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The user file that was read, if any.
    pub file: Option<PathBuf>,
    pub timeouts: TimeoutSettings,
    pub plugin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub shutdown_timeout: f64,
    pub token: Secret,
    pub frontend: String,
    pub request_timeout: f64,
    pub backlog_trigger: u64,
    pub batch_size: usize,
    pub drop_stale_incoming: bool,
    pub spool_max_records: u64,
    pub spool_fsync: Fsync,
    /// Which plugin libraries may be loaded.
    pub plugin_policy: Policy,
    /// Where `/health`, `/metrics` and the status page are served; `None`: nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub instances: Vec<InstanceConfig>,
    /// Every plugin section by name, to point out sections no class claims.
    pub sections: BTreeMap<String, Value>,
    /// Where each setting that is not a default came from.
    pub origins: BTreeMap<&'static str, Source>,
    /// Settings that are allowed but probably not meant, for the log and `check`.
    pub warnings: Vec<String>,
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
    let system = PathBuf::from(SYSTEM_CONFIG);
    system.exists().then_some((system, false))
}

/// Loads defaults, the user file (if any), then `env` and `flags` over them.
///
/// `file` is `(path, required)`: a required file that is missing is an error. An empty file is
/// always an error: it is more likely half-written than meant.
pub fn load(
    file: Option<(PathBuf, bool)>,
    env: SettingsLayer,
    flags: SettingsLayer,
) -> Result<Config, ConfigError> {
    match load_all(file, env, flags)? {
        (config, problems) if problems.is_empty() => Ok(config),
        (_, problems) => Err(ConfigError::Invalid(problems)),
    }
}

/// As [`load`], but a config whose values are wrong is returned with every problem found;
/// only a file that cannot be read or parsed is an error.
pub fn load_all(
    file: Option<(PathBuf, bool)>,
    env: SettingsLayer,
    flags: SettingsLayer,
) -> Result<(Config, Vec<String>), ConfigError> {
    let mut layer = parse_layer(&Source::Defaults, DEFAULTS)?;
    let mut settings = layer.settings.take().unwrap_or_default();
    let mut sections = layer.sections;
    let mut origins = BTreeMap::new();
    let mut used_file = None;
    if let Some((path, required)) = file {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if serde_yaml::from_str::<Value>(&text).is_ok_and(|v| v.is_null()) {
                    return Err(ConfigError::Empty { path });
                }
                let origin = Source::File {
                    path: path.clone(),
                    line: None,
                };
                let user = parse_layer(&origin, &text)?;
                for key in settings.merge(user.settings.unwrap_or_default()) {
                    let line = line_of(&text, key)
                        .or_else(|| (key == "plugins").then(|| line_of(&text, "plugin"))?);
                    let path = path.clone();
                    origins.insert(key, Source::File { path, line });
                }
                for (name, value) in user.sections {
                    merge_value(sections.entry(name).or_insert(Value::Null), value);
                }
                used_file = Some(path);
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(ConfigError::Read { path, error }),
        }
    }
    for key in settings.merge(env) {
        origins.insert(key, Source::Env(key));
    }
    for key in settings.merge(flags) {
        origins.insert(key, Source::Flag(key));
    }
    Ok(finish(settings, sections, used_file, origins))
}

fn parse_layer(origin: &Source, text: &str) -> Result<Layer, ConfigError> {
    let shown = match origin {
        Source::File { path, .. } => path.display().to_string(),
        other => other.to_string(),
    };
    let layer: Layer = serde_yaml::from_str(text).map_err(|error| ConfigError::Syntax {
        origin: shown,
        error,
    })?;
    if layer
        .settings
        .as_ref()
        .is_some_and(|s| s.plugin.is_some() && s.plugins.is_some())
    {
        let at = match origin {
            Source::File { path, .. } => Source::File {
                path: path.clone(),
                line: line_of(text, "plugin"),
            },
            other => other.clone(),
        };
        return Err(ConfigError::Invalid(vec![format!(
            "{at}: settings: give either `plugin` or `plugins`, not both"
        )]));
    }
    Ok(layer)
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

/// A week, in seconds: a longer wait is a typo, and would overflow the host's timers.
const WEEK: f64 = 7.0 * 24.0 * 3600.0;
/// An hour, in seconds.
const HOUR: f64 = 3600.0;

/// The allowed range of each bounded number: key, lowest, highest, and how to say the range.
const BOUNDS: [(&str, f64, f64, &str); 7] = [
    (
        "timeout",
        0.05,
        WEEK,
        "seconds, from 0.05 to 604800 (a week)",
    ),
    (
        "max_timeout",
        0.05,
        WEEK,
        "seconds, from 0.05 to 604800 (a week)",
    ),
    (
        "request_timeout",
        0.1,
        HOUR,
        "seconds, from 0.1 to 3600 (an hour)",
    ),
    (
        "shutdown_timeout",
        0.0,
        HOUR,
        "seconds, from 0 to 3600 (an hour)",
    ),
    ("decay", 1.0, 100.0, "a factor from 1 to 100"),
    ("batch_size", 1.0, 10_000.0, "records, from 1 to 10000"),
    (
        "spool_max_records",
        10.0,
        100_000_000.0,
        "records, from 10 to 100000000",
    ),
];

/// Collects the problems of one config while it is validated.
struct Validation {
    origins: BTreeMap<&'static str, Source>,
    problems: Vec<String>,
}

impl Validation {
    fn origin(&self, key: &str) -> &Source {
        self.origins.get(key).unwrap_or(&Source::Defaults)
    }

    /// Notes a problem with `settings.{key}`, naming where its value came from.
    fn problem(&mut self, key: &str, message: impl std::fmt::Display) {
        let at = self.origin(key).clone();
        self.problems
            .push(format!("{at}: settings.{key} {message}"));
    }

    /// The value of a key every layer stack has (the defaults set it).
    fn required<T: Default>(&mut self, key: &str, value: Option<T>) -> T {
        value.unwrap_or_else(|| {
            self.problem(key, "is not set");
            T::default()
        })
    }

    /// Notes a number outside its [`BOUNDS`].
    fn within_bounds(&mut self, key: &str, value: f64) {
        if let Some((_, low, high, range)) = BOUNDS.iter().find(|(k, ..)| *k == key) {
            if !(*low..=*high).contains(&value) {
                self.problem(key, format!("must be {range}, not {value}"));
            }
        }
    }
}

fn finish(
    s: SettingsLayer,
    sections: BTreeMap<String, Value>,
    file: Option<PathBuf>,
    origins: BTreeMap<&'static str, Source>,
) -> (Config, Vec<String>) {
    let mut v = Validation {
        origins,
        problems: Vec::new(),
    };
    let timeout = v.required("timeout", s.timeout);
    let max_timeout = v.required("max_timeout", s.max_timeout);
    let shutdown_timeout = v.required("shutdown_timeout", s.shutdown_timeout);
    let request_timeout = v.required("request_timeout", s.request_timeout);
    let decay = v.required("decay", s.decay);
    let batch_size = v.required("batch_size", s.batch_size);
    let spool_max_records = v.required("spool_max_records", s.spool_max_records);
    for (key, value) in [
        ("timeout", timeout),
        ("max_timeout", max_timeout),
        ("shutdown_timeout", shutdown_timeout),
        ("request_timeout", request_timeout),
        ("decay", decay),
        ("batch_size", batch_size as f64),
        ("spool_max_records", spool_max_records as f64),
    ] {
        v.within_bounds(key, value);
    }
    if max_timeout < timeout {
        match v.origin("max_timeout") {
            Source::Defaults => v.problem(
                "timeout",
                format!("({timeout}) must be at most settings.max_timeout ({max_timeout})"),
            ),
            _ => v.problem(
                "max_timeout",
                format!("({max_timeout}) must be at least settings.timeout ({timeout})"),
            ),
        }
    }
    let file_origin = file.as_ref().map_or(Source::Defaults, |path| Source::File {
        path: path.clone(),
        line: None,
    });
    let mut instances = Vec::new();
    for name in v.required("plugins", s.plugins) {
        let class = name
            .split_once('@')
            .map_or(name.as_str(), |(class, _)| class)
            .to_owned();
        if class.is_empty() || name.ends_with('@') {
            v.problem(
                "plugins",
                format!("`{name}` is not `Class` or `Class@label`"),
            );
            continue;
        }
        if instances.iter().any(|i: &InstanceConfig| i.name == name) {
            v.problem(
                "plugins",
                format!("names `{name}` twice; a second instance needs its own name, e.g. `{class}@second`"),
            );
            continue;
        }
        let mut section = sections.get(&class).cloned().unwrap_or(Value::Null);
        if name != class {
            merge_value(
                &mut section,
                sections.get(&name).cloned().unwrap_or(Value::Null),
            );
        }
        let settings_yaml = match section {
            Value::Null => String::new(),
            Value::Mapping(_) => match serde_yaml::to_string(&section) {
                Ok(yaml) => yaml,
                Err(e) => {
                    v.problems
                        .push(format!("{file_origin}: section `{name}`: {e}"));
                    continue;
                }
            },
            _ => {
                v.problems.push(format!(
                    "{file_origin}: section `{name}` must be a mapping of settings"
                ));
                continue;
            }
        };
        instances.push(InstanceConfig {
            class,
            name,
            settings_yaml,
        });
    }
    let metrics_addr = match s.metrics_addr.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(addr) => addr.parse::<std::net::SocketAddr>().map_or_else(
            |_| {
                v.problem(
                    "metrics_addr",
                    format!("must be an IP address and port, e.g. 127.0.0.1:9464, not `{addr}`"),
                );
                None
            },
            Some,
        ),
    };
    let mut trusted_plugins = BTreeMap::new();
    for (key, hash) in s.trusted_plugins.unwrap_or_default() {
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            let at = v.origin("trusted_plugins").clone();
            v.problems.push(format!(
                "{at}: settings.trusted_plugins.{key} must be a sha256 in hex (64 characters, as \
                 `sha256sum` prints it)"
            ));
            continue;
        }
        trusted_plugins.insert(key, hash);
    }
    let token = s.token.unwrap_or_default();
    let frontend = s.frontend.unwrap_or_default();
    check_delivery(&mut v, &frontend, &token);
    let mut warnings = Vec::new();
    if instances.is_empty() && v.problems.is_empty() {
        warnings.push(
            "no plugin instances configured: set settings.plugins (the host runs on; SIGHUP \
             after setting it)"
                .to_owned(),
        );
    }
    if let Some(addr) = metrics_addr.filter(|a| !a.ip().is_loopback()) {
        warnings.push(format!(
            "{}: settings.metrics_addr {addr} is not a loopback address: /health, /metrics and \
             the status page are open to the network (use 127.0.0.1, and a reverse proxy to \
             expose them)",
            v.origin("metrics_addr")
        ));
    }
    let config = Config {
        file,
        timeouts: TimeoutSettings {
            timeout,
            decay,
            max_timeout,
        },
        plugin_dir: v.required("plugin_dir", s.plugin_dir),
        state_dir: v.required("state_dir", s.state_dir),
        shutdown_timeout,
        token,
        frontend,
        request_timeout,
        backlog_trigger: v.required("backlog_trigger", s.backlog_trigger),
        batch_size,
        drop_stale_incoming: v.required("drop_stale_incoming", s.drop_stale_incoming),
        spool_max_records,
        spool_fsync: s.spool_fsync.unwrap_or_else(|| {
            v.problem("spool_fsync", "is not set");
            Fsync::Periodic
        }),
        plugin_policy: Policy {
            strict_permissions: v
                .required("strict_plugin_permissions", s.strict_plugin_permissions),
            pins: trusted_plugins,
        },
        metrics_addr,
        instances,
        sections,
        origins: v.origins,
        warnings,
    };
    (config, v.problems)
}

/// Both `frontend` and `token`, or neither; a frontend that is an http(s) base URL; a token
/// that fits in a header. The token's value is never shown.
fn check_delivery(v: &mut Validation, frontend: &str, token: &Secret) {
    let has_frontend = !frontend.trim().is_empty();
    let has_token = !token.expose().trim().is_empty();
    if has_frontend && !has_token {
        v.problem(
            "frontend",
            "is set but no token is: set the TOKEN environment variable or settings.token (or \
             leave the frontend empty to keep records in the spool and on stdout)",
        );
    }
    if has_token && !has_frontend {
        v.problem(
            "token",
            "is set but no frontend is: set settings.frontend or CALLLOGGER_FRONTEND (or remove \
             the token to keep records in the spool and on stdout)",
        );
    }
    if has_token && token.expose().chars().any(char::is_control) {
        v.problem(
            "token",
            "contains a control character (a newline, a tab, …; often the end of the file it was \
             copied from); its value is not shown",
        );
    }
    if has_frontend {
        if let Some(why) = url_problem(frontend) {
            v.problem(
                "frontend",
                format!(
                    "`{frontend}` {why}; it must be a base URL such as https://monitor.example.com"
                ),
            );
        }
    }
}

/// What is wrong with a frontend URL, if anything.
fn url_problem(url: &str) -> Option<String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains a space or a control character".into());
    }
    match reqwest::Url::parse(url) {
        Err(e) => Some(format!("is not a URL ({e})")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => Some(format!(
            "has the scheme `{}`, not http or https",
            u.scheme()
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("names no host".into()),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            Some("has a ?query or #fragment (the record path is appended to it)".into())
        }
        Ok(_) => None,
    }
}

/// What `state_dir` offers: its free space, and whether it still has to be created.
#[derive(Debug)]
pub struct StateDirSpace {
    /// Bytes available to this service on its file system.
    pub free_bytes: u64,
    /// The folder does not exist yet; it is created in a folder that does.
    pub created_in: Option<PathBuf>,
}

/// Why `state_dir` cannot hold the host's private files.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("settings.state_dir {path} is a file, not a folder")]
    File { path: PathBuf },
    #[error("settings.state_dir {path} cannot be created: {blocker} is not a folder")]
    UnderAFile { path: PathBuf, blocker: PathBuf },
    #[error("settings.state_dir {path} cannot be used: {at}: {error}")]
    Io {
        path: PathBuf,
        at: PathBuf,
        error: std::io::Error,
    },
    #[error("settings.state_dir {path} is not writable by this service: {error}")]
    NotWritable {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Checks that `state_dir` is a folder this service can write in (or can be created as one),
/// without changing anything, and says how much space its file system has left.
pub fn inspect_state_dir(path: &Path) -> Result<StateDirSpace, StateDirError> {
    // The folder itself, else the nearest existing folder it would be created in.
    let mut existing = path;
    loop {
        let shown = if existing.as_os_str().is_empty() {
            Path::new(".")
        } else {
            existing
        };
        match std::fs::metadata(shown) {
            Ok(meta) if meta.is_dir() => {
                existing = shown;
                break;
            }
            Ok(_) if existing == path => {
                return Err(StateDirError::File {
                    path: path.to_owned(),
                })
            }
            Ok(_) => {
                return Err(StateDirError::UnderAFile {
                    path: path.to_owned(),
                    blocker: existing.to_owned(),
                })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                existing = existing.parent().unwrap_or(Path::new(""));
            }
            Err(error) => {
                return Err(StateDirError::Io {
                    path: path.to_owned(),
                    at: shown.to_owned(),
                    error,
                })
            }
        }
    }
    // An unnamed file (O_TMPFILE where supported): writing is tried, nothing is left behind.
    tempfile::tempfile_in(existing).map_err(|error| StateDirError::NotWritable {
        path: path.to_owned(),
        error,
    })?;
    let stat = nix::sys::statvfs::statvfs(existing).map_err(|e| StateDirError::Io {
        path: path.to_owned(),
        at: existing.to_owned(),
        error: e.into(),
    })?;
    Ok(StateDirSpace {
        free_bytes: stat.blocks_available().saturating_mul(stat.fragment_size()),
        created_in: (existing != path).then(|| existing.to_owned()),
    })
}

impl Config {
    /// Whether records go to a frontend (both `frontend` and `token` set) or only to stdout.
    pub fn delivers(&self) -> bool {
        !self.frontend.trim().is_empty() && !self.token.expose().trim().is_empty()
    }

    /// The settings that differ in `new` but apply only at start-up (the spool, the sender, the
    /// folders), by key.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        macro_rules! compare {
            ($($field:ident),+) => { $( if self.$field != new.$field { changed.push(concat!("settings.", stringify!($field))); } )+ };
        }
        compare!(
            plugin_dir,
            state_dir,
            token,
            frontend,
            request_timeout,
            backlog_trigger,
            batch_size,
            drop_stale_incoming,
            spool_max_records,
            spool_fsync,
            metrics_addr
        );
        changed
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("config.yml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, text);
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(
            Some((path, true)),
            SettingsLayer::from_env(|k| env.get(k).cloned()),
            SettingsLayer::default(),
        )
    }

    #[test]
    fn the_token_is_never_shown() {
        let config = load_text(
            "settings:\n  token: 12345678\n  frontend: https://f.example\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            config.token.expose(),
            "12345678",
            "a numeric token is its digits"
        );
        assert!(!format!("{config:?}").contains("12345678"));
        let error = load_text("settings:\n  token: [SECRET-in-a-list]\n", &[])
            .expect_err("a list is not a token")
            .to_string();
        assert!(
            error.contains("a secret (token, password) must be a string"),
            "{error}"
        );
        assert!(!error.contains("SECRET"), "{error}");
    }

    #[test]
    fn pins_must_be_sha256_hex() {
        let hash = "AB".repeat(32);
        let config = load_text(
            &format!("settings:\n  trusted_plugins:\n    liba.so: {hash}\n"),
            &[],
        )
        .unwrap();
        assert_eq!(config.plugin_policy.pins["liba.so"], hash.to_lowercase());
        let error = load_text("settings:\n  trusted_plugins:\n    liba.so: abc\n", &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("settings.trusted_plugins.liba.so must be a sha256"),
            "{error}"
        );
    }

    #[test]
    fn defaults_alone_are_a_valid_config() {
        let config = load(None, SettingsLayer::default(), SettingsLayer::default()).unwrap();
        assert_eq!(config.timeouts, TimeoutSettings::default());
        assert!(config.instances.is_empty(), "the defaults run no plugin");
        assert!(
            config.warnings[0].starts_with("no plugin instances configured: set settings.plugins"),
            "{:?}",
            config.warnings
        );
        assert!(!config.delivers());
    }

    #[test]
    fn layers_apply_defaults_then_file_then_env_then_flags() {
        let text = "settings:\n  timeout: 2\n  token: from-file\n  plugin_dir: /file/plugins\nMockCalls:\n  sleep: 0\n";
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, text);
        let env = SettingsLayer::from_env(|k| match k {
            "TOKEN" => Some("from-env".into()),
            "PLUGIN" => Some("MockCalls, Echo@b".into()),
            "CALLLOGGER_PLUGIN_DIR" => Some("/env/plugins".into()),
            "CALLLOGGER_FRONTEND" => Some("http://frontend.env".into()),
            "CALLLOGGER_METRICS_ADDR" => Some("0.0.0.0:9464".into()),
            _ => None,
        });
        let flags = SettingsLayer {
            plugin_dir: Some("/flag/plugins".into()),
            ..Default::default()
        };
        let config = load(
            Some((path.clone(), true)),
            env.clone(),
            SettingsLayer::default(),
        )
        .unwrap();
        assert_eq!(config.timeouts.timeout, 2.0, "file over defaults");
        assert_eq!(
            config.timeouts.decay, 1.5,
            "defaults where the file is silent"
        );
        assert_eq!(config.token.expose(), "from-env", "env over file");
        assert_eq!(config.plugin_dir, PathBuf::from("/env/plugins"));
        assert_eq!(config.frontend, "http://frontend.env");
        assert_eq!(config.metrics_addr, Some("0.0.0.0:9464".parse().unwrap()));
        let names: Vec<_> = config.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["MockCalls", "Echo@b"]);
        // The file's `sleep: 0` is merged into the defaults' MockCalls section, key by key.
        let mock: Value = serde_yaml::from_str(&config.instances[0].settings_yaml).unwrap();
        assert_eq!(mock["sleep"], Value::from(0));
        assert_eq!(mock["lines"], Value::from(4));
        let config = load(Some((path, true)), env, flags).unwrap();
        assert_eq!(
            config.plugin_dir,
            PathBuf::from("/flag/plugins"),
            "flags over env"
        );
    }

    #[test]
    fn an_instance_section_is_merged_over_its_class_section() {
        let config = load_text(
            "settings: {plugins: [Echo, Echo@office2]}\nEcho: {label: a, count: 1}\nEcho@office2: {label: b}\n",
            &[],
        )
        .unwrap();
        let second: Value = serde_yaml::from_str(&config.instances[1].settings_yaml).unwrap();
        assert_eq!(config.instances[1].class, "Echo");
        assert_eq!(second["label"], Value::from("b"));
        assert_eq!(second["count"], Value::from(1));
        assert_eq!(
            config.unclaimed_sections(&["Echo"]).collect::<Vec<_>>(),
            ["MockCalls"]
        );
    }

    #[test]
    fn a_file_overrides_every_setting() {
        let config = load_text(
            "settings:\n  timeout: 1\n  decay: 2\n  max_timeout: 3\n  plugins: [Echo]\n  plugin_dir: /p\n  \
             state_dir: /s\n  shutdown_timeout: 4\n  token: t\n  frontend: http://f\n  request_timeout: 5\n  \
             backlog_trigger: 6\n  batch_size: 7\n  drop_stale_incoming: false\n  spool_max_records: 80\n  \
             spool_fsync: always\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            config.timeouts,
            TimeoutSettings {
                timeout: 1.0,
                decay: 2.0,
                max_timeout: 3.0
            }
        );
        assert_eq!(config.instances[0].name, "Echo");
        assert_eq!(
            (config.plugin_dir.to_str(), config.state_dir.to_str()),
            (Some("/p"), Some("/s"))
        );
        assert_eq!(
            (config.shutdown_timeout, config.request_timeout),
            (4.0, 5.0)
        );
        assert_eq!(
            (config.token.expose(), config.frontend.as_str()),
            ("t", "http://f")
        );
        assert_eq!((config.backlog_trigger, config.batch_size), (6, 7));
        assert!(!config.drop_stale_incoming);
        assert_eq!(config.spool_max_records, 80);
        assert_eq!(config.spool_fsync, Fsync::Always);
        assert!(config.delivers());
    }

    #[test]
    fn a_bound_names_the_file_key_line_and_range() {
        for (text, key, line, range) in [
            ("settings:\n  timeout: 0\n", "timeout", 2, "from 0.05 to"),
            (
                "settings: {plugins: []}\n\nsettings_note: 1\nx: {request_timeout: 5}\n",
                "",
                0,
                "",
            ),
            (
                "# c\nsettings: {plugins: [],\n  request_timeout: 0}\n",
                "request_timeout",
                3,
                "from 0.1 to",
            ),
            ("settings:\n  decay: 0.5\n", "decay", 2, "from 1 to 100"),
            ("settings:\n  batch_size: 0\n", "batch_size", 2, "from 1 to"),
            (
                "settings:\n  timeout: 1\n  max_timeout: 0.5\n",
                "max_timeout",
                3,
                "at least settings.timeout (1)",
            ),
            (
                "settings:\n  spool_max_records: 5\n",
                "spool_max_records",
                2,
                "from 10",
            ),
            (
                "settings:\n  shutdown_timeout: 7200\n",
                "shutdown_timeout",
                2,
                "to 3600",
            ),
        ] {
            let result = load_text(text, &[]);
            if key.is_empty() {
                assert!(result.is_ok(), "{text}: {:?}", result.err());
                continue;
            }
            let err = result.unwrap_err().to_string();
            assert!(
                err.contains(&format!("config.yml, line {line}: settings.{key} ")),
                "{text}: {err}"
            );
            assert!(err.contains(range), "{text}: {err}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (_, problems) = load_all(
            Some((
                write(
                    &tempfile::tempdir().unwrap(),
                    "settings:\n  timeout: 0\n  request_timeout: 0\n  frontend: 'htp:/x y'\n  token: \"a\\nb\"\n",
                ),
                true,
            )),
            SettingsLayer::default(),
            SettingsLayer::default(),
        )
        .unwrap();
        let joined = problems.join("\n");
        for needle in [
            "line 2: settings.timeout",
            "line 3: settings.request_timeout",
            "line 4: settings.frontend `htp:/x y` contains a space",
            "line 5: settings.token contains a control character",
        ] {
            assert!(joined.contains(needle), "{needle}: {joined}");
        }
        assert_eq!(problems.len(), 4, "{joined}");
    }

    #[test]
    fn an_empty_file_is_refused_naming_it() {
        for text in ["", "  \n\n", "# all commented out\n# settings:\n"] {
            let err = load_text(text, &[]).unwrap_err();
            assert!(matches!(err, ConfigError::Empty { .. }), "{text:?}: {err}");
            let err = err.to_string();
            assert!(err.contains("config.yml is empty"), "{err}");
            assert!(
                err.contains("delete it to run on the built-in defaults"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_frontend_needs_a_token_and_a_token_a_frontend() {
        let err = load_text("", &[("CALLLOGGER_FRONTEND", "https://f.example")]);
        assert!(matches!(err, Err(ConfigError::Empty { .. })));
        let err = load_text(
            "settings: {}\n",
            &[("CALLLOGGER_FRONTEND", "https://f.example")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "environment variable CALLLOGGER_FRONTEND: settings.frontend is set but no token"
            ) && err.contains("TOKEN"),
            "{err}"
        );
        let err = load_text("settings: {}\n", &[("TOKEN", "tok-SECRET")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable TOKEN: settings.token is set but no frontend"),
            "{err}"
        );
        assert!(!err.contains("SECRET"), "{err}");
        let config = load_text(
            "settings: {frontend: 'http://127.0.0.1:8000/base/'}\n",
            &[("TOKEN", "t")],
        )
        .unwrap();
        assert!(config.delivers());
    }

    #[test]
    fn a_frontend_must_be_an_http_base_url() {
        for bad in [
            "htp:/x y",
            "ftp://example.com",
            "123",
            "http://",
            "https://f/?a=1",
            "http://a b",
        ] {
            assert!(url_problem(bad).is_some(), "{bad} accepted");
        }
        for good in [
            "http://localhost:8000",
            "https://monitor.example.com/",
            "http://[::1]:9/x",
        ] {
            assert_eq!(url_problem(good), None, "{good}");
        }
    }

    #[test]
    fn a_metrics_addr_off_the_loopback_is_warned_about() {
        let config = load_text(
            "settings: {plugins: [Echo], metrics_addr: '0.0.0.0:9464'}\n",
            &[],
        )
        .unwrap();
        assert!(
            config.warnings.iter().any(|w| w.contains("line 1: settings.metrics_addr 0.0.0.0:9464 is not a loopback")),
            "{:?}",
            config.warnings
        );
        let config = load_text(
            "settings: {plugins: [Echo]}\n",
            &[("CALLLOGGER_METRICS_ADDR", "127.0.0.1:1")],
        )
        .unwrap();
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn line_of_finds_keys_under_settings_only() {
        let text = "MockCalls:\n  timeout: 1\nsettings:\n  max_timeout: 2\n  # timeout: 3\n  timeout: 4 # timeout: 5\nEcho: {timeout: 6}\n";
        assert_eq!(line_of(text, "timeout"), Some(6));
        assert_eq!(line_of(text, "max_timeout"), Some(4));
        assert_eq!(line_of("'settings': {\"decay\": 2}", "decay"), Some(1));
        assert_eq!(line_of("settings:\n  plugins: []\n", "decay"), None);
    }

    #[test]
    fn a_state_dir_must_be_a_writable_folder_or_creatable() {
        let dir = tempfile::tempdir().unwrap();
        let space = inspect_state_dir(dir.path()).unwrap();
        assert!(space.free_bytes > 0 && space.created_in.is_none());
        let missing = dir.path().join("a/b");
        let space = inspect_state_dir(&missing).unwrap();
        assert_eq!(space.created_in.as_deref(), Some(dir.path()));
        assert!(!missing.exists(), "checking creates nothing");
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = inspect_state_dir(&file).unwrap_err().to_string();
        assert!(err.contains("is a file, not a folder"), "{err}");
        let err = inspect_state_dir(&file.join("sub"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot be created") && err.contains("file is not a folder"),
            "{err}"
        );
    }

    #[test]
    fn the_seeds_single_plugin_key_is_accepted() {
        let config = load_text("settings: {plugin: Echo}\n", &[]).unwrap();
        assert_eq!(config.instances[0].name, "Echo");
        assert!(load_text("settings: {plugin: Echo, plugins: [Echo]}\n", &[]).is_err());
    }

    #[test]
    fn an_unknown_settings_key_is_named_with_file_and_line() {
        let err = load_text("settings:\n  timeout: 1\n  timout: 2\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.yml"), "{err}");
        assert!(err.contains("unknown field `timout`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, needle) in [
            ("settings: {timeout: -1}", "settings.timeout"),
            ("settings: {decay: 0.5}", "settings.decay"),
            (
                "settings: {timeout: 20, max_timeout: 10}",
                "settings.max_timeout",
            ),
            ("settings: {plugins: [Echo, Echo]}", "twice"),
            ("settings: {plugins: ['@x']}", "Class@label"),
            ("settings: {timeout: soon}", "timeout"),
            (
                "Echo: [1, 2]\nsettings: {plugins: [Echo]}",
                "section `Echo`",
            ),
        ] {
            let err = load_text(text, &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn a_missing_required_file_is_an_error_but_a_missing_system_file_is_not() {
        let missing = PathBuf::from("/nonexistent/calllogger.yml");
        let err = load(
            Some((missing.clone(), true)),
            SettingsLayer::default(),
            SettingsLayer::default(),
        );
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/calllogger.yml"));
        assert!(load(
            Some((missing, false)),
            SettingsLayer::default(),
            SettingsLayer::default()
        )
        .is_ok());
    }

    #[test]
    fn merge_is_recursive() {
        let mut base: Value = serde_yaml::from_str("{a: {b: 1, c: 2}, d: 3}").unwrap();
        merge_value(
            &mut base,
            serde_yaml::from_str("{a: {c: 4}, e: 5}").unwrap(),
        );
        let want: Value = serde_yaml::from_str("{a: {b: 1, c: 4}, d: 3, e: 5}").unwrap();
        assert_eq!(base, want);
        let mut base: Value = serde_yaml::from_str("{MockCalls: {sleep: 1}}").unwrap();
        merge_value(&mut base, serde_yaml::from_str("{MockCalls: }").unwrap());
        assert_eq!(
            base["MockCalls"]["sleep"],
            Value::from(1),
            "an empty section keeps the defaults"
        );
    }
}
