//! The Windows build under Wine: `calllogger.exe` (built for `x86_64-pc-windows-gnu` by the
//! test kit) on the `.dll` plugins, driven from here as an installer and an operator would.
//! Wine runs it on this machine's file systems and loopback, so the files and sockets are
//! real; what Wine cannot show (NTFS ACLs, COM hardware) is listed in
//! the README's "Windows" section.

use std::collections::BTreeSet;
use std::time::Duration;

use calllogger_test_kit::frontend::{created, Frontend};
use calllogger_test_kit::http::listener_url;
use calllogger_test_kit::{
    build_out_of_tree_for, poll, started_libraries, workspace, Install, Platform, BERONET, HIPATH,
    MOCK_CALLS, TEST_PLUGINS, TEST_PLUGINS_V2,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn windows_plugins_and_check_list_the_shipped_dlls() {
    let install = Install::windows(
        &[MOCK_CALLS, HIPATH, BERONET],
        "settings: {plugins: [MockCalls]}\n",
    );
    let (ok, table, err) = install.run_cli(&["plugins"]);
    assert!(ok, "{table}{err}");
    for (class, file) in [
        ("MockCalls ", "calllogger_mock_calls.dll"),
        (
            "SiemensHipathSerial ",
            "calllogger_siemens_hipath_serial.dll",
        ),
        ("BeroNet ", "calllogger_beronet.dll"),
    ] {
        let row = table.lines().find(|l| l.starts_with(class)).unwrap_or("");
        assert!(row.contains(file) && row.contains("0.3.0"), "{table}");
    }
    assert!(!err.contains("may be written to by"), "{err}");
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(ok, "{report}{err}");
    // What to do after configuring a plugin is the Windows way, not SIGHUP.
    install.write_config("settings: {plugins: []}\n");
    let (_, report, _) = install.run_cli(&["check"]);
    assert!(
        report.contains("(the host runs on; `calllogger reload` after setting it)"),
        "{report}"
    );
}

#[test]
fn windows_a_plugin_folder_or_dll_anyone_may_write_to_is_refused_with_the_icacls_fix() {
    let install = Install::windows(&[MOCK_CALLS, HIPATH], "settings: {plugins: [MockCalls]}\n");
    // Wine gives a file's Unix mode as its access list: "others may write" is Everyone.
    let hipath = install
        .plugins()
        .join(Platform::Windows.library_file_name(HIPATH));
    install.chmod(&hipath, 0o666);
    let (ok, table, err) = install.run_cli(&["plugins"]);
    assert!(ok, "{table}{err}");
    assert!(
        table.contains("MockCalls ") && !table.contains("SiemensHipathSerial "),
        "{table}"
    );
    let refusal = "calllogger_siemens_hipath_serial.dll may be written to by Everyone \
                   (S-1-1-0), not only by administrators, SYSTEM and this service's user, so \
                   they could run code as this service; fix it with `icacls \"";
    assert!(table.contains(refusal), "{table}");
    assert!(
        table.contains(
            r#"calllogger_siemens_hipath_serial.dll" /inheritance:d /remove:g *S-1-1-0`"#
        ),
        "{table}"
    );
    // The folder itself: nothing in it is loaded.
    install.chmod(&hipath, 0o644);
    install.chmod(&install.plugins(), 0o777);
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(!ok, "{report}{err}");
    assert!(
        report.contains("error: plugin folder ")
            && report.contains("may be written to by Everyone (S-1-1-0)"),
        "{report}"
    );
    // Off for development, as on Linux.
    install.write_config("settings: {plugins: [MockCalls], strict_plugin_permissions: false}\n");
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(ok, "{report}{err}");
}

#[test]
fn windows_records_reach_stdout_and_ctrl_c_stops_cleanly_losing_none() {
    let install = Install::windows(
        &[MOCK_CALLS],
        "settings: {plugins: [MockCalls]}\nMockCalls: {sleep: 0.05}\n",
    );
    let mut host = install.start();
    let mut records: Vec<Value> = host
        .records_until(WAIT, {
            let mut n = 0;
            move |_| {
                n += 1;
                n == 20
            }
        })
        .into_iter()
        .map(|r| r.1)
        .collect();
    // SIGINT is Wine's Ctrl-C: the console control handler stops the host gracefully.
    let log = host.terminate();
    records.extend(host.remaining_records());
    assert!(
        log.contains("shutting down: CTRL_C_EVENT received"),
        "{log}"
    );
    assert!(log.contains("stopped instance=MockCalls"), "{log}");
    // Every record echoed is in the spool, once: counted by id.
    let echoed: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = echoed.iter().copied().collect();
    assert_eq!(unique.len(), echoed.len(), "no record echoed twice");
    let spool = install.spool(usize::MAX).expect("the spool");
    let spooled: BTreeSet<String> = spool
        .newest
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<&&str> = echoed.iter().filter(|id| !spooled.contains(**id)).collect();
    assert!(lost.is_empty(), "echoed but not in the spool: {lost:?}");
}

#[test]
fn windows_a_dll_replaced_while_it_runs_is_reloaded_and_a_truncated_one_refused() {
    const FILE: &str = "fixtures.dll";
    let install = Install::windows(
        &[],
        "settings: {plugins: [Echo]}\nEcho: {label: hot, interval: 0.01}\n",
    );
    install.add_library(TEST_PLUGINS, FILE);
    let mut host = install.start();
    host.records_until(WAIT, |_| true);
    // The loaded DLL is a private copy: the operator's file is not locked, and `copy` over it
    // (rewritten in place) works while the host runs.
    install.add_library(TEST_PLUGINS_V2, FILE);
    host.wait_for_log(
        "started instance=Echo library=calllogger-test-plugins-v2",
        1,
        WAIT,
    );
    // A truncated replacement is refused, and the running version goes on.
    let bytes = std::fs::read(install.library(TEST_PLUGINS)).unwrap();
    let broken = install.plugins().join(".broken.partial");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::rename(&broken, install.plugins().join(FILE)).unwrap();
    host.wait_for_log("the previous version runs on", 1, WAIT);
    let log = host.log();
    let refusal = log
        .lines()
        .find(|l| l.contains("the previous version runs on"))
        .unwrap();
    assert!(refusal.contains("truncated"), "{refusal}");
    host.records_until(WAIT, |_| true);
    let log = host.terminate();
    assert_eq!(
        started_libraries(&log, "Echo"),
        [
            "calllogger-test-plugins 0.1.0",
            "calllogger-test-plugins-v2 0.2.0"
        ]
    );
}

#[test]
fn windows_hipath_over_tcp_gives_every_sample_across_a_reconnect() {
    crate::hipath::samples_over_tcp_across_a_reconnect(Install::windows);
}

#[test]
fn windows_hipath_on_a_com_port_gives_every_sample_in_order() {
    // Wine's COM42 is what `dosdevices/com42` in its prefix links to: here a pty.
    let master = crate::hipath::pty_at(&calllogger_test_kit::windows::com_port(42));
    crate::hipath::every_sample_from_a_serial_port(Install::windows, "COM42", master);
}

#[test]
fn windows_hipath_following_a_file_gives_every_sample_across_a_rotation() {
    crate::hipath::samples_from_a_file_across_a_rotation(Install::windows);
}

#[test]
fn windows_a_vendor_plugin_built_out_of_tree_as_a_dll_loads_and_runs() {
    let built = build_out_of_tree_for(
        Platform::Windows,
        &workspace().join("tests/fixtures/vendor-plugin"),
        "my_pbx",
    );
    let pbx = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let install = Install::windows(
        &[],
        &format!(
            "settings: {{plugins: [MyPbx]}}\nMyPbx: {{source: tcp-client, connect: \"{}\"}}\n",
            pbx.local_addr().unwrap()
        ),
    );
    install.add_library_file(&built, "my_pbx.dll");
    let (ok, table, err) = install.run_cli(&["plugins"]);
    assert!(ok, "{table}{err}");
    let row = table
        .lines()
        .find(|l| l.starts_with("MyPbx "))
        .unwrap_or("");
    assert!(
        row.contains("my_pbx.dll") && row.contains("my-pbx 0.1.0"),
        "{table}"
    );
    let mut host = install.start();
    let (mut connection, _) = pbx.accept().unwrap();
    std::io::Write::write_all(&mut connection, b"0876112345,101\r\n0876154321,102\r\n").unwrap();
    let records = host.records_until(WAIT, |r| r["number"] == "0876154321");
    let numbers: Vec<&str> = records
        .iter()
        .map(|(_, r)| r["number"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(numbers, ["0876112345", "0876154321"]);
    host.terminate();
}

#[test]
fn windows_a_crash_in_plugin_code_is_reported_at_the_next_start_with_its_instance() {
    let install = Install::windows(
        &[TEST_PLUGINS],
        "settings: {plugins: ['Crash@segfault']}\n'Crash@segfault': {how: segfault}\n",
    );
    let mut host = install.start();
    // Windows ends it with the NTSTATUS 0xC0000005 as its code; Wine hands it to its debugger,
    // which exits 0: the exit code is not what this test can check.
    host.wait_exit(WAIT);
    install.write_config("settings: {plugins: [Echo]}\nEcho: {label: after}\n");
    let mut host = install.start();
    host.wait_for_log(
        "the previous run died on EXCEPTION_ACCESS_VIOLATION while instance Crash@segfault \
         (class Crash, library ",
        1,
        WAIT,
    );
    host.terminate();
}

#[test]
fn windows_the_status_listener_answers_and_stops_with_the_host() {
    let install = Install::windows(
        &[MOCK_CALLS],
        "settings: {plugins: [MockCalls], metrics_addr: \"127.0.0.1:0\"}\n",
    );
    let mut host = install.start();
    let url = listener_url(&mut host);
    host.records_until(WAIT, |_| true);
    let (status, body) = calllogger_test_kit::http::get(&url, "/health", WAIT)
        .unwrap_or_else(|| panic!("no answer from {url}/health; log:\n{}", host.log()));
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = calllogger_test_kit::http::get(&url, "/metrics", WAIT).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("calllogger_records_pushed_total"),
        "{metrics}"
    );
    // The listener's thread, waiting in WSAPoll, is woken by the stop.
    host.terminate();
}

#[test]
fn windows_calllogger_reload_rereads_the_config_without_sighup() {
    let install = Install::windows(
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo]}\nEcho: {label: before, interval: 0.05}\n",
    );
    let mut host = install.start();
    host.records_until(WAIT, |r| r["number"] == "before");
    install.write_config("settings: {plugins: [Echo]}\nEcho: {label: after, interval: 0.05}\n");
    let (ok, out, err) = install.run_cli(&["reload"]);
    assert!(ok, "{out}{err}");
    host.wait_for_log(
        "`calllogger reload` received: reloading the config",
        1,
        WAIT,
    );
    host.records_until(WAIT, |r| r["number"] == "after");
    host.terminate();
    // With no host running, the command says so and fails.
    let (ok, _, err) = install.run_cli(&["reload"]);
    assert!(
        !ok && err.contains("no running host with state_dir"),
        "{err}"
    );
}

#[test]
fn windows_without_flags_the_config_plugins_and_state_are_under_programdata() {
    // Wine's %ProgramData% is C:\ProgramData, in the kit's prefix; no other test uses it.
    let home = calllogger_test_kit::windows::prefix().join("drive_c/ProgramData/calllogger");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(home.join("plugins")).unwrap();
    let dll = Platform::Windows.library_file_name(MOCK_CALLS);
    let probe = Install::windows(&[MOCK_CALLS], "");
    std::fs::copy(probe.library(MOCK_CALLS), home.join("plugins").join(&dll)).unwrap();
    std::fs::write(
        home.join("config.yml"),
        "settings: {plugins: [MockCalls]}\n",
    )
    .unwrap();
    let output = calllogger_test_kit::windows::wine(&calllogger_test_kit::windows_host())
        .arg("check")
        .env_remove("CALLLOGGER_CONFIG")
        .env_remove("CALLLOGGER_PLUGIN_DIR")
        .env_remove("CALLLOGGER_STATE_DIR")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}{err}");
    for line in [
        r"config: C:\ProgramData\calllogger\config.yml",
        r"state folder: C:\ProgramData\calllogger\state",
        r"plugin folder: C:\ProgramData\calllogger\plugins",
    ] {
        assert!(report.contains(line), "`{line}` in:\n{report}");
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// A service the test installed, removed (stopped first if it runs) when dropped.
struct InstalledService<'a> {
    install: &'a Install,
    name: String,
}

impl InstalledService<'_> {
    /// `calllogger service ACTION --name NAME`: (exit status, stdout, stderr).
    fn run(&self, action: &str) -> (i32, String, String) {
        let output = self
            .install
            .command(&["service", action, "--name", &self.name])
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

impl Drop for InstalledService<'_> {
    fn drop(&mut self) {
        self.run("uninstall");
    }
}

#[test]
fn windows_runs_as_a_service_installed_started_stopped_and_removed_from_the_cli() {
    let frontend = Frontend::start(|_, _| created());
    let config = format!(
        "settings: {{frontend: '{}', token: s3cret, plugins: [Echo]}}\n\
         Echo: {{label: service, count: 30, interval: 0.02}}\n",
        frontend.url
    );
    let install = Install::windows(&[TEST_PLUGINS], &config);
    let log_file = install.dir.path().join("logs").join("service.log");
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    let service = InstalledService {
        install: &install,
        name: format!("calllogger-test-{}", std::process::id()),
    };
    let name = service.name.as_str();

    // From a console, what the service manager starts says what to run instead.
    let (code, _, err) = service.run("run");
    assert!(
        code == 1 && err.contains("`service run` is what the service manager starts"),
        "{err}"
    );

    // Installed to start at boot, with the flags it was given, made absolute.
    let installing = |extra: &[&str]| {
        let log_file = log_file.to_str().unwrap();
        let mut args = vec!["--log-file", log_file, "service", "install", "--name", name];
        args.extend(extra);
        install.run_cli(&args)
    };
    // Not with a config that would not start.
    install.write_config("settings: {plugins: [Echo], timeout: soon}\n");
    let (ok, _, err) = installing(&[]);
    assert!(
        !ok && err.contains("not installed: the service would not start")
            && err.contains("timeout"),
        "{err}"
    );
    install.write_config(&config);
    let (ok, out, err) = installing(&[]);
    assert!(ok && out.contains("started at boot"), "{out}{err}");
    let (code, status, err) = service.run("status");
    assert_eq!(code, 3, "not running: {status}{err}");
    // Wine's `Z:` drive is this machine's `/`.
    let windows = |path: &std::path::Path| format!("Z:{}", path.display()).replace('/', "\\");
    let command = format!(
        "calllogger.exe --config {} --plugin-dir {} --state-dir {} --log-file {} service run \
         --name {name}",
        windows(&install.config_path()),
        windows(&install.plugins()),
        windows(&install.state_dir()),
        windows(&log_file),
    );
    assert!(status.contains(&command), "`{command}` in {status}");
    assert!(status.contains("starts: at boot"), "{status}");
    // A second one of the same name is refused, by name.
    let (ok, _, err) = installing(&["--manual"]);
    assert!(!ok && err.contains("is installed already"), "{err}");
    let (code, out, err) = service.run("uninstall");
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = service.run("status");
    assert!(
        code == 1 && err.contains(&format!("no service named `{name}` is installed")),
        "{err}"
    );

    // Started on request: every record reaches the frontend once; the stop is graceful.
    let (ok, out, err) = installing(&["--manual"]);
    assert!(ok && out.contains("started on request"), "{out}{err}");
    let (code, out, err) = service.run("start");
    assert_eq!(code, 0, "{out}{err}\n{}", log());
    let (code, status, _) = service.run("status");
    assert!(
        code == 0 && status.contains("state: running (process "),
        "{status}"
    );
    frontend.wait_until(WAIT, "30 records", |r| {
        r.iter().map(|r| r.records().len()).sum::<usize>() >= 30
    });
    let (code, out, err) = service.run("stop");
    assert!(
        code == 0 && out.contains("stopped"),
        "{out}{err}\n{}",
        log()
    );
    let tally = frontend.tally("service", 30);
    assert_eq!(
        (tally.delivered, tally.duplicated, tally.lost.len()),
        (30, 0, 0),
        "{tally:?}"
    );
    let text = log();
    assert!(
        text.contains("shutting down: SERVICE_CONTROL_STOP received")
            && text.contains("stopped; 0 records pending"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "the token never reaches the log");

    // A config that no longer loads: the start fails and the log says why, naming the file.
    install.write_config("settings: [\n");
    let (code, _, err) = service.run("start");
    assert!(
        code == 1 && err.contains("stopped while starting (exit status 1); its log says why"),
        "{err}"
    );
    assert!(log().contains("config.yml"), "{}", log());

    // Running again, it reloads on request, and is stopped gracefully before it is removed.
    install.write_config(&config);
    let (code, out, err) = service.run("start");
    assert_eq!(code, 0, "{out}{err}\n{}", log());
    let (ok, out, err) = install.run_cli(&["reload"]);
    assert!(ok, "{out}{err}");
    assert!(
        poll(WAIT, || log()
            .contains("`calllogger reload` received")
            .then_some(()))
        .is_some(),
        "{}",
        log()
    );
    let (code, out, err) = service.run("uninstall");
    assert!(
        code == 0 && out.contains("removed"),
        "{out}{err}\n{}",
        log()
    );
    assert_eq!(
        log()
            .matches("shutting down: SERVICE_CONTROL_STOP received")
            .count(),
        2,
        "{}",
        log()
    );
}
