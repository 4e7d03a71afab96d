//! calllogger: collects call data records from PBX plugins and forwards them.
//!
//! `main` only parses the command line and runs one sub-command (`host/src/commands/`). A
//! record's path through the host, one module per hop, each importing none after it:
//!
//! 1. `config` (+ `settings`): the built-in defaults, the user file, the environment and the
//!    flags, merged; each component's settings typed once in its own struct;
//! 2. `loader`: the trusted libraries in the plugins folder and the classes they export;
//! 3. `runtime`: which instances run (a pure diff of config and libraries, then build, then
//!    commit); its `supervisor` runs each on a thread and restarts one that fails;
//! 4. `plugin_context`: an instance's `push` appends the record to the spool's writer and
//!    returns once it is durable;
//! 5. the spool (crate `calllogger-spool`): a journal and a SQLite queue, with a cursor per sink;
//! 6. `sinks`: each reads the spool from its own cursor, with one delivery loop: the HTTP
//!    frontend (consumes), or the stdout echo (follows).
//!
//! `host` starts them in that order and stops them in the order that loses nothing; `watch`
//! and SIGHUP feed its reloads.

use std::process::ExitCode;

use clap::Parser as _;

use calllogger::cli::{Cli, Command};
use calllogger::{commands, logging, Telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.clone().unwrap_or(Command::Run);
    let telemetry = Telemetry::new();
    // The host is a service and says what it does; the other commands print only their answer.
    let (level, log_file) = if command.runs_host() {
        ("info", cli.log_file.as_deref())
    } else {
        ("warn", None)
    };
    if let Err(e) = logging::init(level, cli.log_format, &telemetry, log_file) {
        eprintln!("calllogger: cannot open the log file {e}");
        return ExitCode::FAILURE;
    }
    let result = match command {
        Command::Run => commands::run(&cli, telemetry),
        Command::Plugins => commands::plugins(&cli),
        Command::Check => commands::check(&cli),
        Command::Config { defaults } => commands::config(&cli, defaults),
        Command::Completions { shell } => commands::completions(shell),
        Command::Man => commands::man(),
        Command::Spool { action } => commands::spool(&cli, action),
        Command::Health { probe } => commands::health(&cli, probe),
        #[cfg(windows)]
        Command::Reload => commands::reload(&cli),
        #[cfg(windows)]
        Command::Service { action } => commands::service(&cli, action, telemetry),
        Command::InspectLibrary => Ok(commands::inspect_library()),
    };
    result.unwrap_or_else(|e| {
        tracing::error!("{}", commands::error_chain(&e));
        ExitCode::FAILURE
    })
}
