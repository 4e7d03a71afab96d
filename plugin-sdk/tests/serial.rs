//! The line base on a real pseudo-terminal, with the in-process test host.

use std::io::Write;
use std::time::{Duration, Instant};

use calllogger_plugin_sdk::prelude::*;
use calllogger_plugin_sdk::testing::TestHost;
use calllogger_plugin_sdk::{ErrorKind, PushErrorKind, TimeoutSettings};
use serialport::{SerialPort, TTYPort};

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

/// A pty whose slave path the plugin opens; the test writes to the master.
fn pty() -> (TTYPort, String) {
    let (master, slave) = TTYPort::pair().expect("a pseudo-terminal");
    let path = slave.name().expect("the slave's path");
    drop(slave); // the plugin opens it exclusively
    (master, path)
}

fn instance(yaml: &str) -> calllogger_plugin_sdk::__private::InstanceBox {
    let module = {
        // Through the same glue the host uses: the exported constructor.
        calllogger_plugin_sdk::__private::construct::<calllogger_plugin_sdk::lines::Lines<Csv>>(
            "Csv", yaml,
        )
    };
    module.into_result().unwrap_or_else(|e| panic!("{e}"))
}

struct Running {
    host: TestHost,
    hook: calllogger_plugin_abi::StopHookBox,
    thread: std::thread::JoinHandle<()>,
}

fn start(yaml: &str, timeouts: TimeoutSettings) -> Running {
    let host = TestHost::with_timeouts(timeouts);
    let mut instance = instance(yaml);
    // Taken before `run`, as the host does: its `stop` is what wakes the base.
    let hook = instance.stop_hook();
    let handle = host.handle();
    let thread = std::thread::spawn(move || {
        instance.run(handle).into_result().unwrap();
    });
    Running { host, hook, thread }
}

impl Running {
    fn wait_for(&self, what: &str, pred: impl Fn(&TestHost) -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !pred(&self.host) {
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; logs: {:?}",
                self.host.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(self) -> (TestHost, Duration) {
        let start = Instant::now();
        self.host.stop();
        self.hook.stop();
        self.thread.join().unwrap();
        (self.host, start.elapsed())
    }
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
    let run = start(&format!("port: {path}\nrate: 19200"), fast());
    run.wait_for("the port to open", |h| {
        h.logs().iter().any(|(_, m)| m.contains("reading"))
    });
    // Control bytes and CR are dropped; a line may arrive in pieces; blank lines are skipped.
    master
        .write_all(b"\x10\x02\x10\x03\x13\x11111,100\r\n222,")
        .unwrap();
    master.flush().unwrap();
    std::thread::sleep(Duration::from_millis(150));
    master
        .write_all(b"101\r\n\r\n# comment\r\nno comma\r\nbad \xff byte\r\n333,102\r\nHB\r\n444,103;555,104\r\n")
        .unwrap();
    run.wait_for("five records", |h| h.records().len() == 5);
    let (host, _) = run.stop();
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
    assert_eq!(
        host.rejected().values().sum::<u64>(),
        3,
        "a heartbeat is no reject"
    );
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_stream_without_newlines_is_skipped_with_bounded_memory() {
    let (mut master, path) = pty();
    let run = start(&format!("port: {path}\nmax_line_length: 200"), fast());
    run.wait_for("the port to open", |h| {
        h.logs().iter().any(|(_, m)| m.contains("reading"))
    });
    let before = peak_rss_kib();
    let chunk = vec![b'7'; 64 * 1024];
    for _ in 0..160 {
        master.write_all(&chunk).unwrap(); // 10 MiB without a newline
    }
    master.write_all(b"\r\n444,104\r\n").unwrap();
    run.wait_for("the line after the flood", |h| h.records().len() == 1);
    let grown = peak_rss_kib().saturating_sub(before);
    let (host, _) = run.stop();
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
    let run = start(&format!("port: {path}"), fast());
    run.wait_for("the port to open", |h| {
        h.logs().iter().any(|(_, m)| m.contains("reading"))
    });
    std::thread::sleep(Duration::from_millis(300));
    let (_, took) = run.stop();
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
}

#[test]
fn a_missing_port_is_retried_with_growing_waits() {
    let run = start("port: /dev/calllogger-no-such-port", fast());
    run.wait_for("four attempts", |h| {
        h.logs()
            .iter()
            .filter(|(_, m)| m.contains("cannot open"))
            .count()
            >= 4
    });
    let (host, took) = run.stop();
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
        let err = calllogger_plugin_sdk::__private::construct::<
            calllogger_plugin_sdk::lines::Lines<Csv>,
        >("Csv", yaml)
        .into_result()
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
    let run = start(&format!("port: {path}"), fast());
    run.wait_for("the port to open", |h| {
        h.logs().iter().any(|(_, m)| m.contains("reading"))
    });
    run.host.refuse_pushes(Some("the disk is full"));
    master.write_all(b"111,100\r\n222,101\r\n").unwrap();
    master.flush().unwrap();
    run.wait_for("the refusal to reach the base", |h| {
        h.logs()
            .iter()
            .any(|(_, m)| m.contains("record not stored: the disk is full"))
    });
    assert!(run.host.records().is_empty());
    run.host.refuse_pushes(None);
    run.wait_for("both records", |h| h.records().len() == 2);
    let (host, _) = run.stop();
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
    let run = start(&format!("port: {path}"), fast());
    run.wait_for("the port to open", |h| {
        h.logs().iter().any(|(_, m)| m.contains("reading"))
    });
    run.host.refuse_pushes(Some("no spool"));
    master.write_all(b"111,100\r\n").unwrap();
    master.flush().unwrap();
    run.wait_for("the refusal", |h| {
        h.logs().iter().any(|(_, m)| m.contains("no spool"))
    });
    let (host, _) = run.stop();
    assert!(host.records().is_empty());
    // The Stopping kind is what the real host returns; the test host's is Unavailable.
    let e = host
        .context()
        .push(Record::new(CallType::RECEIVED))
        .unwrap_err();
    assert_eq!(e.kind, PushErrorKind::Unavailable);
}
