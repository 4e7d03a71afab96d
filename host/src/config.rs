//! Configuration: the compiled-in `defaults.yml`, a user file merged over it, then environment
//! and command-line overrides; validated into [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use calllogger_plugin_abi::TimeoutSettings;

use calllogger_plugin_sdk::Secret;

use crate::loader::trust::Policy;
use crate::spool::Fsync;

/// The defaults, as shipped in the repository's `defaults.yml`.
pub const DEFAULTS: &str = include_str!("../../defaults.yml");

/// Where a service installation keeps its config when nothing else is named.
pub const SYSTEM_CONFIG: &str = "/etc/calllogger/config.yml";

/// A configuration problem, naming the file and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {origin}: {source}")]
    Syntax {
        origin: String,
        source: serde_yaml::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
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

impl SettingsLayer {
    /// Takes every key `over` sets.
    fn merge(&mut self, over: SettingsLayer) {
        macro_rules! take {
            ($($field:ident),+) => { $( if over.$field.is_some() { self.$field = over.$field; } )+ };
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
        }
        if over.plugins.is_some() {
            self.plugins = over.plugins;
        }
    }

    /// The overrides containers set through the environment.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        Self {
            token: var("TOKEN").map(Secret::from),
            plugins: var("PLUGIN").map(|list| {
                list.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            }),
            plugin_dir: var("CALLLOGGER_PLUGIN_DIR").map(PathBuf::from),
            state_dir: var("CALLLOGGER_STATE_DIR").map(PathBuf::from),
            frontend: var("CALLLOGGER_FRONTEND"),
            metrics_addr: var("CALLLOGGER_METRICS_ADDR"),
            ..Self::default()
        }
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
/// `file` is `(path, required)`: a required file that is missing is an error.
pub fn load(
    file: Option<(PathBuf, bool)>,
    env: SettingsLayer,
    flags: SettingsLayer,
) -> Result<Config, ConfigError> {
    let mut layer = parse_layer("defaults.yml (built in)", DEFAULTS)?;
    let mut settings = layer.settings.take().unwrap_or_default();
    let mut sections = layer.sections;
    let mut used_file = None;
    if let Some((path, required)) = file {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let user = parse_layer(&path.display().to_string(), &text)?;
                settings.merge(user.settings.unwrap_or_default());
                for (name, value) in user.sections {
                    merge_value(sections.entry(name).or_insert(Value::Null), value);
                }
                used_file = Some(path);
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Read { path, source }),
        }
    }
    settings.merge(env);
    settings.merge(flags);
    finish(settings, sections, used_file)
}

fn parse_layer(origin: &str, text: &str) -> Result<Layer, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Layer::default());
    }
    let layer: Layer = serde_yaml::from_str(text).map_err(|source| ConfigError::Syntax {
        origin: origin.to_owned(),
        source,
    })?;
    if layer
        .settings
        .as_ref()
        .is_some_and(|s| s.plugin.is_some() && s.plugins.is_some())
    {
        return Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            message: "settings: give either `plugin` or `plugins`, not both".into(),
        });
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

fn finish(
    s: SettingsLayer,
    sections: BTreeMap<String, Value>,
    file: Option<PathBuf>,
) -> Result<Config, ConfigError> {
    let origin = file.as_ref().map_or_else(
        || "configuration".to_owned(),
        |f| format!("configuration ({})", f.display()),
    );
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.clone(),
        message,
    };
    let missing = |key: &str| invalid(format!("settings.{key} is not set"));
    // A week: longer is a typo, and would overflow the host's timers.
    const LONGEST: f64 = 7.0 * 24.0 * 3600.0;
    let seconds = |key: &str, value: Option<f64>| -> Result<f64, ConfigError> {
        let v = value.ok_or_else(|| missing(key))?;
        if (0.0..=LONGEST).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(format!(
                "settings.{key} must be a number of seconds from 0 to {LONGEST} (a week), not {v}"
            )))
        }
    };
    let timeout = seconds("timeout", s.timeout)?;
    let max_timeout = seconds("max_timeout", s.max_timeout)?;
    let shutdown_timeout = seconds("shutdown_timeout", s.shutdown_timeout)?;
    let request_timeout = seconds("request_timeout", s.request_timeout)?;
    let batch_size = s.batch_size.ok_or_else(|| missing("batch_size"))?;
    if batch_size == 0 {
        return Err(invalid("settings.batch_size must be at least 1".into()));
    }
    let spool_max_records = s
        .spool_max_records
        .ok_or_else(|| missing("spool_max_records"))?;
    if spool_max_records == 0 {
        return Err(invalid(
            "settings.spool_max_records must be at least 1".into(),
        ));
    }
    let decay = s.decay.ok_or_else(|| missing("decay"))?;
    if !(decay.is_finite() && decay >= 1.0) {
        return Err(invalid(format!(
            "settings.decay must be 1 or more, not {decay}"
        )));
    }
    if max_timeout < timeout {
        return Err(invalid(format!(
            "settings.max_timeout ({max_timeout}) is less than settings.timeout ({timeout})"
        )));
    }
    let mut instances = Vec::new();
    for name in s.plugins.ok_or_else(|| missing("plugins"))? {
        let class = name
            .split_once('@')
            .map_or(name.as_str(), |(class, _)| class);
        if class.is_empty() || name.ends_with('@') {
            return Err(invalid(format!(
                "settings.plugins: `{name}` is not `Class` or `Class@label`"
            )));
        }
        if instances.iter().any(|i: &InstanceConfig| i.name == name) {
            return Err(invalid(format!(
                "settings.plugins names `{name}` twice; a second instance needs its own name, e.g. `{class}@second`"
            )));
        }
        let mut section = sections.get(class).cloned().unwrap_or(Value::Null);
        if name != class {
            merge_value(
                &mut section,
                sections.get(&name).cloned().unwrap_or(Value::Null),
            );
        }
        if !matches!(section, Value::Null | Value::Mapping(_)) {
            return Err(invalid(format!(
                "section `{name}` must be a mapping of settings"
            )));
        }
        let settings_yaml = match section {
            Value::Null => String::new(),
            section => serde_yaml::to_string(&section)
                .map_err(|e| invalid(format!("section `{name}`: {e}")))?,
        };
        instances.push(InstanceConfig {
            class: class.to_owned(),
            name,
            settings_yaml,
        });
    }
    let metrics_addr = match s.metrics_addr.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(addr) => Some(addr.parse().map_err(|_| {
            invalid(format!(
                "settings.metrics_addr must be an IP address and port, e.g. 127.0.0.1:9464, not `{addr}`"
            ))
        })?),
    };
    let mut trusted_plugins = BTreeMap::new();
    for (key, hash) in s.trusted_plugins.unwrap_or_default() {
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "settings.trusted_plugins.{key} must be a sha256 in hex (64 characters, as `sha256sum` prints it)"
            )));
        }
        trusted_plugins.insert(key, hash);
    }
    Ok(Config {
        file,
        timeouts: TimeoutSettings {
            timeout,
            decay,
            max_timeout,
        },
        plugin_dir: s.plugin_dir.ok_or_else(|| missing("plugin_dir"))?,
        state_dir: s.state_dir.ok_or_else(|| missing("state_dir"))?,
        shutdown_timeout,
        token: s.token.unwrap_or_default(),
        frontend: s.frontend.unwrap_or_default(),
        request_timeout,
        backlog_trigger: s
            .backlog_trigger
            .ok_or_else(|| missing("backlog_trigger"))?,
        batch_size,
        drop_stale_incoming: s
            .drop_stale_incoming
            .ok_or_else(|| missing("drop_stale_incoming"))?,
        spool_max_records,
        spool_fsync: s.spool_fsync.ok_or_else(|| missing("spool_fsync"))?,
        plugin_policy: Policy {
            strict_permissions: s
                .strict_plugin_permissions
                .ok_or_else(|| missing("strict_plugin_permissions"))?,
            pins: trusted_plugins,
        },
        metrics_addr,
        instances,
        sections,
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
        let config = load_text("settings:\n  token: 12345678\n", &[]).unwrap();
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
        assert_eq!(config.instances.len(), 1);
        assert_eq!(config.instances[0].class, "MockCalls");
        assert!(config.instances[0].settings_yaml.contains("sleep"));
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
             backlog_trigger: 6\n  batch_size: 7\n  drop_stale_incoming: false\n  spool_max_records: 8\n  \
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
        assert_eq!(config.spool_max_records, 8);
        assert_eq!(config.spool_fsync, Fsync::Always);
        assert!(config.delivers());
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
