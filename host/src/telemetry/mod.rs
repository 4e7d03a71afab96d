//! Telemetry: what the host counts and knows about itself, for `/metrics` (Prometheus text,
//! through `prometheus-client`), `/health` and the status page.
//!
//! [`metrics`] holds the counters, [`health`] the rules for what makes the host unhealthy,
//! [`probes`] those for alive and ready, [`recent_log`] the tracing layer keeping the latest
//! warnings and errors; [`Telemetry`] is the handle the host's parts report through. Counting is always on (a few atomic adds per
//! record); the HTTP listener that shows it is optional (`settings.metrics_addr`).

mod health;
mod metrics;
mod probes;
mod recent_log;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

pub use health::{Health, InstanceState, InstanceStatus, SenderStatus, SinkStatus, SpoolFigures};
pub use metrics::PushCounter;
pub use probes::{MainLoop, Probe};
pub use recent_log::RecentLog;

use metrics::{
    ClassLabel, HourCounter, InstanceLabel, Metrics, OutcomeLabel, RejectLabels, SinkLabel,
    StatusLabel,
};
use recent_log::RecentLines;

/// Every count and state the host reports about itself.
pub struct Telemetry {
    metrics: Metrics,
    instances: Mutex<BTreeMap<String, InstanceStatus>>,
    /// Kept when an instance restarts or is reloaded: the last hour is the last hour.
    hours: Mutex<BTreeMap<String, Arc<HourCounter>>>,
    sinks: Mutex<BTreeMap<String, Arc<Mutex<SinkStatus>>>>,
    delivers: AtomicBool,
    recent: RecentLines,
    started: u64,
    main_loop: MainLoop,
}

impl Telemetry {
    /// Registers every metric, all at zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            metrics: Metrics::new(),
            instances: Mutex::default(),
            hours: Mutex::default(),
            sinks: Mutex::default(),
            delivers: AtomicBool::new(false),
            recent: RecentLines::default(),
            started: unix_now(),
            main_loop: MainLoop::new(),
        })
    }

    /// The counter instance `name` of `class` pushes through (its records of the last hour
    /// survive restarts and reloads). Counting only: the instance's state is reported by
    /// [`instance_state`](Self::instance_state).
    pub fn push_counter(&self, name: &str, class: &str) -> PushCounter {
        let hour = self
            .hours
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(HourCounter::new()))
            .clone();
        PushCounter {
            total: self
                .metrics
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
        self.metrics
            .rejected
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
        self.metrics
            .instance_up
            .get_or_create(&label)
            .set(i64::from(state == InstanceState::Running));
        if state == InstanceState::Retrying {
            self.metrics.restarts.get_or_create(&label).inc();
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
        let _ = self.metrics.instance_up.remove(&InstanceLabel {
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

    /// One POST to the frontend: its HTTP status, or `None` (no response).
    pub fn delivery_attempt(&self, status: Option<u16>) {
        let label = StatusLabel {
            status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
        };
        self.metrics.delivery_attempts.get_or_create(&label).inc();
    }

    /// Records are delivered to a frontend (else only spooled and echoed).
    pub fn sender_enabled(&self, enabled: bool) {
        self.delivers.store(enabled, Ordering::Relaxed);
    }

    /// The handle sink `name` reports its deliveries through (its metrics carry `sink=name`).
    pub fn sink(&self, name: &str) -> SinkTelemetry {
        let label = SinkLabel {
            sink: name.to_owned(),
        };
        let status = self
            .sinks
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(SinkStatus {
                    name: name.to_owned(),
                    ..SinkStatus::default()
                }))
            })
            .clone();
        let retry_wait = self.metrics.retry_wait.get_or_create(&label).clone();
        retry_wait.set(0.0);
        SinkTelemetry {
            last_delivery: self.metrics.last_delivery.get_or_create(&label).clone(),
            delivered: self.metrics.delivered.get_or_create(&label).clone(),
            refused: self.metrics.refused.get_or_create(&label).clone(),
            retry_wait,
            status,
        }
    }

    /// A reload was applied or refused.
    pub fn reload(&self, applied: bool) {
        self.metrics
            .reloads
            .get_or_create(&OutcomeLabel {
                outcome: if applied { "applied" } else { "refused" }.to_owned(),
            })
            .inc();
    }

    /// How many libraries are in use and retired.
    pub fn libraries(&self, loaded: usize, retired: usize) {
        self.metrics.libraries_loaded.set(loaded as i64);
        self.metrics.libraries_retired.set(retired as i64);
    }

    /// A warning or error was logged.
    pub fn logged(&self, level: &str, message: String) {
        self.recent.push(level, message);
    }

    /// A push was held: the spool could not store its record.
    pub fn push_stalled(&self) {
        self.metrics.push_stalls.inc();
    }

    /// The Prometheus text exposition, with the spool figures read now.
    pub fn encode(&self, spool: SpoolFigures) -> String {
        self.metrics.spool_pending.set(spool.pending as i64);
        self.metrics.spool_dead.set(spool.dead as i64);
        let age = spool
            .oldest_pending
            .map_or(0, |pushed| (unix_now() as i64 - pushed).max(0));
        self.metrics.spool_oldest_age.set(age);
        self.metrics.encode(self.started)
    }

    /// Everything `/health` and the status page show; `stuck_after` is how long failing
    /// deliveries may go on before a sink counts as stuck.
    pub fn health(&self, spool: SpoolFigures, stuck_after: Duration) -> Health {
        let now = unix_now();
        let instances = self.instances_at(now);
        let sinks: Vec<SinkStatus> = self
            .sinks
            .lock()
            .values()
            .map(|s| s.lock().clone())
            .collect();
        let problems = health::problems(&instances, &spool, &sinks, now, stuck_after);
        Health {
            healthy: problems.is_empty(),
            problems,
            version: env!("CARGO_PKG_VERSION"),
            uptime: now.saturating_sub(self.started),
            instances,
            sender: SenderStatus::combined(self.delivers.load(Ordering::Relaxed), &sinks),
            sinks,
            spool,
            libraries_loaded: self.metrics.libraries_loaded.get() as u64,
            libraries_retired: self.metrics.libraries_retired.get() as u64,
            recent: self.recent.newest_first(),
        }
    }

    /// Every instance's status at `now`, with its records of the last hour.
    fn instances_at(&self, now: u64) -> Vec<InstanceStatus> {
        let hours = self.hours.lock();
        self.instances
            .lock()
            .values()
            .map(|i| InstanceStatus {
                records_last_hour: hours.get(&i.name).map_or(0, |h| h.last_hour(now)),
                ..i.clone()
            })
            .collect()
    }

    /// What the main loop reports its work through.
    pub fn main_loop(&self) -> &MainLoop {
        &self.main_loop
    }

    /// `/livez`: the main loop is not hung.
    pub fn liveness(&self) -> Probe {
        Probe::of(self.main_loop.hung(Instant::now()).into_iter().collect())
    }

    /// `/readyz`: start-up is done, every instance runs and the spool takes records.
    pub fn readiness(&self, spool: SpoolFigures) -> Probe {
        let mut problems: Vec<String> = (!self.main_loop.started())
            .then(|| "starting up".to_owned())
            .into_iter()
            .collect();
        problems.extend(health::readiness_problems(
            &self.instances_at(unix_now()),
            &spool,
        ));
        Probe::of(problems)
    }
}

/// What one sink reports as it delivers: its counters (`sink` label) and its state on
/// `/health`.
#[derive(Clone)]
pub struct SinkTelemetry {
    delivered: Counter,
    refused: Counter,
    retry_wait: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_delivery: Gauge,
    status: Arc<Mutex<SinkStatus>>,
}

impl SinkTelemetry {
    /// `records` left the sink's queue delivered (or skipped by its policy).
    pub fn delivered(&self, records: u64) {
        self.delivered.inc_by(records);
        let now = unix_now();
        self.last_delivery.set(now as i64);
        let mut status = self.status.lock();
        status.last_delivery = Some(now);
        status.failing_since = None;
    }

    /// The destination refused a record (it went to the dead letters). It answered, so
    /// the sink is not failing.
    pub fn refused(&self) {
        self.refused.inc();
        self.status.lock().failing_since = None;
    }

    /// An attempt failed and will be retried.
    pub fn failed(&self, error: String) {
        let mut status = self.status.lock();
        status.failing_since.get_or_insert_with(unix_now);
        status.last_error = Some(error);
    }

    /// The sink waits this long before its next attempt (zero: it is delivering).
    pub fn retry_wait(&self, wait: Duration) {
        self.retry_wait.set(wait.as_secs_f64());
        self.status.lock().retry_wait = wait.as_secs_f64();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_move_and_health_names_what_is_wrong() {
        let t = Telemetry::new();
        let counter = t.push_counter("Echo@a", "Echo");
        assert!(
            t.health(SpoolFigures::default(), Duration::ZERO)
                .instances
                .is_empty(),
            "a push counter changes no state"
        );
        t.instance_state("Echo@a", "Echo", InstanceState::Running, None, None);
        counter.add();
        counter.add();
        t.rejected("Echo@a", "parse");
        t.delivery_attempt(Some(201));
        let sink = t.sink("frontend");
        sink.delivered(3);
        sink.refused();
        sink.retry_wait(Duration::from_millis(1500));
        t.push_stalled();
        let text = t.encode(SpoolFigures {
            pending: 7,
            dead: 1,
            oldest_pending: Some(unix_now() as i64 - 90),
            trouble: Vec::new(),
        });
        for line in [
            "calllogger_records_pushed_total{class=\"Echo\"} 2",
            "calllogger_rejected_lines_total{instance=\"Echo@a\",stage=\"parse\"} 1",
            "calllogger_spool_pending_records 7",
            "calllogger_spool_dead_letters 1",
            "calllogger_delivery_attempts_total{status=\"201\"} 1",
            "calllogger_delivered_records_total{sink=\"frontend\"} 3",
            "calllogger_refused_records_total{sink=\"frontend\"} 1",
            "calllogger_delivery_retry_wait_seconds{sink=\"frontend\"} 1.5",
            "calllogger_push_stalls_total 1",
            "calllogger_instance_up{instance=\"Echo@a\"} 1",
            "calllogger_spool_oldest_pending_age_seconds 9",
            "calllogger_last_delivery_timestamp_seconds{sink=\"frontend\"} 1",
            &format!(
                "calllogger_build_info{{version=\"{}\",sdk=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION"),
                calllogger_plugin_abi::ABI_VERSION
            ),
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let health = t.health(SpoolFigures::default(), Duration::from_secs(60));
        assert!(health.healthy, "{:?}", health.problems);
        assert_eq!(health.instances[0].records_last_hour, 2);
        assert_eq!(health.sinks[0].name, "frontend");
        assert!(health.sender.last_delivery.is_some());

        t.instance_state(
            "Echo@a",
            "Echo",
            InstanceState::Retrying,
            Some("port gone".into()),
            Some(Duration::from_secs(10)),
        );
        sink.failed("connection refused".into());
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
        sink.delivered(1);
        assert!(
            t.health(SpoolFigures::default(), Duration::ZERO).problems[0].contains("port gone")
        );
        assert_eq!(
            t.health(SpoolFigures::default(), Duration::ZERO)
                .problems
                .len(),
            1,
            "a delivery ends the sink's failing"
        );
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
