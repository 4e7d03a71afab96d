//! Telemetry: what the host counts and knows about itself, for `/metrics` (Prometheus text,
//! through `prometheus-client`), `/health` and the status page.
//!
//! Counting is always on (a few atomic adds per record); the HTTP listener that shows it is
//! optional (`settings.metrics_addr`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabel {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    instance: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// What an instance is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Its `run` is running.
    Running,
    /// It failed or returned; it restarts after `retry_in` seconds.
    Retrying,
    /// No loaded library exports its class yet.
    WaitingForLibrary,
    /// It failed with a fatal error: not retried until its config section or library changes.
    Failed,
}

/// One instance, as `/health` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub class: String,
    /// `name version` of the library it runs from, once it started.
    pub library: Option<String>,
    pub state: InstanceState,
    /// When it entered `state` (Unix seconds).
    pub since: u64,
    /// Seconds until its next start, while retrying.
    pub retry_in: Option<f64>,
    pub last_error: Option<String>,
    pub restarts: u64,
    pub records_last_hour: u64,
}

/// A warning or error from the log.
#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    /// Unix seconds.
    pub at: u64,
    pub level: String,
    pub message: String,
}

/// The sender, as `/health` shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SenderStatus {
    /// Whether records are delivered to a frontend (else only spooled and echoed).
    pub enabled: bool,
    /// Unix seconds of the last delivery.
    pub last_delivery: Option<u64>,
    /// Unix seconds since when every attempt has failed.
    pub failing_since: Option<u64>,
    pub last_error: Option<String>,
    /// The current retry wait, seconds.
    pub retry_wait: f64,
}

/// Records per minute over the last hour, without a lock on the push path.
struct HourCounter {
    minutes: [AtomicU64; 60],
    counts: [AtomicU64; 60],
}

impl HourCounter {
    fn new() -> Self {
        Self {
            minutes: std::array::from_fn(|_| AtomicU64::new(0)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn add(&self, now: u64) {
        let minute = now / 60;
        let slot = (minute % 60) as usize;
        if self.minutes[slot].swap(minute, Ordering::Relaxed) != minute {
            self.counts[slot].store(0, Ordering::Relaxed);
        }
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
    }

    fn last_hour(&self, now: u64) -> u64 {
        let minute = now / 60;
        (0..60)
            // A slot from a later minute (the clock stepped back, or a push raced this read)
            // is not in this hour.
            .filter(|&slot| {
                minute
                    .checked_sub(self.minutes[slot].load(Ordering::Relaxed))
                    .is_some_and(|age| age < 60)
            })
            .map(|slot| self.counts[slot].load(Ordering::Relaxed))
            .sum()
    }
}

/// What one instance counts as it pushes: handed to its context.
#[derive(Clone)]
pub struct PushCounter {
    total: Counter,
    hour: Arc<HourCounter>,
}

impl PushCounter {
    /// One record pushed.
    pub fn add(&self) {
        self.total.inc();
        self.hour.add(unix_now());
    }
}

/// Every count and state the host reports about itself.
pub struct Telemetry {
    registry: Registry,
    pushed: Family<ClassLabel, Counter>,
    rejected: Family<RejectLabels, Counter>,
    spool_pending: Gauge,
    spool_dead: Gauge,
    push_stalls: Counter,
    delivery_attempts: Family<StatusLabel, Counter>,
    retry_wait: Gauge<f64, AtomicU64>,
    restarts: Family<InstanceLabel, Counter>,
    reloads: Family<OutcomeLabel, Counter>,
    libraries_loaded: Gauge,
    libraries_retired: Gauge,
    instance_up: Family<InstanceLabel, Gauge>,
    instances: Mutex<BTreeMap<String, InstanceStatus>>,
    /// Kept when an instance restarts or is reloaded: the last hour is the last hour.
    hours: Mutex<BTreeMap<String, Arc<HourCounter>>>,
    sender: Mutex<SenderStatus>,
    recent: Mutex<VecDeque<LogLine>>,
    started: u64,
}

/// How many warnings and errors the status page keeps.
const RECENT: usize = 20;

impl Telemetry {
    /// Registers every metric, all at zero.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("calllogger");
        let t = Self {
            pushed: Family::default(),
            rejected: Family::default(),
            spool_pending: Gauge::default(),
            spool_dead: Gauge::default(),
            push_stalls: Counter::default(),
            delivery_attempts: Family::default(),
            retry_wait: Gauge::default(),
            restarts: Family::default(),
            reloads: Family::default(),
            libraries_loaded: Gauge::default(),
            libraries_retired: Gauge::default(),
            instance_up: Family::default(),
            instances: Mutex::default(),
            hours: Mutex::default(),
            sender: Mutex::default(),
            recent: Mutex::default(),
            started: unix_now(),
            registry: Registry::default(),
        };
        registry.register(
            "records_pushed",
            "Records pushed by plugin instances, by class",
            t.pushed.clone(),
        );
        registry.register(
            "rejected_lines",
            "Input lines a plugin rejected, by instance and stage",
            t.rejected.clone(),
        );
        registry.register(
            "spool_pending_records",
            "Records in the spool waiting for delivery",
            t.spool_pending.clone(),
        );
        registry.register(
            "spool_dead_letters",
            "Records the frontend refused, kept aside",
            t.spool_dead.clone(),
        );
        registry.register(
            "push_stalls",
            "Pushes held because the spool journal could not be written (each retry counts)",
            t.push_stalls.clone(),
        );
        registry.register(
            "delivery_attempts",
            "POSTs to the frontend, by HTTP status (or \"error\" without one)",
            t.delivery_attempts.clone(),
        );
        registry.register(
            "delivery_retry_wait_seconds",
            "The sender's current wait before its next attempt (0 when delivering)",
            t.retry_wait.clone(),
        );
        registry.register(
            "plugin_restarts",
            "Instance restarts after a failure, panic or early return",
            t.restarts.clone(),
        );
        registry.register(
            "reloads",
            "Plugin folder changes and SIGHUPs, by outcome (applied, refused)",
            t.reloads.clone(),
        );
        registry.register(
            "libraries_loaded",
            "Plugin libraries in use",
            t.libraries_loaded.clone(),
        );
        registry.register(
            "libraries_retired",
            "Replaced plugin libraries, still mapped (never unloaded)",
            t.libraries_retired.clone(),
        );
        registry.register(
            "instance_up",
            "1 while an instance's run is running, else 0",
            t.instance_up.clone(),
        );
        Arc::new(Self { registry, ..t })
    }

    /// The counter an instance of `class` named `name`, about to run, pushes through.
    pub fn push_counter(&self, name: &str, class: &str) -> PushCounter {
        self.instance_state(name, class, InstanceState::Running, None, None);
        let hour = self
            .hours
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(HourCounter::new()))
            .clone();
        PushCounter {
            total: self
                .pushed
                .get_or_create(&ClassLabel {
                    class: class.to_owned(),
                })
                .clone(),
            hour,
        }
    }

    /// One line rejected by an instance at `stage`.
    pub fn rejected(&self, instance: &str, stage: &str) {
        self.rejected
            .get_or_create(&RejectLabels {
                instance: instance.to_owned(),
                stage: stage.to_owned(),
            })
            .inc();
    }

    /// An instance entered `state`; `error` is why it is retrying.
    pub fn instance_state(
        &self,
        name: &str,
        class: &str,
        state: InstanceState,
        error: Option<String>,
        retry_in: Option<Duration>,
    ) {
        let label = InstanceLabel {
            instance: name.to_owned(),
        };
        self.instance_up
            .get_or_create(&label)
            .set(i64::from(state == InstanceState::Running));
        if state == InstanceState::Retrying {
            self.restarts.get_or_create(&label).inc();
        }
        let mut instances = self.instances.lock();
        let status = instances
            .entry(name.to_owned())
            .or_insert_with(|| InstanceStatus {
                name: name.to_owned(),
                class: class.to_owned(),
                library: None,
                state: state.clone(),
                since: 0,
                retry_in: None,
                last_error: None,
                restarts: 0,
                records_last_hour: 0,
            });
        status.class = class.to_owned();
        if status.state != state || status.since == 0 {
            status.since = unix_now();
        }
        status.state = state;
        status.retry_in = retry_in.map(|d| d.as_secs_f64());
        if status.state == InstanceState::Retrying {
            status.restarts += 1;
        }
        if error.is_some() {
            status.last_error = error;
        }
    }

    /// An instance runs from `library` (`name version`).
    pub fn instance_library(&self, name: &str, library: String) {
        if let Some(status) = self.instances.lock().get_mut(name) {
            status.library = Some(library);
        }
    }

    /// An instance left the configuration (or its library went away and it is not waiting).
    pub fn instance_removed(&self, name: &str) {
        self.instances.lock().remove(name);
        let _ = self.instance_up.remove(&InstanceLabel {
            instance: name.to_owned(),
        });
    }

    /// Forgets the instances `keep` says no to (dropped from the config while waiting).
    pub fn retain_instances(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self
            .instances
            .lock()
            .keys()
            .filter(|name| !keep(name))
            .cloned()
            .collect();
        for name in gone {
            self.instance_removed(&name);
        }
    }

    /// One POST's outcome: its HTTP status, or `None` (no response); `error` when it failed.
    pub fn delivery_attempt(&self, status: Option<u16>, error: Option<String>) {
        let label = StatusLabel {
            status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
        };
        self.delivery_attempts.get_or_create(&label).inc();
        let mut sender = self.sender.lock();
        match error {
            None => {
                sender.last_delivery = Some(unix_now());
                sender.failing_since = None;
            }
            Some(e) => {
                sender.failing_since.get_or_insert_with(unix_now);
                sender.last_error = Some(e);
            }
        }
    }

    /// The sender will wait this long before its next attempt (zero: it is delivering).
    pub fn retry_wait(&self, wait: Duration) {
        self.retry_wait.set(wait.as_secs_f64());
        self.sender.lock().retry_wait = wait.as_secs_f64();
    }

    /// Whether a sender delivers to a frontend.
    pub fn sender_enabled(&self, enabled: bool) {
        self.sender.lock().enabled = enabled;
    }

    /// A reload was applied or refused.
    pub fn reload(&self, applied: bool) {
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: if applied { "applied" } else { "refused" }.to_owned(),
            })
            .inc();
    }

    /// How many libraries are in use and retired.
    pub fn libraries(&self, loaded: usize, retired: usize) {
        self.libraries_loaded.set(loaded as i64);
        self.libraries_retired.set(retired as i64);
    }

    /// A warning or error was logged.
    pub fn logged(&self, level: &str, message: String) {
        let mut recent = self.recent.lock();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(LogLine {
            at: unix_now(),
            level: level.to_owned(),
            message,
        });
    }

    /// A push was held: the spool could not store its record.
    pub fn push_stalled(&self) {
        self.push_stalls.inc();
    }

    /// The Prometheus text exposition, with the spool figures read now.
    pub fn encode(&self, spool: SpoolFigures) -> String {
        self.spool_pending.set(spool.pending as i64);
        self.spool_dead.set(spool.dead as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Everything `/health` and the status page show; `stuck_after` is how long failing
    /// deliveries may go on before the sender counts as stuck.
    pub fn health(&self, spool: SpoolFigures, stuck_after: Duration) -> Health {
        let now = unix_now();
        let hours = self.hours.lock();
        let instances: Vec<InstanceStatus> = self
            .instances
            .lock()
            .values()
            .map(|i| InstanceStatus {
                records_last_hour: hours.get(&i.name).map_or(0, |h| h.last_hour(now)),
                ..i.clone()
            })
            .collect();
        drop(hours);
        let sender = self.sender.lock().clone();
        let mut problems: Vec<String> = instances
            .iter()
            .filter(|i| i.state != InstanceState::Running)
            .map(|i| match (&i.state, &i.last_error) {
                (InstanceState::WaitingForLibrary, _) => format!(
                    "instance {} is waiting for a plugin library that exports class {}",
                    i.name, i.class
                ),
                (InstanceState::Failed, e) => format!(
                    "instance {} failed: {} (fatal: not retried until its config section or library changes)",
                    i.name,
                    e.as_deref().unwrap_or("")
                ),
                (_, Some(e)) => format!("instance {} is not running: {e}", i.name),
                (_, None) => format!("instance {} is not running", i.name),
            })
            .collect();
        problems.extend(spool.trouble.iter().map(|t| format!("spool: {t}")));
        if let Some(since) = sender.failing_since {
            if now.saturating_sub(since) >= stuck_after.as_secs() {
                problems.push(format!(
                    "delivery has failed for {} s: {}",
                    now.saturating_sub(since),
                    sender.last_error.as_deref().unwrap_or("")
                ));
            }
        }
        Health {
            healthy: problems.is_empty(),
            problems,
            version: env!("CARGO_PKG_VERSION"),
            uptime: now.saturating_sub(self.started),
            instances,
            sender,
            spool,
            libraries_loaded: self.libraries_loaded.get() as u64,
            libraries_retired: self.libraries_retired.get() as u64,
            recent: self.recent.lock().iter().rev().cloned().collect(),
        }
    }
}

/// The spool's counts and troubles, read when asked for.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpoolFigures {
    pub pending: u64,
    pub dead: u64,
    /// What keeps the spool from taking or storing records now (see `Spool::trouble`).
    pub trouble: Vec<String>,
}

/// The host's state, as `/health` serves it.
#[derive(Debug, Serialize)]
pub struct Health {
    pub healthy: bool,
    /// Why it is not healthy.
    pub problems: Vec<String>,
    pub version: &'static str,
    /// Seconds since start.
    pub uptime: u64,
    pub instances: Vec<InstanceStatus>,
    pub sender: SenderStatus,
    pub spool: SpoolFigures,
    pub libraries_loaded: u64,
    pub libraries_retired: u64,
    /// Recent warnings and errors, newest first.
    pub recent: Vec<LogLine>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A `tracing` layer that keeps the latest warnings and errors for the status page.
pub struct RecentLog(pub Arc<Telemetry>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentLog {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let mut text = TextVisitor::default();
        event.record(&mut text);
        self.0.logged(level.as_str(), text.finish());
    }
}

/// A log event as one line: the message, then `key=value` for the other fields.
#[derive(Default)]
struct TextVisitor {
    message: String,
    fields: Vec<String>,
}

impl TextVisitor {
    fn finish(self) -> String {
        std::iter::once(self.message)
            .chain(self.fields)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl tracing::field::Visit for TextVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push(format!("{}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push(format!("{}={value}", field.name()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hour_counter_forgets_minutes_older_than_an_hour() {
        let hour = HourCounter::new();
        let t0 = 1_000_000 * 60;
        hour.add(t0);
        hour.add(t0 + 30);
        hour.add(t0 + 59 * 60);
        assert_eq!(hour.last_hour(t0 + 59 * 60), 3);
        assert_eq!(hour.last_hour(t0 + 60 * 60), 1, "minute t0 is an hour old");
        hour.add(t0 + 60 * 60); // reuses minute t0's slot
        assert_eq!(hour.last_hour(t0 + 60 * 60), 2);
        assert_eq!(
            hour.last_hour(t0 - 60),
            0,
            "a clock stepped back counts nothing newer"
        );
    }

    #[test]
    fn metrics_move_and_health_names_what_is_wrong() {
        let t = Telemetry::new();
        let counter = t.push_counter("Echo@a", "Echo");
        t.instance_state("Echo@a", "Echo", InstanceState::Running, None, None);
        counter.add();
        counter.add();
        t.rejected("Echo@a", "parse");
        t.delivery_attempt(Some(201), None);
        t.push_stalled();
        let text = t.encode(SpoolFigures {
            pending: 7,
            dead: 1,
            trouble: Vec::new(),
        });
        for line in [
            "calllogger_records_pushed_total{class=\"Echo\"} 2",
            "calllogger_rejected_lines_total{instance=\"Echo@a\",stage=\"parse\"} 1",
            "calllogger_spool_pending_records 7",
            "calllogger_delivery_attempts_total{status=\"201\"} 1",
            "calllogger_push_stalls_total 1",
            "calllogger_instance_up{instance=\"Echo@a\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let health = t.health(SpoolFigures::default(), Duration::from_secs(60));
        assert!(health.healthy, "{:?}", health.problems);
        assert_eq!(health.instances[0].records_last_hour, 2);

        t.instance_state(
            "Echo@a",
            "Echo",
            InstanceState::Retrying,
            Some("port gone".into()),
            Some(Duration::from_secs(10)),
        );
        t.delivery_attempt(None, Some("connection refused".into()));
        let health = t.health(SpoolFigures::default(), Duration::ZERO);
        assert!(!health.healthy);
        assert!(
            health.problems[0].contains("port gone"),
            "{:?}",
            health.problems
        );
        assert!(
            health.problems[1].contains("connection refused"),
            "{:?}",
            health.problems
        );
        assert!(t
            .encode(SpoolFigures::default())
            .contains("calllogger_plugin_restarts_total{instance=\"Echo@a\"} 1"));
    }

    #[test]
    fn a_spool_in_trouble_is_unhealthy() {
        let t = Telemetry::new();
        let spool = SpoolFigures {
            trouble: vec!["cannot write to the spool journal: No space left on device".into()],
            ..SpoolFigures::default()
        };
        let health = t.health(spool, Duration::from_secs(60));
        assert!(!health.healthy);
        assert!(
            health.problems[0].contains("No space left"),
            "{:?}",
            health.problems
        );
    }
}
