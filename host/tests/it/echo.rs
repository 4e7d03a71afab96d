//! The stdout echo is a sink like the frontend: it follows the spool from its own durable
//! cursor, so it prints what reached the spool, each record once, even across a stop.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::process::Stdio;
use std::time::Duration;

use crate::HOST;
use calllogger_test_kit::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How often each record id was printed.
fn printed(records: impl IntoIterator<Item = Value>) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for record in records {
        let id = record["id"]
            .as_str()
            .expect("every record has an id")
            .to_owned();
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

/// Every record id in the installation's spool (no frontend consumes it: it keeps them all).
fn spooled(install: &Install) -> BTreeSet<String> {
    let spool = install.spool(100_000).expect("records were pushed");
    assert_eq!(spool.unapplied, 0, "a clean stop applies the journal");
    spool
        .newest
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Pushed (in the spool), printed, duplicated, lost: the echo's tally must be exact.
fn assert_each_printed_once(pushed: &BTreeSet<String>, printed: &BTreeMap<String, usize>) {
    let duplicated: Vec<_> = printed.iter().filter(|(_, n)| **n > 1).collect();
    let lost: Vec<_> = pushed
        .iter()
        .filter(|id| !printed.contains_key(*id))
        .collect();
    let stray: Vec<_> = printed.keys().filter(|id| !pushed.contains(*id)).collect();
    assert!(
        duplicated.is_empty() && lost.is_empty() && stray.is_empty(),
        "pushed {}, printed {}; duplicated {duplicated:?}, lost {} (first {:?}), not in the \
         spool {stray:?}",
        pushed.len(),
        printed.len(),
        lost.len(),
        lost.first()
    );
}

#[test]
fn at_sigterm_the_echo_prints_everything_the_spool_took_each_record_once() {
    const PUSHED: u64 = 20_000;
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &format!(
            "settings: {{plugins: [Echo]}}\nEcho: {{label: flood, count: {PUSHED}, interval: 0}}\n"
        ),
    );
    // Nobody reads stdout until the signal: the pipe fills and the echo falls behind the
    // spool, so what it prints after SIGTERM is what it drains.
    let mut child = install
        .command(&["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the host");
    let spooled_all = poll(Duration::from_secs(60), || {
        install.spool(0).filter(|s| s.pending == PUSHED)
    });
    let mut stdout = child.stdout.take().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let mut text = String::new();
    stdout.read_to_string(&mut text).unwrap();
    let status = child.wait().unwrap();
    assert!(
        spooled_all.is_some(),
        "the spool never held all {PUSHED} records"
    );
    assert!(status.success(), "exit status {status}");
    let seen = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")));
    let pushed = spooled(&install);
    assert_eq!(pushed.len() as u64, PUSHED);
    assert_each_printed_once(&pushed, &printed(seen));
}

#[test]
fn after_a_restart_the_echo_prints_only_what_it_had_not_printed() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo]}\nEcho: {label: a, count: 5, interval: 0}\n",
    );
    let mut first_run = BTreeSet::new();
    for run in 1..=2 {
        let mut host = install.start();
        let mut seen: Vec<Value> = host
            .records_until(Duration::from_secs(30), |r| r["line"] == 5)
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        host.terminate();
        seen.extend(host.remaining_records());
        let printed = printed(seen);
        if run == 1 {
            first_run = printed.keys().cloned().collect();
            assert_eq!(first_run.len(), 5, "{printed:?}");
            continue;
        }
        // The second run's Echo pushes five new records (new ids): those, and only those.
        let pushed = spooled(&install);
        assert_eq!(pushed.len(), 10, "both runs' records stay in the spool");
        let new: BTreeSet<String> = pushed.difference(&first_run).cloned().collect();
        assert_each_printed_once(&new, &printed);
    }
}
