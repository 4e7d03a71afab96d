//! The delivery loop through the seam: an in-memory [`Source`], the real sinks, and a real
//! loopback frontend on 127.0.0.1.

use std::io;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use calllogger_plugin_abi::TimeoutSettings;
use calllogger_plugin_sdk::Secret;

use super::frontend::{FrontendSink, SenderSettings};
use super::stdout::JsonLines;
use super::testkit::{logs, records, Frontend, Memory};
use super::*;
use crate::telemetry::Telemetry;

/// Short waits: 10 ms (floored to [`MIN_RETRY_WAIT`]), capped at `max` seconds.
fn fast(max: f64) -> TimeoutSettings {
    TimeoutSettings {
        timeout: 0.01,
        decay: 1.0,
        max_timeout: max,
    }
}

fn frontend_sink(frontend: &Frontend, backlog_trigger: u64, drop_stale: bool) -> FrontendSink {
    let settings = SenderSettings {
        frontend: frontend.url.clone(),
        token: Secret::from("t0ken".to_owned()),
        backlog_trigger,
        batch_size: std::num::NonZeroUsize::new(10).unwrap(),
        drop_stale_incoming: drop_stale,
        request_timeout: Duration::from_secs(10),
        ca_file: std::path::PathBuf::new(),
    };
    FrontendSink::new(settings, Telemetry::new()).unwrap()
}

/// Runs `sink` over `source` on this thread until every record is acked; returns the logs.
fn drive(sink: impl Sink, mut source: Memory) -> Vec<String> {
    let stop = Arc::new(Stop::default());
    source.stop_when_done = Some(stop.clone());
    let telemetry = Telemetry::new().sink(sink.name());
    let mut driver = Driver::new(sink, source, fast(0.3), stop, telemetry);
    let (result, lines) = logs(|| driver.run());
    result.unwrap();
    lines
}

fn created(_: usize, _: &str) -> testkit::Answer {
    (201, vec![], String::new())
}

#[test]
fn records_are_delivered_one_at_a_time_in_order_with_the_token() {
    let frontend = Frontend::start(created);
    let (source, shared) = Memory::new(records(3));
    drive(frontend_sink(&frontend, 100, false), source);
    assert_eq!(
        frontend.bodies(),
        [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]
    );
    assert_eq!(
        frontend.received.lock()[0].authorization.as_deref(),
        Some("Token t0ken")
    );
    assert_eq!(shared.state.lock().acks, [1, 2, 3]);
}

#[test]
fn a_refused_batch_is_sent_one_by_one_and_the_refused_record_buried() {
    // A backlog (5 > 2): one batch; the frontend refuses batches, and record 3 alone.
    let frontend = Frontend::start(|_, body| match body {
        b if b.starts_with('[') => (413, vec![], "too large".into()),
        r#"{"n":3}"# => (422, vec![], "bad record".into()),
        _ => (201, vec![], String::new()),
    });
    let (source, shared) = Memory::new(records(5));
    let lines = drive(frontend_sink(&frontend, 2, false), source);
    let bodies = frontend.bodies();
    assert_eq!(bodies[0], r#"[{"n":1},{"n":2},{"n":3},{"n":4},{"n":5}]"#);
    assert_eq!(
        &bodies[1..],
        [1, 2, 3, 4, 5].map(|n| format!(r#"{{"n":{n}}}"#))
    );
    let state = shared.state.lock();
    assert_eq!(state.buried, [(3, 422, "bad record".to_owned())]);
    assert_eq!(state.cursor, 5);
    assert!(
        lines
            .iter()
            .any(|l| l == "the frontend refused a batch of 5 (HTTP 413): sending them one by one"),
        "{lines:?}"
    );
}

#[test]
fn a_record_refused_with_a_4xx_goes_to_the_dead_letters_and_the_next_follows() {
    let frontend = Frontend::start(|n, _| match n {
        0 => (400, vec![], "no such line".into()),
        _ => (201, vec![], String::new()),
    });
    let (source, shared) = Memory::new(records(2));
    drive(frontend_sink(&frontend, 100, false), source);
    let state = shared.state.lock();
    assert_eq!(state.buried, [(1, 400, "no such line".to_owned())]);
    assert_eq!(state.acks, [1, 2]);
    assert_eq!(
        frontend.bodies().len(),
        2,
        "the buried record is not resent"
    );
}

#[test]
fn an_accepted_batch_whose_ack_fails_is_acked_again_never_resent() {
    let frontend = Frontend::start(created);
    let (source, shared) = Memory::new(records(1));
    shared.state.lock().failing_acks = 2;
    let lines = drive(frontend_sink(&frontend, 100, false), source);
    assert_eq!(frontend.bodies(), [r#"{"n":1}"#], "sent once");
    assert_eq!(shared.state.lock().acks, [1, 1, 1]);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("delivery paused: the disk is full"))
            .count(),
        2,
        "{lines:?}"
    );
}

#[test]
fn stale_ringing_records_are_skipped_under_a_backlog_and_covered_by_the_ack() {
    let frontend = Frontend::start(created);
    let mut batch = records(4);
    batch[1].kind = 0;
    batch[3].kind = 0;
    let (source, shared) = Memory::new(batch);
    let lines = drive(frontend_sink(&frontend, 2, true), source);
    assert_eq!(frontend.bodies(), [r#"[{"n":1},{"n":3}]"#]);
    assert_eq!(shared.state.lock().acks, [4]);
    assert!(
        lines.contains(
            &"backlog of 4 records: dropped 2 stale INCOMING (ringing) records".to_owned()
        ),
        "{lines:?}"
    );
}

#[test]
fn retry_waits_are_spread_around_the_decayed_timeout_so_sites_do_not_retry_in_step() {
    let frontend = Frontend::start(created);
    let (source, _) = Memory::new(records(0));
    let retry = TimeoutSettings {
        timeout: 1.0,
        decay: 1.0,
        max_timeout: 10.0,
    };
    let sink = frontend_sink(&frontend, 100, false);
    let telemetry = Telemetry::new().sink(sink.name());
    let mut driver = Driver::new(sink, source, retry, Arc::new(Stop::default()), telemetry);
    let waits: Vec<f64> = (0..50)
        .map(|_| driver.retry_wait(None).as_secs_f64())
        .collect();
    assert!(waits.iter().all(|w| (0.8..=1.2).contains(w)), "{waits:?}");
    let distinct: std::collections::BTreeSet<u64> =
        waits.iter().map(|w| (w * 1e6) as u64).collect();
    assert!(distinct.len() > 40, "not spread: {waits:?}");
}

#[test]
fn retry_after_is_capped_at_max_timeout_and_a_wait_is_never_below_the_floor() {
    // Days are cut to max_timeout (0.3 s); 0 keeps the backoff (10 ms), floored to 0.1 s.
    let frontend = Frontend::start(|n, _| match n {
        0 => (429, vec![("Retry-After", "999999".into())], String::new()),
        1 => (503, vec![("Retry-After", "0".into())], String::new()),
        _ => (201, vec![], String::new()),
    });
    let (source, shared) = Memory::new(records(1));
    let lines = drive(frontend_sink(&frontend, 100, false), source);
    let expected = [
        "the frontend asked to wait 999999 s (Retry-After), longer than settings.max_timeout: \
         waiting 0.3 s",
        "delivery failed (HTTP 429); retrying in 0.3 s",
        "delivery failed (HTTP 503); retrying in 0.1 s",
    ];
    assert_eq!(lines[..3], expected);
    assert_eq!(frontend.bodies().len(), 3);
    assert_eq!(shared.state.lock().acks, [1]);
}

#[test]
fn a_refused_token_ends_the_sink_with_an_event_and_keeps_every_record() {
    let frontend = Frontend::start(|_, _| (401, vec![], String::new()));
    let (source, shared) = Memory::new(records(2));
    let (events, failures) = channel::<SinkEvent>();
    let stop = Arc::new(Stop::default());
    let sink = frontend_sink(&frontend, 100, false);
    let thread = start(
        sink,
        source,
        fast(0.3),
        stop,
        Telemetry::new().sink("frontend"),
        events,
    )
    .unwrap();
    let SinkEvent::Failed(failed) = failures.recv().unwrap();
    thread.join().unwrap();
    assert_eq!(failed.sink, "frontend");
    assert!(
        failed
            .to_string()
            .starts_with("the frontend refused the token (HTTP 401): set a valid settings.token"),
        "{failed}"
    );
    assert!(shared.state.lock().acks.is_empty());
    assert_eq!(frontend.bodies().len(), 1, "no retry");
}

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Buffer(Arc<parking_lot::Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_echo_drains_what_the_spool_holds_before_it_stops() {
    let buffer = Buffer::default();
    let (source, shared) = Memory::new(records(3000));
    let stop = Arc::new(Stop::default());
    // Stopped before it starts: whatever it writes, it writes because it drains.
    stop.stop();
    let (events, _failures) = channel::<SinkEvent>();
    let thread = start(
        JsonLines::new(buffer.clone()),
        source,
        fast(0.3),
        stop,
        Telemetry::new().sink("stdout"),
        events,
    )
    .unwrap();
    thread.join().unwrap();
    let text = String::from_utf8(buffer.0.lock().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3000);
    assert_eq!(lines[0], r#"{"n":1}"#);
    assert_eq!(lines[2999], r#"{"n":3000}"#);
    assert_eq!(
        shared.state.lock().acks,
        [1024, 2048, 3000],
        "one write per batch"
    );
}

struct Broken;

impl io::Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "reader went away",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_broken_stdout_ends_the_echo_with_an_event() {
    let (source, shared) = Memory::new(records(1));
    let (events, failures) = channel::<SinkEvent>();
    let thread = start(
        JsonLines::new(Broken),
        source,
        fast(0.3),
        Arc::new(Stop::default()),
        Telemetry::new().sink("stdout"),
        events,
    )
    .unwrap();
    let SinkEvent::Failed(failed) = failures.recv().unwrap();
    thread.join().unwrap();
    assert_eq!(failed.sink, "stdout");
    assert_eq!(failed.to_string(), "stdout failed: reader went away");
    assert!(shared.state.lock().acks.is_empty());
}

#[test]
fn a_retry_waits_at_least_the_backoff_and_at_most_the_cap() {
    let (s, ms) = (Duration::from_secs, Duration::from_millis);
    let cap = s(5);
    assert_eq!(retry_wait(None, s(2), cap), s(2));
    assert_eq!(
        retry_wait(Some(s(0)), s(2), cap),
        s(2),
        "0 keeps the backoff"
    );
    assert_eq!(retry_wait(Some(s(3)), s(2), cap), s(3), "longer if asked");
    assert_eq!(retry_wait(Some(s(999_999)), s(2), cap), cap, "capped");
    assert_eq!(
        retry_wait(Some(Duration::MAX), s(2), Duration::MAX),
        Duration::MAX,
        "no overflow"
    );
    assert_eq!(
        retry_wait(Some(s(0)), s(0), s(0)),
        MIN_RETRY_WAIT,
        "never spins"
    );
    assert_eq!(retry_wait(None, ms(150), cap), ms(150));
}

#[test]
fn an_idle_sink_waits_once_until_woken_and_never_wakes_on_its_own() {
    let buffer = Buffer::default();
    let (source, shared) = Memory::new(Vec::new());
    let stop = Arc::new(Stop::default());
    let (events, _failures) = channel::<SinkEvent>();
    let thread = start(
        JsonLines::new(buffer.clone()),
        source,
        fast(0.3),
        stop.clone(),
        Telemetry::new().sink("stdout"),
        events,
    )
    .unwrap();
    // Long enough for several of the old 1 s idle waits.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(shared.state.lock().waits, 1, "one wait, no timer");
    stop.stop();
    shared.wake();
    thread.join().unwrap();
    assert_eq!(shared.state.lock().waits, 1);
}
