//! Delivery to a real HTTP frontend on loopback, through the durable spool.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::HOST;
use calllogger_test_kit::frontend::{created, status, Answer, Frontend, Received, Reply, Tally};
use calllogger_test_kit::*;
use nix::sys::signal::Signal;
use serde_json::Value;

/// Retry waits short enough for tests: 0.2, 0.4, 0.8 … 5 s.
const FAST: &str = "timeout: 0.2, decay: 2, max_timeout: 5";

fn config(frontend: &Frontend, token: &str, settings: &str, sections: &str) -> String {
    format!(
        "settings: {{frontend: '{}', token: {token}, {settings}}}\n{sections}\n",
        frontend.url
    )
}

/// `line` of every record from Echo instance `label`, in delivery order.
fn lines_of(records: &[Value], label: &str) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r["number"] == label)
        .map(|r| r["line"].as_u64().unwrap())
        .collect()
}

/// `pending` of the spool (which must exist).
fn pending(install: &Install) -> u64 {
    install.spool(0).expect("a spool").pending
}

/// Waits until the spool holds `pending` records.
fn wait_pending(install: &Install, pending: u64) {
    let waited = poll(Duration::from_secs(20), || {
        (install.spool(0).map(|s| s.pending) == Some(pending)).then_some(())
    });
    assert!(
        waited.is_some(),
        "never {pending} pending: {:?}",
        install.spool(0)
    );
}

/// An installation whose one `Echo` instance (label `e`) pushes `count` records `interval`
/// seconds apart, with short retry waits.
fn echo_install(frontend: &Frontend, count: u32, interval: f64) -> Install {
    Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            frontend,
            "t",
            &format!("{FAST}, plugins: [Echo]"),
            &format!("Echo: {{label: e, count: {count}, interval: {interval}}}"),
        ),
    )
}

#[test]
fn records_arrive_with_the_contracts_headers_shape_and_unique_ids() {
    let frontend = Frontend::start(|_, _| created());
    let install = Install::new(
        HOST,
        &[MOCK_CALLS],
        &config(
            &frontend,
            "s3cret",
            &format!("{FAST}, plugins: [MockCalls]"),
            "MockCalls: {sleep: 0.02, limit: 20, seed: 1}",
        ),
    );
    let mut host = install.start();
    frontend.wait_until(Duration::from_secs(20), "30 records", |r| {
        r.iter().map(|r| r.records().len()).sum::<usize>() >= 30
    });
    let log = host.terminate();
    assert!(!log.contains("s3cret"), "the token never reaches the log");
    let received = frontend.received();
    let mut ids = BTreeSet::new();
    for request in &received {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/v1/monitor/cdr/");
        assert_eq!(request.authorization, "Token s3cret");
        assert_eq!(request.content_type, "application/json");
        assert!(
            request.user_agent.starts_with("calllogger/0."),
            "{}",
            request.user_agent
        );
        assert!(
            request.body.is_object(),
            "no backlog: one record per request, sent as it comes"
        );
        let id = request.body["id"]
            .as_str()
            .expect("every record has an id")
            .to_owned();
        assert!(ids.insert(id), "ids are unique");
        assert!(request.body["call_type"].is_i64() && request.body["date"].is_string());
    }
    assert_eq!(pending(&install), 0, "delivered records leave the spool");
}

/// As systemd's `LoadCredential=token:…` provides it: `$CREDENTIALS_DIRECTORY/token`.
#[test]
fn the_token_is_read_from_a_credential_file_named_by_token_file() {
    let frontend = Frontend::start(|_, _| created());
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("token"), "from-credential\n").unwrap();
    let install = Install::new(
        HOST,
        &[MOCK_CALLS],
        &format!(
            "settings: {{frontend: '{}', token_file: '${{CREDENTIALS_DIRECTORY}}/token', {FAST}, \
             plugins: [MockCalls]}}\nMockCalls: {{sleep: 0.02, limit: 3, seed: 1}}\n",
            frontend.url
        ),
    );
    let with_credentials = |args: &[&str]| {
        let mut command = install.command(args);
        command.env("CREDENTIALS_DIRECTORY", credentials.path());
        command
    };
    let shown = with_credentials(&["config"]).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("token: <redacted>"), "{shown}");
    assert!(
        shown.contains(&format!(
            "read from {}",
            credentials.path().join("token").display()
        )),
        "the file is named: {shown}"
    );
    assert!(!shown.contains("from-credential"), "{shown}");
    let mut host = Host::spawn(with_credentials(&["run"]));
    frontend.wait_until(Duration::from_secs(20), "3 records", |r| r.len() >= 3);
    let log = host.terminate();
    assert!(!log.contains("from-credential"), "{log}");
    for request in frontend.received() {
        assert_eq!(request.authorization, "Token from-credential");
    }
}

#[test]
fn an_outage_delivers_every_record_once_in_order_dropping_ringing_only_from_the_backlog() {
    let frontend = Frontend::start(|_, _| created());
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "t",
            "timeout: 0.2, decay: 2, max_timeout: 0.4, plugins: [Echo@out, Echo@ring]",
            "Echo@out: {label: out, count: 120, interval: 0.02}\nEcho@ring: {label: ring, count: 120, interval: 0.02, call_type: 0}",
        ),
    );
    let mut host = install.start();
    frontend.wait_until(Duration::from_secs(20), "live ringing records", |r| {
        r.iter().any(|r| r.body["number"] == "ring")
    });
    frontend.answer(|_, _| status(503));
    std::thread::sleep(Duration::from_millis(1500));
    frontend.answer(|_, _| created());
    frontend.wait_until(Duration::from_secs(30), "every `out` record", |r| {
        r.iter()
            .filter(|r| r.status == 201)
            .flat_map(Received::records)
            .filter(|x| x["number"] == "out")
            .count()
            >= 120
    });
    std::thread::sleep(Duration::from_millis(300));
    let log = host.terminate();
    let delivered = frontend.delivered();
    assert_eq!(
        lines_of(&delivered, "out"),
        (1..=120).collect::<Vec<_>>(),
        "each once, in order"
    );
    let ids: Vec<&str> = delivered
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "no id delivered twice"
    );
    let ring = lines_of(&delivered, "ring");
    assert!(
        !ring.is_empty() && ring.len() < 120,
        "ringing records arrive live, not from the backlog: {ring:?}"
    );
    assert!(log.contains("stale INCOMING"), "{log}");
    assert!(
        frontend.received().iter().any(|r| r.body.is_array()),
        "the backlog went in batches"
    );
}

#[test]
fn sigkill_after_a_trickle_loses_nothing_and_sends_again_only_the_newest() {
    let frontend = Frontend::start(|_, _| created());
    let install = echo_install(&frontend, 30, 0.02);
    let mut host = install.start();
    frontend.wait_delivered(&host, "e", 30, Duration::from_secs(30));
    host.signal(Signal::SIGKILL);
    host.wait_exit(Duration::from_secs(10));
    let before = frontend.delivered().len();

    install.write_config(&config(&frontend, "t", &format!("{FAST}, plugins: []"), ""));
    let mut host = install.start();
    host.wait_for_log("delivering records", 1, Duration::from_secs(20));
    wait_pending(&install, 0);
    host.terminate();
    let tally = frontend.tally("e", 30);
    assert!(tally.delivered == 30 && tally.lost.is_empty(), "{tally:?}");
    // Acks reach the disk with the next transaction, within a second: what the kill caught
    // unsaved is sent again, and that is always the newest records, each once.
    let again = lines_of(&frontend.delivered()[before..], "e");
    let from = 31 - again.len() as u64;
    assert_eq!(again, (from..=30).collect::<Vec<_>>(), "{tally:?}");
}

#[test]
fn sigkill_mid_outage_loses_nothing_and_a_resend_reuses_the_id() {
    let frontend = Frontend::start(|_, _| status(500));
    let install = echo_install(&frontend, 40, 0.01);
    let mut host = install.start();
    frontend.wait_until(Duration::from_secs(20), "a failed attempt", |r| {
        !r.is_empty()
    });
    // Wait for the plugin to have pushed all 40 (each push is durable when it returns).
    wait_pending(&install, 40);
    host.signal(Signal::SIGKILL);
    host.wait_exit(Duration::from_secs(10));
    let attempted: Vec<String> = frontend
        .received()
        .iter()
        .flat_map(Received::records)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();

    frontend.answer(|_, _| created());
    install.write_config(&config(&frontend, "t", &format!("{FAST}, plugins: []"), ""));
    let mut host = install.start();
    frontend.wait_until(Duration::from_secs(30), "all 40", |r| {
        r.iter()
            .filter(|r| r.status == 201)
            .map(|r| r.records().len())
            .sum::<usize>()
            >= 40
    });
    host.terminate();
    let delivered = frontend.delivered();
    assert_eq!(lines_of(&delivered, "e"), (1..=40).collect::<Vec<_>>());
    let delivered_ids: BTreeSet<&str> = delivered
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        attempted
            .iter()
            .all(|id| delivered_ids.contains(id.as_str())),
        "re-sends reuse the first attempt's id"
    );
}

#[test]
fn server_errors_are_retried_with_growing_waits() {
    let frontend = Frontend::start(|_, n| if n < 4 { status(500) } else { created() });
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "t",
            &format!("{FAST}, plugins: [Echo]"),
            "Echo: {label: e, count: 1}",
        ),
    );
    let mut host = install.start();
    frontend.wait_until(Duration::from_secs(20), "a success", |r| {
        r.iter().any(|r| r.status == 201)
    });
    host.terminate();
    let at: Vec<Instant> = frontend.received().iter().map(|r| r.at).collect();
    let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    // Each wait is spread over ±20 % (so that sites do not retry in step).
    for (gap, wait) in gaps.iter().zip([0.2, 0.4, 0.8, 1.6]) {
        assert!(
            *gap >= wait * 0.8 * 0.95,
            "waits 0.2, 0.4, 0.8, 1.6 s, each ±20 %: gaps {gaps:?}"
        );
    }
    assert_eq!(frontend.received().len(), 5);
}

#[test]
fn too_many_requests_waits_for_retry_after() {
    let frontend = Frontend::start(|_, n| {
        if n == 0 {
            (429, vec![("Retry-After", "1".into())], "slow down".into())
        } else {
            created()
        }
    });
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "t",
            "timeout: 0.05, decay: 2, max_timeout: 5, plugins: [Echo]",
            "Echo: {label: e, count: 1}",
        ),
    );
    let mut host = install.start();
    frontend.wait_until(Duration::from_secs(20), "a success", |r| {
        r.iter().any(|r| r.status == 201)
    });
    host.terminate();
    let received = frontend.received();
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_millis(990),
        "Retry-After: 1 is obeyed, not the 0.05 s timeout: {gap:?}"
    );
}

#[test]
fn a_refused_token_stops_the_host_keeps_the_records_and_a_good_one_delivers_them() {
    let frontend = Frontend::start(|r, _| {
        if r.authorization == "Token good" {
            created()
        } else {
            status(401)
        }
    });
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "bad",
            &format!("{FAST}, plugins: [Echo]"),
            "Echo: {label: e, count: 5, interval: 0}",
        ),
    );
    let mut host = install.start();
    let (status, _) = host.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "a refused token is fatal");
    let log = host.log();
    assert!(
        log.contains("refused the token (HTTP 401)") && log.contains("settings.token"),
        "{log}"
    );
    assert!(!log.contains("bad"), "the token is not logged: {log}");
    let pending = pending(&install);
    assert!(pending >= 1, "the records stay spooled");

    install.write_config(&config(
        &frontend,
        "good",
        &format!("{FAST}, plugins: []"),
        "",
    ));
    let mut host = install.start();
    frontend.wait_until(Duration::from_secs(20), "delivery", |r| {
        r.iter().filter(|r| r.status == 201).count() as u64 >= pending.min(1)
    });
    wait_pending(&install, 0);
    host.terminate();
    let delivered = lines_of(&frontend.delivered(), "e");
    assert_eq!(delivered.len() as u64, pending, "{delivered:?}");
}

/// A host whose Echo instance pushed 30 records (lines 1 to 30, label `e`) while the frontend
/// was down (503), so that they go out in batches once it answers otherwise.
fn backlog_of_30() -> (Frontend, Install, Host) {
    let frontend = Frontend::start(|_, _| status(503));
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "t",
            &format!("{FAST}, plugins: [Echo]"),
            "Echo: {label: e, count: 30, interval: 0}",
        ),
    );
    let host = install.start();
    wait_pending(&install, 30);
    (frontend, install, host)
}

#[test]
fn a_record_the_frontend_refuses_goes_to_the_dead_letters_and_the_rest_of_its_batch_arrives() {
    let (frontend, install, mut host) = backlog_of_30();
    let culprit = |r: &Value| r["line"] == 17;
    frontend.answer(move |r, _| {
        if r.records().iter().any(culprit) {
            (400, vec![], r#"{"number": ["invalid"]}"#.into())
        } else {
            created()
        }
    });
    frontend.wait_until(Duration::from_secs(30), "29 delivered", |r| {
        r.iter()
            .filter(|r| r.status == 201)
            .map(|r| r.records().len())
            .sum::<usize>()
            >= 29
    });
    std::thread::sleep(Duration::from_millis(300));
    let log = host.terminate();
    let delivered = lines_of(&frontend.delivered(), "e");
    assert_eq!(delivered, (1..=30).filter(|l| *l != 17).collect::<Vec<_>>());
    assert!(
        frontend
            .received()
            .iter()
            .any(|r| r.body.is_array() && r.status == 400),
        "the batch was refused first"
    );
    assert!(
        log.contains("dead letters") && log.contains("HTTP 400"),
        "{log}"
    );
    let spool = install.spool(0).expect("a spool");
    assert_eq!((spool.pending, spool.dead_letters), (0, 1), "{spool:?}");
    let (ok, out, _) = install.run_cli(&["spool", "retry-dead"]);
    assert!(ok && out.contains("1 dead letter back"), "{out}");
    let back = install.spool(10).expect("a spool").newest;
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["line"], 17);
}

#[test]
fn a_full_spool_evicts_ringing_records_first_then_the_oldest() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo@ring, Echo@out], spool_max_records: 50}\n\
         Echo@ring: {label: ring, count: 30, interval: 0, call_type: 0}\n\
         Echo@out: {label: out, count: 60, interval: 0.01}\n",
    );
    let mut host = install.start();
    host.records_until(Duration::from_secs(20), |r| {
        r["number"] == "out" && r["line"] == 60
    });
    let log = host.terminate();
    let kept = install.spool(1000).expect("a spool").newest;
    assert!(kept.len() <= 50, "{} records kept", kept.len());
    assert!(
        lines_of(&kept, "ring").is_empty(),
        "ringing records go first"
    );
    let out = lines_of(&kept, "out");
    assert_eq!(out.last(), Some(&60), "the newest stays");
    assert!(out[0] > 1, "then the oldest go: {out:?}");
    let evicted: Vec<&str> = log.lines().filter(|l| l.contains("evicted")).collect();
    assert!(!evicted.is_empty(), "{log}");
    assert!(evicted[0].contains("INCOMING"), "{}", evicted[0]);
}

#[test]
fn redirects_are_never_followed_and_every_record_waits_for_the_frontend() {
    const CODES: [u16; 5] = [301, 302, 303, 307, 308];
    let elsewhere = Frontend::start(|_, _| created());
    let frontend = Frontend::start(|_, _| status(503));
    let (moved, other) = (format!("{}/moved", frontend.url), elsewhere.url.clone());
    // Each code twice, to this origin and to another one that would take anything; then 201.
    let script = (moved.clone(), other.clone());
    frontend.answer(move |_, n| match CODES.get(n / 2) {
        Some(&code) => {
            let base = if n % 2 == 0 { &script.0 } else { &script.1 };
            let location = format!("{base}/api/v1/monitor/cdr/");
            (code, vec![("Location", location)], String::new())
        }
        None => created(),
    });
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "t",
            "timeout: 0.1, decay: 1.5, max_timeout: 0.5, plugins: [Echo]",
            "Echo: {label: e, count: 40, interval: 0}",
        ),
    );
    let mut host = install.start();
    frontend.wait_delivered(&host, "e", 40, Duration::from_secs(40));
    wait_pending(&install, 0);
    let log = host.terminate();
    assert_eq!(
        frontend.tally("e", 40),
        Tally {
            delivered: 40,
            duplicated: 0,
            lost: vec![]
        }
    );
    let received = frontend.received();
    assert!(
        received
            .iter()
            .all(|r| r.method == "POST" && r.path == "/api/v1/monitor/cdr/"),
        "no redirect followed: {:?}",
        received
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        received
            .iter()
            .map(|r| r.status)
            .take(10)
            .collect::<Vec<_>>(),
        CODES.iter().flat_map(|&c| [c, c]).collect::<Vec<_>>()
    );
    assert!(
        elsewhere.received().is_empty(),
        "the other origin got nothing"
    );
    for (n, code) in CODES.iter().flat_map(|&c| [c, c]).enumerate() {
        let base = if n % 2 == 0 { &moved } else { &other };
        let line =
            format!("HTTP {code}, a redirect to {base}/api/v1/monitor/cdr/, which is not followed");
        assert!(log.contains(&line), "{line}:\n{log}");
        let hint = format!("{line}; the frontend moved: set settings.frontend to {base})");
        assert_eq!(log.contains(&hint), matches!(code, 301 | 308), "{hint}");
    }
    assert_eq!(log.matches("which is not followed").count(), 10, "{log}");
}

/// Answers `codes` in turn, each with the `Retry-After` values in turn.
fn hostile(
    codes: &'static [u16],
    values: [&'static str; 2],
) -> impl FnMut(&Received, usize) -> Reply {
    move |_, n| {
        let code = codes[n / 2 % codes.len()];
        (
            code,
            vec![("Retry-After", values[n % 2].into())],
            "slow down".into(),
        )
    }
}

#[test]
fn a_retry_after_of_days_or_years_is_cut_to_max_timeout() {
    let frontend = Frontend::start(hostile(
        &[429, 503],
        ["999999", "Thu, 01 Jan 2099 00:00:00 GMT"],
    ));
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "t",
            "timeout: 0.2, decay: 2, max_timeout: 1, plugins: [Echo]",
            "Echo: {label: e, count: 30, interval: 0}",
        ),
    );
    let mut host = install.start();
    frontend.wait_until(
        Duration::from_secs(30),
        "each hostile answer retried",
        |r| r.len() >= 5,
    );
    frontend.answer(|_, _| created());
    frontend.wait_delivered(&host, "e", 30, Duration::from_secs(30));
    wait_pending(&install, 0);
    let log = host.terminate();
    assert_eq!(
        frontend.tally("e", 30),
        Tally {
            delivered: 30,
            duplicated: 0,
            lost: vec![]
        }
    );
    // What each capped wait was asked for, in seconds.
    let asked: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("settings.max_timeout: waiting 1.0 s"))
        .filter_map(|l| {
            l.split("asked to wait ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(asked.contains(&999_999), "{log}");
    assert!(
        asked.iter().any(|s| *s > 70 * 365 * 86_400),
        "the 2099 date: {log}"
    );
}

#[test]
fn a_retry_after_of_zero_or_the_past_keeps_the_backoff() {
    let frontend = Frontend::start(hostile(&[429], ["0", "Wed, 21 Oct 2015 07:28:00 GMT"]));
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "t",
            "timeout: 0.2, decay: 2, max_timeout: 1, plugins: [Echo]",
            "Echo: {label: e, count: 30, interval: 0}",
        ),
    );
    let mut host = install.start();
    frontend.wait_until(Duration::from_secs(20), "a first attempt", |r| {
        !r.is_empty()
    });
    let first = frontend.received()[0].at;
    let window = Duration::from_secs(3);
    std::thread::sleep(
        (first + window + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
    );
    let in_window = frontend
        .received()
        .iter()
        .filter(|r| r.at <= first + window)
        .count();
    // Waits of 0.2, 0.4, 0.8, 1, 1 … s allow 5 attempts in 3 s; a lost backoff makes thousands.
    assert!(in_window <= 12, "{in_window} requests in {window:?}");
    frontend.answer(|_, _| created());
    frontend.wait_delivered(&host, "e", 30, Duration::from_secs(30));
    wait_pending(&install, 0);
    let log = host.terminate();
    assert_eq!(
        frontend.tally("e", 30),
        Tally {
            delivered: 30,
            duplicated: 0,
            lost: vec![]
        }
    );
    let failed = frontend
        .received()
        .iter()
        .filter(|r| r.status != 201)
        .count();
    assert_eq!(
        log.matches("delivery failed").count(),
        failed,
        "one warning per failed attempt"
    );
}

#[test]
fn a_hanging_or_trickling_frontend_times_out_and_every_record_arrives() {
    // 45 bytes, 0.1 s apart: 4.5 s for a response, against a request_timeout of 1 s.
    let trickle = || Answer::Trickle(created(), Duration::from_millis(100));
    let frontend = Frontend::start_with(move |_, n| match n {
        0 | 2 => Answer::Hang,
        1 | 3 => trickle(),
        _ => Answer::Reply(created()),
    });
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "t",
            "timeout: 0.2, decay: 2, max_timeout: 1, request_timeout: 1, plugins: [Echo]",
            "Echo: {label: e, count: 10, interval: 0}",
        ),
    );
    let mut host = install.start();
    frontend.wait_delivered(&host, "e", 10, Duration::from_secs(40));
    wait_pending(&install, 0);
    let log = host.terminate();
    let received = frontend.received();
    let trickled: usize = received[1].records().len() + received[3].records().len();
    assert_eq!(
        frontend.tally("e", 10),
        Tally {
            delivered: 10,
            // The trickled answers were stored but timed out: those records were sent again.
            duplicated: trickled,
            lost: vec![]
        }
    );
    assert_eq!((received[0].status, received[2].status), (0, 0), "two hung");
    assert_eq!(
        log.matches("delivery failed (timed out").count(),
        4,
        "{log}"
    );
}

#[test]
fn a_batch_too_large_for_the_frontend_is_sent_one_by_one() {
    let (frontend, install, mut host) = backlog_of_30();
    frontend.answer(|r, _| {
        if r.records().len() > 1 {
            status(413)
        } else {
            created()
        }
    });
    frontend.wait_delivered(&host, "e", 30, Duration::from_secs(30));
    wait_pending(&install, 0);
    let log = host.terminate();
    assert_eq!(
        frontend.tally("e", 30),
        Tally {
            delivered: 30,
            duplicated: 0,
            lost: vec![]
        }
    );
    assert_eq!(
        lines_of(&frontend.delivered(), "e"),
        (1..=30).collect::<Vec<_>>()
    );
    assert!(
        frontend
            .received()
            .iter()
            .any(|r| r.body.is_array() && r.status == 413),
        "the batch was refused first"
    );
    assert!(log.contains("HTTP 413): sending them one by one"), "{log}");
    assert_eq!(install.spool(0).expect("a spool").dead_letters, 0);
}

/// A loopback https frontend whose certificate (for 127.0.0.1) a CA of its own issued: it
/// answers every POST 201. Returns its base URL, the CA as PEM, and the POSTs it answered.
fn https_frontend() -> (
    String,
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{BufRead as _, Read as _, Write as _};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let tls = calllogger_test_kit::tls::loopback_tls(rustls::DEFAULT_VERSIONS);
    let config = tls.server;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let (config, count) = (config.clone(), count.clone());
            std::thread::spawn(move || {
                let connection = rustls::ServerConnection::new(config).unwrap();
                let mut tls = std::io::BufReader::new(rustls::StreamOwned::new(connection, stream));
                // Requests until the client goes (or refuses the certificate).
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if tls.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(value) =
                            line.to_ascii_lowercase().strip_prefix("content-length:")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    if tls.read_exact(&mut body).is_err() {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let reply = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
                    if tls.get_mut().write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, tls.ca_pem, answered)
}

#[test]
fn an_https_frontend_behind_a_private_ca_is_trusted_through_ca_file_or_ssl_cert_file() {
    use std::sync::atomic::Ordering;
    let (url, ca, answered) = https_frontend();
    let config = |extra: &str| {
        format!(
            "settings: {{frontend: '{url}', token: t, plugins: [Echo], {FAST}{extra}}}\n\
             Echo: {{label: tls, count: 1}}\n"
        )
    };
    let install = Install::new(HOST, &[TEST_PLUGINS], &config(""));
    let ca_file = install.dir.path().join("private-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let run = |ssl_cert_file: Option<&std::path::Path>| {
        let mut command = install.command(&["run"]);
        command.env_remove("SSL_CERT_FILE");
        if let Some(file) = ssl_cert_file {
            command.env("SSL_CERT_FILE", file);
        }
        Host::spawn(command)
    };

    // The system's CAs do not know it: the record waits in the spool.
    let mut host = run(None);
    host.wait_for_log("delivery failed", 1, Duration::from_secs(20));
    let log = host.terminate();
    assert!(
        log.contains("(the system's bundle) for the frontend"),
        "{log}"
    );
    assert!(
        log.contains("certificate") && log.contains("retrying"),
        "a TLS failure, retried: {log}"
    );
    assert_eq!(answered.load(Ordering::SeqCst), 0);
    let delivered = |posts: usize, host: &Host| {
        let done = || (answered.load(Ordering::SeqCst) >= posts).then_some(());
        let waited = poll(Duration::from_secs(20), done);
        assert!(
            waited.is_some(),
            "{posts} POSTs never answered:\n{}",
            host.log()
        );
    };

    // settings.ca_file: delivered, the waiting record with it.
    install.write_config(&config(&format!(", ca_file: '{}'", ca_file.display())));
    let mut host = run(None);
    delivered(2, &host);
    let log = host.terminate();
    assert!(
        log.contains("trusting the 1 certificate authorities in")
            && log.contains("(settings.ca_file)"),
        "{log}"
    );

    // $SSL_CERT_FILE, as curl and OpenSSL read it.
    install.write_config(&config(""));
    let mut host = run(Some(&ca_file));
    delivered(3, &host);
    assert!(host.terminate().contains("(SSL_CERT_FILE)"));

    // A file with no certificate in it is named by `check`.
    let not_pem = install.dir.path().join("not-a-ca.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    install.write_config(&config(&format!(", ca_file: '{}'", not_pem.display())));
    let (ok, report, err) = install.run_cli(&["check"]);
    assert!(
        !ok && format!("{report}{err}").contains("holds no PEM certificate"),
        "{report}{err}"
    );
}
