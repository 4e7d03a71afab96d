//! Who may supply plugin code, and the token kept out of every output.

mod common;

use std::time::Duration;

use common::frontend::{status, Frontend};
use common::{Install, MOCK_CALLS, TEST_PLUGINS};
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
    let install = Install::new(&[TEST_PLUGINS], ECHO);
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
    let install = Install::new(&[TEST_PLUGINS], ECHO);
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

#[test]
fn a_library_owned_by_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root can give a file to another user");
        return;
    }
    let install = Install::new(&[TEST_PLUGINS], ECHO);
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
    let install = Install::new(&[TEST_PLUGINS, MOCK_CALLS], ECHO);
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
    let mut host = common::Host::spawn(command);
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
    assert!(
        err.contains("a secret (token, password) must be a string"),
        "{err}"
    );
    assert!(!report.contains(TOKEN) && !err.contains(TOKEN), "{err}");
}
