//! The plugin against a real HTTP server on loopback standing in for the gateway: basic auth,
//! repeated polls and restarts without duplicates, refused credentials, a gateway that does
//! not answer, and a malformed line among good ones.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use calllogger_beronet::BeroNet;
use calllogger_plugin_sdk::__private::{construct, InstanceBox};
use calllogger_plugin_sdk::polling::Polling;
use calllogger_plugin_sdk::LogLevel;
use calllogger_plugin_sdk::Record;
use calllogger_plugin_test::TestHost;

const SAMPLES: &str = include_str!("../../../tests/data/beronet/samples.csv");
/// `admin:secret`, as the gateway expects it.
const AUTH: &str = "Basic YWRtaW46c2VjcmV0";

/// A gateway on 127.0.0.1 serving `body` (changeable) to requests with the right login.
struct Gateway {
    address: String,
    body: Arc<Mutex<Vec<u8>>>,
    delay: Arc<Mutex<Duration>>,
    requests: Arc<Mutex<Vec<String>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Gateway {
    fn start(body: &str) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let address = server.server_addr().to_ip().unwrap().to_string();
        let body = Arc::new(Mutex::new(body.as_bytes().to_vec()));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (server, body, delay, requests) = (
                server.clone(),
                body.clone(),
                delay.clone(),
                requests.clone(),
            );
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    requests.lock().unwrap().push(request.url().to_owned());
                    std::thread::sleep(*delay.lock().unwrap());
                    let authorized = request
                        .headers()
                        .iter()
                        .any(|h| h.field.equiv("Authorization") && h.value.as_str() == AUTH);
                    let response = if authorized {
                        tiny_http::Response::from_data(body.lock().unwrap().clone())
                    } else {
                        tiny_http::Response::from_string("login required").with_status_code(401)
                    };
                    let _ = request.respond(response);
                }
            })
        };
        Self {
            address,
            body,
            delay,
            requests,
            server,
            thread: Some(thread),
        }
    }

    /// The plugin on the polling base, built by the glue the host calls.
    fn plugin(&self, password: &str, extra: &str) -> InstanceBox {
        let yaml = format!(
            "address: {}\nusername: admin\npassword: {password}\npoll_seconds: 0.05\ntimezone: UTC\n{extra}",
            self.address
        );
        construct::<Polling<BeroNet>>("BeroNet", &yaml)
            .into_result()
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `plugin` on `host` until `done` holds for the host (or 10 s pass), then stops it.
fn run_until(plugin: InstanceBox, host: &TestHost, done: impl Fn(&TestHost) -> bool) {
    let runner = spawn(plugin, host);
    let start = Instant::now();
    while !done(host) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    host.stop();
    runner.join().unwrap().unwrap();
}

/// Runs `plugin` on `host` on a thread; its result as text.
fn spawn(mut plugin: InstanceBox, host: &TestHost) -> JoinHandle<Result<(), String>> {
    let handle = host.handle();
    std::thread::spawn(move || plugin.run(handle).into_result().map_err(|e| e.to_string()))
}

fn numbers(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.get_number().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn polls_push_each_call_once_across_polls_and_restarts() {
    let gateway = Gateway::start(SAMPLES);
    let state = tempfile::tempdir().unwrap();
    let host = TestHost::with_state_dir(state.path());
    run_until(gateway.plugin("secret", ""), &host, |_| {
        gateway.requests.lock().unwrap().len() >= 3
    });
    assert_eq!(
        host.records().len(),
        5,
        "five calls, pushed once over three polls"
    );
    assert!(gateway.requests.lock().unwrap()[0]
        .ends_with("/app/api/api.php?apiCommand=TelephonyGetCdr&Action=download"));

    // A restart on the same state: nothing again; a new call: only that one.
    let first = gateway.requests.lock().unwrap().len();
    let restarted = TestHost::with_state_dir(state.path());
    run_until(gateway.plugin("secret", ""), &restarted, |_| {
        gateway.requests.lock().unwrap().len() >= first + 2
    });
    assert!(
        restarted.records().is_empty(),
        "{:?}",
        numbers(&restarted.records())
    );
    let new_call = SAMPLES
        .lines()
        .next()
        .unwrap()
        .replace("CDR,18,", "CDR,99,")
        .replace("013231111", "0999");
    gateway
        .body
        .lock()
        .unwrap()
        .extend_from_slice(format!("{new_call}\n").as_bytes());
    let again = TestHost::with_state_dir(state.path());
    run_until(gateway.plugin("secret", ""), &again, |h| {
        !h.records().is_empty()
    });
    assert_eq!(numbers(&again.records()), ["0999"]);
}

#[test]
fn refused_credentials_are_an_error_that_hides_the_password() {
    let gateway = Gateway::start(SAMPLES);
    let host = TestHost::new();
    run_until(gateway.plugin("wrong-pass-42", ""), &host, |h| {
        h.logs().iter().any(|(level, _)| *level == LogLevel::Error)
    });
    assert!(host.records().is_empty());
    let logs = host.logs();
    let error = logs.iter().find(|(l, _)| *l == LogLevel::Error).unwrap();
    assert!(
        error.1.contains("refused the credentials (HTTP 401)"),
        "{error:?}"
    );
    assert!(logs.iter().all(|(_, m)| !m.contains("wrong-pass-42")));
}

#[test]
fn a_gateway_that_does_not_answer_times_out_and_is_retried() {
    let gateway = Gateway::start(SAMPLES);
    *gateway.delay.lock().unwrap() = Duration::from_secs(2);
    let host = TestHost::with_timeouts(calllogger_plugin_sdk::TimeoutSettings {
        timeout: 0.1,
        decay: 1.0,
        max_timeout: 0.1,
    });
    let started = Instant::now();
    run_until(
        gateway.plugin("secret", "request_timeout: 0.3\n"),
        &host,
        |h| h.logs().iter().any(|(_, m)| m.contains("poll failed")),
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout cut the request short"
    );
    let logs = host.logs();
    let failed = logs
        .iter()
        .find(|(_, m)| m.contains("poll failed"))
        .unwrap();
    assert!(
        failed.1.to_lowercase().contains("timeout")
            || failed.1.to_lowercase().contains("timed out"),
        "{failed:?}"
    );
    // Once the gateway answers again, the calls come through.
    *gateway.delay.lock().unwrap() = Duration::ZERO;
    let host = TestHost::new();
    run_until(
        gateway.plugin("secret", "request_timeout: 0.3\n"),
        &host,
        |h| h.records().len() == 5,
    );
    assert_eq!(host.records().len(), 5);
}

#[test]
fn a_malformed_line_is_counted_and_logged_once_and_the_rest_goes_through() {
    let gateway = Gateway::start(&format!(
        "{SAMPLES}CDR,77,ISDN:1:1,SIP,100,0123,x,y,23/07/21-25:61:00,23/07/21-22:40:10,-,-\n"
    ));
    let host = TestHost::new();
    run_until(gateway.plugin("secret", ""), &host, |_| {
        gateway.requests.lock().unwrap().len() >= 3
    });
    assert_eq!(host.records().len(), 5);
    assert_eq!(
        host.rejected().get("parse"),
        Some(&1),
        "counted once over three polls"
    );
    let warnings: Vec<String> = host
        .logs()
        .into_iter()
        .filter(|(_, m)| m.contains("CDR line rejected"))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("field 8 (start)"), "{warnings:?}");
}

#[test]
fn a_caller_name_in_latin_1_does_not_stop_the_poll() {
    let incoming = SAMPLES.lines().nth(1).unwrap();
    let text = format!(
        "{SAMPLES}{}\n",
        incoming
            .replace("CDR,19,", "CDR,21,")
            .replace("0212038407,", "0219999999,")
            .replace("021203407 <sip", "M\u{fc}ller <sip")
    );
    // As a gateway may send a display name: ISO 8859-1, one byte per character.
    let latin1: Vec<u8> = text
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect();
    let gateway = Gateway::start("");
    *gateway.body.lock().unwrap() = latin1;
    let host = TestHost::new();
    run_until(gateway.plugin("secret", ""), &host, |h| {
        h.records().len() == 6
    });
    assert!(numbers(&host.records()).contains(&"0219999999".to_owned()));
}

/// A call the host did not store is not marked as seen: the next poll pushes it.
#[test]
fn a_call_whose_push_is_refused_is_pushed_by_a_later_poll() {
    let gateway = Gateway::start(SAMPLES);
    let host = TestHost::with_timeouts(calllogger_plugin_sdk::TimeoutSettings {
        timeout: 0.1,
        decay: 2.0,
        max_timeout: 0.5,
    });
    host.refuse_pushes(Some("the spool is full"));
    let runner = spawn(gateway.plugin("secret", ""), &host);
    let until = Instant::now() + Duration::from_secs(20);
    while !host
        .logs()
        .iter()
        .any(|(_, m)| m.contains("poll failed: record not stored: the spool is full"))
    {
        assert!(Instant::now() < until, "{:?}", host.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(host.records().is_empty());
    host.refuse_pushes(None);
    while host.records().len() < 5 {
        assert!(Instant::now() < until, "{:?}", host.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    host.stop();
    runner.join().unwrap().unwrap();
    assert_eq!(host.records().len(), 5, "{:?}", numbers(&host.records()));
}

/// The `seen-cdrs` file as the 0.2 plugin wrote it (FNV-1a of each trimmed line, 16 hex digits
/// a line) keeps its calls from being pushed again by the plugin on the polling base.
#[test]
fn a_seen_file_written_by_the_0_2_plugin_is_honoured() {
    fn fnv1a(line: &str) -> u64 {
        line.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
    let lines: Vec<&str> = SAMPLES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 5);
    let state = tempfile::tempdir().unwrap();
    let old: String = lines[1..]
        .iter()
        .map(|l| format!("{:016x}\n", fnv1a(l)))
        .collect();
    std::fs::write(state.path().join("seen-cdrs"), old).unwrap();
    let gateway = Gateway::start(SAMPLES);
    let host = TestHost::with_state_dir(state.path());
    run_until(gateway.plugin("secret", ""), &host, |_| {
        gateway.requests.lock().unwrap().len() >= 3
    });
    assert_eq!(host.records().len(), 1, "{:?}", numbers(&host.records()));
    assert!(lines[0].contains(host.records()[0].get_number().unwrap()));
    assert!(host
        .logs()
        .iter()
        .any(|(_, m)| m.contains("(4 records already pushed)")));
}

/// The 0.2 keys still read, and bad values refused with the key named.
#[test]
fn settings_errors_name_the_key() {
    let base = "address: 10.0.0.2\nusername: a\npassword: b\n";
    for (extra, needle) in [
        (
            "timezone: Mars/Olympus",
            "settings key `timezone`: unknown time zone `Mars/Olympus`",
        ),
        (
            "request_timeout: 0",
            "settings key `request_timeout`: must be a number of seconds above 0",
        ),
        (
            "poll_seconds: -1",
            "settings key `poll_seconds`: must be a number of seconds above 0",
        ),
    ] {
        let err = construct::<Polling<BeroNet>>("BeroNet", &format!("{base}{extra}"))
            .into_result()
            .err()
            .unwrap_or_else(|| panic!("{extra} must be refused"));
        assert!(
            err.message.starts_with("BeroNet: ") && err.message.contains(needle),
            "{err}"
        );
    }
    construct::<Polling<BeroNet>>(
        "BeroNet",
        &format!("{base}poll_seconds: 30\nrequest_timeout: 2.5\ntimezone: Europe/Berlin"),
    )
    .into_result()
    .unwrap_or_else(|e| panic!("{e}"));
}
