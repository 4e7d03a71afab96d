//! Delivery to a real HTTP frontend on loopback, through the durable spool.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::frontend::{created, status, Frontend, Received};
use common::*;
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

fn spool_status(install: &Install) -> String {
    let (ok, out, err) = install.run_cli(&["spool"]);
    assert!(ok, "{out}{err}");
    out
}

/// Waits until `calllogger spool` reports `pending` records.
fn wait_pending(install: &Install, pending: u64) {
    let until = Instant::now() + Duration::from_secs(20);
    let want = format!("pending: {pending}\n");
    loop {
        let (_, out, _) = install.run_cli(&["spool"]);
        if out.contains(&want) {
            return;
        }
        assert!(Instant::now() < until, "never {want}: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn records_arrive_with_the_contracts_headers_shape_and_unique_ids() {
    let frontend = Frontend::start(|_, _| created());
    let install = Install::new(
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
    assert!(
        spool_status(&install).contains("pending: 0"),
        "delivered records leave the spool"
    );
}

#[test]
fn an_outage_delivers_every_record_once_in_order_dropping_ringing_only_from_the_backlog() {
    let frontend = Frontend::start(|_, _| created());
    let install = Install::new(
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
fn sigkill_mid_outage_loses_nothing_and_a_resend_reuses_the_id() {
    let frontend = Frontend::start(|_, _| status(500));
    let install = Install::new(
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "t",
            &format!("{FAST}, plugins: [Echo]"),
            "Echo: {label: e, count: 40, interval: 0.01}",
        ),
    );
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
    for (gap, wait) in gaps.iter().zip([0.2, 0.4, 0.8, 1.6]) {
        assert!(
            *gap >= wait * 0.95,
            "waits 0.2, 0.4, 0.8, 1.6 s: gaps {gaps:?}"
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
    let pending: u64 = spool_status(&install)
        .lines()
        .find_map(|l| l.strip_prefix("pending: "))
        .unwrap()
        .parse()
        .unwrap();
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

#[test]
fn a_record_the_frontend_refuses_goes_to_the_dead_letters_and_the_rest_of_its_batch_arrives() {
    // Down first, so that a backlog builds and goes out in batches.
    let frontend = Frontend::start(|_, _| status(503));
    let install = Install::new(
        &[TEST_PLUGINS],
        &config(
            &frontend,
            "t",
            &format!("{FAST}, plugins: [Echo]"),
            "Echo: {label: e, count: 30, interval: 0}",
        ),
    );
    let mut host = install.start();
    wait_pending(&install, 30);
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
    let status = spool_status(&install);
    assert!(
        status.contains("pending: 0") && status.contains("dead letters: 1"),
        "{status}"
    );
    let (ok, out, _) = install.run_cli(&["spool", "retry-dead"]);
    assert!(ok && out.contains("1 dead letter back"), "{out}");
    let (_, tail, _) = install.run_cli(&["spool", "tail"]);
    let back: Value = serde_json::from_str(tail.trim()).unwrap();
    assert_eq!(back["line"], 17);
}

#[test]
fn a_full_spool_evicts_ringing_records_first_then_the_oldest() {
    let install = Install::new(
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
    let (_, tail, _) = install.run_cli(&["spool", "tail", "-n", "1000"]);
    let kept: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
