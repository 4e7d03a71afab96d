//! calllogger: collects call data records from PBX plugins and forwards them.
//!
//! A record's path, top-down: the **config** names plugin instances; the **loader** finds the
//! libraries that export their classes; the **supervisor** runs each instance on a thread; an
//! instance `push`es a record, which is committed to the **spool** before `push` returns; the
//! **sender** delivers the spool to the frontend, oldest first, and removes what was delivered.
//! With no frontend configured, records stay in the spool and are echoed to stdout.
//!
//! While it runs, the host **watch**es the plugins folder and **reload**s a library that is
//! added, replaced or removed, and re-reads the config on SIGHUP; a **plan** says which
//! instances that starts, restarts and stops.

mod config;
mod crash;
mod journal;
mod json;
mod loader;
mod output;
mod plugin_context;
mod runtime;
mod sender;
mod service;
mod settings;
mod signals;
mod spool;
mod spool_settings;
mod status;
mod stop;
mod telemetry;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use config::{ConfigError, Overrides};
use loader::Registry;
use plugin_context::Intake;
use runtime::plan::{self, MissingClass, Plan};
use runtime::supervisor::Supervisor;
use runtime::{Runtime, RuntimeSettings};
use settings::Settings;
use signals::{Event, Shutdown};
use spool::Spool;
use stop::Stop;
use telemetry::Telemetry;

/// Collects call data records from PBX plugins and forwards them to the call-monitoring
/// frontend.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Config file merged over the built-in defaults [default: $CALLLOGGER_CONFIG, else
    /// /etc/calllogger/config.yml if it exists].
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Folder to load plugin libraries from (overrides settings.plugin_dir).
    #[arg(long, global = true, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// Folder for the host's private files (overrides settings.state_dir).
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Run the configured plugin instances until SIGINT or SIGTERM (the default). Libraries
    /// added to, replaced in or removed from the plugins folder are applied at once; SIGHUP
    /// re-reads the config.
    Run,
    /// List the plugin classes found in the plugins folder, and the files refused.
    Plugins,
    /// Load the config and the plugins, build every instance, start nothing; report every
    /// problem (non-zero exit status if there is any).
    Check,
    /// Show the spool: pending records, dead letters, the oldest pending record's age.
    Spool {
        #[command(subcommand)]
        action: Option<SpoolAction>,
    },
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum SpoolAction {
    /// Print the newest pending records as JSON lines, oldest first.
    Tail {
        /// How many records.
        #[arg(short = 'n', default_value_t = 10)]
        lines: usize,
        /// Keep printing records as they are pushed.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Put every dead letter back in line for delivery.
    RetryDead,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let telemetry = Telemetry::new();
    init_logging(
        if command == Command::Run {
            "info"
        } else {
            "warn"
        },
        &telemetry,
    );
    let result = match command {
        Command::Run => run(&cli, telemetry),
        Command::Plugins => list_plugins(&cli),
        Command::Check => check(&cli),
        Command::Spool { action } => spool_command(&cli, action),
    };
    result.unwrap_or_else(|e| {
        tracing::error!("{}", error_chain(&e));
        ExitCode::FAILURE
    })
}

/// An error with its causes, `: `-separated, each said once: a cause whose text its error
/// already ends with (as `{source}` in a message) is not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Logs go to stderr (stdout carries records), filtered by `RUST_LOG`; the latest warnings
/// and errors also go to the status page.
fn init_logging(default: &str, telemetry: &Arc<Telemetry>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(telemetry::RecentLog(telemetry.clone()))
        .init();
}

fn load_config(cli: &Cli) -> Result<Settings, ConfigError> {
    let (file, env, flags) = config_layers(cli);
    settings::load(file, env, flags)
}

/// The config with every problem in its values, for `check` to report them all.
fn load_config_all(cli: &Cli) -> Result<(Settings, Vec<String>), ConfigError> {
    let (file, env, flags) = config_layers(cli);
    settings::load_all(file, env, flags)
}

/// The user file, the environment and the flags, as [`config::load`] takes them.
fn config_layers(cli: &Cli) -> (Option<(PathBuf, bool)>, Overrides, Overrides) {
    let env = |name: &str| std::env::var(name).ok();
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
    let flags = Overrides::default()
        .flag("plugin_dir", path(&cli.plugin_dir))
        .flag("state_dir", path(&cli.state_dir));
    (
        config::config_path(cli.config.as_deref(), env),
        Overrides::from_env(env),
        flags,
    )
}

fn scan_plugins(
    settings: &Settings,
    copy_dir: &std::path::Path,
    hashing: loader::Hashing,
) -> anyhow::Result<Registry> {
    loader::scan(
        &settings.config.plugin_dir,
        copy_dir,
        &settings.loader,
        &Registry::default(),
        hashing,
    )
    .map_err(|e| match &e {
        loader::LoaderError::ReadDir { .. } => anyhow::anyhow!(
            "{e}; set settings.plugin_dir, $CALLLOGGER_PLUGIN_DIR or --plugin-dir to the folder holding the plugin libraries"
        ),
        _ => anyhow::anyhow!("{e}"),
    })
}

/// Refuses a `state_dir` the host cannot write in; returns what to say about it, and its free
/// space in bytes.
fn inspect_state_dir(config: &config::Config) -> Result<(String, u64), String> {
    let at = config
        .origins
        .get("state_dir")
        .map_or_else(String::new, |origin| format!("{origin}: "));
    let space = config::inspect_state_dir(&config.state_dir).map_err(|e| format!("{at}{e}"))?;
    let created = space.created_in.map_or_else(String::new, |parent| {
        format!(", to be created in {}", parent.display())
    });
    let text = format!(
        "{} ({:.1} MiB free{created})",
        config.state_dir.display(),
        mib(space.free_bytes)
    );
    Ok((text, space.free_bytes))
}

/// Below this much free space in `state_dir`, start-up warns: the spool keeps every record
/// there until it is delivered.
const LOW_SPACE: u64 = 64 << 20;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One line at start-up: how much room the spool has.
fn log_free_space(dir: &std::path::Path, free: u64) {
    if free < LOW_SPACE {
        tracing::warn!(
            "state folder {}: only {:.1} MiB free (less than {:.0} MiB): the spool stores every \
             record there until it is delivered",
            dir.display(),
            mib(free),
            mib(LOW_SPACE)
        );
    } else {
        tracing::info!("state folder {}: {:.1} MiB free", dir.display(), mib(free));
    }
}

/// Builds every configured instance; the errors name the instance, class and key at fault.
fn prepare(
    config: &config::Config,
    registry: &Registry,
    missing: MissingClass,
) -> Result<Plan, Vec<String>> {
    let plan = plan::build(plan::diff(&config.instances, registry, [], missing));
    if plan.errors.is_empty() {
        Ok(plan)
    } else {
        Err(plan.errors)
    }
}

fn run(cli: &Cli, telemetry: Arc<Telemetry>) -> anyhow::Result<ExitCode> {
    // 1. Config: defaults < file < environment < flags.
    let mut settings = load_config(cli)?;
    let config = &settings.config;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let (_, free) = inspect_state_dir(config).map_err(anyhow::Error::msg)?;
    // What is in the state folder is delivered with the token: owner-only, like the plugins.
    loader::state_dir::prepare(&settings.loader, &config.state_dir)?;
    log_free_space(&config.state_dir, free);
    // 2. Loader: every trusted library in the plugins folder, from private copies.
    let copy_dir = config.state_dir.join("libs");
    let stale = loader::clean_stale_copies(&copy_dir);
    if stale > 0 {
        tracing::info!(
            "removed {stale} stale private library copies from {}",
            copy_dir.display()
        );
    }
    // Watched from before the first scan, so a library that arrives during start-up is seen.
    let (events_tx, events) = channel();
    let _watcher = watch::start(&config.plugin_dir, events_tx.clone())
        .map_err(|e| {
            tracing::warn!(
                "not watching {} for new plugins ({e}); send SIGHUP after changing it",
                config.plugin_dir.display()
            )
        })
        .ok();
    let registry = scan_plugins(&settings, &copy_dir, loader::Hashing::WhenNeeded)?;
    for refusal in &registry.refused {
        tracing::warn!(file = %refusal.file.display(), "plugin library refused: {}", refusal.reason);
    }
    let startup = prepare(config, &registry, MissingClass::Waits)
        .map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;

    // 3. Spool: a pushed record is on disk before `push` returns.
    let spool = Arc::new(Spool::open(
        &config.state_dir,
        settings.spool.fsync,
        settings.spool.max_records.get(),
        spool::Role::Owner,
    )?);
    if let Err(e) = crash::arm(&config.state_dir) {
        tracing::warn!("{e}: a crash of this run will not be reported at the next start");
    }
    let applier_stop = Arc::new(Stop::default());
    let applier = spool.start_applier(applier_stop.clone())?;
    #[cfg(unix)]
    signals::forward(events_tx.clone()).context("installing signal handlers")?;

    // 4. Sender: spool → frontend. Without a frontend, records are echoed to stdout instead.
    let sender_stop = Arc::new(Stop::default());
    let (sender, echo) = if settings.sender.delivers() {
        let failed = events_tx.clone();
        let thread = sender::start(
            spool.clone(),
            settings.sender.clone(),
            sender_stop.clone(),
            telemetry.clone(),
            move |e| {
                let _ = failed.send(Event::Shutdown(Shutdown::Failed(e.to_string())));
            },
        )?;
        (Some(thread), None)
    } else {
        tracing::info!(
            "no frontend and token configured: records are kept in the spool and written to stdout"
        );
        let failed = events_tx.clone();
        let stdout = stdout().context("opening stdout")?;
        let (records, stage) = output::start(output::JsonLines::new(stdout), move |e| {
            let _ = failed.send(Event::Shutdown(Shutdown::Failed(format!(
                "stdout failed: {e}"
            ))));
        })?;
        (None, Some((records, stage)))
    };

    // 5. Supervisor: one thread per instance, pushing into the spool.
    let intake = Intake {
        spool: spool.clone(),
        echo: echo.as_ref().map(|(records, _)| records.clone()),
        telemetry: telemetry.clone(),
        plugin_state: config.state_dir.join("plugins"),
    };
    let shutdown_timeout = settings.supervisor.shutdown_timeout;
    let listener = start_listener(&settings, &telemetry, &spool)?;
    let mut plugins = Runtime::start(
        runtime_settings(&settings),
        config.plugin_dir.clone(),
        registry,
        Supervisor::new(intake),
        copy_dir,
        startup,
        telemetry,
    );
    let running = running_line(&plugins);
    tracing::info!("{running}");
    service::ready(&running);

    // 6. Watch: the plugins folder and SIGHUP, until a reason to shut down.
    drop(events_tx);
    let watchdog = service::watchdog_interval();
    let reason = loop {
        if watchdog.is_some() {
            service::watchdog();
        }
        match signals::next(&events, watchdog) {
            None => {}
            Some(Event::Shutdown(reason)) => break reason,
            Some(Event::Reload) => {
                tracing::info!("SIGHUP received: reloading the config and the plugins folder");
                service::reloading();
                let new = load_config(cli);
                let taken = new
                    .as_ref()
                    .map(runtime_settings)
                    .map_err(|e| e.to_string());
                if let (true, Ok(new)) = (plugins.reload(taken), new) {
                    let restart_only = settings.restart_only_changes(&new);
                    if !restart_only.is_empty() {
                        tracing::warn!(
                            "changed settings that take effect only after a restart: {}",
                            restart_only.join(", ")
                        );
                    }
                    settings = new;
                }
                service::ready(&running_line(&plugins));
            }
            Some(Event::PluginsChanged) => plugins.folder_changed(),
        }
    };
    service::stopping();
    match &reason {
        Shutdown::Failed(e) => tracing::error!("shutting down: {e}"),
        Shutdown::Signal(_) => tracing::info!("shutting down: {reason}"),
    }
    // Plugins first, so nothing is pushed after the sender's last look at the spool.
    let stragglers = plugins.stop(shutdown_timeout);
    if !stragglers.is_empty() {
        tracing::warn!(
            "did not stop within {} s (settings.shutdown_timeout), left behind: {}",
            shutdown_timeout.as_secs_f64(),
            stragglers.join(", ")
        );
    }
    // Then everything pushed goes from the journal into the queue, before the sender stops.
    applier_stop.stop();
    spool.wake_applier();
    let _ = applier.join();
    sender_stop.stop();
    spool.wake();
    if let Some(sender) = sender {
        // The request in flight is bounded by request_timeout.
        let _ = sender.join();
    }
    if let Some(listener) = listener {
        listener.stop();
    }
    if let Some((records, stage)) = echo {
        drop(records);
        if let Err(e) = stage.finish() {
            tracing::error!("stdout failed: {e}");
        }
    }
    let counts = spool.counts()?;
    tracing::info!(
        "stopped; {} records pending in {}",
        counts.pending,
        spool.path().display()
    );
    Ok(match reason {
        Shutdown::Failed(_) => ExitCode::FAILURE,
        Shutdown::Signal(_) => ExitCode::SUCCESS,
    })
}

/// What runs, for the log and systemd's status line.
fn running_line(plugins: &Runtime) -> String {
    match plugins.names() {
        names if names.is_empty() => "running no plugin instances".to_owned(),
        names => format!("running {}", names.join(", ")),
    }
}

/// The optional listener for /health, /metrics and the status page.
fn start_listener(
    settings: &Settings,
    telemetry: &Arc<Telemetry>,
    spool: &Arc<Spool>,
) -> anyhow::Result<Option<status::Listener>> {
    let Some(addr) = settings.config.metrics_addr else {
        return Ok(None);
    };
    let sources = status::Sources {
        telemetry: telemetry.clone(),
        spool: spool.clone(),
        stuck_after: Duration::from_secs_f64(settings.supervisor.retry.max_timeout)
            .max(settings.sender.request_timeout),
    };
    let listener = status::start(&addr.to_string(), sources)
        .with_context(|| format!("listening on settings.metrics_addr {addr}"))?;
    tracing::info!(
        "status page, /health and /metrics on http://{}/",
        listener.addr
    );
    Ok(Some(listener))
}

/// What the runtime takes from the settings (again on a reload).
fn runtime_settings(settings: &Settings) -> RuntimeSettings {
    RuntimeSettings {
        instances: settings.config.instances.clone(),
        supervisor: settings.supervisor,
        loader: settings.loader.clone(),
    }
}

/// Standard output without the line buffering `std::io::Stdout` adds: the output stage does
/// its own buffering and flushes whenever its queue runs dry.
#[cfg(unix)]
fn stdout() -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
    Ok(std::fs::File::from(fd))
}

#[cfg(not(unix))]
fn stdout() -> std::io::Result<std::io::Stdout> {
    Ok(std::io::stdout())
}

/// `calllogger plugins`: the class table, then the refused files.
fn list_plugins(cli: &Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let copies = tempfile::tempdir().context("creating a temporary folder")?;
    let registry = scan_plugins(&config, copies.path(), loader::Hashing::Always)?;
    print!("{}", plugin_table(&registry));
    Ok(ExitCode::SUCCESS)
}

fn plugin_table(registry: &Registry) -> String {
    use calllogger_plugin_abi::PluginKind;
    let mut rows = vec![[
        "CLASS".to_owned(),
        "LIBRARY".to_owned(),
        "VERSION".to_owned(),
        "SDK".to_owned(),
        "DESCRIPTION".to_owned(),
    ]];
    for (class, exporters) in registry.classes() {
        for (library, info) in exporters {
            let kind = match info.kind {
                PluginKind::Serial => " (serial)",
                PluginKind::Lines => " (lines)",
                PluginKind::Polling => " (polling)",
                PluginKind::Generic => "",
            };
            rows.push([
                class.to_owned(),
                library.file.display().to_string(),
                library.identity(),
                library.sdk_version.clone(),
                format!("{}{kind}", info.description),
            ]);
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(&format!("{cell:width$}  "));
        }
        out.push_str(&row[4]);
        out.push('\n');
    }
    if registry.libraries.is_empty() {
        out.push_str("(no plugin libraries loaded)\n");
    } else {
        out.push_str("\nsha256 (for settings.trusted_plugins):\n");
        for library in &registry.libraries {
            out.push_str(&format!(
                "  {}  {}\n",
                library.sha256.as_deref().unwrap_or("-"),
                library.file.display()
            ));
        }
    }
    if !registry.refused.is_empty() {
        out.push_str("\nRefused:\n");
        for refusal in &registry.refused {
            out.push_str(&format!(
                "  {}: {}\n",
                refusal.file.display(),
                refusal.reason
            ));
        }
    }
    for conflict in registry.conflicts() {
        out.push_str(&format!("\nError: {conflict}\n"));
    }
    out
}

/// `calllogger check`: everything `run` would do before starting the instances, every
/// problem reported at once.
fn check(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (settings, mut problems) = load_config_all(cli)?;
    let config = &settings.config;
    match &config.file {
        Some(file) => println!("config: {} over the built-in defaults", file.display()),
        None => println!("config: built-in defaults only"),
    }
    let mut warnings = config.warnings.clone();
    match inspect_state_dir(config) {
        Ok((state, _)) => {
            println!("state folder: {state}");
            if let Err(e) = loader::state_dir::check(&settings.loader, &config.state_dir) {
                problems.push(e.to_string());
            }
        }
        Err(problem) => problems.push(problem),
    }
    println!("plugin folder: {}", config.plugin_dir.display());
    let copies = tempfile::tempdir().context("creating a temporary folder")?;
    match scan_plugins(&settings, copies.path(), loader::Hashing::WhenNeeded) {
        Ok(registry) => {
            problems.extend(
                registry
                    .refused
                    .iter()
                    .map(|r| format!("plugin library {} refused: {}", r.file.display(), r.reason)),
            );
            problems.extend(registry.conflicts().iter().map(ToString::to_string));
            match prepare(config, &registry, MissingClass::IsError) {
                Ok(plan) => {
                    for instance in plan.start {
                        println!(
                            "would run: {} (class {} from {})",
                            instance.name,
                            instance.spec.class,
                            instance.spec.source.file().display()
                        );
                    }
                }
                Err(errors) => problems.extend(errors),
            }
            let classes: Vec<&str> = registry.classes().into_keys().collect();
            warnings.extend(config.unclaimed_sections(&classes).map(|section| {
                format!(
                    "config section `{section}` matches no plugin class and no configured instance"
                )
            }));
        }
        Err(e) => problems.push(error_chain(&e)),
    }
    if settings.sender.delivers() {
        println!("records go to: {} (token set)", settings.sender.frontend);
    } else {
        println!("records go to: the spool and stdout (no frontend and token configured)");
    }
    match config.metrics_addr {
        Some(addr) => println!("status page, /health and /metrics: http://{addr}/"),
        None => println!("status page, /health and /metrics: off (settings.metrics_addr)"),
    }
    for warning in &warnings {
        println!("warning: {warning}");
    }
    if problems.is_empty() {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        for problem in &problems {
            println!("error: {problem}");
        }
        println!(
            "{} problem{} found",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `calllogger spool`: look into the spool of the configured `state_dir`.
fn spool_command(cli: &Cli, action: Option<SpoolAction>) -> anyhow::Result<ExitCode> {
    let settings = load_config(cli)?;
    let config = &settings.config;
    if !config.state_dir.join(spool::FILE).exists() {
        anyhow::bail!(
            "no spool in {} (settings.state_dir): nothing was pushed there yet",
            config.state_dir.display()
        );
    }
    let spool = Spool::open(
        &config.state_dir,
        settings.spool.fsync,
        settings.spool.max_records.get(),
        spool::Role::Reader,
    )?;
    match action {
        None => {
            let counts = spool.counts()?;
            println!("spool: {}", spool.path().display());
            // What a crash left in the journal is pending too: the host applies it at start.
            println!("pending: {}", counts.pending + counts.unapplied);
            if counts.unapplied > 0 {
                println!(
                    "  of which in the journal, not yet in the queue: {}",
                    counts.unapplied
                );
            }
            println!("dead letters: {}", counts.dead);
            match counts.oldest_pending {
                Some(pushed) => {
                    let age = jiff::Timestamp::now().as_second() - pushed;
                    println!("oldest pending: {age} s old");
                }
                None => println!("oldest pending: -"),
            }
        }
        Some(SpoolAction::Tail { lines, follow }) => {
            let mut last = spool.newest(1)?.first().map_or(0, |p| p.seq);
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) just ends the output.
            let mut printed = print_records(&mut out, spool.newest(lines)?);
            while follow && printed.is_ok() {
                let fresh = spool.after(last, 1000)?;
                if let Some(newest) = fresh.last() {
                    last = newest.seq;
                } else {
                    std::thread::sleep(Duration::from_millis(200));
                }
                printed = print_records(&mut out, fresh);
            }
        }
        Some(SpoolAction::RetryDead) => {
            let moved = spool.retry_dead()?;
            println!(
                "{moved} dead letter{} back in line for delivery",
                if moved == 1 { "" } else { "s" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_records(
    out: &mut impl std::io::Write,
    records: Vec<spool::Pending>,
) -> std::io::Result<()> {
    for record in records {
        writeln!(out, "{}", record.body)?;
    }
    out.flush()
}
