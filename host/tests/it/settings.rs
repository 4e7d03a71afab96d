//! A plugin's config section reaches it, and bad settings are named precisely.

use std::time::Duration;

use crate::HOST;
use calllogger_test_kit::*;
use nix::sys::signal::Signal;

#[test]
fn section_values_reach_the_plugin_and_a_second_instance_gets_its_own_section() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo, Echo@second]}\nEcho: {label: from-yaml, count: 3}\nEcho@second: {label: second-pbx}\n",
    );
    let mut host = install.start();
    let mut counts = std::collections::BTreeMap::new();
    host.records_until(Duration::from_secs(20), |r| {
        *counts
            .entry(r["number"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
        counts.get("from-yaml") == Some(&3) && counts.get("second-pbx") == Some(&3)
    });
    host.signal(Signal::SIGTERM);
    host.wait_exit(Duration::from_secs(10));
    let rest = host.remaining_records();
    assert!(
        rest.iter().all(|r| r["number"] != "from-yaml"),
        "count: 3 is obeyed"
    );
    assert_eq!(counts.len(), 2, "only the two labels: {counts:?}");
}

fn check_error(install: &Install) -> String {
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(!ok, "check must fail:\n{report}");
    report
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_missing_mistyped_or_unknown_key_names_the_class_and_the_key() {
    let cases = [
        (
            "Echo: {count: 3}",
            "settings: {plugins: [Echo]}",
            ["Echo", "missing field `label`"],
        ),
        (
            "Echo: {label: x, count: many}",
            "settings: {plugins: [Echo]}",
            ["Echo", "settings key `count`"],
        ),
        (
            "Echo: {lable: x}",
            "settings: {plugins: [Echo]}",
            ["Echo", "lable"],
        ),
        // MockCalls does not deny unknown fields itself: the SDK does it for every plugin.
        (
            "MockCalls: {slep: 0}",
            "settings: {plugins: [MockCalls]}",
            ["MockCalls", "unknown settings key `slep`"],
        ),
        (
            "Echo@b: {label: [1]}",
            "settings: {plugins: [Echo@b]}",
            ["instance `Echo@b`", "settings key `label`"],
        ),
    ];
    for (section, settings, needles) in cases {
        let install = Install::new(
            HOST,
            &[MOCK_CALLS, TEST_PLUGINS],
            &format!("{settings}\n{section}\n"),
        );
        let errors = check_error(&install);
        for needle in needles {
            assert!(
                errors.contains(needle),
                "{section}: `{needle}` missing from:\n{errors}"
            );
        }
        let mut host = install.start();
        assert!(
            !host.wait_exit(Duration::from_secs(10)).0.success(),
            "run refuses {section}"
        );
        assert!(host.log().contains(needles[1]), "{}", host.log());
    }
}

#[test]
fn an_unknown_host_setting_names_the_file_key_and_line() {
    let install = Install::new(
        HOST,
        &[MOCK_CALLS],
        "settings:\n  plugins: [MockCalls]\n  time_out: 3\n",
    );
    let mut host = install.start();
    assert!(!host.wait_exit(Duration::from_secs(10)).0.success());
    let log = host.log();
    assert!(
        log.contains("config.yml") && log.contains("time_out") && log.contains("line 3"),
        "{log}"
    );
}

#[test]
fn environment_overrides_the_file_which_overrides_the_defaults() {
    let install = Install::new(
        HOST,
        &[MOCK_CALLS, TEST_PLUGINS],
        "settings: {plugins: [MockCalls]}\nEcho: {label: e}\n",
    );
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(ok, "{report}");
    assert!(
        report.contains("would run: MockCalls (class MockCalls"),
        "{report}"
    );
    let output = install
        .command(&["check"])
        .env("PLUGIN", "Echo,Echo@two")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains("would run: Echo (") && report.contains("would run: Echo@two ("),
        "{report}"
    );
    assert!(!report.contains("would run: MockCalls"), "{report}");
}

const NO_PLUGINS: &str = "no plugin instances configured: set settings.plugins";

#[test]
fn the_built_in_defaults_run_no_plugin_say_so_and_wait_for_a_sighup() {
    // MockCalls is in the folder, and the file leaves `plugins` to the defaults.
    let install = Install::new(HOST, &[MOCK_CALLS], "settings: {shutdown_timeout: 5}\n");
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(ok, "no plugin is a warning, not an error:\n{report}");
    assert!(
        report.contains(&format!("warning: {NO_PLUGINS}")),
        "{report}"
    );
    assert!(!report.contains("would run"), "{report}");
    let mut host = install.start();
    host.wait_for_log(NO_PLUGINS, 1, WAIT);
    host.wait_for_log("running no plugin instances", 1, WAIT);
    // An installer names the plugin and sends SIGHUP: it starts, records stream.
    install.write_config("settings: {plugins: [MockCalls]}\nMockCalls: {sleep: 0.05}\n");
    host.signal(Signal::SIGHUP);
    host.records_until(WAIT, |r| r["id"].is_string());
    let log = host.terminate();
    assert!(log.contains("reloading: start MockCalls"), "{log}");
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn log_level_filters_the_host_log_from_start_up_and_on_sighup_unless_rust_log_is_set() {
    let config = |level: &str| {
        format!(
            "settings: {{plugins: [MockCalls], log_level: {level}}}\nMockCalls: {{sleep: 0.05}}\n"
        )
    };
    let install = Install::new(HOST, &[MOCK_CALLS], &config("warn"));
    let mut command = install.command(&["run"]);
    command.env_remove("RUST_LOG");
    let mut host = Host::spawn(command);
    more_records(&host, 3);
    assert!(
        !host.log().contains("started instance"),
        "info is below warn:\n{}",
        host.log()
    );
    // A debug line: the echo's deliveries.
    install.write_config(&config("debug"));
    host.signal(Signal::SIGHUP);
    host.wait_for_log("stdout: delivered", 1, WAIT);
    host.terminate();

    // RUST_LOG (the kit sets info) wins over the setting; a change to it is said to be ignored.
    let mut host = install.start();
    host.wait_for_log("started instance", 1, WAIT);
    install.write_config(&config("warn"));
    host.signal(Signal::SIGHUP);
    host.wait_for_log("settings.log_level is ignored: RUST_LOG is set", 1, WAIT);
    let log = host.terminate();
    assert!(!log.contains("delivered"), "debug is below info:\n{log}");
}

/// Waits for `n` more records from the host.
fn more_records(host: &Host, n: usize) {
    let mut seen = 0;
    host.records_until(WAIT, |_| {
        seen += 1;
        seen >= n
    });
}

#[test]
fn an_empty_config_file_is_refused_at_start_up_and_on_sighup() {
    let install = Install::new(HOST, &[MOCK_CALLS], "");
    let file = install.config_path().display().to_string();
    let (ok, _, errors) = install.run_cli(&["check"]);
    assert!(!ok, "check refuses it");
    assert!(
        errors.contains(&format!("config file {file} is empty"))
            && errors.contains("delete it to run on the built-in defaults"),
        "{errors}"
    );
    let mut host = install.start();
    assert!(!host.wait_exit(WAIT).0.success(), "run refuses it too");
    assert!(
        host.log().contains(&format!("config file {file} is empty")),
        "{}",
        host.log()
    );

    install.write_config("settings: {plugins: [MockCalls]}\nMockCalls: {sleep: 0.05}\n");
    let mut host = install.start();
    more_records(&host, 3);
    // An editor or a deploy truncated it (0 bytes), then left only comments.
    for (times, text) in [(1, ""), (2, "# settings:\n#   plugins: [Echo]\n\n")] {
        install.write_config(text);
        host.signal(Signal::SIGHUP);
        host.wait_for_log("new config refused, the running one stays", times, WAIT);
        more_records(&host, 3);
    }
    let log = host.log();
    assert_eq!(
        log.matches(&format!("config file {file} is empty")).count(),
        2,
        "each refusal names the file:\n{log}"
    );
    // Unreadable: a folder where the file was.
    std::fs::remove_file(install.config_path()).unwrap();
    std::fs::create_dir(install.config_path()).unwrap();
    host.signal(Signal::SIGHUP);
    host.wait_for_log("new config refused, the running one stays", 3, WAIT);
    more_records(&host, 3);
    let log = host.log();
    assert!(
        log.contains(&format!("cannot read config file {file}")),
        "{log}"
    );
    std::fs::remove_dir(install.config_path()).unwrap();
    assert!(
        !log.contains("reloading:"),
        "the running instance was neither restarted nor stopped:\n{log}"
    );
    // A real edit still applies.
    install.write_config("settings: {plugins: [MockCalls]}\nMockCalls: {sleep: 0.06}\n");
    host.signal(Signal::SIGHUP);
    host.wait_for_log("reloading: restart MockCalls", 1, WAIT);
    more_records(&host, 1);
    host.terminate();
}

/// `check`'s errors, then `run`'s log: both must name each needle, and `run` must exit 1.
fn refused_by_check_and_run(install: &Install, needles: &[&str]) -> String {
    let errors = check_error(install);
    let mut host = install.start();
    let (status, _) = host.wait_exit(WAIT);
    assert!(!status.success(), "run refuses it:\n{}", host.log());
    let log = host.log();
    for needle in needles {
        assert!(
            errors.contains(needle),
            "check: `{needle}` missing:\n{errors}"
        );
        assert!(log.contains(needle), "run: `{needle}` missing:\n{log}");
    }
    log
}

#[test]
fn timeouts_out_of_range_are_refused_naming_the_file_key_line_and_range() {
    let install = Install::new(
        HOST,
        &[MOCK_CALLS],
        "settings:\n  plugins: [MockCalls]\n  timeout: 0\n  max_timeout: 0\n  request_timeout: 0\n",
    );
    let file = install.config_path().display().to_string();
    refused_by_check_and_run(
        &install,
        &[
            &format!("config file {file}, line 3: settings.timeout must be seconds, from 0.05 to"),
            &format!(
                "config file {file}, line 4: settings.max_timeout must be seconds, from 0.05 to"
            ),
            &format!(
                "config file {file}, line 5: settings.request_timeout must be seconds, from 0.1 to"
            ),
        ],
    );
    for (setting, needle) in [
        (
            "decay: 0.5",
            "settings.decay must be a factor from 1 to 100, not 0.5",
        ),
        (
            "batch_size: 0",
            "settings.batch_size must be records, from 1 to 10000, not 0",
        ),
        (
            "timeout: 5, max_timeout: 1",
            "settings.max_timeout (1) must be at least settings.timeout (5)",
        ),
    ] {
        install.write_config(&format!("settings: {{plugins: [MockCalls], {setting}}}\n"));
        refused_by_check_and_run(
            &install,
            &[&format!("config file {file}, line 1: {needle}")],
        );
    }
    // The smallest values the tests use stay valid.
    install.write_config(
        "settings: {plugins: [MockCalls], timeout: 0.05, max_timeout: 0.1, request_timeout: 0.3, decay: 1.0, shutdown_timeout: 1, spool_max_records: 50}\n",
    );
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(ok, "{report}");
}

#[test]
fn a_frontend_without_a_token_or_a_token_without_a_frontend_is_an_error() {
    const SECRET: &str = "tok-5ecret-only";
    let install = Install::new(HOST, &[MOCK_CALLS], "settings: {plugins: [MockCalls]}\n");
    let run = |env: &[(&str, &str)]| {
        let mut check = install.command(&["check"]);
        let mut run = install.command(&["run"]);
        for (key, value) in env {
            check.env(key, value);
            run.env(key, value);
        }
        let output = check.output().unwrap();
        assert!(!output.status.success());
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut host = Host::spawn(run);
        assert!(
            !host.wait_exit(WAIT).0.success(),
            "run refuses it, no silent stdout mode:\n{}",
            host.log()
        );
        (report, host.log())
    };
    let (report, log) = run(&[
        ("CALLLOGGER_FRONTEND", "http://127.0.0.1:9/"),
        ("TOKEN", ""),
    ]);
    for text in [&report, &log] {
        assert!(
            text.contains("environment variable CALLLOGGER_FRONTEND: settings.frontend is set but no token is: set the TOKEN environment variable or settings.token"),
            "{text}"
        );
    }
    let (report, log) = run(&[("TOKEN", SECRET)]);
    for text in [&report, &log] {
        assert!(
            text.contains("environment variable TOKEN: settings.token is set but no frontend is: set settings.frontend or CALLLOGGER_FRONTEND"),
            "{text}"
        );
        assert!(!text.contains(SECRET), "the token is never shown: {text}");
    }
}

#[test]
fn check_and_run_validate_the_frontend_token_and_state_dir_reporting_every_problem_at_once() {
    const SECRET: &str = "s3cret-with-newline";
    let install = Install::new(
        HOST,
        &[MOCK_CALLS],
        &format!(
            "settings:\n  plugins: [MockCalls]\n  frontend: 'htp:/x y'\n  token: \"{SECRET}\\n\"\n  metrics_addr: '0.0.0.0:0'\n"
        ),
    );
    let file = install.config_path().display().to_string();
    let state = install.dir.path().join("state");
    std::fs::write(&state, "not a folder").unwrap();
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(!ok, "{report}");
    for needle in [
        format!("error: config file {file}, line 3: settings.frontend `htp:/x y` contains a space"),
        format!("error: config file {file}, line 4: settings.token contains a control character"),
        format!("error: flag --state-dir: settings.state_dir {} is a file, not a folder", state.display()),
        format!("warning: config file {file}, line 5: settings.metrics_addr 0.0.0.0:0 is not a loopback address"),
        "3 problems found".to_owned(),
    ] {
        assert!(report.contains(&needle), "`{needle}` missing:\n{report}");
    }
    assert!(!report.contains(SECRET), "{report}");
    let log = refused_by_check_and_run(
        &install,
        &[
            "settings.frontend `htp:/x y`",
            "settings.token contains a control character",
        ],
    );
    assert!(!log.contains(SECRET), "{log}");
    // The URL alone, then the folder alone: `run` refuses each at start-up.
    for (frontend, needle) in [
        (
            "ftp://monitor.example.com",
            "has the scheme `ftp`, not http or https",
        ),
        ("123", "is not a URL"),
    ] {
        install.write_config(&format!(
            "settings: {{plugins: [MockCalls], frontend: '{frontend}', token: t}}\n"
        ));
        refused_by_check_and_run(
            &install,
            &[&format!("settings.frontend `{frontend}` {needle}")],
        );
    }
    install.write_config("settings: {plugins: [MockCalls]}\n");
    let log =
        refused_by_check_and_run(&install, &["settings.state_dir", "is a file, not a folder"]);
    assert!(
        !log.contains("plugin_dir"),
        "not blamed on the plugins folder:\n{log}"
    );
    // A good folder: check says how much space it has left.
    std::fs::remove_file(&state).unwrap();
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("state folder: {} (", state.display()))
            && report.contains(" MiB free, to be created in "),
        "{report}"
    );
}

#[test]
fn a_config_error_is_printed_once() {
    let install = Install::new(HOST, &[MOCK_CALLS], "settings: [unclosed\n");
    let mut host = install.start();
    assert!(!host.wait_exit(WAIT).0.success());
    let log = host.log();
    assert_eq!(log.matches("at line").count(), 1, "{log}");
    let (_, report, err) = install.run_cli(&["check"]);
    assert_eq!(
        report.matches("at line").count() + err.matches("at line").count(),
        1,
        "{report}{err}"
    );
    std::fs::remove_file(install.config_path()).unwrap();
    let mut host = install.start();
    assert!(!host.wait_exit(WAIT).0.success());
    let log = host.log();
    assert!(log.contains("cannot read config file"), "{log}");
    assert_eq!(log.matches("No such file or directory").count(), 1, "{log}");
}

#[test]
fn an_unusable_state_dir_is_not_blamed_on_the_plugin_dir() {
    let install = Install::new(HOST, &[MOCK_CALLS], "settings: {plugins: [MockCalls]}\n");
    // The spool cannot live below a file.
    std::fs::write(install.dir.path().join("state"), "").unwrap();
    let mut host = install.start();
    assert!(!host.wait_exit(WAIT).0.success());
    let log = host.log();
    assert!(log.contains("settings.state_dir"), "{log}");
    assert!(!log.contains("plugin_dir"), "{log}");
}

#[test]
fn environment_references_in_the_file_are_replaced_and_stay_strings() {
    let frontend = frontend::Frontend::start(|_, _| frontend::created());
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &format!(
            "settings:\n  frontend: '{}'\n  token: ${{CALLLOGGER_TEST_SECRET}}\n  plugins: [Echo]\n\
             Echo:\n  label: ${{CALLLOGGER_TEST_LABEL:-from-default}}\n  count: 1\n",
            frontend.url
        ),
    );
    let mut command = install.command(&["run"]);
    // Unquoted in YAML, 0x1F would have been the number 31.
    command.env("CALLLOGGER_TEST_SECRET", "0x1F");
    command.env_remove("CALLLOGGER_TEST_LABEL");
    let mut host = Host::spawn(command);
    frontend.wait_until(Duration::from_secs(20), "the record", |r| !r.is_empty());
    let log = host.terminate();
    assert!(
        !log.contains("0x1F"),
        "the token never reaches the log: {log}"
    );
    let request = &frontend.received()[0];
    assert_eq!(request.authorization, "Token 0x1F");
    assert_eq!(request.body["number"], "from-default");
    // Unset, without a default: named with the file and the key, and nothing starts.
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(!ok, "{report}{err}");
    assert!(
        err.contains("config.yml: settings.token: the environment variable CALLLOGGER_TEST_SECRET is not set"),
        "{err}"
    );
}

#[test]
fn calllogger_config_prints_the_merged_config_with_origins_and_masked_secrets() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings:\n  token: s3cret-t0ken\n  frontend: http://127.0.0.1:9\n  timeout: 2\n\
         Pbx:\n  host: 10.0.0.1\n  password: hunter2\nEcho:\n  label: shown\n",
    );
    let mut command = install.command(&["config"]);
    command.env("PLUGIN", "Echo");
    let output = command.output().unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    for secret in ["s3cret-t0ken", "hunter2"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    for part in [
        "  # environment variable PLUGIN\n  plugins:\n  - Echo\n",
        ", line 4\n  timeout: 2\n",
        "  # defaults.yml (built in)\n  decay: 1.5\n",
        "  token: <redacted>\n",
        "Pbx:\n  host: 10.0.0.1\n  password: <redacted>\n",
    ] {
        assert!(shown.contains(part), "`{part}` in:\n{shown}");
    }
    // It is YAML a host reads back (with the masked values as they are).
    install.write_config(&shown);
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(ok, "{report}{err}");
    // The defaults, with the comments that document them.
    let (ok, defaults, _) = install.run_cli(&["config", "--defaults"]);
    assert!(ok);
    assert_eq!(
        defaults,
        std::fs::read_to_string(workspace().join("defaults.yml")).unwrap()
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line() {
    let install = Install::new(HOST, &[], "settings: {plugins: []}\n");
    for (shell, marker) in [
        ("bash", "_calllogger()"),
        ("zsh", "#compdef calllogger"),
        ("fish", "complete -c calllogger"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let (ok, script, err) = install.run_cli(&["completions", shell]);
        assert!(ok && script.contains(marker), "{shell}: {err}{script}");
        assert!(
            script.contains("health") && script.contains("spool"),
            "{shell}: {script}"
        );
    }
    let (ok, page, _) = install.run_cli(&["man"]);
    assert!(ok && page.contains(".TH calllogger 1"), "{page}");
    assert!(
        page.contains("CALLLOGGER_METRICS_ADDR"),
        "the environment is in it: {page}"
    );
}
