//! The running host: what `calllogger run` starts (state folder, loader, spool, sinks, status
//! listener, then the instances), the loop that applies reloads, and the shutdown in the order
//! that loses nothing.

use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{self, Config, ConfigError};
use crate::loader::{self, Registry};
use crate::plugin_context::Intake;
use crate::runtime::plan::{self, MissingClass, Plan};
use crate::runtime::supervisor::Supervisor;
use crate::runtime::{Runtime, RuntimeSettings};
use crate::settings::Settings;
use crate::signals::{self, Event, Shutdown};
use crate::sinks::frontend::{self, FrontendSink};
use crate::sinks::spool_source;
use crate::sinks::{stdout, SinkEvent};
use crate::stop::Stop;
use crate::telemetry::Telemetry;
use crate::{crash, logging, service, status, watch};
use calllogger_spool::{self as spool, ApplierThread, Mode, Queue, Spool};

/// Everything `run` started, owned in one place so that [`Host::stop`] can end it in order.
pub struct Host {
    events: Receiver<Event>,
    /// Watches the plugins folder while it lives.
    _watcher: Option<watch::Watcher>,
    queue: Queue,
    applier: ApplierThread,
    sinks_stop: Arc<Stop>,
    sinks: Vec<JoinHandle<()>>,
    listener: Option<status::Listener>,
    runtime: Runtime,
    /// The settings running: a reload compares the new ones with them.
    settings: Settings,
    /// Where the main loop says what it is doing (`/livez`, `/readyz`).
    telemetry: Arc<Telemetry>,
}

impl Host {
    /// Starts the host on `settings`, in the record's order: the state folder, the plugins
    /// folder (watched) and the instances it can build, the spool, the sinks, the status
    /// listener, then the instances.
    pub fn start(settings: Settings, telemetry: Arc<Telemetry>) -> anyhow::Result<Self> {
        logging::apply(&settings.log.log_level);
        let config = &settings.config;
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let (_, free) = inspect_state_dir(config).map_err(anyhow::Error::msg)?;
        // What is in the state folder is delivered with the token: owner-only, like the plugins.
        loader::state_dir::prepare(&settings.loader, &config.state_dir)?;
        log_free_space(&config.state_dir, free);

        // Loader: every trusted library in the plugins folder, from private copies.
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
        // Signals from here on are events: a SIGTERM during start-up (the scan waits for
        // inspecting children) stops the host cleanly once it is up, instead of killing it.
        signals::forward(events_tx.clone()).context("installing signal handlers")?;
        #[cfg(windows)]
        crate::control::listen(&config.state_dir, events_tx.clone())
            .context("listening for `calllogger reload`")?;
        let watcher = watch::start(&config.plugin_dir, events_tx.clone())
            .map_err(|e| {
                tracing::warn!(
                    "not watching {} for new plugins ({e}); send {} after changing it",
                    config.plugin_dir.display(),
                    signals::RELOAD_REQUEST
                )
            })
            .ok();
        let registry = scan_plugins(&settings, &copy_dir, loader::Hashing::WhenNeeded)?;
        for refusal in &registry.refused {
            tracing::warn!(file = %refusal.file.display(), "plugin library refused: {}", refusal.reason);
        }
        let startup = prepare(config, &registry, MissingClass::Waits)
            .map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;

        // Spool: a pushed record is on disk before `push` returns.
        let (writer, queue, applier) = Spool::open(&config.state_dir, spool_options(&settings))?;
        if let Err(e) = crash::arm(&config.state_dir) {
            tracing::warn!("{e}: a crash of this run will not be reported at the next start");
        }
        let applier = applier.start()?;

        // Sinks: spool → frontend; without a frontend, spool → stdout.
        let sinks_stop = Arc::new(Stop::default());
        let sinks = start_sinks(&settings, &queue, &sinks_stop, &telemetry, &events_tx)?;

        // Supervisor: one thread per instance, pushing into the spool.
        let intake = Intake {
            spool: writer,
            telemetry: telemetry.clone(),
            plugin_state: config.state_dir.join("plugins"),
        };
        let listener = start_listener(&settings, &telemetry, &queue)?;
        let runtime = Runtime::start(
            runtime_settings(&settings),
            config.plugin_dir.clone(),
            registry,
            Supervisor::new(intake.contexts(), telemetry.clone()),
            copy_dir,
            startup,
            telemetry.clone(),
        );
        let running = running_line(&runtime);
        tracing::info!("{running}");
        release_startup_code();
        service::ready(&running);
        Ok(Self {
            events,
            _watcher: watcher,
            queue,
            applier,
            sinks_stop,
            sinks,
            listener,
            runtime,
            settings,
            telemetry,
        })
    }

    /// Applies changes to the plugins folder, and a re-read config on SIGHUP, until a reason
    /// to shut down arrives; returns it.
    pub fn serve(&mut self, reread: impl Fn() -> Result<Settings, ConfigError>) -> Shutdown {
        let watchdog = service::watchdog_interval();
        let telemetry = self.telemetry.clone();
        let main_loop = telemetry.main_loop();
        loop {
            if watchdog.is_some() {
                service::watchdog();
            }
            main_loop.waiting();
            match signals::next(&self.events, watchdog) {
                None => {}
                Some(Event::Shutdown(reason)) => {
                    main_loop.busy("shutting down");
                    return reason;
                }
                Some(Event::Reload(from)) => {
                    main_loop.busy("reloading the config");
                    tracing::info!("{from} received: reloading the config and the plugins folder");
                    service::reloading();
                    self.reload(reread());
                    release_startup_code();
                    service::ready(&running_line(&self.runtime));
                }
                Some(Event::PluginsChanged) => {
                    main_loop.busy("applying a change in the plugins folder");
                    self.runtime.folder_changed();
                    release_startup_code();
                }
            }
        }
    }

    /// SIGHUP: the instances and the log level follow the new settings (or, if any is wrong,
    /// nothing changes); a changed setting that only a restart applies is named.
    fn reload(&mut self, new: Result<Settings, ConfigError>) {
        let taken = new
            .as_ref()
            .map(runtime_settings)
            .map_err(ToString::to_string);
        if let (true, Ok(new)) = (self.runtime.reload(taken), new) {
            let restart_only = self.settings.restart_only_changes(&new);
            if !restart_only.is_empty() {
                tracing::warn!(
                    "changed settings that take effect only after a restart: {}",
                    restart_only.join(", ")
                );
            }
            logging::apply(&new.log.log_level);
            self.settings = new;
        }
    }

    /// Stops everything, in the order that loses nothing: the instances (nothing is pushed
    /// after), the applier (everything pushed reaches the queue), then the sinks.
    pub fn stop(self, reason: &Shutdown) -> anyhow::Result<()> {
        service::stopping();
        match reason {
            Shutdown::Failed(e) => tracing::error!("shutting down: {e}"),
            Shutdown::Signal(_) => tracing::info!("shutting down: {reason}"),
        }
        self.runtime.stop();
        let _ = self.applier.stop();
        // The echo writes what the queue holds before it ends.
        self.sinks_stop.stop();
        self.queue.wake();
        for sink in self.sinks {
            // A request in flight is bounded by request_timeout.
            let _ = sink.join();
        }
        if let Some(listener) = self.listener {
            listener.stop();
        }
        let counts = self.queue.counts()?;
        tracing::info!(
            "stopped; {} records pending in {}",
            counts.pending,
            self.queue.path().display()
        );
        Ok(())
    }
}

/// Every library in the plugins folder, from private copies in `copy_dir`: those exporting a
/// configured class are loaded, the others only inspected (in child processes).
pub(crate) fn scan_plugins(
    settings: &Settings,
    copy_dir: &Path,
    hashing: loader::Hashing,
) -> anyhow::Result<Registry> {
    loader::scan(
        &settings.config.plugin_dir,
        copy_dir,
        &settings.loader,
        &Registry::default(),
        hashing,
        &crate::runtime::classes_of(&settings.config.instances),
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
pub(crate) fn inspect_state_dir(config: &Config) -> Result<(String, u64), String> {
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

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Builds every configured instance; the errors name the instance, class and key at fault.
pub(crate) fn prepare(
    config: &Config,
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

/// Below this much free space in `state_dir`, start-up warns: the spool keeps every record
/// there until it is delivered.
const LOW_SPACE: u64 = 64 << 20;

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

/// Once start-up or a reload is done, the code only it ran leaves memory (see
/// `loader::resident`).
fn release_startup_code() {
    #[cfg(target_os = "linux")]
    if let Some((before, after)) = loader::resident::release_startup_code() {
        tracing::debug!(
            "start-up code released: resident {:.1} → {:.1} MiB",
            mib(before),
            mib(after)
        );
    }
}

/// What runs, for the log and systemd's status line.
fn running_line(runtime: &Runtime) -> String {
    match runtime.names() {
        names if names.is_empty() => "running no plugin instances".to_owned(),
        names => format!("running {}", names.join(", ")),
    }
}

/// The optional listener for /health, /metrics and the status page.
fn start_listener(
    settings: &Settings,
    telemetry: &Arc<Telemetry>,
    queue: &Queue,
) -> anyhow::Result<Option<status::Listener>> {
    let Some(addr) = settings.config.metrics_addr else {
        return Ok(None);
    };
    let sources = status::Sources {
        telemetry: telemetry.clone(),
        spool: queue.clone(),
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

/// A sink's fatal failure shuts the host down.
impl From<SinkEvent> for Event {
    fn from(event: SinkEvent) -> Self {
        match event {
            SinkEvent::Failed(failed) => Event::Shutdown(Shutdown::Failed(failed.to_string())),
        }
    }
}

/// Starts the configured sinks, each on its own thread with its own cursor: the frontend when
/// one is configured, else the stdout echo.
fn start_sinks(
    settings: &Settings,
    queue: &Queue,
    stop: &Arc<Stop>,
    telemetry: &Arc<Telemetry>,
    events: &std::sync::mpsc::Sender<Event>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let retry = settings.supervisor.retry;
    let thread = if settings.sender.delivers() {
        let sink = FrontendSink::new(settings.sender.clone(), telemetry.clone())?;
        telemetry.sender_enabled(true);
        spool_source::start(sink, Mode::Consuming, retry, queue, stop, telemetry, events)?
    } else {
        tracing::info!(
            "no frontend and token configured: records are kept in the spool and written to stdout"
        );
        let sink = stdout::JsonLines::new(stdout::stdout().context("opening stdout")?);
        spool_source::start(sink, Mode::Following, retry, queue, stop, telemetry, events)?
    };
    Ok(vec![thread])
}

/// How this run uses the spool: the frontend sink consumes it when there is a frontend; a full
/// spool drops INCOMING ("ringing now", call type 0) records first.
fn spool_options(settings: &Settings) -> spool::Options {
    spool::Options {
        max_records: settings.spool.max_records,
        fsync: settings.spool.fsync,
        consumers: settings
            .sender
            .delivers()
            .then(|| frontend::NAME.to_owned())
            .into_iter()
            .collect(),
        evict_first: spool::EvictFirst {
            applies: |kind| kind == 0,
            what: "ringing INCOMING ones",
        },
    }
}

/// What the runtime takes from the settings (again on a reload).
fn runtime_settings(settings: &Settings) -> RuntimeSettings {
    RuntimeSettings {
        instances: settings.config.instances.clone(),
        supervisor: settings.supervisor,
        loader: settings.loader.clone(),
    }
}
