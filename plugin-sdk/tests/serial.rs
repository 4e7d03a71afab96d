//! The line base on a real pseudo-terminal, with the in-process test host.

use std::time::{Duration, Instant};

use calllogger_plugin_sdk::prelude::*;
use calllogger_plugin_sdk::{ErrorKind, PushErrorKind, TimeoutSettings};
use calllogger_plugin_test::feed::Pty;
use calllogger_plugin_test::{Runner, Running, TestHost};

/// Lines `number,ext`, or several joined by `;`; `HB` is a heartbeat (no record, logged);
/// `#` lines fail validation; a line without a comma fails parsing.
struct Csv;

impl LinePlugin for Csv {
    type Settings = NoSettings;
    const DESCRIPTION: &'static str = "test: number,ext lines";

    fn new(_: NoSettings) -> Result<Self, Error> {
        Ok(Self)
    }

    fn validate(&mut self, text: &str) -> Result<(), Error> {
        if text.starts_with('#') {
            return Err("comment".into());
        }
        Ok(())
    }

    fn parse(&mut self, text: &str, ctx: &Context) -> Result<Records, Error> {
        if text == "HB" {
            ctx.debug("heartbeat");
            return Ok(Records::none());
        }
        text.split(';')
            .map(|call| {
                let (number, ext) = call.split_once(',').ok_or("no comma")?;
                Ok(Record::new(CallType::RECEIVED).number(number).ext(ext))
            })
            .collect::<Result<Vec<_>, Error>>()
            .map(Records::from)
    }
}

export_plugins!(serial Csv);

type Exported = calllogger_plugin_sdk::lines::Lines<Csv>;

/// A pty whose slave path the plugin opens; the test writes to the master.
fn pty() -> (Pty, String) {
    let pty = Pty::new().expect("a pseudo-terminal");
    let path = pty.path().to_owned();
    (pty, path)
}

/// The plugin on its own thread, built through the export glue, as the host runs it.
fn start(yaml: &str, timeouts: TimeoutSettings) -> Running {
    Runner::new()
        .timeouts(timeouts)
        .start::<Exported>(yaml)
        .unwrap_or_else(|e| panic!("{e}"))
}

const WAIT: Duration = Duration::from_secs(20);

/// Waits until `pred` holds of the host.
fn wait_for(run: &Running, what: &str, pred: impl Fn(&TestHost) -> bool) {
    let until = Instant::now() + WAIT;
    while !pred(run) {
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}; logs: {:?}",
            run.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the run as the host does; how long that took.
fn stop(run: &mut Running) -> Duration {
    let start = Instant::now();
    run.stop().unwrap();
    start.elapsed()
}

fn fast() -> TimeoutSettings {
    TimeoutSettings {
        timeout: 0.1,
        decay: 2.0,
        max_timeout: 1.0,
    }
}

#[test]
fn lines_become_records_in_order_and_rejects_are_counted_per_stage() {
    let (mut master, path) = pty();
    let mut run = start(&format!("port: {path}\nrate: 19200"), fast());
    run.wait_for_log("reading", WAIT);
    // Control bytes and CR are dropped; a line may arrive in pieces; blank lines are skipped.
    master
        .send(b"\x10\x02\x10\x03\x13\x11111,100\r\n222,")
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    master
        .send(b"101\r\n\r\n# comment\r\nno comma\r\nbad \xff byte\r\n333,102\r\nHB\r\n444,103;555,104\r\n")
        .unwrap();
    wait_for(&run, "five records", |h| h.records().len() == 5);
    stop(&mut run);
    let host = run.host();
    let numbers: Vec<String> = host
        .records()
        .iter()
        .map(|r| r.number.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(numbers, ["111", "222", "333", "444", "555"]);
    let logs = host.logs();
    let rejected: Vec<&String> = logs
        .iter()
        .filter(|(l, _)| *l == LogLevel::Warn)
        .map(|(_, m)| m)
        .collect();
    assert!(
        rejected
            .iter()
            .any(|m| m.contains("rejected by validate: comment")),
        "{logs:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|m| m.contains("rejected by parse: no comma")),
        "{logs:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|m| m.contains("rejected by decode") && m.contains("\\xff")),
        "{logs:?}"
    );
    let summary = &logs.last().unwrap().1;
    assert_eq!(
        summary,
        "8 lines read, 5 records; skipped: 0 too long, 1 undecodable, 1 invalid, 1 unparsable"
    );
    assert!(logs
        .iter()
        .any(|(l, m)| *l == LogLevel::Debug && m == "heartbeat"));
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_stream_without_newlines_is_skipped_with_bounded_memory() {
    let (mut master, path) = pty();
    let mut run = start(&format!("port: {path}\nmax_line_length: 200"), fast());
    run.wait_for_log("reading", WAIT);
    let before = peak_rss_kib();
    let chunk = vec![b'7'; 64 * 1024];
    for _ in 0..160 {
        master.send(&chunk).unwrap(); // 10 MiB without a newline
    }
    master.send(b"\r\n444,104\r\n").unwrap();
    wait_for(&run, "the line after the flood", |h| h.records().len() == 1);
    let grown = peak_rss_kib().saturating_sub(before);
    stop(&mut run);
    let host = run.host();
    assert_eq!(host.records()[0].number.as_ref().unwrap().as_str(), "444");
    assert!(
        grown < 4 * 1024,
        "peak RSS grew {grown} KiB while reading 10 MiB without a newline"
    );
    assert!(
        host.logs().last().unwrap().1.contains("1 too long"),
        "{:?}",
        host.logs()
    );
}

#[test]
fn stop_wakes_a_read_on_a_silent_port_promptly() {
    let (_master, path) = pty();
    let mut run = start(&format!("port: {path}"), fast());
    run.wait_for_log("reading", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let took = stop(&mut run);
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
}

#[test]
fn a_missing_port_is_retried_with_growing_waits() {
    let mut run = start("port: /dev/calllogger-no-such-port", fast());
    wait_for(&run, "four attempts", |h| {
        h.logs()
            .iter()
            .filter(|(_, m)| m.contains("cannot open"))
            .count()
            >= 4
    });
    let took = stop(&mut run);
    let host = run.host();
    assert!(
        took < Duration::from_secs(2),
        "a retry wait wakes on stop: {took:?}"
    );
    let waits: Vec<String> = host
        .logs()
        .iter()
        .filter_map(|(_, m)| m.split("retrying in ").nth(1).map(str::to_owned))
        .take(4)
        .collect();
    assert_eq!(
        waits,
        ["0.1 s", "0.2 s", "0.4 s", "0.8 s"],
        "{:?}",
        host.logs()
    );
}

#[test]
fn port_settings_are_checked_and_named() {
    for (yaml, needle) in [
        ("rate: 9600", "missing key `port`"),
        ("port: /dev/x\ndata_bits: 9", "data_bits must be 5 to 8"),
        ("port: /dev/x\nstop_bits: 3", "stop_bits must be 1 or 2"),
        ("port: /dev/x\nparity: sometimes", "settings key `parity`"),
        ("port: /dev/x\nbaud: 9600", "`baud`"),
    ] {
        let err = Runner::new()
            .start::<Exported>(yaml)
            .err()
            .unwrap_or_else(|| panic!("{yaml} must be refused"));
        assert_eq!(err.kind, ErrorKind::Config, "{yaml}: {err}");
        let err = err.message;
        assert!(err.contains("Csv") && err.contains(needle), "{yaml}: {err}");
    }
}

#[test]
fn a_line_whose_push_is_refused_is_pushed_again_not_lost() {
    let (mut master, path) = pty();
    let mut run = start(&format!("port: {path}"), fast());
    run.wait_for_log("reading", WAIT);
    run.refuse_pushes(Some("the disk is full"));
    master.send(b"111,100\r\n222,101\r\n").unwrap();
    wait_for(&run, "the refusal to reach the base", |h| {
        h.logs()
            .iter()
            .any(|(_, m)| m.contains("record not stored: the disk is full"))
    });
    assert!(run.records().is_empty());
    run.refuse_pushes(None);
    wait_for(&run, "both records", |h| h.records().len() == 2);
    stop(&mut run);
    let host = run.host();
    let numbers: Vec<_> = host
        .records()
        .iter()
        .map(|r| r.get_number().unwrap().to_owned())
        .collect();
    assert_eq!(numbers, ["111", "222"]);
}

#[test]
fn a_push_refused_until_the_stop_ends_the_loop() {
    let (mut master, path) = pty();
    let mut run = start(&format!("port: {path}"), fast());
    run.wait_for_log("reading", WAIT);
    run.refuse_pushes(Some("no spool"));
    master.send(b"111,100\r\n").unwrap();
    wait_for(&run, "the refusal", |h| {
        h.logs().iter().any(|(_, m)| m.contains("no spool"))
    });
    stop(&mut run);
    let host = run.host();
    assert!(host.records().is_empty());
    // The Stopping kind is what the real host returns; the test host's is Unavailable.
    let e = host
        .context()
        .push(Record::new(CallType::RECEIVED))
        .unwrap_err();
    assert_eq!(e.kind, PushErrorKind::Unavailable);
}
