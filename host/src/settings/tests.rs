use std::collections::BTreeMap;
use std::time::Duration;

use calllogger_plugin_abi::TimeoutSettings;
use yaml_serde::Value;

use super::*;
use crate::config::inspect_state_dir;
use crate::spool_settings::Fsync;

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("config.yml");
    std::fs::write(&path, text).unwrap();
    path
}

fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, text);
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load(
        Some((path, true)),
        Overrides::from_env(|k| env.get(k).cloned(), &crate::settings::keys()),
        Overrides::default(),
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
        config.sender.token.expose(),
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
fn a_secret_file_gives_the_token_or_a_plugin_secret_and_shows_its_path_not_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file\n").unwrap();
    let text = format!(
        "settings:\n  frontend: https://f.example\n  token_file: {0}\n\
         Pbx:\n  login: {{password_file: {0}}}\n",
        file.display()
    );
    let config = load_text(&text, &[]).unwrap();
    assert_eq!(config.sender.token.expose(), "from-file");
    let origin = config.config.origin("token").to_string();
    assert!(
        origin.ends_with(&format!("config.yml, line 3, read from {}", file.display())),
        "{origin}"
    );
    let shown = config.config.to_effective_yaml();
    assert!(!shown.contains("from-file"), "{shown}");
    assert!(
        shown.contains(&format!("read from {}", file.display())),
        "{shown}"
    );
    assert!(shown.contains("password: <redacted>"), "{shown}");
    assert_eq!(
        config.config.sections["Pbx"]["login"]["password"],
        "from-file"
    );

    // The environment's file is a later layer: over the file's token; its own token is not.
    let env = [("CALLLOGGER_TOKEN_FILE", file.to_str().unwrap())];
    let text = "settings:\n  frontend: https://f.example\n  token: in-the-file\n";
    let config = load_text(text, &env).unwrap();
    assert_eq!(config.sender.token.expose(), "from-file");
    assert_eq!(
        config.config.origin("token").to_string(),
        format!(
            "environment variable CALLLOGGER_TOKEN_FILE, read from {}",
            file.display()
        )
    );
    for other in ["CALLLOGGER_TOKEN", "TOKEN"] {
        let both = [env[0], (other, "x-SECRET")];
        let err = load_text(text, &both).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "environment variable CALLLOGGER_TOKEN_FILE: settings.token_file is given, but \
                 settings.token is set too by environment variable {other}: give only one"
            )
        );
        assert!(!err.contains("SECRET"), "{err}");
    }
    // A blank token beside a token_file in one file (as defaults.yml has it) is unset.
    let text = format!(
        "settings:\n  frontend: https://f.example\n  token: \"\"\n  token_file: {}\n",
        file.display()
    );
    assert_eq!(
        load_text(&text, &[]).unwrap().sender.token.expose(),
        "from-file"
    );
    let config = load_text(
        &format!(
            "settings: {{frontend: 'https://f.example', token_file: {}}}\n",
            file.display()
        ),
        &[("CALLLOGGER_TOKEN", "from-env")],
    )
    .unwrap();
    assert_eq!(config.sender.token.expose(), "from-env");
}

#[test]
fn an_unreadable_secret_file_or_a_secret_given_twice_names_the_key_file_and_line() {
    let err = load_text(
        "settings:\n  timeout: 1\n  token_file: /nonexistent/token\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("config.yml, line 3: settings.token_file: cannot read /nonexistent/token: "),
        "{err}"
    );
    let err = load_text("settings:\n  token: a\n  token_file: /x\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.yml, line 3: settings.token_file is given, but settings.token is set too by config file "),
        "{err}"
    );
    assert!(err.contains("config.yml, line 2: give only one"), "{err}");
    let err = load_text("Pbx:\n  x: 1\n  password_file: /nonexistent/pw\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.yml, line 3: Pbx.password_file: cannot read /nonexistent/pw"),
        "{err}"
    );
    let err = load_text(
        "settings: {}",
        &[("CALLLOGGER_TOKEN_FILE", "/nonexistent/t")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("environment variable CALLLOGGER_TOKEN_FILE: settings.token_file: cannot read /nonexistent/t"),
        "{err}"
    );
}

#[test]
fn a_secret_number_yaml_changes_is_refused_naming_file_line_and_key_not_the_value() {
    let err = load_text("settings:\n  timeout: 1\n  token: 0x1F\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            "config.yml, line 3: settings.token is a number that YAML reads differently from how \
             it is written (hex, octal, an exponent, a leading + or trailing zeros): quote it — a \
             secret is text; its value is not shown"
        ),
        "{err}"
    );
    assert!(!err.contains("0x1F") && !err.contains("31"), "{err}");
    let err = load_text("Pbx@b:\n  password: 12.50\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2: Pbx@b.password is a number that YAML reads differently"),
        "{err}"
    );
    assert!(!err.contains("12.5"), "{err}");
    let quoted = load_text("settings: {frontend: 'https://f', token: '0x1F'}\n", &[]).unwrap();
    assert_eq!(quoted.sender.token.expose(), "0x1F");
}

#[test]
fn every_kind_of_layer_problem_is_reported_in_one_run() {
    let text = "settings:\n  timout: 1\n  token: 0x1F\nPbx:\n  password_file: /nonexistent/pw\n";
    let err = load_text(text, &[("CALLLOGGER_TOKEN_FILE", "/nonexistent/t")])
        .unwrap_err()
        .to_string();
    for needle in [
        "4 problems in the configuration:",
        "line 2: settings: unknown field `timout`",
        "line 3: settings.token is a number",
        "line 5: Pbx.password_file: cannot read /nonexistent/pw",
        "environment variable CALLLOGGER_TOKEN_FILE: settings.token_file: cannot read",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // A file named with an unset variable is that problem alone, not also an unreadable file.
    let err = load_text(
        "Pbx:\n  password_file: ${CALLLOGGER_TEST_UNSET_DIR}/pw\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("CALLLOGGER_TEST_UNSET_DIR"), "{err}");
    assert!(
        !err.contains("problems") && !err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn pins_must_be_sha256_hex() {
    let hash = "AB".repeat(32);
    let config = load_text(
        &format!("settings:\n  trusted_plugins:\n    liba.so: {hash}\n"),
        &[],
    )
    .unwrap();
    assert_eq!(config.loader.pins["liba.so"].as_str(), hash.to_lowercase());
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
    let config = load(None, Overrides::default(), Overrides::default()).unwrap();
    assert_eq!(config.supervisor.retry, TimeoutSettings::default());
    assert!(
        config.config.instances.is_empty(),
        "the defaults run no plugin"
    );
    assert!(
        config.config.warnings[0]
            .starts_with("no plugin instances configured: set settings.plugins"),
        "{:?}",
        config.config.warnings
    );
    assert!(!config.sender.delivers());
}

#[test]
fn layers_apply_defaults_then_file_then_env_then_flags() {
    let text = "settings:\n  timeout: 2\n  token: from-file\n  plugin_dir: /file/plugins\nMockCalls:\n  sleep: 0\n";
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, text);
    let env = Overrides::from_env(
        |k| match k {
            "TOKEN" => Some("from-env".into()),
            "PLUGIN" => Some("MockCalls, Echo@b".into()),
            "CALLLOGGER_PLUGIN_DIR" => Some("/env/plugins".into()),
            "CALLLOGGER_FRONTEND" => Some("http://frontend.env".into()),
            "CALLLOGGER_METRICS_ADDR" => Some("0.0.0.0:9464".into()),
            // Any setting, its value read as YAML.
            "CALLLOGGER_DECAY" => Some("3".into()),
            "CALLLOGGER_TRUSTED_PLUGINS" => Some(format!("{{libx.so: {}}}", "ab".repeat(32))),
            _ => None,
        },
        &crate::settings::keys(),
    );
    let flags = Overrides::default().flag("plugin_dir", Some("/flag/plugins"));
    let config = load(
        Some((path.clone(), true)),
        env.clone(),
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.supervisor.retry.timeout, 2.0, "file over defaults");
    assert_eq!(
        config.supervisor.retry.decay, 3.0,
        "CALLLOGGER_DECAY, a number"
    );
    assert_eq!(
        config.loader.pins.len(),
        1,
        "CALLLOGGER_TRUSTED_PLUGINS, a mapping"
    );
    assert_eq!(config.sender.token.expose(), "from-env", "env over file");
    assert_eq!(config.config.plugin_dir, PathBuf::from("/env/plugins"));
    assert_eq!(config.sender.frontend, "http://frontend.env");
    assert_eq!(
        config.config.metrics_addr,
        Some("0.0.0.0:9464".parse().unwrap())
    );
    let names: Vec<_> = config
        .config
        .instances
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["MockCalls", "Echo@b"]);
    // The file's `sleep: 0` is merged into the defaults' MockCalls section, key by key.
    let mock: Value = yaml_serde::from_str(&config.config.instances[0].settings_yaml).unwrap();
    assert_eq!(mock["sleep"], Value::from(0));
    assert_eq!(mock["lines"], Value::from(4));
    let config = load(Some((path, true)), env, flags).unwrap();
    assert_eq!(
        config.config.plugin_dir,
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
    let second: Value = yaml_serde::from_str(&config.config.instances[1].settings_yaml).unwrap();
    assert_eq!(config.config.instances[1].class, "Echo");
    assert_eq!(second["label"], Value::from("b"));
    assert_eq!(second["count"], Value::from(1));
    assert_eq!(
        config
            .config
            .unclaimed_sections(&["Echo"])
            .collect::<Vec<_>>(),
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
        config.supervisor.retry,
        TimeoutSettings {
            timeout: 1.0,
            decay: 2.0,
            max_timeout: 3.0
        }
    );
    assert_eq!(config.config.instances[0].name, "Echo");
    assert_eq!(
        (
            config.config.plugin_dir.to_str(),
            config.config.state_dir.to_str()
        ),
        (Some("/p"), Some("/s"))
    );
    assert_eq!(
        (
            config.supervisor.shutdown_timeout,
            config.sender.request_timeout
        ),
        (Duration::from_secs(4), Duration::from_secs(5))
    );
    assert_eq!(
        (
            config.sender.token.expose(),
            config.sender.frontend.as_str()
        ),
        ("t", "http://f")
    );
    assert_eq!(
        (
            config.sender.backlog_trigger,
            config.sender.batch_size.get()
        ),
        (6, 7)
    );
    assert!(!config.sender.drop_stale_incoming);
    assert_eq!(config.spool.max_records.get(), 80);
    assert_eq!(config.spool.fsync, Fsync::Always);
    assert!(config.sender.delivers());
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
        Overrides::default(),
        Overrides::default(),
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
    assert!(config.sender.delivers());
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
        assert!(
            crate::sinks::frontend::url_problem(bad).is_some(),
            "{bad} accepted"
        );
    }
    for good in [
        "http://localhost:8000",
        "https://monitor.example.com/",
        "http://[::1]:9/x",
    ] {
        assert_eq!(crate::sinks::frontend::url_problem(good), None, "{good}");
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
        config
            .config
            .warnings
            .iter()
            .any(|w| w.contains("line 1: settings.metrics_addr 0.0.0.0:9464 is not a loopback")),
        "{:?}",
        config.config.warnings
    );
    let config = load_text(
        "settings: {plugins: [Echo]}\n",
        &[("CALLLOGGER_METRICS_ADDR", "127.0.0.1:1")],
    )
    .unwrap();
    assert!(
        config.config.warnings.is_empty(),
        "{:?}",
        config.config.warnings
    );
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
    assert_eq!(config.config.instances[0].name, "Echo");
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
        Overrides::default(),
        Overrides::default(),
    );
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("/nonexistent/calllogger.yml"));
    assert!(load(
        Some((missing, false)),
        Overrides::default(),
        Overrides::default()
    )
    .is_ok());
}

#[test]
fn only_the_settings_a_reload_cannot_take_are_named_as_restart_only() {
    let old = load_text("settings: {plugins: [Echo]}\n", &[]).unwrap();
    let new = load_text(
        "settings: {plugins: [Echo, Echo@b], timeout: 2, batch_size: 5, spool_fsync: always, \
         strict_plugin_permissions: false, log_level: debug}\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        old.restart_only_changes(&new),
        ["settings.batch_size", "settings.spool_fsync"]
    );
}

#[test]
fn the_log_level_comes_from_any_layer_and_a_bad_one_is_named_with_its_origin() {
    let level = |settings: Settings| settings.log.log_level.to_string();
    assert_eq!(
        level(load_text("settings: {}", &[]).unwrap()),
        "info",
        "the default"
    );
    let file = "settings:\n  log_level: info,calllogger::sinks=debug\n";
    assert_eq!(
        level(load_text(file, &[]).unwrap()),
        "info,calllogger::sinks=debug"
    );
    let env = [("CALLLOGGER_LOG_LEVEL", "warn")];
    assert_eq!(level(load_text(file, &env).unwrap()), "warn");
    let err = load_text("settings:\n  timeout: 1\n  log_level: verbose\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.yml, line 3: settings.log_level must be error, warn, info"),
        "{err}"
    );
    let err = load_text("settings: {}", &[("CALLLOGGER_LOG_LEVEL", "loud")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("environment variable CALLLOGGER_LOG_LEVEL: settings.log_level must"),
        "{err}"
    );
}

#[test]
fn every_component_takes_its_keys_from_its_struct() {
    let keys = known();
    for key in [
        "timeout",
        "shutdown_timeout",
        "spool_fsync",
        "trusted_plugins",
        "batch_size",
        "log_level",
    ] {
        assert!(keys.contains(&key), "{key}: {keys:?}");
    }
}

#[test]
fn seconds_are_durations_and_counts_are_non_zero() {
    let settings = load_text(
        "settings: {timeout: 0.25, request_timeout: 0.5, shutdown_timeout: 0, batch_size: 1}\n",
        &[],
    )
    .unwrap();
    assert_eq!(settings.supervisor.retry.timeout, 0.25);
    assert_eq!(settings.sender.request_timeout, Duration::from_millis(500));
    assert_eq!(settings.supervisor.shutdown_timeout, Duration::ZERO);
    assert_eq!(settings.sender.batch_size.get(), 1);
    assert_eq!(settings.spool.max_records.get(), 1_000_000, "the default");
}
