//! The service manager's side on Windows: the same calls as `service.rs` (systemd), made to
//! the Service Control Manager when the host runs as a service ([`dispatch`]): *start
//! pending* until the plugins run, then *running*, accepting stop and shutdown (a reload is
//! `calllogger reload`); *stop pending* during the graceful stop, then *stopped* with the
//! host's exit status. Run from a console, every call does nothing.

use std::ffi::OsString;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

use crate::signals::{self, Event, Shutdown};

/// How long the manager is told a start or a stop may take before it is thought hung.
const WAIT_HINT: Duration = Duration::from_secs(60);

/// The host, run as the service `name` once the manager starts it: returns whether it ended
/// well.
type Main = Box<dyn FnOnce() -> bool + Send>;

/// What [`dispatch`] hands to the manager's thread.
static MAIN: Mutex<Option<(String, Main)>> = Mutex::new(None);

/// The running service's handle, once the manager has started it.
static STATUS: OnceLock<service_control_handler::ServiceStatusHandle> = OnceLock::new();

define_windows_service!(service_entry, service_main);

/// Runs `main` as the service `name`: connects to the Service Control Manager (which started
/// this process) and returns when the service has stopped. Fails at once if the process was
/// not started by the manager.
pub fn dispatch(
    name: &str,
    main: impl FnOnce() -> bool + Send + 'static,
) -> windows_service::Result<()> {
    *MAIN.lock().unwrap_or_else(PoisonError::into_inner) = Some((name.to_owned(), Box::new(main)));
    service_dispatcher::start(name, service_entry)
}

/// The manager's thread for the service: registers for its controls, runs the host, reports
/// how it ended.
fn service_main(_arguments: Vec<OsString>) {
    let Some((name, main)) = MAIN.lock().unwrap_or_else(PoisonError::into_inner).take() else {
        return;
    };
    let handle = match service_control_handler::register(&name, on_control) {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!("cannot take the service manager's controls for `{name}`: {e}");
            return;
        }
    };
    let handle = STATUS.get_or_init(|| handle);
    signals::without_console();
    report(ServiceState::StartPending, ServiceControlAccept::empty(), 0);
    let ok = main();
    let exit = if ok {
        ServiceExitCode::Win32(0)
    } else {
        // A service-specific code: the manager's recovery actions restart the service.
        ServiceExitCode::ServiceSpecific(1)
    };
    let stopped = ServiceStatus {
        exit_code: exit,
        ..status(ServiceState::Stopped, ServiceControlAccept::empty())
    };
    if let Err(e) = handle.set_service_status(stopped) {
        tracing::warn!("cannot tell the service manager the service stopped: {e}");
    }
}

/// The manager's controls, as the main loop's events.
fn on_control(control: ServiceControl) -> ServiceControlHandlerResult {
    let event = match control {
        ServiceControl::Stop => Event::Shutdown(Shutdown::Signal("SERVICE_CONTROL_STOP")),
        ServiceControl::Shutdown => Event::Shutdown(Shutdown::Signal("SERVICE_CONTROL_SHUTDOWN")),
        ServiceControl::Interrogate => return ServiceControlHandlerResult::NoError,
        _ => return ServiceControlHandlerResult::NotImplemented,
    };
    signals::post(event);
    ServiceControlHandlerResult::NoError
}

fn status(state: ServiceState, accepted: ServiceControlAccept) -> ServiceStatus {
    let pending = matches!(
        state,
        ServiceState::StartPending | ServiceState::StopPending
    );
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: accepted,
        exit_code: ServiceExitCode::Win32(0),
        checkpoint: 0,
        wait_hint: if pending { WAIT_HINT } else { Duration::ZERO },
        process_id: None,
    }
}

/// Tells the manager the service's state, if the host runs as a service.
fn report(state: ServiceState, accepted: ServiceControlAccept, checkpoint: u32) {
    if let Some(handle) = STATUS.get() {
        let status = ServiceStatus {
            checkpoint,
            ..status(state, accepted)
        };
        if let Err(e) = handle.set_service_status(status) {
            tracing::warn!("cannot notify the service manager: {e}");
        }
    }
}

/// Start-up (or a reload) is done: the service runs and takes controls.
pub fn ready(_status: &str) {
    let accepted = ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN;
    report(ServiceState::Running, accepted, 0);
}

/// A reload has begun: the service still runs (the manager has no state for it).
pub fn reloading() {}

/// Shutdown has begun.
pub fn stopping() {
    report(ServiceState::StopPending, ServiceControlAccept::empty(), 1);
}

/// No watchdog asks for keep-alives.
pub fn watchdog_interval() -> Option<Duration> {
    None
}

/// The main loop is alive.
pub fn watchdog() {}
