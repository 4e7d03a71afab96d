//! `calllogger service …` (Windows): registers the host with the Service Control Manager,
//! starts, stops, shows and removes it, and `service run`, what the manager starts.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use calllogger_plugin_sdk::Backoff;
use windows_service::service::{
    Service, ServiceAccess, ServiceAction as RecoveryAction, ServiceActionType,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceType,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use super::{error_chain, load_config, run};
use crate::cli::{Cli, ServiceAction};
use crate::telemetry::Telemetry;

/// How long `start` and `stop` wait for the service to get there.
const WAIT: Duration = Duration::from_secs(120);

/// Where a service logs unless `install` is given `--log-file`.
fn default_log_file() -> std::path::PathBuf {
    crate::config::program_data().join("calllogger.log")
}

/// Runs one `service` action.
pub fn service(
    cli: &Cli,
    action: ServiceAction,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<ExitCode> {
    match action {
        ServiceAction::Install { name, manual } => install(cli, &name.name, manual),
        ServiceAction::Uninstall { name } => uninstall(&name.name),
        ServiceAction::Start { name } => start(&name.name),
        ServiceAction::Stop { name } => stop(&name.name),
        ServiceAction::Status { name } => status(&name.name),
        ServiceAction::Run { name } => serve(cli, &name.name, telemetry),
    }
}

/// Registers the service with the flags `cli` was given, after checking its config loads.
fn install(cli: &Cli, name: &str, manual: bool) -> anyhow::Result<ExitCode> {
    let settings = load_config(cli).context("not installed: the service would not start")?;
    let unseen = crate::config::environment_variables();
    if !unseen.is_empty() {
        tracing::warn!(
            "{} set here, but a service does not see this environment: put it in the config, \
             or give it as a flag to `service install`",
            unseen.join(", ")
        );
    }
    let mut arguments: Vec<OsString> = Vec::new();
    for (flag, path) in [
        ("--config", &cli.config),
        ("--plugin-dir", &cli.plugin_dir),
        ("--state-dir", &cli.state_dir),
    ] {
        if let Some(path) = path {
            arguments.extend([flag.into(), absolute(path)?.into()]);
        }
    }
    let log_file = match &cli.log_file {
        Some(path) => absolute(path)?,
        None => default_log_file(),
    };
    arguments.extend(["--log-file".into(), log_file.clone().into()]);
    arguments.extend(["service", "run", "--name", name].map(OsString::from));
    let info = ServiceInfo {
        name: name.into(),
        display_name: format!("calllogger ({name})").into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: if manual {
            ServiceStartType::OnDemand
        } else {
            ServiceStartType::AutoStart
        },
        error_control: ServiceErrorControl::Normal,
        executable_path: std::env::current_exe().context("finding calllogger.exe")?,
        launch_arguments: arguments,
        dependencies: Vec::new(),
        account_name: None,
        account_password: None,
    };
    let manager = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG,
        )
        .map_err(|e| explain(e, name))
        .with_context(|| format!("installing the service `{name}`"))?;
    service.set_description(
        "Collects call data records from PBX plugins and forwards them (calllogger).",
    )?;
    // Restarted after a failure as the supervisor restarts a plugin, with the decayed
    // timeout's first three waits (10, 15, then every 22.5 s by default); the count starts
    // again after a day without one.
    let mut waits = Backoff::new(settings.supervisor.retry);
    let actions = (0..3)
        .map(|_| RecoveryAction {
            action_type: ServiceActionType::Restart,
            delay: waits.advance(),
        })
        .collect();
    let recovery = service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
            reboot_msg: None,
            command: None,
            actions: Some(actions),
        })
        .and_then(|()| service.set_failure_actions_on_non_crash_failures(true));
    if let Err(e) = recovery {
        let e = error_chain(&anyhow::Error::new(e));
        tracing::warn!("the service will not be restarted after a failure: {e}");
    }
    println!(
        "installed the service `{name}` ({}), logging to {}; start it with `calllogger service \
         start{}`",
        if manual {
            "started on request"
        } else {
            "started at boot"
        },
        log_file.display(),
        name_flag(name),
    );
    Ok(ExitCode::SUCCESS)
}

/// Stops the service if it runs, then removes it.
fn uninstall(name: &str) -> anyhow::Result<ExitCode> {
    let service = open(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    )?;
    if service.query_status()?.current_state != ServiceState::Stopped {
        stop_and_wait(&service, name)?;
    }
    service
        .delete()
        .map_err(|e| explain(e, name))
        .with_context(|| format!("removing the service `{name}`"))?;
    println!("removed the service `{name}`");
    Ok(ExitCode::SUCCESS)
}

/// Starts the service and waits until it runs (its plugins started).
fn start(name: &str) -> anyhow::Result<ExitCode> {
    let service = open(name, ServiceAccess::START | ServiceAccess::QUERY_STATUS)?;
    service
        .start::<&str>(&[])
        .map_err(|e| explain(e, name))
        .with_context(|| format!("starting the service `{name}`"))?;
    let status = wait_until(&service, |state| {
        matches!(state, ServiceState::Running | ServiceState::Stopped)
    })?;
    match status.current_state {
        ServiceState::Running => {
            println!("the service `{name}` runs");
            Ok(ExitCode::SUCCESS)
        }
        ServiceState::Stopped => bail!(
            "the service `{name}` stopped while starting ({}); its log says why",
            exit_text(status.exit_code)
        ),
        _ => bail!(
            "the service `{name}` is still starting after {} s",
            WAIT.as_secs()
        ),
    }
}

/// Asks the service to stop (the host's graceful stop) and waits until it has.
fn stop(name: &str) -> anyhow::Result<ExitCode> {
    let service = open(name, ServiceAccess::STOP | ServiceAccess::QUERY_STATUS)?;
    if service.query_status()?.current_state == ServiceState::Stopped {
        println!("the service `{name}` is not running");
        return Ok(ExitCode::SUCCESS);
    }
    stop_and_wait(&service, name)?;
    println!("the service `{name}` stopped");
    Ok(ExitCode::SUCCESS)
}

fn stop_and_wait(service: &Service, name: &str) -> anyhow::Result<()> {
    service
        .stop()
        .map_err(|e| explain(e, name))
        .with_context(|| format!("stopping the service `{name}`"))?;
    // Until it says *stopped*: right after the request it may still say *running*.
    let status = wait_until(service, |state| state == ServiceState::Stopped)?;
    if status.current_state != ServiceState::Stopped {
        bail!(
            "the service `{name}` has not stopped after {} s",
            WAIT.as_secs()
        );
    }
    Ok(())
}

/// Prints the service's state, start type and command line; exit status 3 unless it runs.
fn status(name: &str) -> anyhow::Result<ExitCode> {
    let service = open(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    )?;
    let status = service.query_status()?;
    let config = service.query_config()?;
    let state = match status.current_state {
        ServiceState::Running => match status.process_id {
            Some(pid) => format!("running (process {pid})"),
            None => "running".into(),
        },
        ServiceState::Stopped => format!("stopped ({})", exit_text(status.exit_code)),
        ServiceState::StartPending => "starting".into(),
        ServiceState::StopPending => "stopping".into(),
        other => format!("{other:?}"),
    };
    let starts = match config.start_type {
        ServiceStartType::AutoStart => "at boot",
        ServiceStartType::OnDemand => "on request",
        ServiceStartType::Disabled => "never (disabled)",
        _ => "by the system",
    };
    println!("service: {name}");
    println!("state: {state}");
    println!("starts: {starts}");
    println!("command: {}", config.executable_path.display());
    Ok(if status.current_state == ServiceState::Running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `service run`: the host, as the service manager's service `name`.
fn serve(cli: &Cli, name: &str, telemetry: Arc<Telemetry>) -> anyhow::Result<ExitCode> {
    let cli = cli.clone();
    let main = move || {
        run::serve(&cli, telemetry).unwrap_or_else(|e| {
            tracing::error!("{}", error_chain(&e));
            false
        })
    };
    crate::service::dispatch(name, main).map_err(|e| match e {
        windows_service::Error::Winapi(io) if io.raw_os_error() == Some(1063) => anyhow::anyhow!(
            "`service run` is what the service manager starts; run the host here with \
             `calllogger run`, or start the service with `calllogger service start{}`",
            name_flag(name)
        ),
        e => anyhow::Error::new(e).context("connecting to the service manager"),
    })?;
    Ok(ExitCode::SUCCESS)
}

fn manager(access: ServiceManagerAccess) -> anyhow::Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, access)
        .map_err(|e| explain(e, "calllogger"))
        .context("connecting to the service manager")
}

fn open(name: &str, access: ServiceAccess) -> anyhow::Result<Service> {
    manager(ServiceManagerAccess::CONNECT)?
        .open_service(name, access)
        .map_err(|e| explain(e, name))
}

/// The manager's errors an operator can act on, said so.
fn explain(e: windows_service::Error, name: &str) -> anyhow::Error {
    let code = match &e {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    };
    match code {
        Some(5) => {
            anyhow::anyhow!("access denied: run this from a command prompt opened as administrator")
        }
        Some(1060) => anyhow::anyhow!("no service named `{name}` is installed"),
        Some(1073) => anyhow::anyhow!(
            "a service named `{name}` is installed already (remove it with `calllogger service \
             uninstall{}`, or choose another with --name)",
            name_flag(name)
        ),
        _ => anyhow::Error::new(e),
    }
}

/// Polls the service's status until `reached` says yes to its state, for at most [`WAIT`].
fn wait_until(
    service: &Service,
    reached: impl Fn(ServiceState) -> bool,
) -> anyhow::Result<windows_service::service::ServiceStatus> {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = service.query_status()?;
        if reached(status.current_state) || Instant::now() >= deadline {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exit_text(code: ServiceExitCode) -> String {
    match code {
        ServiceExitCode::Win32(0) => "exit status 0".into(),
        ServiceExitCode::Win32(1077) => "not started since the system started".into(),
        ServiceExitCode::ServiceSpecific(n) => format!("exit status {n}"),
        ServiceExitCode::Win32(n) => format!("Windows error {n}"),
    }
}

/// ` --name NAME` unless it is the default name.
fn name_flag(name: &str) -> String {
    if name == "calllogger" {
        String::new()
    } else {
        format!(" --name {name}")
    }
}

fn absolute(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}
