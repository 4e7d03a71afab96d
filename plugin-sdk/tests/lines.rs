//! Line sources through real parts: a pseudo-terminal, loopback TCP, real files rotated the
//! way logrotate does it.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use calllogger_plugin_sdk::lines::{Event, LineSettings, LineSource, Stopper};
use calllogger_plugin_sdk::parse_settings;
use serialport::{SerialPort, TTYPort};

/// A correctness bound, not a benchmark: the machine is shared and noisy.
const PROMPT: Duration = Duration::from_secs(2);

type Log = Arc<Mutex<Vec<String>>>;

fn settings(yaml: &str) -> LineSettings {
    parse_settings("Test", yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// A source with a short fixed retry wait whose events land in the returned log, stopped
/// by a [`watchdog`].
fn open(yaml: &str, stopper: &Stopper, state: Option<&Path>) -> (LineSource, Log) {
    watchdog(stopper);
    let log: Log = Arc::default();
    let events = log.clone();
    let source = LineSource::open(&settings(yaml), stopper, state, || {
        Duration::from_millis(20)
    })
    .unwrap()
    .on_event(move |e| {
        let text = match e {
            Event::Opened(what) => format!("opened {what}"),
            Event::Retrying { error, .. } => format!("retrying: {error}"),
            Event::Closed(what) => format!("closed {what}"),
            Event::Overlong { max, start } => format!("overlong {max} {}", start.escape_ascii()),
            Event::Unterminated(rest) => format!("unterminated {}", rest.escape_ascii()),
            other => format!("{other:?}"),
        };
        events.lock().unwrap().push(text);
    });
    (source, log)
}

/// Reads `n` lines (or until stopped) on a thread; gives the source back with them.
fn read(mut source: LineSource, n: usize) -> JoinHandle<(LineSource, Vec<String>)> {
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        while lines.len() < n {
            match source.next_line().unwrap() {
                Some(line) => lines.push(String::from_utf8_lossy(line).into_owned()),
                None => break,
            }
        }
        source.commit().unwrap();
        (source, lines)
    })
}

fn wait_for(what: &str, log: &Log, pred: impl Fn(&[String]) -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !pred(&log.lock().unwrap()) {
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}: {:?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops a reader blocked in `next_line` and checks it returns promptly with `None`.
fn stop_promptly(stopper: &Stopper, reader: JoinHandle<(LineSource, Vec<String>)>) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !reader.is_finished(),
        "the reader must be blocked before the stop"
    );
    let start = Instant::now();
    stopper.stop();
    let (_, lines) = reader.join().unwrap();
    assert!(
        start.elapsed() < PROMPT,
        "stopping took {:?}",
        start.elapsed()
    );
    lines
}

fn numbered(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("record {i:04}")).collect()
}

#[test]
fn serial_lines_from_a_pty_with_overlong_skipped_and_a_prompt_stop() {
    let (mut master, slave) = TTYPort::pair().expect("a pseudo-terminal");
    let path = slave.name().unwrap();
    drop(slave);
    let stopper = Stopper::new().unwrap();
    let (source, log) = open(
        &format!("port: {path}\nmax_line_length: 20"),
        &stopper,
        None,
    );
    let reader = read(source, 4);
    wait_for("the port to open", &log, |l| {
        l.iter().any(|e| e.starts_with("opened"))
    });
    master.write_all(b"first\r\n").unwrap();
    master.write_all(&[b'x'; 5000]).unwrap();
    master.write_all(b"\r\nsec").unwrap();
    master.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    master.write_all(b"ond\r\n\r\nthird\rfourth\r\n").unwrap();
    let (source, lines) = reader.join().unwrap();
    assert_eq!(
        lines,
        ["first", "second", "third", "fourth"],
        "CR, LF and CR LF end lines"
    );
    assert_eq!(source.counts().overlong, 1);
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|e| e == &format!("overlong 20 {}", "x".repeat(20))));
    // Silent port: a blocked read ends on stop.
    let reader = read(source, 1);
    assert!(stop_promptly(&stopper, reader).is_empty());
}

/// A Panasonic-like PBX: prompt, `SMDR`, password dialogue, then records; drops the first
/// connection after `first` records and sends the rest on the next one.
fn panasonic(listener: TcpListener, first: u32, total: u32) -> JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut logins = Vec::new();
        let mut next = 0;
        for connection in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"-").unwrap();
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            while !got.ends_with(b"SMDR\r\n") {
                stream.read_exact(&mut byte).unwrap();
                got.push(byte[0]);
            }
            stream.write_all(b"Enter Pass").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            stream.write_all(b"word:").unwrap();
            while !got.ends_with(b"PCCSMDR\r\n") {
                stream.read_exact(&mut byte).unwrap();
                got.push(byte[0]);
            }
            logins.push(got);
            let end = if connection == 0 { first } else { total };
            for line in numbered(next..end) {
                // Cut records in the middle, as real TCP reads do.
                let (a, b) = line.split_at(5);
                stream.write_all(a.as_bytes()).unwrap();
                stream.flush().unwrap();
                stream.write_all(format!("{b}\r\n").as_bytes()).unwrap();
            }
            next = end;
            if connection == 1 {
                // Keep the last connection open until the reader has everything.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        logins
    })
}

#[test]
fn tcp_client_logs_in_reconnects_and_loses_or_repeats_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let pbx = panasonic(listener, 40, 100);
    let stopper = Stopper::new().unwrap();
    let yaml = format!(
        "source: tcp-client\nconnect: {addr}\nkeepalive: 30\nlogin:\n  - send: \"SMDR\\r\\n\"\n  \
         - expect: 'Enter Password:'\n    send: \"PCCSMDR\\r\\n\""
    );
    let (source, log) = open(&yaml, &stopper, None);
    let (source, lines) = read(source, 100).join().unwrap();
    assert_eq!(lines, numbered(0..100), "every record once, in order");
    assert_eq!(source.counts().lines, 100);
    let logins = pbx.join().unwrap();
    assert_eq!(
        logins,
        [
            b"SMDR\r\nPCCSMDR\r\n".to_vec(),
            b"SMDR\r\nPCCSMDR\r\n".to_vec()
        ]
    );
    let log = log.lock().unwrap();
    let connects = log
        .iter()
        .filter(|e| e.starts_with("opened connected to"))
        .count();
    assert_eq!(connects, 2, "{log:?}");
    assert!(
        log.iter()
            .any(|e| e.starts_with(&format!("retrying: lost {addr}"))),
        "{log:?}"
    );
}

#[test]
fn tcp_client_gives_up_a_failed_login_and_an_idle_link_and_stops_promptly() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stopper = Stopper::new().unwrap();
    let yaml = format!(
        "source: tcp-client\nconnect: {addr}\nlogin_timeout: 1\nidle_timeout: 0.3\n\
         login: [{{expect: 'Password:', send: secret}}]"
    );
    let (source, log) = open(&yaml, &stopper, None);
    let reader = read(source, 1);
    // First connection: no prompt at all. Second: the prompt, then silence.
    let (_silent, _) = listener.accept().unwrap();
    wait_for("the login to time out", &log, |l| {
        l.iter()
            .any(|e| e.contains("failed at step 1: no \"Password:\" within 1 s"))
    });
    let (mut second, _) = listener.accept().unwrap();
    second.write_all(b"Password:").unwrap();
    let mut sent = [0u8; 6];
    second.read_exact(&mut sent).unwrap();
    assert_eq!(&sent, b"secret");
    wait_for("the idle timeout", &log, |l| {
        l.iter().any(|e| e.contains("idle_timeout"))
    });
    let (_third, _) = listener.accept().unwrap();
    // Blocked in the login wait of the third connection: stop wakes it.
    assert!(stop_promptly(&stopper, reader).is_empty());
}

#[test]
fn tcp_server_takes_lines_from_two_pbx_connections_at_once() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stopper = Stopper::new().unwrap();
    let yaml = format!("source: tcp-server\nbind: 127.0.0.1:{port}\nmax_line_length: 64");
    let (source, log) = open(&yaml, &stopper, None);
    let reader = read(source, 180);
    wait_for("the listener", &log, |l| {
        l.iter().any(|e| e.starts_with("opened listening"))
    });
    let pbxs: Vec<JoinHandle<()>> = ["a", "b"]
        .into_iter()
        .map(|name| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.write_all(b"\0\0").unwrap(); // NUL before the first record, as seen
                for i in 0..100 {
                    stream
                        .write_all(format!("{name} {i:03}").as_bytes())
                        .unwrap();
                    if i % 10 == 0 {
                        stream.write_all(&[b'z'; 100]).unwrap();
                    }
                    stream.write_all(b"\r\n").unwrap();
                }
                std::thread::sleep(Duration::from_millis(200));
            })
        })
        .collect();
    let (source, lines) = reader.join().unwrap();
    for pbx in pbxs {
        pbx.join().unwrap();
    }
    for name in ["a", "b"] {
        let from: Vec<&String> = lines
            .iter()
            .filter(|l| l.trim_start_matches('\0').starts_with(name))
            .collect();
        let expected: Vec<String> = (0..100)
            .filter(|i| i % 10 != 0)
            .map(|i| format!("{name} {i:03}"))
            .collect();
        assert_eq!(from.len(), 90, "{name}: {from:?}");
        let from: Vec<&str> = from.iter().map(|l| l.trim_start_matches('\0')).collect();
        assert_eq!(from, expected);
    }
    assert_eq!(source.counts().overlong, 20);
    // Two connections were open at the same time.
    let log = log.lock().unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| e.starts_with("opened connection from"))
            .count(),
        2,
        "{log:?}"
    );
}

#[test]
fn tcp_server_stops_promptly_while_no_pbx_is_connected() {
    let stopper = Stopper::new().unwrap();
    let (source, log) = open("source: tcp-server\nbind: 127.0.0.1:0", &stopper, None);
    let reader = read(source, 1);
    wait_for("the listener", &log, |l| {
        l.iter().any(|e| e.starts_with("opened listening"))
    });
    assert!(stop_promptly(&stopper, reader).is_empty());
}

fn append(path: &Path, lines: &[String]) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for line in lines {
        file.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
}

/// Stops `stopper` after 20 s, so that a test waiting for lines that never come fails
/// instead of hanging.
fn watchdog(stopper: &Stopper) {
    let stopper = stopper.clone();
    std::thread::spawn(move || {
        if stopper.sleep(Duration::from_secs(20)) {
            stopper.stop();
        }
    });
}

/// Reads `n` lines on this thread.
fn take(source: &mut LineSource, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    while lines.len() < n {
        let Some(line) = source.next_line().unwrap() else {
            panic!("stopped by the watchdog after {lines:?}");
        };
        lines.push(String::from_utf8_lossy(line).into_owned());
    }
    lines
}

#[test]
fn file_tail_survives_rename_copytruncate_and_restarts_without_loss_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let csv = dir.path().join("Master.csv");
    let yaml = format!("source: file\npath: {}", csv.display());
    append(&csv, &numbered(0..10));
    let mut seen = Vec::new();

    let stopper = Stopper::new().unwrap();
    let (mut source, _) = open(&yaml, &stopper, Some(state.path()));
    seen.extend(take(&mut source, 10));
    // A line arrives in two writes: it is given only once complete.
    let mut file = OpenOptions::new().append(true).open(&csv).unwrap();
    file.write_all(b"record 00").unwrap();
    file.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    file.write_all(b"10\n").unwrap();
    drop(file);
    seen.extend(take(&mut source, 1));
    // logrotate `create`: the last lines go to the file just before it is renamed.
    append(&csv, &numbered(11..15));
    fs::rename(&csv, dir.path().join("Master.csv.1")).unwrap();
    append(&csv, &numbered(15..20));
    seen.extend(take(&mut source, 9));
    // A restart in the middle: lines 20..25 written, 3 read and consumed, then the reader ends.
    append(&csv, &numbered(20..25));
    seen.extend(take(&mut source, 3));
    source.commit().unwrap();
    drop(source);
    // While it is down the file is rotated again.
    fs::rename(&csv, dir.path().join("Master.csv.2")).unwrap();
    append(&csv, &numbered(25..30));
    let (mut source, log) = open(&yaml, &stopper, Some(state.path()));
    seen.extend(take(&mut source, 7));
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("Master.csv.2 from byte")),
        "the rotated file is finished first: {:?}",
        log.lock().unwrap()
    );
    // copytruncate: the copy keeps the lines, the file starts again empty.
    fs::copy(&csv, dir.path().join("Master.csv.3")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&csv)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&csv, &numbered(30..32));
    seen.extend(take(&mut source, 2));
    // An unconsumed line is read again after a restart.
    append(&csv, &numbered(32..33));
    seen.extend(take(&mut source, 1));
    drop(source);
    let (mut source, _) = open(&yaml, &stopper, Some(state.path()));
    assert_eq!(
        take(&mut source, 1),
        numbered(32..33),
        "not consumed, so read again"
    );
    assert_eq!(seen, numbered(0..33), "none lost, none repeated");
    // Idle at the end of the file: a blocked read ends on stop.
    let reader = read(source, 1);
    assert!(stop_promptly(&stopper, reader).is_empty());
}

#[test]
fn file_tail_waits_for_a_missing_file_and_can_start_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let csv = dir.path().join("Master.csv");
    append(&csv, &numbered(0..5));
    let stopper = Stopper::new().unwrap();
    let yaml = format!("source: file\npath: {}\nstart_at: end", csv.display());
    let (source, log) = open(&yaml, &stopper, Some(state.path()));
    let reader = read(source, 2);
    wait_for("the file to open", &log, |l| {
        l.iter().any(|e| e.starts_with("opened"))
    });
    append(&csv, &numbered(5..7));
    assert_eq!(reader.join().unwrap().1, numbered(5..7));

    let later = dir.path().join("later.csv");
    let yaml = format!("source: file\npath: {}", later.display());
    let (source, _) = open(&yaml, &stopper, Some(state.path()));
    let reader = read(source, 1);
    std::thread::sleep(Duration::from_millis(100));
    append(&later, &numbered(0..1));
    assert_eq!(reader.join().unwrap().1, numbered(0..1));
}

#[test]
fn unread_gives_the_same_line_again() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("x.csv");
    append(&csv, &numbered(0..2));
    let stopper = Stopper::new().unwrap();
    let yaml = format!("source: file\npath: {}", csv.display());
    let (mut source, _) = open(&yaml, &stopper, Some(dir.path()));
    assert_eq!(source.next_line().unwrap(), Some(&b"record 0000"[..]));
    source.unread();
    assert_eq!(source.next_line().unwrap(), Some(&b"record 0000"[..]));
    assert_eq!(source.next_line().unwrap(), Some(&b"record 0001"[..]));
    assert_eq!(source.counts().lines, 2);
}

#[test]
fn a_file_source_without_a_state_folder_is_refused() {
    let stopper = Stopper::new().unwrap();
    let error = LineSource::open(
        &settings("source: file\npath: /tmp/x.csv"),
        &stopper,
        None,
        || Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("/tmp/x.csv needs a state folder"),
        "{error}"
    );
}

#[test]
fn after_a_stop_only_lines_already_in_memory_are_given() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("x.csv");
    append(&csv, &numbered(0..3));
    let stopper = Stopper::new().unwrap();
    let yaml = format!("source: file\npath: {}", csv.display());
    let (mut source, _) = open(&yaml, &stopper, Some(dir.path()));
    assert_eq!(take(&mut source, 1), numbered(0..1));
    stopper.stop();
    append(&csv, &numbered(3..4));
    let mut rest = Vec::new();
    while let Some(line) = source.next_line().unwrap() {
        rest.push(String::from_utf8_lossy(line).into_owned());
    }
    assert_eq!(
        rest,
        numbered(1..3),
        "read before the stop, so still given; nothing new read"
    );

    let stopper = Stopper::new().unwrap();
    let (mut source, _) = open(&yaml, &stopper, Some(dir.path()));
    assert_eq!(take(&mut source, 1), numbered(3..4));
    source.unread();
    stopper.stop();
    assert_eq!(
        source.next_line().unwrap(),
        None,
        "a line given back is not given after a stop"
    );
}
