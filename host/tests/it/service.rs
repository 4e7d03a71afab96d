//! Running as a service: /health and /metrics under a running host (the values move as
//! records flow), sd-notify messages on a test socket, and the BeroNet plugin in the host.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::HOST;
use calllogger_test_kit::frontend::{created, status, Frontend};
use calllogger_test_kit::http::{self, listener_url};
use calllogger_test_kit::{poll, Host, Install, BERONET, TEST_PLUGINS};
use nix::sys::signal::Signal;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Short retry waits: a failing sender counts as stuck after max_timeout (1 s).
const FAST: &str = "timeout: 0.2, decay: 2, max_timeout: 1";

/// GET `path` from the listener at `base`: status and body.
fn get(base: &str, path: &str) -> (u16, String) {
    http::get(base, path, WAIT).unwrap_or_else(|| panic!("GET {base}{path}: no answer"))
}

/// GET `path` with this `Host` header (none if `None`): status, response head and body.
fn request(base: &str, path: &str, host: Option<&str>) -> (u16, String, String) {
    let response = http::request(base, path, host, WAIT)
        .unwrap_or_else(|| panic!("GET {base}{path}: no answer"));
    (response.status, response.head, response.body)
}

/// A metric's value from the Prometheus text (`name{labels}` exactly as exposed), 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The `calllogger_…` and `process_…` metric names in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["calllogger_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    assert!(
        poll(WAIT, || check().then_some(())).is_some(),
        "never: {what}"
    );
}

#[test]
fn health_and_metrics_follow_the_records_the_instances_and_the_sender() {
    let frontend = Frontend::start(|_, _| created());
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &format!(
            "settings: {{plugins: [Echo, Flaky, Nope], frontend: '{}', token: t, metrics_addr: '127.0.0.1:0', {FAST}}}\n\
             Echo: {{label: m, interval: 0.02}}\nFlaky: {{mode: error}}\n",
            frontend.url
        ),
    );
    let mut host = install.start();
    let url = listener_url(&mut host);

    // Records flow: the counters move.
    let pushed = |text: &str| metric(text, "calllogger_records_pushed_total{class=\"Echo\"}");
    let (code, first) = get(&url, "/metrics");
    assert_eq!(code, 200);
    wait_until("more records counted", || {
        pushed(&get(&url, "/metrics").1) > pushed(&first) + 10.0
    });
    wait_until("deliveries counted", || {
        metric(
            &get(&url, "/metrics").1,
            "calllogger_delivery_attempts_total{status=\"201\"}",
        ) > 0.0
    });
    let (_, text) = get(&url, "/metrics");
    for family in [
        "# TYPE calllogger_spool_pending_records gauge",
        "# TYPE calllogger_spool_dead_letters gauge",
        "# TYPE calllogger_delivery_retry_wait_seconds gauge",
        "# TYPE calllogger_libraries_loaded gauge",
        "# TYPE calllogger_libraries_retired gauge",
        "calllogger_instance_up{instance=\"Echo\"} 1",
        "calllogger_libraries_loaded 1",
        "# TYPE calllogger_build_info gauge",
        "# TYPE calllogger_spool_oldest_pending_age_seconds gauge",
        "# TYPE process_cpu_seconds counter",
        "# TYPE process_threads gauge",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        metric(&text, "process_resident_memory_bytes") > 1e6,
        "{text}"
    );
    assert!(metric(&text, "process_open_fds") > 3.0, "{text}");
    let delivered = metric(
        &text,
        "calllogger_last_delivery_timestamp_seconds{sink=\"frontend\"}",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - delivered).abs() < 60.0,
        "last delivery {delivered}, now {now}"
    );
    let started = metric(&text, "process_start_time_seconds");
    assert!(
        (0.0..600.0).contains(&(now - started)),
        "started {started}, now {now}"
    );
    // The example alerts and dashboard name only metrics the host exposes.
    for file in [
        "dist/monitoring/calllogger.rules.yml",
        "dist/monitoring/calllogger-dashboard.json",
    ] {
        let text_of_file =
            std::fs::read_to_string(calllogger_test_kit::workspace().join(file)).unwrap();
        let names = metric_names(&text_of_file);
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            assert!(
                text.contains(&format!("\n{name}")),
                "{file} names {name}, which /metrics lacks:\n{text}"
            );
        }
    }
    let (_, head, _) = request(&url, "/metrics", Some("127.0.0.1"));
    assert!(
        head.contains("application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    // Flaky fails at once and keeps failing: restarts count, and health names it.
    wait_until("Flaky restarts counted", || {
        metric(
            &get(&url, "/metrics").1,
            "calllogger_plugin_restarts_total{instance=\"Flaky\"}",
        ) >= 2.0
    });
    let (code, body) = get(&url, "/health");
    assert_eq!(code, 503, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["healthy"], false);
    let problems = health["problems"].to_string();
    assert!(
        problems.contains("instance Flaky is not running"),
        "{problems}"
    );
    assert!(
        problems.contains("instance Nope is waiting for a plugin library that exports class Nope"),
        "{problems}"
    );
    let echo = health["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "Echo")
        .unwrap();
    assert_eq!(echo["state"], "running");
    assert!(echo["records_last_hour"].as_u64().unwrap() > 10);
    assert!(
        !health["recent"].as_array().unwrap().is_empty(),
        "Flaky's errors are listed"
    );

    // Without Flaky and Nope, healthy; then the frontend fails: unhealthy once it has failed for
    // max_timeout; healthy again once it accepts.
    install.write_config(&format!(
        "settings: {{plugins: [Echo], frontend: '{}', token: t, metrics_addr: '127.0.0.1:0', {FAST}}}\n\
         Echo: {{label: m, interval: 0.02}}\n",
        frontend.url
    ));
    host.signal(Signal::SIGHUP);
    wait_until("healthy without Flaky and Nope", || {
        get(&url, "/health").0 == 200
    });
    frontend.answer(|_, _| status(503));
    wait_until("the stuck sender makes health 503", || {
        let (code, body) = get(&url, "/health");
        code == 503 && body.contains("delivery has failed")
    });
    let (_, text) = get(&url, "/metrics");
    assert!(metric(&text, "calllogger_delivery_attempts_total{status=\"503\"}") > 0.0);
    assert!(
        metric(&text, "calllogger_spool_pending_records") > 0.0,
        "{text}"
    );
    assert!(metric(&text, "calllogger_reloads_total{outcome=\"applied\"}") >= 1.0);
    frontend.answer(|_, _| created());
    wait_until("healthy again", || get(&url, "/health").0 == 200);

    let (code, page) = get(&url, "/");
    assert_eq!(code, 200);
    assert!(page.contains("<title>calllogger</title>") && page.contains("fetch(\"health\""));
    assert_eq!(get(&url, "/nope").0, 404);
    host.terminate();
}

#[test]
fn sd_notify_ready_reloading_watchdog_and_stopping() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo]}\nEcho: {label: n, interval: 0.5}\n",
    );
    let socket_path = install.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut command = install.command(&["run"]);
    command
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000");
    let mut host = Host::spawn(command);
    let mut messages: Vec<String> = Vec::new();
    let mut receive_until = |what: &str, host: &Host| -> Vec<String> {
        let until = Instant::now() + WAIT;
        let mut buffer = [0u8; 4096];
        loop {
            if let Ok(n) = socket.recv(&mut buffer) {
                messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                if messages.last().unwrap().contains(what) {
                    return messages.clone();
                }
            }
            assert!(
                Instant::now() < until,
                "no `{what}` among {messages:?}; log:\n{}",
                host.log()
            );
        }
    };
    let seen = receive_until("READY=1", &host);
    assert!(
        seen.last().unwrap().contains("STATUS=running Echo"),
        "{seen:?}"
    );
    let before = receive_until("WATCHDOG=1", &host).len();
    let after = receive_until("WATCHDOG=1", &host).len();
    assert!(after > before, "keep-alives repeat");
    host.signal(Signal::SIGHUP);
    let seen = receive_until("RELOADING=1", &host);
    assert!(seen.last().unwrap().contains("MONOTONIC_USEC="), "{seen:?}");
    receive_until("READY=1", &host);
    host.signal(Signal::SIGTERM);
    receive_until("STOPPING=1", &host);
    let (status, _) = host.wait_exit(WAIT);
    assert!(status.success());
}

#[test]
fn beronet_in_the_host_pushes_each_call_once_across_restarts_and_counts_rejects() {
    let samples = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/beronet/samples.csv"),
    )
    .unwrap();
    let body = format!("{samples}CDR,77,ISDN:1:1,SIP,100,0123,x,y,garbage\n");
    let gateway = Frontend::start(move |_, _| (200, vec![], body.clone()));
    let address = gateway.url.trim_start_matches("http://").to_owned();
    let install = Install::new(
        HOST,
        &[BERONET],
        &format!(
            "settings: {{plugins: [BeroNet], metrics_addr: '127.0.0.1:0'}}\n\
             BeroNet: {{address: '{address}', username: admin, password: pw, poll_seconds: 0.1, timezone: UTC}}\n"
        ),
    );
    let mut host = install.start();
    let url = listener_url(&mut host);
    let records = host.records_until(WAIT, |r| r["number"] == "0887639025");
    wait_until("three polls", || gateway.received().len() >= 3);
    let (_, text) = get(&url, "/metrics");
    assert_eq!(
        metric(
            &text,
            "calllogger_rejected_lines_total{instance=\"BeroNet\",stage=\"parse\"}"
        ),
        1.0,
        "{text}"
    );
    host.terminate();
    let mut all: Vec<Value> = records.into_iter().map(|r| r.1).collect();
    all.extend(host.remaining_records());
    assert_eq!(all.len(), 5, "each sample call once: {all:?}");
    assert!(gateway.received()[0].authorization.starts_with("Basic "));

    // Restarted on the same state: polls again, pushes nothing.
    let polls = gateway.received().len();
    let mut host = install.start();
    wait_until("two more polls", || gateway.received().len() >= polls + 2);
    host.terminate();
    assert!(
        host.remaining_records().is_empty(),
        "a call was pushed twice"
    );
    assert!(install
        .dir
        .path()
        .join("state/plugins/BeroNet/seen-cdrs")
        .exists());
}

/// Debian's Chromium, which `.ci/setup` installs (the README's test command runs it first).
fn chromium() -> std::path::PathBuf {
    let path = std::path::PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "the status page test needs Debian's Chromium: run `bash .ci/setup` (as root) first"
    );
    path
}

/// Runs headless Chromium on `url` with `args`, as the workplace's probe does: no sandbox
/// (root), no GPU, and no background connections (the network is closed).
fn headless(url: &str, profile: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium")
}

#[test]
fn the_status_page_renders_in_headless_chromium() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        &format!(
            "settings: {{plugins: [Echo, Flaky], metrics_addr: '127.0.0.1:0', {FAST}}}\n\
             Echo: {{label: page, interval: 0.05}}\nFlaky: {{mode: error}}\n"
        ),
    );
    let mut host = install.start();
    let url = listener_url(&mut host);
    host.records_until(WAIT, |r| r["line"] == 5);
    host.wait_for_log("restarting in", 2, WAIT);

    let profile = install.dir.path().join("chromium");
    let dom = headless(&format!("{url}/"), &profile, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    // What the script filled in from /health, not the page's static text.
    for shown in [
        "<span id=\"state\" class=\"bad\">unhealthy</span>",
        "<td>Echo</td>",
        "<td>running</td>",
        "<td>Flaky</td>",
        "retrying (next try in",
        "instance Flaky is not running",
        "failed: ",
    ] {
        assert!(dom.contains(shown), "`{shown}` not rendered:\n{dom}");
    }
    assert!(
        !dom.contains("loading…</td>"),
        "the table was filled in:\n{dom}"
    );

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = headless(
        &format!("{url}/"),
        &profile,
        &[&format!("--screenshot={}", screenshot.display())],
    );
    let png = std::fs::read(&screenshot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&shot.stderr)
        )
    });
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    eprintln!("status page screenshot: {}", screenshot.display());
    host.terminate();
}

/// The shipped unit file passes `systemd-analyze verify` (with ExecStart pointing at the binary
/// under test) and its offline security review, and keeps the directives the host relies on.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/calllogger.service"),
    )
    .unwrap();
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=calllogger",
        "SupplementaryGroups=dialout",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.contains(directive), "{directive} missing");
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("calllogger.service");
    std::fs::write(&copy, unit.replace("/usr/bin/calllogger", HOST)).unwrap();
    let analyze = |args: &[&str]| {
        let output = std::process::Command::new("systemd-analyze")
            .args(args)
            .arg(&copy)
            .output()
            .expect("this test needs systemd-analyze (Debian's systemd): run `bash .ci/setup` (as root) first");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };
    let (ok, text) = analyze(&["verify"]);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
    let (_, text) = analyze(&["security", "--offline=true"]);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for calllogger.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(
        exposure <= 2.0,
        "exposure {exposure} (10 = unprotected):\n{text}"
    );
}

/// The host's threads, from /proc.
fn threads(host: &Host) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", host.child.id()))
        .unwrap()
        .count()
}

#[test]
fn idle_connections_do_not_pin_threads_and_health_still_answers() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo], metrics_addr: '127.0.0.1:0'}\nEcho: {label: idle, interval: 0.5}\n",
    );
    let mut host = install.start();
    let url = listener_url(&mut host);
    assert_eq!(get(&url, "/health").0, 200);
    let before = threads(&host);
    // Half say nothing, half start a request and never finish it.
    let authority = url.trim_start_matches("http://").to_owned();
    let idle: Vec<std::net::TcpStream> = (0..500)
        .map(|n| {
            let mut stream = std::net::TcpStream::connect(&authority).unwrap();
            if n % 2 == 1 {
                use std::io::Write;
                stream.write_all(b"GET /health HTTP/1.1\r\nHost: ").unwrap();
            }
            stream
        })
        .collect();
    // Time for the host to accept them all (and, with a thread per connection, to start
    // those threads).
    std::thread::sleep(Duration::from_secs(2));
    let during = threads(&host);
    assert!(
        during <= before + 2,
        "{before} threads before 500 idle connections, {during} with them"
    );
    let (code, body) = get(&url, "/health");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"healthy\": true"), "{body}");
    drop(idle);
    host.terminate();
}

#[test]
fn requests_for_another_host_are_refused_and_nothing_is_sniffed() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo], metrics_addr: '127.0.0.1:0'}\nEcho: {label: host, interval: 0.5}\n",
    );
    let mut host = install.start();
    let url = listener_url(&mut host);
    let port = url.rsplit(':').next().unwrap().to_owned();
    for name in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (code, head, body) = request(&url, "/health", Some(&name));
        assert_eq!(code, 200, "Host: {name}: {head}\n{body}");
        assert!(
            head.contains("\r\nX-Content-Type-Options: nosniff"),
            "{head}"
        );
    }
    // DNS rebinding: a page from evil.example whose name now resolves to 127.0.0.1.
    for name in ["evil.example", &format!("evil.example:{port}")] {
        let (code, head, body) = request(&url, "/health", Some(name));
        assert_eq!(code, 421, "Host: {name}: {head}\n{body}");
        assert!(
            head.contains("\r\nX-Content-Type-Options: nosniff"),
            "{head}"
        );
        assert!(!body.contains("instances"), "{body}");
        assert!(body.contains(&format!("not `{name}`")), "{body}");
    }
    let (code, _, _) = request(&url, "/metrics", None);
    assert_eq!(code, 400, "HTTP/1.1 without Host");
    for path in ["/", "/metrics", "/nope"] {
        let authority = format!("127.0.0.1:{port}");
        let (_, head, _) = request(&url, path, Some(&authority));
        assert!(
            head.contains("\r\nX-Content-Type-Options: nosniff"),
            "{path}: {head}"
        );
    }
    host.terminate();
}

#[test]
fn a_plugin_message_cannot_forge_a_log_line_or_send_escapes() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Chatty]}\n\
         Chatty: {message: \"first\\nERROR calllogger: forged line \\e[31mred\"}\n",
    );
    let mut host = install.start();
    host.wait_for_log("chatty done", 1, WAIT);
    let log = host.terminate();
    assert!(
        log.contains("first\\nERROR calllogger: forged line \\u{1b}[31mred"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("ERROR calllogger: forged")),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

#[test]
fn a_message_repeated_in_a_tight_loop_is_logged_a_few_times_and_summed_up() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Chatty]}\nChatty: {message: the same again, seconds: 1.5}\n",
    );
    let mut host = install.start();
    host.wait_for_log("chatty done", 1, Duration::from_secs(60));
    let log = host.terminate();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the same again"))
        .collect();
    assert!(
        lines.len() <= 20,
        "{} lines of the repeated message",
        lines.len()
    );
    // What was held back is counted: far more copies than were shown.
    let held: u64 = lines
        .iter()
        .filter_map(|l| l.split("… (repeated ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(held > 100, "{held} copies held back:\n{}", lines.join("\n"));
}

#[test]
fn a_crash_in_plugin_code_is_reported_at_the_next_start_with_its_instance() {
    use std::os::unix::process::ExitStatusExt;
    for (how, signal) in [("segfault", Signal::SIGSEGV), ("abort", Signal::SIGABRT)] {
        let install = Install::new(
            HOST,
            &[TEST_PLUGINS],
            &format!("settings: {{plugins: ['Crash@{how}']}}\n'Crash@{how}': {{how: {how}}}\n"),
        );
        let mut host = install.start();
        let (status, _) = host.wait_exit(WAIT);
        assert_eq!(
            status.signal(),
            Some(signal as i32),
            "{status}; log:\n{}",
            host.log()
        );

        install.write_config("settings: {plugins: [Echo]}\nEcho: {label: after}\n");
        let mut host = install.start();
        let library = install.plugins().join(format!("lib{TEST_PLUGINS}.so"));
        host.wait_for_log(
            &format!(
                "the previous run died on {signal} while instance Crash@{how} (class Crash, library {}) was running plugin code",
                library.display()
            ),
            1,
            WAIT,
        );
        host.terminate();

        // Reported once: the marker was cleared.
        let mut host = install.start();
        host.wait_for_log("running Echo", 1, WAIT);
        let log = host.terminate();
        assert!(!log.contains("previous run died"), "{log}");
    }
}

#[test]
fn with_log_file_the_host_logs_there_not_to_stderr_and_other_commands_ignore_it() {
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo]}\nEcho: {label: logged}\n",
    );
    let log_file = install.dir.path().join("logs/calllogger.log");
    let mut command = install.command(&["run"]);
    command.arg("--log-file").arg(&log_file);
    let mut host = Host::spawn(command);
    host.records_until(WAIT, |r| r["number"] == "logged");
    let stderr = host.terminate();
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        log.contains("running Echo") && log.contains("shutting down: SIGTERM received"),
        "{log}"
    );
    assert!(!log.contains("\u{1b}["), "no colours in a file: {log}");
    assert!(!stderr.contains("running Echo"), "{stderr}");
    // A one-shot command prints its answer and its errors where it runs.
    std::fs::remove_file(&log_file).unwrap();
    install.write_config("settings: [\n");
    let log_flag = ["--log-file", log_file.to_str().unwrap()];
    let (ok, _, err) = install.run_cli(&[&log_flag[..], &["check"]].concat());
    assert!(!ok && err.contains("config.yml"), "{err}");
    assert!(!log_file.exists());
    // A log file that cannot be opened is an error that names it.
    let (ok, _, err) = install.run_cli(&["--log-file", "/proc/calllogger.log", "run"]);
    assert!(
        !ok && err.contains("cannot open the log file /proc/calllogger.log"),
        "{err}"
    );
}

#[test]
fn probes_tell_alive_and_ready_from_healthy_and_calllogger_health_asks_them() {
    // The frontend is down throughout: the host spools, alive and ready, but not healthy.
    let frontend = Frontend::start(|_, _| status(503));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = |plugins: &str| {
        format!(
            "settings: {{frontend: '{}', token: t, plugins: [{plugins}], metrics_addr: \
             '127.0.0.1:{port}', {FAST}, request_timeout: 1}}\nEcho: {{label: probe, interval: 0.05}}\n",
            frontend.url
        )
    };
    let install = Install::new(HOST, &[TEST_PLUGINS], &config("Echo, Nowhere"));
    let health = |probe: &str| {
        let (ok, out, err) = install.run_cli(&["health", probe]);
        (ok, format!("{out}{err}"))
    };
    let mut host = install.start();
    let base = listener_url(&mut host);
    wait_until("/health to name the failing delivery", || {
        get(&base, "/health").1.contains("delivery has failed")
    });
    // An instance waiting for its library: alive, not ready.
    assert_eq!(get(&base, "/livez").0, 200);
    let (code, body) = get(&base, "/readyz");
    assert!(
        code == 503 && body.contains("Nowhere") && !body.contains("delivery has failed"),
        "{body}"
    );
    let (ok, out) = health("ready");
    assert!(!ok && out.contains("Nowhere"), "{out}");
    let (ok, out) = health("live");
    assert!(ok && out.contains("\"ok\": true"), "{out}");

    // Every instance running: ready while the frontend is still down.
    install.write_config(&config("Echo"));
    host.signal(Signal::SIGHUP);
    wait_until("/readyz to pass", || get(&base, "/readyz").0 == 200);
    let (ok, out) = health("ready");
    assert!(ok && out.contains("\"problems\": []"), "{out}");
    let (ok, out) = health("full");
    assert!(!ok && out.contains("delivery has failed"), "{out}");
    host.terminate();

    // No host: the command fails, saying where it asked.
    let (ok, out) = health("ready");
    assert!(
        !ok && out.contains(&format!(
            "asking the host at http://127.0.0.1:{port}/readyz"
        )),
        "{out}"
    );
    install.write_config("settings: {plugins: []}\n");
    let (ok, out) = health("ready");
    assert!(!ok && out.contains("the status listener is off"), "{out}");
}

/// `calllogger run` on `install` with stderr on the file `err` and `env` set, stopped by
/// SIGTERM once its log says `running`; the log.
fn log_of_a_run(install: &Install, args: &[&str], env: &[(&str, String)]) -> String {
    let err = install.dir.path().join("stderr.log");
    let file = std::fs::File::create(&err).unwrap();
    let mut command = install.command(&["run"]);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(file);
    let mut child = command.spawn().unwrap();
    wait_until("the host to start", || {
        std::fs::read_to_string(&err)
            .unwrap()
            .contains("running Echo")
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(&err).unwrap()
}

#[test]
fn under_journald_each_line_carries_its_priority_and_json_lines_parse() {
    // A warning at start: a class no library exports.
    let install = Install::new(
        HOST,
        &[TEST_PLUGINS],
        "settings: {plugins: [Echo, Nowhere]}\nEcho: {label: j}\n",
    );
    let err = install.dir.path().join("stderr.log");
    std::fs::write(&err, "").unwrap();
    // systemd sets JOURNAL_STREAM to the device and inode of the stderr it connected.
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(&err).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let log = log_of_a_run(&install, &[], &[("JOURNAL_STREAM", stream)]);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with('<')), "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("running Echo")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("Nowhere")),
        "{log}"
    );
    // Not the journal (another stream): no prefixes.
    let log = log_of_a_run(&install, &[], &[("JOURNAL_STREAM", "1:2".into())]);
    assert!(!log.contains("<6>"), "{log}");
    // JSON: one object per line.
    let log = log_of_a_run(&install, &["--log-format", "json"], &[]);
    for line in log.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            entry["level"].is_string() && entry["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("\"running Echo\""), "{log}");
}
