//! The loader against real libraries: plugins side by side, and every kind of bad file.

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::HOST;
use calllogger_test_kit::*;

#[test]
fn two_plugin_libraries_load_side_by_side_and_a_class_from_each_runs() {
    let install = Install::new(
        HOST,
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
    let log = host.terminate();
    // Start-up says how much room the spool has.
    let state = install.dir.path().join("state");
    assert!(
        log.contains(&format!("state folder {}: ", state.display())) && log.contains(" MiB free"),
        "{log}"
    );
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
        HOST,
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
    let real = std::fs::read(install.library(TEST_PLUGINS)).unwrap();
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
    // The same library as if built for another machine (its e_machine, little-endian).
    let mut foreign_machine = real.clone();
    let other: u16 = if cfg!(target_arch = "aarch64") {
        62
    } else {
        183
    };
    foreign_machine[18..20].copy_from_slice(&other.to_le_bytes());
    std::fs::write(plugins.join("libothermachine.so"), &foreign_machine).unwrap();
    let other_name = if cfg!(target_arch = "aarch64") {
        "built for x86_64, this host is aarch64"
    } else {
        "built for aarch64, this host is x86_64"
    };
    install.add_library(INCOMPATIBLE, "libincompatible.so");
    install.add_library(ABORT, "libabort.so");
    install.add_library(OLD_SDK, "liboldsdk.so");

    let expected: Vec<(String, &str)> = [
        ("libforeign.so".to_owned(), "not a calllogger plugin"),
        ("empty.so".to_owned(), "empty file"),
        ("notes.so".to_owned(), "not an ELF shared library"),
        ("libothermachine.so".to_owned(), other_name),
        (
            "libincompatible.so".to_owned(),
            "incompatible plugin interface",
        ),
        ("libabort.so".to_owned(), "panic = \"abort\""),
        (
            "liboldsdk.so".to_owned(),
            "built against calllogger plugin interface 0.2.0 (SDK 0.2), but this host speaks interface 0.3 (SDK 0.3.x): rebuild it against calllogger-plugin-sdk 0.3",
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
        HOST,
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
        HOST,
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
        line.contains("available: Blocker, Chatty, Crash, Echo, Flaky, LogCrate, MockCalls, Refused, Stubborn"),
        "{line}"
    );
    let mut host = install.start();
    host.wait_for_log(
        "available: Blocker, Chatty, Crash, Echo, Flaky, LogCrate, MockCalls, Refused, Stubborn; it starts when a library exporting it is added",
        1,
        Duration::from_secs(10),
    );
    host.terminate();
}

/// Bytes an unprivileged writer can still store under `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let stats = nix::sys::statvfs::statvfs(dir).unwrap();
    stats.blocks_available() * stats.fragment_size()
}

/// Private library copies live in memory, not in `state_dir`: with too little room left there
/// for a copy of any library, the plugins still load, deliver and hot-reload.
#[test]
fn a_state_dir_too_full_for_a_library_copy_still_loads_and_reloads_plugins() {
    const FILE: &str = "libfixtures.so";
    let install = Install::new(
        HOST,
        &[],
        "settings: {plugins: [Echo]}\nEcho: {label: full, interval: 0.1}\n",
    );
    install.add_library(TEST_PLUGINS, FILE);
    let library_size = [TEST_PLUGINS, TEST_PLUGINS_V2]
        .iter()
        .map(|stem| std::fs::metadata(install.library(stem)).unwrap().len())
        .min()
        .unwrap();
    let state = install.dir.path().join("state");
    let _tmpfs = calllogger_test_kit::mounts::Tmpfs::mount(
        &state,
        &(library_size + 8 * 1024 * 1024).to_string(),
    );
    // Leave room for the spool, but less than one library copy would take.
    let room = library_size * 3 / 4;
    let filler = vec![0u8; 1024 * 1024];
    let mut fill = std::fs::File::create(state.join("filler")).unwrap();
    while free_bytes(&state) > room + filler.len() as u64 {
        fill.write_all(&filler).unwrap();
    }
    let rest = (free_bytes(&state) - room) as usize;
    fill.write_all(&filler[..rest]).unwrap();
    fill.sync_all().unwrap();
    drop(fill);
    let free = free_bytes(&state);
    assert!(
        free < library_size,
        "{free} bytes free, a copy would still fit"
    );

    let mut host = install.start();
    let mut records: Vec<_> = host
        .records_until(Duration::from_secs(20), |r| r["line"].as_u64() >= Some(3))
        .into_iter()
        .map(|r| r.1)
        .collect();
    // Replaced by rename: the new code runs (a reused /proc/self/fd/N path would load the old).
    install.replace_library_by_rename(TEST_PLUGINS_V2, FILE);
    // The new build's run numbers its records from 1 again.
    let mut restarted = false;
    records.extend(
        host.records_until(Duration::from_secs(20), |r| {
            restarted |= r["line"] == 1;
            restarted && r["line"].as_u64() >= Some(3)
        })
        .into_iter()
        .map(|r| r.1),
    );
    let log = host.terminate();
    records.extend(host.remaining_records());
    assert!(
        log.contains(&format!("state folder {}: only ", state.display())),
        "start-up warns that the state folder is nearly full:\n{log}"
    );
    assert!(!log.contains("cannot copy"), "{log}");
    // Every record of each run, in order, none lost: its `line` counts from 1 per run.
    let mut runs = Vec::new();
    for record in &records {
        let line = record["line"].as_u64().unwrap();
        if line == 1 {
            runs.push(0);
        }
        let run = runs
            .last_mut()
            .expect("the first record of a run has line 1");
        assert_eq!(line, *run + 1, "a record lost before {record}");
        *run = line;
        assert_eq!(record["number"], "full");
    }
    assert_eq!(runs.len(), 2, "{log}");
    assert_eq!(
        started_libraries(&log, "Echo"),
        [
            "calllogger-test-plugins 0.1.0",
            "calllogger-test-plugins-v2 0.2.0"
        ],
        "{log}"
    );
}

/// Runs a one-shot command, killing it (and failing) if it has not finished within `timeout`.
fn run_within(install: &Install, args: &[&str], timeout: Duration) -> (bool, String, String) {
    let mut child = install
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!("calllogger {args:?} did not finish within {timeout:?}:\n{stdout}{stderr}");
    };
    (status.success(), stdout, stderr)
}

#[test]
fn a_fifo_a_socket_or_a_device_in_the_plugins_folder_is_skipped_unopened() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo]}\nEcho: {label: fifo, interval: 0.05}\n",
    );
    let plugins = install.plugins();
    nix::unistd::mkfifo(
        &plugins.join("libx.so"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(plugins.join("libsocket.so")).unwrap();
    std::os::unix::fs::symlink("/dev/null", plugins.join("libnull.so")).unwrap();
    let skipped = [
        ("libx.so", "a FIFO"),
        ("libsocket.so", "a socket"),
        ("libnull.so", "a device"),
    ];
    let timeout = Duration::from_secs(20);
    let (ok, table, _) = run_within(&install, &["plugins"], timeout);
    assert!(
        ok && table.lines().any(|l| l.starts_with("Echo ")),
        "{table}"
    );
    let (ok, report, _) = run_within(&install, &["check"], timeout);
    assert!(!ok, "check reports the skipped files:\n{report}");
    for output in [&table, &report] {
        for (file, kind) in skipped {
            let line = output
                .lines()
                .find(|l| l.contains(&format!("/{file}")))
                .unwrap_or_else(|| panic!("{file} is not named in:\n{output}"));
            assert!(
                line.contains(&format!(
                    "skipped without opening it: {kind}, not a regular file"
                )),
                "{line}"
            );
        }
    }

    let mut host = install.start();
    host.records_until(Duration::from_secs(20), |r| r["number"] == "fifo");
    let log = host.terminate();
    for (file, _) in skipped {
        assert!(
            log.lines()
                .any(|l| l.contains(file) && l.contains("skipped without opening it")),
            "{log}"
        );
    }
}

/// The private copies the host has mapped, by their memory file names.
fn mapped_copies(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut copies: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split("memfd:calllogger:").nth(1))
        .map(|name| name.trim_end_matches(" (deleted)").to_owned())
        .collect();
    copies.sort();
    copies.dedup();
    copies
}

/// Only the library of a configured class is mapped; the others are inspected in a child
/// process (an abort library is refused there, the host runs on), listed by `plugins`, and
/// loaded once a SIGHUP names one of their classes.
#[test]
fn only_the_libraries_of_configured_classes_are_mapped_until_a_reload_names_another() {
    use nix::sys::signal::Signal;
    let install = Install::new(
        HOST,
        &[MOCK_CALLS, TEST_PLUGINS],
        "settings: {plugins: [MockCalls]}\nMockCalls: {sleep: 0.05, numbers: ['111']}\n",
    );
    install.add_library(ABORT, "libabort.so");
    let (ok, table, _) = install.run_cli(&["plugins"]);
    assert!(ok, "{table}");
    for class in ["MockCalls ", "Echo "] {
        assert!(table.lines().any(|l| l.starts_with(class)), "{table}");
    }
    let mut host = install.start();
    host.records_until(Duration::from_secs(20), |_| true);
    assert_eq!(
        mapped_copies(host.pid()),
        ["libcalllogger_mock_calls.so"],
        "{}",
        host.log()
    );
    let log = host.log();
    let refusal = log
        .lines()
        .find(|l| l.contains("libabort.so"))
        .unwrap_or_else(|| panic!("the abort library is reported:\n{log}"));
    assert!(refusal.contains("panic = \"abort\""), "{refusal}");

    install.write_config(
        "settings: {plugins: [MockCalls, Echo]}\nMockCalls: {sleep: 0.05, numbers: ['111']}\nEcho: {label: echo}\n",
    );
    host.signal(Signal::SIGHUP);
    host.records_until(Duration::from_secs(20), |r| r["number"] == "echo");
    assert_eq!(
        mapped_copies(host.pid()),
        [
            "libcalllogger_mock_calls.so",
            "libcalllogger_test_plugins.so"
        ],
        "{}",
        host.log()
    );
    host.terminate();

    // A restart knows the accepted libraries from the last run: no child inspects them again
    // (only the refused one is), and the configured class's library is loaded straight away.
    install.write_config("settings: {plugins: [Echo]}\nEcho: {label: echo}\n");
    let mut command = install.command(&["run"]);
    command.env("RUST_LOG", "debug");
    let mut host = Host::spawn(command);
    host.records_until(Duration::from_secs(20), |r| r["number"] == "echo");
    assert_eq!(
        mapped_copies(host.pid()),
        ["libcalllogger_test_plugins.so"],
        "{}",
        host.log()
    );
    let log = host.terminate();
    let inspected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("inspecting the library in a child process"))
        .collect();
    assert!(
        !inspected.is_empty() && inspected.iter().all(|l| l.contains("libabort.so")),
        "only the refused library is inspected again:\n{log}"
    );
}

/// After start-up and after a reload the host hands the pages of its own code back to the
/// kernel: what it reports resident drops by most of the binary's code read at start-up.
#[cfg(target_os = "linux")]
#[test]
fn start_up_code_leaves_memory_after_start_and_after_a_reload() {
    use nix::sys::signal::Signal;
    const RELEASED: &str = "start-up code released: resident ";
    // A binary of its own: the kernel keeps pages that other hosts (the tests beside this
    // one) map too.
    let own = tempfile::tempdir().unwrap();
    let host = own.path().join("calllogger");
    std::fs::copy(HOST, &host).unwrap();
    // Written back before it runs: the kernel cannot hand back file pages still dirty or
    // under writeback (a fresh copy on a busy machine released only a fifth).
    std::fs::File::open(&host).unwrap().sync_all().unwrap();
    let install = Install::new(
        host,
        &[MOCK_CALLS],
        "settings: {plugins: [MockCalls]}\nMockCalls: {sleep: 3600}\n",
    );
    let mut command = install.command(&["run"]);
    command.env("RUST_LOG", "info,calllogger::host=debug");
    let mut host = Host::spawn(command);
    host.wait_for_log(RELEASED, 1, Duration::from_secs(20));
    host.signal(Signal::SIGHUP);
    host.wait_for_log(RELEASED, 2, Duration::from_secs(20));
    let log = host.terminate();
    let released: Vec<(f64, f64)> = log
        .lines()
        .filter_map(|l| l.split(RELEASED).nth(1))
        .map(|figures| {
            let mib: Vec<f64> = figures
                .split(['→', ' '])
                .filter_map(|n| n.parse().ok())
                .collect();
            (mib[0], mib[1])
        })
        .collect();
    assert_eq!(released.len(), 2, "{log}");
    let ((start_before, start_after), (reload_before, reload_after)) = (released[0], released[1]);
    assert!(start_after < start_before * 0.75, "{log}");
    assert!(reload_after < reload_before, "{log}");
}
