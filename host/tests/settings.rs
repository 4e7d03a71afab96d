//! A plugin's config section reaches it, and bad settings are named precisely.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

#[test]
fn section_values_reach_the_plugin_and_a_second_instance_gets_its_own_section() {
    let install = Install::new(
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
    // With no file at all, the built-in defaults run MockCalls.
    let output = install
        .command(&["check"])
        .env("CALLLOGGER_CONFIG", "")
        .arg("--config")
        .arg("/dev/null")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("would run: MockCalls"), "{report}");
}
