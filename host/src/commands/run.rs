//! `calllogger run`: the host until SIGINT or SIGTERM (see [`Host`]).

use std::process::ExitCode;
use std::sync::Arc;

use super::load_config;
use crate::cli::Cli;
use crate::host::Host;
use crate::signals::Shutdown;
use crate::telemetry::Telemetry;

/// Runs the configured instances until a signal or a failure; re-reads the config on SIGHUP.
pub fn run(cli: &Cli, telemetry: Arc<Telemetry>) -> anyhow::Result<ExitCode> {
    Ok(if serve(cli, telemetry)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// [`run`]'s host: whether it stopped because it was asked to (not because of a failure).
pub(super) fn serve(cli: &Cli, telemetry: Arc<Telemetry>) -> anyhow::Result<bool> {
    let mut host = Host::start(load_config(cli)?, telemetry)?;
    let reason = host.serve(|| load_config(cli));
    host.stop(&reason)?;
    Ok(matches!(reason, Shutdown::Signal(_)))
}
