//! Off Unix there is no systemd to notify: the same calls as `service.rs`, doing nothing.

use std::time::Duration;

/// Start-up is done.
pub fn ready(_status: &str) {}

/// A reload has begun.
pub fn reloading() {}

/// Shutdown has begun.
pub fn stopping() {}

/// No watchdog asks for keep-alives.
pub fn watchdog_interval() -> Option<Duration> {
    None
}

/// The main loop is alive.
pub fn watchdog() {}
