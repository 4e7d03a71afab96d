//! Shutdown on signals, and restarts after failures, with the real host and real plugins.

use std::time::{Duration, Instant};

use crate::HOST;
use calllogger_test_kit::*;
use nix::sys::signal::Signal;

#[test]
fn sigterm_stops_every_instance_even_mid_wait_and_exits_zero() {
    // MockCalls sleeps an hour between calls: only an early wake lets it stop in time.
    let install = Install::new(
        HOST,
        &[MOCK_CALLS, TEST_PLUGINS],
        "settings: {plugins: [MockCalls, Echo, Echo@b], shutdown_timeout: 20}\nMockCalls: {sleep: 3600}\nEcho: {label: a, interval: 3600}\nEcho@b: {label: b}\n",
    );
    let mut host = install.start();
    let mut seen = std::collections::BTreeSet::new();
    host.records_until(Duration::from_secs(20), |r| {
        seen.insert(r["number"].as_str().unwrap_or("").to_owned());
        seen.contains("a") && seen.contains("b") && seen.len() >= 3
    });
    let sent = Instant::now();
    host.signal(Signal::SIGTERM);
    let (status, _) = host.wait_exit(Duration::from_secs(15));
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status:?}\n{}", host.log());
    assert!(
        took < Duration::from_secs(10),
        "stopping took {took:?}, the waits must wake early"
    );
    let log = host.log();
    for instance in ["MockCalls", "Echo", "Echo@b"] {
        assert!(
            log.contains(&format!("stopped instance={instance}\n")),
            "{instance} did not stop:\n{log}"
        );
    }
    assert!(!log.contains("left behind"), "{log}");
}

#[test]
fn sigint_works_like_sigterm() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo]}\nEcho: {label: a}\n",
    );
    let mut host = install.start();
    host.records_until(Duration::from_secs(20), |_| true);
    host.signal(Signal::SIGINT);
    assert!(
        host.wait_exit(Duration::from_secs(10)).0.success(),
        "{}",
        host.log()
    );
}

#[test]
fn a_second_signal_while_stopping_exits_at_once_but_the_same_one_sent_twice_does_not() {
    // Stubborn ignores stop: a graceful stop waits out `shutdown_timeout`.
    let config = "settings: {plugins: [Stubborn], shutdown_timeout: 30}\n";
    let install = Install::new(HOST, &[TEST_PLUGINS], config);
    let mut host = install.start();
    host.records_until(Duration::from_secs(20), |_| true);
    host.signal(Signal::SIGTERM);
    host.wait_for_log("SIGTERM received", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(600));
    let sent = Instant::now();
    host.signal(Signal::SIGINT);
    let (status, _) = host.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(130), "{}", host.log());
    assert!(sent.elapsed() < Duration::from_secs(10), "{}", host.log());
    assert!(host.log().contains("second signal: exiting now"));

    // As `timeout` does: the command, then its process group, within a millisecond. The
    // graceful stop takes its `shutdown_timeout`, 1 s, so the second signal finds it stopping.
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Stubborn, Echo], shutdown_timeout: 1}\nEcho: {label: a}\n",
    );
    let mut host = install.start();
    host.records_until(Duration::from_secs(20), |_| true);
    host.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(20));
    host.signal(Signal::SIGTERM);
    let (status, _) = host.wait_exit(Duration::from_secs(15));
    let log = host.log();
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert!(!log.contains("exiting now"), "{log}");
    assert!(log.contains("stopped instance=Echo\n"), "{log}");
    assert!(log.contains("left behind"), "{log}");
}

#[test]
fn an_instance_that_ignores_stop_does_not_hold_the_exit_past_the_deadline() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Stubborn, Echo], shutdown_timeout: 1}\nEcho: {label: a}\n",
    );
    let mut host = install.start();
    let mut seen = (false, false);
    host.records_until(Duration::from_secs(20), |r| {
        match r["number"].as_str() {
            Some("stubborn") => seen.0 = true,
            _ => seen.1 = true,
        }
        seen == (true, true)
    });
    let sent = Instant::now();
    host.signal(Signal::SIGTERM);
    let (status, _) = host.wait_exit(Duration::from_secs(15));
    let took = sent.elapsed();
    assert!(status.success(), "{}", host.log());
    assert!(
        took >= Duration::from_millis(900),
        "the host waited for the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "and not much longer: {took:?}"
    );
    let log = host.log();
    let line = log
        .lines()
        .find(|l| l.contains("left behind"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("Stubborn") && !line.contains("Echo"),
        "{line}"
    );
}

#[test]
fn failing_and_panicking_instances_restart_with_growing_waits_while_others_run_on() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Flaky, Echo], timeout: 0.2, decay: 2, max_timeout: 30}\nFlaky: {mode: panic}\nEcho: {label: steady, interval: 0.05}\n",
    );
    let mut host = install.start();
    let mut runs = Vec::new();
    let mut steady_between = 0;
    host.records_until(Duration::from_secs(30), |r| {
        if r["number"] == "flaky" {
            runs.push(r["line"].as_u64().unwrap());
        } else if !runs.is_empty() {
            steady_between += 1;
        }
        runs.len() == 4
    });
    assert_eq!(runs, [1, 2, 3, 4], "each restart is a fresh run");
    // The waits as the host kept them: from each "restarting in" to the next start, both
    // logged by the instance's own thread, before and after its wait. (When the records
    // reached stdout says less: a record delivered late shortens the gap after it.)
    host.wait_for_log(": started instance=Flaky", 4, Duration::from_secs(30));
    let log = host.log();
    let logged_at = |line: &str| {
        line.split_whitespace()
            .next()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(|| panic!("a log line without its time: {line}"))
    };
    let flaky = |what: &str| -> Vec<jiff::Timestamp> {
        log.lines()
            .filter(|l| l.contains("instance=Flaky") && l.contains(what))
            .map(logged_at)
            .collect()
    };
    let (restarting, started) = (flaky("restarting in"), flaky(": started"));
    let gaps: Vec<f64> = restarting
        .iter()
        .zip(started.iter().skip(1))
        .map(|(wait, start)| start.duration_since(*wait).as_secs_f64())
        .collect();
    assert!(gaps.len() >= 3, "three restarts logged:\n{log}");
    for (gap, wait) in gaps.iter().zip([0.2, 0.4, 0.8]) {
        assert!(
            *gap >= wait * 0.95,
            "restart waits grow 0.2, 0.4, 0.8 s: gaps {gaps:?}"
        );
    }
    assert!(
        steady_between >= 10,
        "Echo kept pushing while Flaky failed ({steady_between} records)"
    );
    assert!(
        log.contains("panicked at") && log.contains("flaky run 1 panics on purpose"),
        "{log}"
    );
    assert!(
        log.contains("lib.rs:"),
        "the panic's location is logged: {log}"
    );
    host.terminate();
}

#[test]
fn an_instance_returning_errors_is_restarted_too() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Flaky@e], timeout: 0.1, decay: 1.5, max_timeout: 30}\nFlaky@e: {mode: error}\n",
    );
    let mut host = install.start();
    let records = host.records_until(Duration::from_secs(30), |r| r["line"] == 3);
    assert!(records.iter().all(|r| r.1["number"] == "flaky"));
    let log = host.log();
    assert!(
        log.contains("flaky run 2 fails on purpose; restarting in 0.1"),
        "{log}"
    );
    host.terminate();
}
