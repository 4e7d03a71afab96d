use std::time::Duration;

use serde::Deserialize;

use super::*;

/// A component's settings, as a component would define them.
#[derive(Debug, Deserialize, PartialEq)]
struct Part {
    #[serde(deserialize_with = "wait")]
    timeout: Duration,
    #[serde(deserialize_with = "factor")]
    decay: f64,
    #[serde(rename = "trusted_plugins")]
    pins: BTreeMap<String, u8>,
}

fn wait<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    seconds(d, 0.05..=WEEK, "seconds, from 0.05 to 604800 (a week)")
}

fn factor<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    within(d, 1.0..=100.0, "a factor from 1 to 100")
}

fn known() -> Vec<&'static str> {
    let mut known = fields::<Part>().to_vec();
    // The keys of the other components in defaults.yml.
    known.extend([
        "max_timeout",
        "shutdown_timeout",
        "frontend",
        "token",
        "request_timeout",
        "ca_file",
        "backlog_trigger",
        "batch_size",
        "drop_stale_incoming",
        "spool_max_records",
        "spool_fsync",
        "strict_plugin_permissions",
        "log_level",
    ]);
    known
}

fn load_file(text: &str, env: Overrides) -> Result<(Config, Vec<String>), ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, text).unwrap();
    load(Some((path, true)), env, Overrides::default(), &known())
}

#[test]
fn layers_merge_as_values_and_keep_each_keys_origin() {
    let env = Overrides::from_env(
        |var| (var == "PLUGIN").then(|| "A, B@x".to_owned()),
        &known(),
    );
    let flags = Overrides::default().flag("state_dir", Some("/flag"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, "# c\nsettings:\n  decay: 2\n  plugin_dir: /file\n").unwrap();
    let (config, problems) = load(Some((path.clone(), true)), env, flags, &known()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let (part, problems) = config.settings::<Part>();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(part.timeout, Duration::from_secs(10), "the default");
    assert_eq!(part.decay, 2.0, "the file over the default");
    assert_eq!(config.plugin_dir, Path::new("/file"));
    assert_eq!(config.state_dir, Path::new("/flag"));
    let names: Vec<&str> = config.instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["A", "B@x"]);
    assert_eq!(
        config.origin("decay"),
        &Source::File {
            path,
            line: Some(3)
        }
    );
    assert_eq!(config.origin("plugins"), &Source::Env("PLUGIN".into()));
    assert_eq!(config.origin("state_dir"), &Source::Flag("state_dir"));
    assert_eq!(config.origin("timeout"), &Source::Defaults);
}

#[test]
fn every_bad_value_is_named_with_its_origin_and_the_default_takes_its_place() {
    let (config, _) = load_file(
        "settings:\n  timeout: 0\n  decay: soon\n  trusted_plugins: {a: 1, b: x}\n",
        Overrides::default(),
    )
    .unwrap();
    let (part, problems) = config.settings::<Part>();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].ends_with(
            "config.yml, line 2: settings.timeout must be seconds, from 0.05 to 604800 (a week), not 0"
        ),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("line 3: settings.decay: invalid type: string \"soon\""),
        "{problems:?}"
    );
    assert!(
        problems[2].contains("line 4: settings.trusted_plugins.b: invalid type"),
        "{problems:?}"
    );
    assert_eq!(
        part,
        Part {
            timeout: Duration::from_secs(10),
            decay: 1.5,
            pins: [("a".to_owned(), 1)].into(),
        },
        "defaults for the bad values, the good entry of a map kept"
    );
}

#[test]
fn an_unknown_key_is_refused_per_file_with_its_line() {
    let err = load_file(
        "settings:\n  decay: 2\n  timout: 1\n  plugn: x\n",
        Overrides::default(),
    )
    .unwrap_err();
    let ConfigError::Invalid(problems) = err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains(
            "config.yml, line 3: settings: unknown field `timout`, expected one of `timeout`"
        ),
        "{problems:?}"
    );
    assert!(problems[1].contains("line 4"), "{problems:?}");
}

#[test]
fn plugin_is_the_single_spelling_of_plugins_but_not_both() {
    let (config, _) = load_file("settings: {plugin: Echo}\n", Overrides::default()).unwrap();
    assert_eq!(config.instances[0].name, "Echo");
    let err = load_file(
        "settings:\n  plugins: [A]\n  plugin: B\n",
        Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("line 3: settings: give either `plugin` or `plugins`, not both"),
        "{err}"
    );
}

#[test]
fn changed_keys_compare_the_merged_values() {
    let (old, _) = load_file("settings: {decay: 2}\n", Overrides::default()).unwrap();
    let (new, _) = load_file("settings: {decay: 3, timeout: 10}\n", Overrides::default()).unwrap();
    assert_eq!(old.changed_keys(&new).collect::<Vec<_>>(), ["decay"]);
}

#[test]
fn merge_is_recursive() {
    let mut base: Value = yaml_serde::from_str("{a: {b: 1, c: 2}, d: 3}").unwrap();
    merge_value(
        &mut base,
        yaml_serde::from_str("{a: {c: 4}, e: 5}").unwrap(),
    );
    let want: Value = yaml_serde::from_str("{a: {b: 1, c: 4}, d: 3, e: 5}").unwrap();
    assert_eq!(base, want);
    let mut base: Value = yaml_serde::from_str("{MockCalls: {sleep: 1}}").unwrap();
    merge_value(&mut base, yaml_serde::from_str("{MockCalls: }").unwrap());
    assert_eq!(
        base["MockCalls"]["sleep"],
        Value::from(1),
        "an empty section keeps the defaults"
    );
}
