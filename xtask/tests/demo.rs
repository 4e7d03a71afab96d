//! `cargo demo`, the README's first command: with the built-in defaults running no plugin, the
//! demo still runs MockCalls and records stream to stdout.

use std::process::Command;
use std::time::Duration;

use calllogger_test_kit::Host;

#[test]
fn the_demo_streams_mock_calls_records_to_stdout() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .arg("demo")
        .env_remove("PLUGIN")
        .env_remove("TOKEN")
        .env_remove("CALLLOGGER_FRONTEND");
    // `demo` builds, then execs the host: the process is the host's.
    let mut demo = Host::spawn(command);
    // The demo builds first: generous.
    let first = demo.next_record(Duration::from_secs(300));
    let second = first
        .as_ref()
        .and_then(|_| demo.next_record(Duration::from_secs(30)));
    demo.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _) = demo.wait_exit(Duration::from_secs(30));
    let log = demo.log();
    let (Some((_, first)), Some((_, second))) = (first, second) else {
        panic!("the demo printed fewer than two records; its log:\n{log}");
    };
    for record in [first, second] {
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
