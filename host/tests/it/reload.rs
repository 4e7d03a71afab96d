//! Hot reload: libraries added to, replaced in and removed from the plugins folder of a running
//! host, and SIGHUP, while fixture plugins push records. The two builds of the fixture are
//! told apart by the library identity in the host's `started` lines; `line` counts each
//! instance run's records from 1.

use std::time::{Duration, Instant};

use crate::HOST;
use calllogger_test_kit::{
    started_libraries, Host, Install, INCOMPATIBLE, TEST_PLUGINS, TEST_PLUGINS_V2,
};
use nix::sys::signal::Signal;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const FILE: &str = "libfixtures.so";

const V1: &str = "calllogger-test-plugins 0.1.0";
const V2: &str = "calllogger-test-plugins-v2 0.2.0";

fn label(record: &Value) -> &str {
    record["number"].as_str().unwrap_or_default()
}

fn line(record: &Value) -> u64 {
    record["line"].as_u64().unwrap()
}

/// Every instance run numbers its records 1, 2, 3…: a gap means a record was lost.
fn assert_no_gaps(records: &[Value]) {
    let mut expected = 1;
    for record in records {
        let n = line(record);
        if n == 1 {
            expected = 1;
        }
        assert_eq!(n, expected, "record lost before {record}");
        expected += 1;
    }
}

#[test]
fn hot_add_replace_and_remove_while_records_flow_lose_nothing() {
    let install = Install::new(
        HOST,
        &[],
        "settings: {plugins: [Echo]}\nEcho: {label: hot, interval: 0.01}\n",
    );
    let mut host = install.start();
    host.wait_for_log("no plugin library exports class `Echo`", 1, WAIT);
    let mut records = Vec::new();
    let collect = |records: &mut Vec<Value>, host: &Host, until: &dyn Fn(&Value) -> bool| {
        records.extend(host.records_until(WAIT, until).into_iter().map(|r| r.1));
    };

    // Hot add: the configured class starts.
    // Each step starts a new run, whose first record has line 1.
    install.add_library(TEST_PLUGINS, FILE);
    collect(&mut records, &host, &|r| line(r) == 1);
    // Replace by `cp` over the file (same inode, rewritten in place).
    install.add_library(TEST_PLUGINS_V2, FILE);
    collect(&mut records, &host, &|r| line(r) == 1);
    // Replace by write-to-temporary-then-rename.
    install.replace_library_by_rename(TEST_PLUGINS, FILE);
    collect(&mut records, &host, &|r| line(r) == 1);
    collect(&mut records, &host, &|r| line(r) >= 20);
    assert_eq!(started_libraries(&host.log(), "Echo"), [V1, V2, V1]);

    // A truncated replacement is refused; the running instance is not even restarted.
    let bytes = std::fs::read(install.library(TEST_PLUGINS_V2)).unwrap();
    let broken = install.plugins().join(".broken.partial");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::rename(&broken, install.plugins().join(FILE)).unwrap();
    host.wait_for_log("the previous version runs on", 1, WAIT);
    // So is one built against an incompatible interface.
    install.replace_library_by_rename(INCOMPATIBLE, FILE);
    host.wait_for_log("incompatible plugin interface", 1, WAIT);
    host.wait_for_log("the previous version runs on", 2, WAIT);
    // Rescans do not load the refused file again (each load would stay mapped for good).
    let before = private_copies_mapped(host.child.id());
    assert!(before >= 2, "the copies loaded so far are mapped: {before}");
    for n in 1..=2 {
        host.signal(Signal::SIGHUP);
        host.wait_for_log("config reloaded: no instance to start", n, WAIT);
    }
    assert_eq!(private_copies_mapped(host.child.id()), before);
    let reached = line(records.last().unwrap());
    collect(&mut records, &host, &|r| line(r) >= reached + 50);
    let after_refusal: Vec<&Value> = records
        .iter()
        .rev()
        .take_while(|r| line(r) > reached)
        .collect();
    assert!(
        after_refusal.iter().all(|r| line(r) > reached)
            && started_libraries(&host.log(), "Echo") == [V1, V2, V1],
        "the refused file must not run"
    );

    // Hot remove: its instance stops, and no record comes after.
    std::fs::remove_file(install.plugins().join(FILE)).unwrap();
    host.wait_for_log("reloading: stop Echo", 1, WAIT);
    host.wait_for_log("stopped instance=Echo", 1, WAIT);
    while let Some((_, record)) = host.next_record(Duration::from_millis(500)) {
        records.push(record);
    }
    assert!(
        host.next_record(Duration::from_secs(1)).is_none(),
        "records after the library was removed"
    );
    let log = host.terminate();
    records.extend(host.remaining_records());

    assert_no_gaps(&records);
    let runs = records.iter().filter(|r| line(r) == 1).count();
    assert_eq!(runs, 3, "{log}");
    assert_eq!(started_libraries(&log, "Echo"), [V1, V2, V1], "{log}");
    assert!(records.iter().all(|r| label(r) == "hot"));
    assert_eq!(
        install.spool(0).expect("a spool").pending as usize,
        records.len(),
        "every record written out is in the spool, and no more"
    );
    assert!(log.contains("retired libraries stay mapped"), "{log}");
}

#[test]
fn sighup_restarts_only_the_changed_instance_and_keeps_running_on_a_broken_config() {
    let config = |b: &str| {
        format!(
            "settings: {{plugins: ['Echo@a', 'Echo@b']}}\nEcho: {{interval: 0.02}}\n\
             'Echo@a': {{label: a}}\n'Echo@b': {{label: {b}}}\n"
        )
    };
    let install = Install::new(HOST, &[TEST_PLUGINS], &config("b"));
    let mut host = install.start();
    let mut seen = host.records_until(WAIT, |r| label(r) == "a");
    seen.extend(host.records_until(WAIT, |r| label(r) == "b"));

    install.write_config(&config("b2"));
    host.signal(Signal::SIGHUP);
    host.wait_for_log("reloading: restart Echo@b", 1, WAIT);
    seen.extend(host.records_until(WAIT, |r| label(r) == "b2"));
    let a_before = seen
        .iter()
        .map(|r| &r.1)
        .filter(|r| label(r) == "a")
        .map(line)
        .max()
        .unwrap();
    let next_a = host.records_until(WAIT, |r| label(r) == "a");
    assert!(
        line(&next_a.last().unwrap().1) > a_before,
        "Echo@a was restarted: its count started over"
    );

    // Syntax error: nothing changes.
    install.write_config("settings: [unclosed\n");
    host.signal(Signal::SIGHUP);
    host.wait_for_log("new config refused, the running one stays", 1, WAIT);
    // Two instances whose settings are wrong: both errors are logged, nothing changes.
    install.write_config(
        "settings: {plugins: ['Echo@a', 'Echo@b']}\n'Echo@a': {label: a, bogus: 1}\n\
         'Echo@b': {label: b3, interval: fast}\n",
    );
    host.signal(Signal::SIGHUP);
    host.wait_for_log(
        "new config refused, the running one stays; 2 errors",
        1,
        WAIT,
    );
    let log = host.log();
    assert!(log.contains("bogus"), "{log}");
    assert!(log.contains("interval"), "{log}");
    host.records_until(WAIT, |r| label(r) == "b2");
    host.records_until(WAIT, |r| label(r) == "a");
    let log = host.terminate();
    assert_eq!(log.matches("reloading:").count(), 1, "{log}");
    assert!(!log.contains("b3"), "{log}");
}

/// How many private library copies (memory files, or files in `state/libs/`) the host has
/// mapped, told apart by device and inode (memory files of one library share a name).
fn private_copies_mapped(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let copies: std::collections::BTreeSet<(&str, &str)> = maps
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| {
            f.get(5).is_some_and(|path| {
                path.starts_with("/memfd:calllogger:") || path.contains("/state/libs/")
            })
        })
        .map(|f| (f[3], f[4]))
        .collect();
    copies.len()
}

/// Reads the host's resident set from /proc, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The most RSS one hot replace may add, in KiB.
const MAX_RSS_GROWTH_PER_RELOAD_KIB: u64 = 8 * 1024;

#[test]
fn a_hundred_hot_replaces_in_a_row() {
    const RELOADS: usize = 100;
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo]}\nEcho: {label: r, interval: 0.05}\n",
    );
    std::fs::rename(
        install.plugins().join(format!("lib{TEST_PLUGINS}.so")),
        install.plugins().join(FILE),
    )
    .unwrap();
    let mut host = install.start();
    host.records_until(WAIT, |_| true);
    let before = rss_kib(host.child.id());
    let started = Instant::now();
    for n in 1..=RELOADS {
        let stem = if n % 2 == 1 {
            TEST_PLUGINS_V2
        } else {
            TEST_PLUGINS
        };
        install.replace_library_by_rename(stem, FILE);
        host.wait_for_log("reloading: restart Echo", n, WAIT);
    }
    let expected = if RELOADS % 2 == 1 { V2 } else { V1 };
    // The last version starts, and records flow again.
    host.wait_for_log(
        &format!("started instance=Echo library={expected}"),
        RELOADS / 2 + 1,
        WAIT,
    );
    host.records_until(WAIT, |r| line(r) == 2);
    let after = rss_kib(host.child.id());
    let per_reload = after.saturating_sub(before) / RELOADS as u64;
    eprintln!(
        "{RELOADS} reloads in {:.1} s; RSS {before} KiB -> {after} KiB: {per_reload} KiB per reload",
        started.elapsed().as_secs_f64(),
    );
    // Retired libraries stay mapped for good (abi_stable never unloads), so RSS grows with
    // each reload: about 1.8 MiB in a debug build, 0.6 MiB in release (README, Benchmarks).
    // The bound is generous; a leak of a whole library's heap or worse per reload breaks it.
    assert!(
        per_reload <= MAX_RSS_GROWTH_PER_RELOAD_KIB,
        "RSS grew {per_reload} KiB per reload ({before} -> {after} KiB over {RELOADS}), more than {MAX_RSS_GROWTH_PER_RELOAD_KIB} KiB"
    );
    let log = host.terminate();
    assert!(
        log.contains(&format!(
            "retired libraries stay mapped (abi_stable never unloads): {RELOADS} "
        )),
        "{log}"
    );
}

#[test]
fn stale_private_copies_are_removed_at_start_up() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo]}\nEcho: {label: s}\n",
    );
    let copies = install.dir.path().join("state/libs");
    std::fs::create_dir_all(&copies).unwrap();
    // Left by a host (pid 2^22 + 1, above Linux's pid limit: not running) that crashed mid-load.
    let stale = copies.join("libfixtures.4194305.0.so");
    std::fs::write(&stale, b"left behind").unwrap();
    let unrelated = copies.join("notes.txt");
    std::fs::write(&unrelated, b"not a copy").unwrap();
    let mut host = install.start();
    host.records_until(WAIT, |_| true);
    let log = host.terminate();
    assert!(!stale.exists(), "{log}");
    assert!(unrelated.exists(), "only copies are removed");
    assert!(
        log.contains("removed 1 stale private library copies"),
        "{log}"
    );
    let left: Vec<String> = std::fs::read_dir(&copies)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.iter().filter(|n| *n != "inspected.json").count(),
        1,
        "the host's own copies are unlinked once loaded (beside its library cache): {left:?}"
    );
}
