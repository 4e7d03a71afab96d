//! The command line: global flags and the sub-commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The environment the host reads, for `--help` and the man page.
const ENVIRONMENT: &str = "\
Environment (over the config file, under the flags):
  CALLLOGGER_<SETTING>     any setting, its value read as YAML: CALLLOGGER_FRONTEND,
                           CALLLOGGER_METRICS_ADDR, CALLLOGGER_TIMEOUT=5, …
  TOKEN                    settings.token (CALLLOGGER_TOKEN wins over it)
  CALLLOGGER_TOKEN_FILE    a file holding settings.token (as settings.token_file)
  PLUGIN                   settings.plugins, comma-separated (CALLLOGGER_PLUGINS wins over it)
  CALLLOGGER_CONFIG        the config file, when --config is not given
  RUST_LOG                 the log filter, over settings.log_level (which sets the host's;
                           the other commands log warnings and errors)
  SSL_CERT_FILE            the CAs of an https frontend, when settings.ca_file is empty
A value in the config file may name any variable: ${VAR}, or ${VAR:-default}.";

/// Collects call data records from PBX plugins and forwards them to the call-monitoring
/// frontend.
#[derive(Parser, Debug, Clone)]
#[command(version, about, after_help = ENVIRONMENT)]
pub struct Cli {
    /// Config file merged over the built-in defaults [default: $CALLLOGGER_CONFIG, else
    /// /etc/calllogger/config.yml (on Windows %ProgramData%\calllogger\config.yml) if it exists].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Folder to load plugin libraries from (overrides settings.plugin_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Folder for the host's private files (overrides settings.state_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where the host (`run`, and the Windows service) writes its log instead of stderr: a new
    /// file once it reaches 10 MiB, the previous one kept as PATH.1.
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// How log lines are written: `text`, or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the configured plugin instances until SIGINT or SIGTERM (the default). Libraries
    /// added to, replaced in or removed from the plugins folder are applied at once; SIGHUP
    /// re-reads the config.
    Run,
    /// List the plugin classes found in the plugins folder, and the files refused.
    Plugins,
    /// Load the config and the plugins, build every instance, start nothing; report every
    /// problem (non-zero exit status if there is any).
    Check,
    /// Print the effective config (the defaults, the file, the environment and the flags
    /// merged), each setting with where it came from and secrets masked.
    Config {
        /// Print the built-in defaults instead, with the comments that document each setting.
        #[arg(long)]
        defaults: bool,
    },
    /// Print a completion script for a shell (e.g. `calllogger completions bash >
    /// /etc/bash_completion.d/calllogger`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff: `calllogger man > calllogger.1; man ./calllogger.1`).
    Man,
    /// Show the spool: pending records, dead letters, the oldest pending record's age.
    Spool {
        #[command(subcommand)]
        action: Option<SpoolAction>,
    },
    /// Ask the running host's status listener (settings.metrics_addr) one probe and print its
    /// answer; exit status 0 if it passed, 1 if not (for a container's HEALTHCHECK, scripts).
    Health {
        /// `ready`: start-up done, every instance running, the spool taking records; `live`:
        /// the main loop is not hung; `full`: `/health`, which also fails while deliveries
        /// fail.
        #[arg(value_enum, default_value_t = HealthProbe::Ready)]
        probe: HealthProbe,
    },
    /// Ask the running host with this config's state_dir to re-read its config and the
    /// plugins folder (Windows has no SIGHUP).
    #[cfg(windows)]
    Reload,
    /// Install, remove, start, stop or show the Windows service that runs the host.
    #[cfg(windows)]
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Internal: the loader's child process that loads one library (its path on stdin) and
    /// prints what it exports (`host/src/loader/inspect.rs`).
    #[command(name = "inspect-library", hide = true)]
    InspectLibrary,
}

impl Command {
    /// Whether the command runs the host (and so logs what it does).
    pub fn runs_host(&self) -> bool {
        #[cfg(windows)]
        if let Self::Service {
            action: ServiceAction::Run { .. },
        } = self
        {
            return true;
        }
        *self == Self::Run
    }
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`, `target`, …).
    Json,
}

/// What `calllogger health` asks.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthProbe {
    /// `/readyz`.
    Ready,
    /// `/livez`.
    Live,
    /// `/health`.
    Full,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolAction {
    /// Print the newest pending records as JSON lines, oldest first.
    Tail {
        /// How many records.
        #[arg(short = 'n', default_value_t = 10)]
        lines: usize,
        /// Keep printing records as they are pushed.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Put every dead letter back in line for delivery, at its end (while the host is stopped).
    RetryDead,
}

/// `calllogger service …` (Windows): the service manager's side. The global flags given to
/// `install` (`--config`, `--plugin-dir`, `--state-dir`, `--log-file`) become the service's.
#[cfg(windows)]
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ServiceAction {
    /// Register the service (as LocalSystem, started at boot, restarted after a failure);
    /// needs an administrator.
    Install {
        #[command(flatten)]
        name: ServiceName,
        /// Start it only on request, not at boot.
        #[arg(long)]
        manual: bool,
    },
    /// Stop the service if it runs, and remove it.
    Uninstall {
        #[command(flatten)]
        name: ServiceName,
    },
    /// Start the service and wait until its plugins run.
    Start {
        #[command(flatten)]
        name: ServiceName,
    },
    /// Stop the service gracefully (as Ctrl-C does) and wait until it has stopped.
    Stop {
        #[command(flatten)]
        name: ServiceName,
    },
    /// Show whether the service runs, how it starts and its command line (exit status 3 if it
    /// is not running).
    Status {
        #[command(flatten)]
        name: ServiceName,
    },
    /// Internal: what the service manager starts.
    #[command(hide = true)]
    Run {
        #[command(flatten)]
        name: ServiceName,
    },
}

/// The service's name (several hosts, each with its own config, can be installed).
#[cfg(windows)]
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    /// The service's name.
    #[arg(long, default_value = "calllogger")]
    pub name: String,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_help_names_every_environment_variable_the_config_reads() {
        for (setting, var) in crate::config::SHORT_NAMES {
            assert!(
                super::ENVIRONMENT.contains(&format!("\n  {var} ")),
                "{var} ({setting}) is missing from --help"
            );
        }
        assert!(super::ENVIRONMENT.contains("\n  CALLLOGGER_<SETTING> "));
    }
}
