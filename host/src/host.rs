//! The running host: what `calllogger run` starts, in the record's order (config → loader →
//! spool → sinks → supervisor), the loop that applies reloads, and the shutdown in the order
//! that loses nothing.

use std::num::NonZeroU64;
use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{self, Config, ConfigError};
use crate::loader::{self, Registry};
use crate::plan::{self, MissingClass, Plan};
use crate::plugin_context::Intake;
use crate::reload::Plugins;
use crate::signals::{self, Event, Shutdown};
use crate::sinks::frontend::{self, FrontendSink, SenderSettings};
use crate::sinks::spool_source;
use crate::sinks::{stdout, SinkEvent};
use crate::stop::Stop;
use crate::supervisor::Supervisor;
use crate::telemetry::Telemetry;
use crate::{crash, service, status, watch};
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
    plugins: Plugins,
    shutdown_timeout: Duration,
}

impl Host {
    /// Starts the host on `config`: the spool, the sender or the stdout echo, the status
    /// listener, then every instance the `startup` plan builds over `registry`.
    pub fn start(config: Config, telemetry: Arc<Telemetry>) -> anyhow::Result<Self> {
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let (_, free) = inspect_state_dir(&config).map_err(anyhow::Error::msg)?;
        // What is in the state folder is delivered with the token: owner-only, like the plugins.
        loader::state_dir::prepare(&config.plugin_policy, &config.state_dir)?;
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
        let watcher = watch::start(&config.plugin_dir, events_tx.clone())
            .map_err(|e| {
                tracing::warn!(
                    "not watching {} for new plugins ({e}); send SIGHUP after changing it",
                    config.plugin_dir.display()
                )
            })
            .ok();
        let registry = scan_plugins(&config, &copy_dir, loader::Hashing::WhenNeeded)?;
        for refusal in &registry.refused {
            tracing::warn!(file = %refusal.file.display(), "plugin library refused: {}", refusal.reason);
        }
        let startup = prepare(&config, &registry, MissingClass::Waits)
            .map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;

        // Spool: a pushed record is on disk before `push` returns.
        let (writer, queue, applier) = Spool::open(&config.state_dir, spool_options(&config)?)?;
        if let Err(e) = crash::arm(&config.state_dir) {
            tracing::warn!("{e}: a crash of this run will not be reported at the next start");
        }
        let applier = applier.start()?;
        #[cfg(unix)]
        signals::forward(events_tx.clone()).context("installing signal handlers")?;

        // Sinks: spool → frontend; without a frontend, spool → stdout.
        let sinks_stop = Arc::new(Stop::default());
        let sinks = start_sinks(&config, &queue, &sinks_stop, &telemetry, &events_tx)?;

        // Supervisor: one thread per instance, pushing into the spool.
        let intake = Intake {
            spool: writer,
            telemetry: telemetry.clone(),
            plugin_state: config.state_dir.join("plugins"),
        };
        let shutdown_timeout = Duration::from_secs_f64(config.shutdown_timeout);
        let listener = start_listener(&config, &telemetry, &queue)?;
        let plugins = Plugins::start(
            config,
            registry,
            Supervisor::new(intake),
            copy_dir,
            startup,
            telemetry,
        );
        let running = running_line(&plugins);
        tracing::info!("{running}");
        service::ready(&running);
        Ok(Self {
            events,
            _watcher: watcher,
            queue,
            applier,
            sinks_stop,
            sinks,
            listener,
            plugins,
            shutdown_timeout,
        })
    }

    /// Applies changes to the plugins folder, and a re-read config on SIGHUP, until a reason
    /// to shut down arrives; returns it.
    pub fn serve(&mut self, reread: impl Fn() -> Result<Config, ConfigError>) -> Shutdown {
        let watchdog = service::watchdog_interval();
        loop {
            if watchdog.is_some() {
                service::watchdog();
            }
            match signals::next(&self.events, watchdog) {
                None => {}
                Some(Event::Shutdown(reason)) => return reason,
                Some(Event::Reload) => {
                    tracing::info!("SIGHUP received: reloading the config and the plugins folder");
                    service::reloading();
                    self.plugins.reload(reread());
                    service::ready(&running_line(&self.plugins));
                }
                Some(Event::PluginsChanged) => self.plugins.folder_changed(),
            }
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
        let stragglers = self.plugins.stop(self.shutdown_timeout);
        if !stragglers.is_empty() {
            tracing::warn!(
                "did not stop within {} s (settings.shutdown_timeout), left behind: {}",
                self.shutdown_timeout.as_secs_f64(),
                stragglers.join(", ")
            );
        }
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

/// Every library in the plugins folder, loaded from private copies in `copy_dir`.
pub(crate) fn scan_plugins(
    config: &Config,
    copy_dir: &Path,
    hashing: loader::Hashing,
) -> anyhow::Result<Registry> {
    loader::scan(
        &config.plugin_dir,
        copy_dir,
        &config.plugin_policy,
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
    let plan = plan::plan(config, registry, [], missing);
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

/// What runs, for the log and systemd's status line.
fn running_line(plugins: &Plugins) -> String {
    match plugins.names() {
        names if names.is_empty() => "running no plugin instances".to_owned(),
        names => format!("running {}", names.join(", ")),
    }
}

/// The optional listener for /health, /metrics and the status page.
fn start_listener(
    config: &Config,
    telemetry: &Arc<Telemetry>,
    queue: &Queue,
) -> anyhow::Result<Option<status::Listener>> {
    let Some(addr) = config.metrics_addr else {
        return Ok(None);
    };
    let sources = status::Sources {
        telemetry: telemetry.clone(),
        spool: queue.clone(),
        stuck_after: Duration::from_secs_f64(
            config.timeouts.max_timeout.max(config.request_timeout),
        ),
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
    config: &Config,
    queue: &Queue,
    stop: &Arc<Stop>,
    telemetry: &Arc<Telemetry>,
    events: &std::sync::mpsc::Sender<Event>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let thread = if config.delivers() {
        let sink = FrontendSink::new(sender_settings(config), telemetry.clone())?;
        telemetry.sender_enabled(true);
        let retry = sink.timeouts();
        spool_source::start(sink, Mode::Consuming, retry, queue, stop, telemetry, events)?
    } else {
        tracing::info!(
            "no frontend and token configured: records are kept in the spool and written to stdout"
        );
        let sink = stdout::JsonLines::new(stdout::stdout().context("opening stdout")?);
        spool_source::start(
            sink,
            Mode::Following,
            config.timeouts,
            queue,
            stop,
            telemetry,
            events,
        )?
    };
    Ok(vec![thread])
}

/// How this run uses the spool: the frontend sink consumes it when there is a frontend; a full
/// spool drops INCOMING ("ringing now", call type 0) records first.
fn spool_options(config: &Config) -> anyhow::Result<spool::Options> {
    Ok(spool::Options {
        max_records: NonZeroU64::new(config.spool_max_records)
            .context("settings.spool_max_records must be at least 1")?,
        fsync: config.spool_fsync,
        consumers: config
            .delivers()
            .then(|| frontend::NAME.to_owned())
            .into_iter()
            .collect(),
        evict_first: spool::EvictFirst {
            applies: |kind| kind == 0,
            what: "ringing INCOMING ones",
        },
    })
}

fn sender_settings(config: &Config) -> SenderSettings {
    SenderSettings {
        frontend: config.frontend.clone(),
        token: config.token.clone(),
        backlog_trigger: config.backlog_trigger,
        batch_size: config.batch_size,
        drop_stale_incoming: config.drop_stale_incoming,
        timeouts: config.timeouts,
        request_timeout: Duration::from_secs_f64(config.request_timeout),
    }
}
