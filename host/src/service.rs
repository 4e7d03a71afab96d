//! The service manager's side (systemd `Type=notify`): READY once the plugins run, RELOADING
//! while a SIGHUP is applied, STOPPING on shutdown, and watchdog keep-alives from the main
//! loop, so a host whose main loop hangs is restarted. Without `$NOTIFY_SOCKET` (not under
//! systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// Start-up is done; `status` is a one-line summary for `systemctl status`.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload has begun; call [`ready`] when it is done.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// How often to send [`watchdog`] keep-alives: half of `WatchdogSec`, if it is set.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|limit| limit / 2)
}

/// The main loop is alive.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}
