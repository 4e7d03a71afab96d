//! `cargo demo`, the README's first command: with the built-in defaults running no plugin, the
//! demo still runs MockCalls and records stream to stdout.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

#[test]
fn the_demo_streams_mock_calls_records_to_stdout() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("demo")
        .env_remove("PLUGIN")
        .env_remove("TOKEN")
        .env_remove("CALLLOGGER_FRONTEND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = channel();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = demo.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // The demo builds first: generous.
    let first = received.recv_timeout(Duration::from_secs(300));
    let second = first
        .as_ref()
        .ok()
        .and_then(|_| received.recv_timeout(Duration::from_secs(30)).ok());
    // `demo` execs the host: this is its pid.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = demo.wait().unwrap();
    let log = log.join().unwrap();
    let (Ok(first), Some(second)) = (first, second) else {
        panic!("the demo printed fewer than two records; its log:\n{log}");
    };
    for line in [first, second] {
        let record: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON record ({e}): {line}"));
        assert!(
            record["id"].is_string() && record["call_type"].is_i64(),
            "{record}"
        );
    }
    assert!(log.contains("running MockCalls"), "{log}");
    assert!(
        status.success(),
        "SIGTERM stops the demo cleanly: {status}\n{log}"
    );
}
