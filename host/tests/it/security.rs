//! Who may supply plugin code, and the token kept out of every output.

use std::time::Duration;

use crate::HOST;
use calllogger_test_kit::frontend::{status, Frontend};
use calllogger_test_kit::{Host, Install, MOCK_CALLS, TEST_PLUGINS};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(20);
const ECHO: &str = "settings: {plugins: [Echo]}\nEcho: {label: sec, interval: 0.05}\n";

fn sha256_of(path: &std::path::Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_writable_library_is_refused_until_chmod_fixes_it() {
    let install = Install::new(HOST, &[TEST_PLUGINS], ECHO);
    let file = install.plugins().join(format!("lib{TEST_PLUGINS}.so"));
    install.chmod(&file, 0o664);
    let (_, table, _) = install.run_cli(&["plugins"]);
    assert!(
        table.contains("is writable by its group (mode 664)")
            && table.contains(&format!("chmod go-w {}", file.display())),
        "{table}"
    );
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(!ok, "{report}");

    // The running host waits for Echo; `chmod go-w` is a change it picks up.
    let mut host = install.start();
    host.wait_for_log("writable by its group", 1, WAIT);
    install.chmod(&file, 0o644);
    host.records_until(WAIT, |r| r["number"] == "sec");
    host.terminate();
}

#[test]
fn a_folder_writable_by_others_stops_start_up_unless_the_check_is_off() {
    let install = Install::new(HOST, &[TEST_PLUGINS], ECHO);
    install.chmod(&install.plugins(), 0o777);
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(!ok);
    assert!(
        report.contains("error: plugin folder")
            && report.contains("writable by its group and others (mode 777)")
            && report.contains("chmod go-w"),
        "{report}{err}"
    );
    let mut host = install.start();
    assert!(!host.wait_exit(WAIT).0.success());

    install.write_config(
        "settings: {plugins: [Echo], strict_plugin_permissions: false}\nEcho: {label: sec}\n",
    );
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(ok, "{report}{err}");
}

/// Fails the test unless it runs as root (as the project's machines and CI run the suite).
fn needs_root(to: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root to {to}: run the suite as root, as CI does"
    );
}

#[test]
fn a_library_owned_by_another_user_is_refused() {
    needs_root("give a file to another user");
    let install = Install::new(HOST, &[TEST_PLUGINS], ECHO);
    let file = install.plugins().join(format!("lib{TEST_PLUGINS}.so"));
    nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    let (_, table, _) = install.run_cli(&["plugins"]);
    assert!(
        table.contains("is owned by uid 4242, neither root nor this service's user"),
        "{table}"
    );
}

#[test]
fn pinned_libraries_load_and_unpinned_or_changed_ones_are_refused() {
    let install = Install::new(HOST, &[TEST_PLUGINS, MOCK_CALLS], ECHO);
    let echo_file = format!("lib{TEST_PLUGINS}.so");
    let echo_hash = sha256_of(&install.plugins().join(&echo_file));
    let mock_hash = sha256_of(&install.plugins().join(format!("lib{MOCK_CALLS}.so")));

    // Pinned by file name: Echo loads; the unpinned MockCalls library is refused.
    install.write_config(&format!(
        "settings: {{plugins: [Echo], trusted_plugins: {{{echo_file}: {echo_hash}}}}}\nEcho: {{label: sec}}\n"
    ));
    let (ok, table, _) = install.run_cli(&["plugins"]);
    assert!(ok);
    let echo_row = table.lines().find(|l| l.starts_with("Echo ")).unwrap_or("");
    assert!(echo_row.contains(&echo_file), "{table}");
    assert!(
        table.contains(&format!(
            "  {echo_hash}  {}",
            install.plugins().join(&echo_file).display()
        )),
        "`plugins` lists the hash to pin: {table}"
    );
    assert!(
        table.contains(&format!(
            "pins neither its file name nor its sha256 {mock_hash}"
        )),
        "{table}"
    );
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(!ok, "the refused library is reported: {report}");

    // Pinned by class: the hash must belong to a library exporting that class.
    install.write_config(&format!(
        "settings: {{plugins: [Echo], trusted_plugins: {{Echo: {echo_hash}, MockCalls: {mock_hash}}}}}\nEcho: {{label: sec}}\n"
    ));
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(ok, "{report}");

    // Pins that leave out a running library, applied by SIGHUP: it stops.
    install.write_config(&format!(
        "settings: {{plugins: [Echo], trusted_plugins: {{Echo: {echo_hash}}}}}\nEcho: {{label: sec, interval: 0.02}}\n"
    ));
    let mut host = install.start();
    host.records_until(WAIT, |_| true);
    install.write_config(&format!(
        "settings: {{plugins: [Echo], trusted_plugins: {{MockCalls: {mock_hash}}}}}\nEcho: {{label: sec, interval: 0.02}}\n"
    ));
    host.signal(nix::sys::signal::Signal::SIGHUP);
    host.wait_for_log("reloading: stop Echo", 1, WAIT);
    host.wait_for_log(
        &format!("pins neither its file name nor its sha256 {echo_hash}"),
        1,
        WAIT,
    );
    while host.next_record(Duration::from_millis(300)).is_some() {}
    assert!(
        host.next_record(Duration::from_secs(1)).is_none(),
        "the unpinned library still runs"
    );
    host.terminate();

    // A wrong pin for the file: refused, and the message gives the hash to pin.
    let wrong = "0".repeat(64);
    install.write_config(&format!(
        "settings: {{plugins: [Echo], trusted_plugins: {{{echo_file}: '{wrong}', MockCalls: {mock_hash}}}}}\nEcho: {{label: sec}}\n"
    ));
    let (ok, report, _) = install.run_cli(&["check"]);
    assert!(!ok);
    assert!(
        report.contains(&format!("its sha256 {echo_hash} does not match"))
            && report.contains(&format!("`{echo_file}: {echo_hash}`")),
        "{report}"
    );
}

#[test]
fn the_token_appears_in_no_log_output_or_error() {
    const TOKEN: &str = "tok-5ecret-7f3a9c";
    let frontend = Frontend::start(|_, _| status(401));
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &format!(
            "settings: {{plugins: [Echo], frontend: '{}', token: {TOKEN}}}\nEcho: {{label: sec}}\n",
            frontend.url
        ),
    );
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(ok, "{report}{err}");
    assert!(report.contains("token set"), "{report}");
    assert!(!report.contains(TOKEN) && !err.contains(TOKEN));

    // Rejected by the frontend, with every log level on: the host stops, naming the setting only.
    let mut command = install.command(&["run"]);
    command.env("RUST_LOG", "trace");
    let mut host = Host::spawn(command);
    let (status, _) = host.wait_exit(WAIT);
    assert!(!status.success());
    let log = host.log();
    assert!(log.contains("refused the token (HTTP 401)"), "{log}");
    assert!(
        !log.contains(TOKEN),
        "the token leaked into the log:\n{log}"
    );
    assert!(
        frontend
            .received()
            .iter()
            .any(|r| r.authorization == format!("Token {TOKEN}")),
        "the frontend did get the token"
    );

    // A token of the wrong type: the error names the key, not the value.
    install.write_config(&format!(
        "settings: {{plugins: [Echo], token: [{TOKEN}]}}\nEcho: {{label: sec}}\n"
    ));
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(!ok);
    // `check` lists it among the problems it found (stdout), with every other one.
    assert!(
        report.contains("error: ")
            && report.contains("settings.token: a secret (token, password) must be a string"),
        "{report}{err}"
    );
    assert!(!report.contains(TOKEN) && !err.contains(TOKEN), "{err}");
}

/// What is in `state_dir` is delivered with the token: it gets the plugins folder's check.
#[test]
fn a_state_dir_or_spool_file_writable_by_others_stops_start_up_unless_the_check_is_off() {
    use std::os::unix::fs::PermissionsExt;
    let install = Install::new(HOST, &[TEST_PLUGINS], ECHO);
    let state = install.dir.path().join("state");
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode();

    // A missing state folder is created owner-only.
    let mut host = install.start();
    host.records_until(WAIT, |_| true);
    host.terminate();
    assert_eq!(mode(&state) & 0o777, 0o700);
    let journal = state.join("spool.journal");
    assert!(journal.exists(), "the run wrote its journal");

    let refused = |what: &str, path: &std::path::Path, problem: &str| {
        let expected = format!("{what} {} {problem}", path.display());
        let (ok, report, err) = install.run_cli(&["check"]);
        assert!(!ok, "{report}{err}");
        let line = report
            .lines()
            .find(|l| l.starts_with("error: ") && l.contains(&expected))
            .unwrap_or_else(|| panic!("check does not report `{expected}`:\n{report}{err}"));
        assert!(
            line.contains("records delivered with this service's token"),
            "{line}"
        );
        let mut host = install.start();
        let (status, _) = host.wait_exit(WAIT);
        assert!(!status.success());
        let log = host.log();
        assert_eq!(log.matches(&expected).count(), 1, "once, naming it:\n{log}");
        assert!(host.remaining_records().is_empty(), "no plugin ran");
        line.to_owned()
    };
    install.chmod(&state, 0o777);
    let line = refused(
        "state folder",
        &state,
        "is writable by its group and others (mode 777)",
    );
    assert!(
        line.contains(&format!("`chmod go-w {}`", state.display())),
        "{line}"
    );
    install.chmod(&state, 0o700);
    install.chmod(&journal, 0o646);
    refused(
        "spool journal",
        &journal,
        "is writable by others (mode 646)",
    );
    install.chmod(&journal, 0o600);
    needs_root("give the spool database to another user");
    let database = state.join("spool.sqlite3");
    nix::unistd::chown(&database, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    let line = refused(
        "spool database",
        &database,
        "is owned by uid 4242, neither root nor this service's user (uid 0)",
    );
    assert!(
        line.contains(&format!("`chown 0 {}`", database.display())),
        "{line}"
    );
    nix::unistd::chown(&database, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();

    // The plugins' setting turns this check off too.
    install.chmod(&state, 0o777);
    install.write_config(
        "settings: {plugins: [Echo], strict_plugin_permissions: false}\nEcho: {label: sec}\n",
    );
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(ok, "{report}{err}");
    let mut host = install.start();
    host.records_until(WAIT, |r| r["number"] == "sec");
    host.terminate();
}
