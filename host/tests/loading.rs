//! The loader against real libraries: plugins side by side, and every kind of bad file.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn two_plugin_libraries_load_side_by_side_and_a_class_from_each_runs() {
    let install = Install::new(
        &[MOCK_CALLS, TEST_PLUGINS],
        "settings: {plugins: [MockCalls, Echo]}\nMockCalls: {sleep: 0.05, numbers: ['111']}\nEcho: {label: echo}\n",
    );
    let mut host = install.start();
    let mut seen = (false, false);
    host.records_until(Duration::from_secs(20), |r| {
        match r["number"].as_str() {
            Some("111") => seen.0 = true,
            Some("echo") => seen.1 = true,
            other => panic!("unexpected record number {other:?}"),
        }
        seen == (true, true)
    });
    host.terminate();
}

/// A real shared library that is not a plugin: the Rust standard library of the toolchain.
fn foreign_shared_library() -> std::path::PathBuf {
    let libdir = std::process::Command::new("rustc")
        .args(["--print", "target-libdir"])
        .output()
        .unwrap();
    let lib = std::path::PathBuf::from(String::from_utf8(libdir.stdout).unwrap().trim());
    std::fs::read_dir(&lib)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libstd-")
                && p.extension().is_some_and(|e| e == "so")
        })
        .expect("the toolchain ships libstd as a shared library")
}

#[test]
fn bad_files_are_refused_with_their_reason_and_the_host_runs_on() {
    let install = Install::new(
        &[MOCK_CALLS],
        "settings: {plugins: [MockCalls]}\nMockCalls: {sleep: 0.05}\n",
    );
    let plugins = install.plugins();
    std::fs::copy(foreign_shared_library(), plugins.join("libforeign.so")).unwrap();
    std::fs::write(plugins.join("empty.so"), b"").unwrap();
    std::fs::write(
        plugins.join("notes.so"),
        "this is a text file that someone named .so by mistake\n".repeat(4),
    )
    .unwrap();
    let real = std::fs::read(library(TEST_PLUGINS)).unwrap();
    let cuts = [
        16,
        64,
        4096,
        real.len() / 3,
        real.len() / 2,
        real.len() - 4096,
        real.len() - 1,
    ];
    for cut in cuts {
        std::fs::write(plugins.join(format!("truncated-{cut}.so")), &real[..cut]).unwrap();
    }
    install.add_library(INCOMPATIBLE, "libincompatible.so");
    install.add_library(ABORT, "libabort.so");
    install.add_library(OLD_SDK, "liboldsdk.so");

    let expected: Vec<(String, &str)> = [
        ("libforeign.so".to_owned(), "not a calllogger plugin"),
        ("empty.so".to_owned(), "empty file"),
        ("notes.so".to_owned(), "not an ELF shared library"),
        (
            "libincompatible.so".to_owned(),
            "incompatible plugin interface",
        ),
        ("libabort.so".to_owned(), "panic = \"abort\""),
        (
            "liboldsdk.so".to_owned(),
            "built against plugin SDK 0.1.0, but this host speaks SDK 0.2.0 and accepts SDK 0.2.x; rebuild",
        ),
    ]
    .into_iter()
    .chain(
        cuts.iter()
            .map(|cut| (format!("truncated-{cut}.so"), "truncated")),
    )
    .collect();

    let (ok, table, _) = install.run_cli(&["plugins"]);
    assert!(ok, "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("MockCalls ")),
        "{table}"
    );
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(!ok, "check must fail on refused files:\n{report}");
    for (file, reason) in &expected {
        for output in [&table, &report] {
            let line = output
                .lines()
                .find(|l| {
                    l.contains(&format!("/{file}:")) || l.contains(&format!("/{file} refused"))
                })
                .unwrap_or_else(|| panic!("{file} is not named in:\n{output}"));
            assert!(
                line.contains(reason),
                "{file}: expected `{reason}` in: {line}"
            );
        }
    }
    let incompatible = table
        .lines()
        .find(|l| l.contains("libincompatible.so"))
        .unwrap();
    assert!(
        incompatible.contains("Error:"),
        "layout mismatch shows abi_stable's Error: lines: {incompatible}"
    );
    assert!(
        incompatible.len() < 2000,
        "and only those, not the whole dump: {} chars",
        incompatible.len()
    );

    let mut host = install.start();
    host.records_until(Duration::from_secs(20), |_| true);
    for (file, _) in &expected {
        assert!(
            host.log().contains(file.as_str()),
            "run logs the refusal of {file}"
        );
    }
    host.terminate();
}

#[test]
fn a_class_exported_by_two_files_is_an_error_naming_both() {
    let install = Install::new(
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo]}\nEcho: {label: x}\n",
    );
    install.add_library(TEST_PLUGINS, "libcopy.so");
    let (_, table, _) = install.run_cli(&["plugins"]);
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(!ok);
    for output in [&table, &report] {
        let line = output
            .lines()
            .find(|l| l.contains("class `Echo`"))
            .unwrap_or_else(|| panic!("{output}"));
        assert!(
            line.contains("libcopy.so") && line.contains("libcalllogger_test_plugins.so"),
            "{line}"
        );
    }
    let mut host = install.start();
    let (status, _) = host.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(
        host.log().contains("more than one library"),
        "{}",
        host.log()
    );
}

/// `check` fails on it; `run` warns and waits for a library that exports it (hot add).
#[test]
fn an_unknown_class_is_an_error_listing_the_available_ones() {
    let install = Install::new(
        &[MOCK_CALLS, TEST_PLUGINS],
        "settings: {plugins: [MockCall]}\n",
    );
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(!ok);
    let line = report
        .lines()
        .find(|l| l.contains("MockCall`"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        line.contains("available: Chatty, Crash, Echo, Flaky, MockCalls, Stubborn"),
        "{line}"
    );
    let mut host = install.start();
    host.wait_for_log(
        "available: Chatty, Crash, Echo, Flaky, MockCalls, Stubborn; it starts when a library exporting it is added",
        1,
        Duration::from_secs(10),
    );
    host.terminate();
}
