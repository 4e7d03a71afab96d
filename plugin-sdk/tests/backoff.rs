//! `Backoff::sleep` on a context of the test host: it waits and wakes on the stop.

use std::time::{Duration, Instant};

use calllogger_plugin_sdk::TimeoutSettings;
use calllogger_plugin_test::TestHost;

#[test]
fn sleep_waits_the_current_timeout_then_lengthens_it() {
    let host = TestHost::with_timeouts(TimeoutSettings {
        timeout: 0.05,
        decay: 2.0,
        max_timeout: 0.15,
    });
    let mut t = host.context().backoff();
    for expected in [0.05, 0.1, 0.15, 0.15] {
        let start = Instant::now();
        assert!(t.sleep());
        assert!(
            start.elapsed().as_secs_f64() >= expected * 0.99,
            "slept at least {expected} s"
        );
    }
}

#[test]
fn sleep_wakes_at_once_when_the_instance_stops() {
    let host = TestHost::with_timeouts(TimeoutSettings {
        timeout: 600.0,
        decay: 1.5,
        max_timeout: 600.0,
    });
    let mut t = host.context().backoff();
    let stopper = host.clone();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        stopper.stop();
    });
    let start = Instant::now();
    assert!(!t.sleep(), "reports that the instance stopped");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "woke after {:?}",
        start.elapsed()
    );
    thread.join().unwrap();
}
