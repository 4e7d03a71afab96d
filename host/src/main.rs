//! calllogger: collects call data records from PBX plugins and forwards them.
//!
//! `main` only parses the command line and runs one sub-command ([`calllogger::commands`]).
//! A record's path through the host, one module per hop:
//!
//! 1. `config`: the built-in defaults, the user file, the environment and the flags name the
//!    plugin instances to run and their settings;
//! 2. `loader`: finds the libraries in the plugins folder that export their classes;
//! 3. `supervisor`: runs each instance on its own thread, restarting one that fails;
//! 4. `plugin_context`: an instance's `push` commits the record to the spool before it returns;
//! 5. `spool`: keeps every record on disk until it is delivered;
//! 6. `sender`: delivers the spool to the frontend, oldest first (without a frontend the record
//!    is echoed to stdout).
//!
//! `host` starts these in that order and stops them in the order that loses nothing; while it
//! runs, `watch` and `reload` apply changes to the plugins folder and SIGHUP.

use std::process::ExitCode;

use clap::Parser as _;

use calllogger::cli::{Cli, Command};
use calllogger::{commands, logging, Telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let telemetry = Telemetry::new();
    // `run` is a service and says what it does; the other commands print only their answer.
    let level = if command == Command::Run {
        "info"
    } else {
        "warn"
    };
    logging::init(level, &telemetry);
    let result = match command {
        Command::Run => commands::run(&cli, telemetry),
        Command::Plugins => commands::plugins(&cli),
        Command::Check => commands::check(&cli),
        Command::Spool { action } => commands::spool(&cli, action),
    };
    result.unwrap_or_else(|e| {
        tracing::error!("{}", commands::error_chain(&e));
        ExitCode::FAILURE
    })
}
