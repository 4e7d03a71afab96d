//! The spool under faults, through the real host: a full file system, a journal removed, cut
//! short, replaced or restored from a backup, a corrupt database, a flood. Every test counts
//! the records by their `line` and `id`: pushed, delivered, duplicated, lost.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::HOST;
use calllogger_test_kit::frontend::{created, status, Frontend, Tally};
use calllogger_test_kit::http::{get, listener_url};
use calllogger_test_kit::mounts::Tmpfs;
use calllogger_test_kit::*;
use nix::sys::signal::Signal;
use serde_json::Value;

/// Retry waits short enough for tests: 0.2, 0.4, 0.8, 1 s.
const FAST: &str = "timeout: 0.2, decay: 2, max_timeout: 1";
const WAIT: Duration = Duration::from_secs(60);

fn config(frontend: &Frontend, settings: &str, sections: &str) -> String {
    format!(
        "settings: {{frontend: '{}', token: t, {FAST}, {settings}}}\n{sections}\n",
        frontend.url
    )
}

/// An `Echo` section pushing `count` records labelled `label`, one every `interval` s.
fn echo(label: &str, count: u32, interval: f64) -> String {
    format!("Echo: {{label: {label}, count: {count}, interval: {interval}}}")
}

/// Every line the host's records carry must be a whole record of a known instance: a torn
/// or glued journal line would reach the frontend as something else.
fn assert_only_whole_records(frontend: &Frontend, labels: &[&str]) {
    for request in frontend.received() {
        for record in request.records() {
            assert!(
                labels.iter().any(|l| record["number"] == *l) && record["id"].is_string(),
                "not a record the host was given: {record}"
            );
        }
    }
}

fn files_starting(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .count()
}

#[test]
fn a_full_state_dir_holds_the_pushes_loses_nothing_and_health_says_why() {
    let frontend = Frontend::start(|_, _| created());
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "plugins: [Echo], metrics_addr: '127.0.0.1:0'",
            &echo("disk", 300, 0.01),
        ),
    );
    let disk = Tmpfs::mount(&install.state_dir(), "64m");
    let mut host = install.start();
    let base = listener_url(&mut host);
    frontend.wait_until(WAIT, "the first records", |r| r.len() >= 20);

    let filler = disk.fill();
    host.wait_for_log("cannot store a record", 1, WAIT);
    let until = Instant::now() + WAIT;
    let health = loop {
        let (code, body) = get(&base, "/health", Duration::from_secs(10)).expect("/health answers");
        if code == 503 && body.contains("spool") {
            break body;
        }
        assert!(
            Instant::now() < until,
            "/health never said why: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.contains("No space left"), "{health}");
    let (_, metrics) = get(&base, "/metrics", Duration::from_secs(10)).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("calllogger_push_stalls_total ") && !l.ends_with(" 0")),
        "the stalls are counted"
    );
    let held = frontend.tally("disk", 300).delivered;
    std::thread::sleep(Duration::from_secs(2));

    std::fs::remove_file(filler).unwrap();
    frontend.wait_delivered(&host, "disk", 300, WAIT);
    let log = host.terminate();
    assert!(held < 300, "the disk filled before Echo was done");
    assert_eq!(
        frontend.tally("disk", 300),
        Tally {
            delivered: 300,
            duplicated: 0,
            lost: vec![]
        }
    );
    assert_only_whole_records(&frontend, &["disk"]);
    assert!(log.contains("takes records again"), "{log}");
    assert!(!log.contains("skipped an unreadable line"), "{log}");
}

#[test]
fn a_journal_removed_cut_short_or_replaced_while_running_loses_nothing() {
    let frontend = Frontend::start(|_, _| created());
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(&frontend, "plugins: [Echo]", &echo("live", 400, 0.005)),
    );
    let journal = install.state_dir().join("spool.journal");
    let mut host = install.start();
    let step = |after: usize, fault: &dyn Fn()| {
        frontend.wait_until(WAIT, "records before the fault", |_| {
            frontend.tally("live", 400).delivered >= after
        });
        fault();
    };
    step(50, &|| std::fs::remove_file(&journal).unwrap());
    step(150, &|| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&journal)
            .unwrap()
            .set_len(0)
            .unwrap()
    });
    step(250, &|| {
        let forged = journal.with_extension("forged");
        std::fs::write(
            &forged,
            "2\t0\tforged\t{\"id\":\"forged\",\"number\":\"forged\"}\n",
        )
        .unwrap();
        std::fs::rename(&forged, &journal).unwrap();
    });
    frontend.wait_delivered(&host, "live", 400, WAIT);
    let log = host.terminate();
    // A restart applies the journal written afresh: nothing again, nothing of the stranger's.
    install.write_config(&config(&frontend, "plugins: []", ""));
    let mut host = install.start();
    host.wait_for_log("delivering records", 1, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    host.terminate();
    assert_eq!(
        frontend.tally("live", 400),
        Tally {
            delivered: 400,
            duplicated: 0,
            lost: vec![]
        }
    );
    assert_only_whole_records(&frontend, &["live"]);
    for said in [
        "was removed while the host ran",
        "was cut short",
        "was replaced by another file",
    ] {
        assert!(log.contains(said), "`{said}` not logged:\n{log}");
    }
    assert_eq!(
        files_starting(&install.state_dir(), "spool.journal.foreign-"),
        1
    );
}

/// Runs Echo for `count` records against a frontend that refuses them all, and stops the
/// host cleanly with every record in the spool; then `fault` changes the state folder, and
/// a second run with no plugins must deliver all of them once.
fn restart_after(count: u32, fault: impl FnOnce(&Path, &[u8]), said: &str) {
    let frontend = Frontend::start(|_, _| status(503));
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(&frontend, "plugins: [Echo]", &echo("stopped", count, 0.01)),
    );
    let mut host = install.start();
    // A backup taken while the first records were in.
    host.wait_for_log("delivery failed", 1, WAIT);
    let backup = std::fs::read(install.state_dir().join("spool.journal")).unwrap();
    frontend.wait_until(WAIT, "all records tried", |_| {
        install
            .spool(0)
            .is_some_and(|s| s.pending == u64::from(count))
    });
    host.terminate();
    fault(&install.state_dir(), &backup);
    frontend.answer(|_, _| created());
    install.write_config(&config(&frontend, "plugins: []", ""));
    let mut host = install.start();
    frontend.wait_delivered(&host, "stopped", count as u64, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let log = host.terminate();
    assert_eq!(
        frontend.tally("stopped", count as u64),
        Tally {
            delivered: count as usize,
            duplicated: 0,
            lost: vec![]
        },
        "{log}"
    );
    assert!(log.contains(said), "`{said}` not logged:\n{log}");
}

#[test]
fn a_journal_restored_from_a_backup_while_stopped_is_not_applied_twice() {
    restart_after(
        60,
        |state, backup| std::fs::write(state.join("spool.journal"), backup).unwrap(),
        "shorter",
    );
}

#[test]
fn a_journal_removed_after_a_clean_stop_loses_nothing() {
    restart_after(
        40,
        |state, _| std::fs::remove_file(state.join("spool.journal")).unwrap(),
        "the last stop was clean, so nothing is lost",
    );
}

#[test]
fn a_corrupt_database_is_moved_aside_and_rebuilt_from_the_journal() {
    restart_after(
        40,
        |state, _| {
            let path = state.join("spool.sqlite3");
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[..16].copy_from_slice(b"scribbled over!!");
            std::fs::write(&path, bytes).unwrap();
            for wal in ["spool.sqlite3-wal", "spool.sqlite3-shm"] {
                let _ = std::fs::remove_file(state.join(wal));
            }
        },
        "is corrupt",
    );
}

#[test]
fn a_journal_removed_after_a_crash_is_reported() {
    let frontend = Frontend::start(|_, _| status(503));
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(&frontend, "plugins: [Echo]", &echo("crash", 0, 0.01)),
    );
    let mut host = install.start();
    host.wait_for_log("delivery failed", 1, WAIT);
    host.signal(Signal::SIGKILL);
    host.wait_exit(WAIT);
    std::fs::remove_file(install.state_dir().join("spool.journal")).unwrap();
    install.write_config(&config(&frontend, "plugins: []", ""));
    let mut host = install.start();
    host.wait_for_log("missing after an unclean stop", 1, WAIT);
    host.wait_for_log("delivering records", 1, WAIT);
    host.terminate();
}

#[test]
fn a_flood_with_the_frontend_down_stays_bounded_and_stops_promptly() {
    let frontend = Frontend::start(|_, _| status(503));
    let cap = 50_000;
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            &format!(
                "plugins: [Echo], metrics_addr: '127.0.0.1:0', spool_max_records: {cap}, \
                 shutdown_timeout: 2, request_timeout: 2"
            ),
            &echo("flood", 0, 0.0),
        ),
    );
    let state = install.state_dir();
    let size = |name: &str| std::fs::metadata(state.join(name)).map_or(0, |m| m.len());
    let mut host = install.start();
    let base = listener_url(&mut host);
    let (mut journal_max, mut wal_max) = (0, 0);
    let mut pending = 0.0;
    let start = Instant::now();
    // Flood until the cap has been reached and worked at for a while.
    while start.elapsed() < Duration::from_secs(8) || pending < cap as f64 {
        assert!(start.elapsed() < WAIT, "the spool never filled: {pending}");
        let (_, metrics) = get(&base, "/metrics", Duration::from_secs(10))
            .expect("/metrics answers under a flood");
        pending = metrics
            .lines()
            .find_map(|l| l.strip_prefix("calllogger_spool_pending_records "))
            .map_or(0.0, |v| v.trim().parse().unwrap());
        journal_max = journal_max.max(size("spool.journal"));
        wal_max = wal_max.max(size("spool.sqlite3-wal"));
        std::thread::sleep(Duration::from_millis(200));
    }
    // The figure counts the journal's tail not yet in the queue too (at most 1 MiB of lines).
    assert!(pending <= (cap + 10_000) as f64, "capped: {pending}");
    assert!(
        journal_max <= 8 << 20,
        "the journal stays small: {journal_max} bytes"
    );
    // The spool's limit is 32 MiB: past it, its commits checkpoint until the WAL starts over.
    assert!(
        wal_max <= 40 << 20,
        "the WAL stays bounded: {wal_max} bytes"
    );
    host.signal(Signal::SIGTERM);
    // shutdown_timeout + request_timeout, and a wide margin for a loaded machine.
    let (status, took) = host.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", host.log());
    let log = host.log();
    assert!(
        log.matches("spool full").count() <= 2,
        "eviction is not logged per batch:\n{log}"
    );
    // A restart on that backlog runs its plugin and answers /health at once.
    frontend.answer(|_, _| created());
    install.write_config(&config(
        &frontend,
        &format!("plugins: [Echo], metrics_addr: '127.0.0.1:0', spool_max_records: {cap}"),
        &echo("after", 1, 0.01),
    ));
    let started = Instant::now();
    let mut host = install.start();
    let base = listener_url(&mut host);
    get(&base, "/health", Duration::from_secs(10)).expect("/health answers at once");
    frontend.wait_until(WAIT, "the new run's record", |_| {
        frontend.tally("after", 1).delivered == 1
    });
    let restart = started.elapsed();
    host.terminate();
    eprintln!("flood: stop took {took:?}, restart to first delivery {restart:?}, journal ≤ {journal_max} B, WAL ≤ {wal_max} B");
    let delivered: Vec<Value> = frontend.delivered();
    assert!(delivered.iter().all(|r| r["id"].is_string()));
}

#[test]
fn what_a_crash_left_in_the_journal_is_counted_and_delivered() {
    let frontend = Frontend::start(|_, _| status(503));
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(&frontend, "plugins: [Echo]", &echo("left", 10, 0.01)),
    );
    let mut host = install.start();
    frontend.wait_until(WAIT, "every record tried", |_| {
        install.spool(0).is_some_and(|s| s.pending == 10)
    });
    host.terminate();
    // A line pushed just before a crash: in the journal, not yet in the queue.
    let line = "2\t0\tleft-11\t{\"id\":\"left-11\",\"number\":\"left\",\"line\":11}\n";
    std::fs::OpenOptions::new()
        .append(true)
        .open(install.state_dir().join("spool.journal"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
        .unwrap();
    let spool = install.spool(0).expect("a spool");
    assert_eq!((spool.pending, spool.unapplied), (11, 1), "{spool:?}");
    // How `calllogger spool` says it.
    let (ok, out, err) = install.run_cli(&["spool"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("pending: 11\n  of which in the journal, not yet in the queue: 1\n"),
        "{out}"
    );
    frontend.answer(|_, _| created());
    install.write_config(&config(&frontend, "plugins: []", ""));
    let mut host = install.start();
    frontend.wait_delivered(&host, "left", 11, WAIT);
    let log = host.terminate();
    assert!(log.contains("recovered 1 records"), "{log}");
    assert_eq!(
        frontend.tally("left", 11),
        Tally {
            delivered: 11,
            duplicated: 0,
            lost: vec![]
        }
    );
}
