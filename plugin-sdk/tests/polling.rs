//! The polling base with a plugin that asks a real HTTP server on loopback: keyed records once
//! across polls and restarts, unkeyed ones every poll, `poll_seconds` read and checked by the
//! base, a stop that ends the wait and (through `on_stop`) a request in flight, and a fatal
//! poll error that ends the run without a retry.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use calllogger_plugin_abi::{PluginKind, StopHookBox};
use calllogger_plugin_sdk::__private::{class_info, construct, InstanceBox};
use calllogger_plugin_sdk::polling::{Polled, Polling, PollingPlugin};
use calllogger_plugin_sdk::prelude::*;
use calllogger_plugin_sdk::types::HostPort;
use calllogger_plugin_sdk::ErrorKind;
use calllogger_plugin_test::TestHost;

/// Settings of the test PBX.
#[settings]
pub struct Settings {
    address: HostPort,
}

/// Asks `GET /` and reads `key,number` lines (`*` as the key: unkeyed; `FATAL`: a fatal error).
pub struct Pbx {
    address: HostPort,
}

impl PollingPlugin for Pbx {
    type Settings = Settings;
    const DESCRIPTION: &'static str = "test PBX over HTTP";
    const POLL_SECONDS: f64 = 0.05;

    fn new(settings: Settings) -> Result<Self, Error> {
        Ok(Self {
            address: settings.address,
        })
    }

    fn source(&self) -> String {
        format!("http://{}/", self.address)
    }

    fn poll(&mut self, ctx: &Context) -> Result<Vec<Polled>, Error> {
        let mut stream = TcpStream::connect((self.address.host(), self.address.port_or(80)))
            .with_context(|| format!("connecting to {}", self.address))?;
        // No read timeout: the stop hook ends a request in flight.
        let shut = stream.try_clone()?;
        ctx.on_stop(move || {
            let _ = shut.shutdown(Shutdown::Both);
        });
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .context("no HTTP body")?;
        let mut polled = Vec::new();
        for line in body.lines() {
            if line == "FATAL" {
                return Err(calllogger_plugin_sdk::error::fatal("licence revoked"));
            }
            let (key, number) = line.split_once(',').context("not key,number")?;
            let record = Record::new(CallType::INCOMING).number(number);
            polled.push(match key {
                "*" => Polled::always(record),
                key => Polled::once(key, record),
            });
        }
        Ok(polled)
    }
}

/// An HTTP server on 127.0.0.1 answering every request with `body`, or holding it when `hang`.
struct Server {
    address: String,
    body: Arc<Mutex<String>>,
    hang: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn start(body: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let body = Arc::new(Mutex::new(body.to_owned()));
        let hang = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (b, h, r) = (body.clone(), hang.clone(), requests.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut stream in listener.incoming().flatten() {
                let mut request = Vec::new();
                let mut byte = [0];
                while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    request.push(byte[0]);
                }
                r.fetch_add(1, Ordering::SeqCst);
                if h.load(Ordering::SeqCst) {
                    held.push(stream);
                    continue;
                }
                let answer = format!("HTTP/1.0 200 OK\r\n\r\n{}", b.lock().unwrap());
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Self {
            address,
            body,
            hang,
            requests,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn instance(yaml: &str) -> Result<InstanceBox, calllogger_plugin_sdk::__private::PluginError> {
    construct::<Polling<Pbx>>("Pbx", yaml).into_result()
}

/// An instance running on a thread, as the host runs it.
struct Running {
    host: TestHost,
    hook: StopHookBox,
    thread: JoinHandle<Result<(), String>>,
}

fn spawn(mut instance: InstanceBox, host: &TestHost) -> Running {
    let handle = host.handle();
    Running {
        host: host.clone(),
        hook: instance.stop_hook(),
        thread: std::thread::spawn(move || {
            instance
                .run(handle)
                .into_result()
                .map_err(|e| e.to_string())
        }),
    }
}

impl Running {
    /// Stops the instance as the host does (the flag, then the stop hook) and waits for `run`.
    fn stop(self) -> Result<(), String> {
        self.host.stop();
        self.hook.stop();
        self.thread.join().unwrap()
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn numbers(host: &TestHost) -> Vec<String> {
    host.records()
        .iter()
        .map(|r| r.get_number().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_class_is_of_the_polling_kind() {
    assert_eq!(class_info::<Polling<Pbx>>("Pbx").kind, PluginKind::Polling);
}

#[test]
fn keyed_records_are_pushed_once_across_polls_and_restarts_unkeyed_ones_every_poll() {
    let server = Server::start("a,1\nb,2\n*,9\n");
    let state = tempfile::tempdir().unwrap();
    let host = TestHost::with_state_dir(state.path());
    let run = spawn(
        instance(&format!("address: {}", server.address)).unwrap(),
        &host,
    );
    wait_for("three polls", || server.requests() >= 3);
    run.stop().unwrap();
    let got = numbers(&host);
    assert_eq!(got.iter().filter(|n| *n == "1").count(), 1, "{got:?}");
    assert_eq!(got.iter().filter(|n| *n == "2").count(), 1, "{got:?}");
    assert!(got.iter().filter(|n| *n == "9").count() >= 3, "{got:?}");
    assert!(host
        .logs()
        .iter()
        .any(|(_, m)| m.contains(&format!("polling http://{}/ every 0.05 s", server.address))));

    // A restart on the same state: only the new key and the unkeyed record.
    server.body.lock().unwrap().push_str("c,3\n");
    let again = TestHost::with_state_dir(state.path());
    let run = spawn(
        instance(&format!("address: {}", server.address)).unwrap(),
        &again,
    );
    wait_for("the new record", || {
        numbers(&again).contains(&"3".to_owned())
    });
    run.stop().unwrap();
    let got = numbers(&again);
    assert!(
        !got.contains(&"1".to_owned()) && !got.contains(&"2".to_owned()),
        "{got:?}"
    );
    assert!(again
        .logs()
        .iter()
        .any(|(_, m)| m.contains("(2 records already pushed)")));
}

#[test]
fn poll_seconds_is_read_by_the_base_and_checked() {
    let server = Server::start("");
    for (yaml, needle) in [
        (
            "poll_seconds: 0",
            "settings key `poll_seconds`: must be a number of seconds above 0",
        ),
        ("poll_seconds: soon", "settings key `poll_seconds`"),
        ("pol_seconds: 1", "unknown settings key `pol_seconds`"),
    ] {
        let yaml = format!("address: {}\n{yaml}", server.address);
        let err = instance(&yaml).err().expect("refused");
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
        assert!(
            err.message.starts_with("Pbx: ") && err.message.contains(needle),
            "{err}"
        );
    }
    let err = instance("address: ':80'").err().expect("refused");
    assert!(
        err.message.contains("`address`") && err.message.contains("host is missing"),
        "{err}"
    );
    // A long interval from the section: one poll, then the wait, which a stop ends at once.
    let host = TestHost::new();
    let run = spawn(
        instance(&format!("address: {}\npoll_seconds: 600", server.address)).unwrap(),
        &host,
    );
    wait_for("the first poll", || server.requests() >= 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.requests(), 1, "the next poll waits 600 s");
    let stopped = Instant::now();
    run.stop().unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(60),
        "{:?}",
        stopped.elapsed()
    );
}

#[test]
fn a_stop_ends_a_request_in_flight_through_the_stop_hook() {
    let server = Server::start("a,1\n");
    server.hang.store(true, Ordering::SeqCst);
    let host = TestHost::new();
    let run = spawn(
        instance(&format!("address: {}", server.address)).unwrap(),
        &host,
    );
    wait_for("the request", || server.requests() >= 1);
    let stopped = Instant::now();
    run.stop().unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(60),
        "{:?}",
        stopped.elapsed()
    );
    assert!(host.records().is_empty());
}

#[test]
fn a_fatal_poll_error_ends_the_run_without_a_retry() {
    let server = Server::start("FATAL\n");
    let host = TestHost::new();
    let mut instance = instance(&format!("address: {}", server.address)).unwrap();
    let err = instance.run(host.handle()).into_result().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    assert!(err.message.contains("licence revoked"), "{err}");
    assert_eq!(server.requests(), 1);
}

#[test]
fn a_transient_poll_error_is_logged_and_retried() {
    let server = Server::start("no comma here\n");
    let host = TestHost::with_timeouts(calllogger_plugin_sdk::TimeoutSettings {
        timeout: 0.05,
        decay: 1.0,
        max_timeout: 0.05,
    });
    let run = spawn(
        instance(&format!("address: {}", server.address)).unwrap(),
        &host,
    );
    wait_for("two failed polls", || {
        host.logs()
            .iter()
            .filter(|(l, m)| *l == LogLevel::Error && m.contains("poll failed: not key,number"))
            .count()
            >= 2
    });
    *server.body.lock().unwrap() = "a,1\n".into();
    wait_for("the record", || host.records().len() == 1);
    run.stop().unwrap();
}
