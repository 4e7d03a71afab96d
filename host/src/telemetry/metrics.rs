//! The Prometheus registry (`prometheus-client`) and the counters behind `/metrics`. Counting
//! only: nothing here changes what the host knows about its instances or sinks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::unix_now;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ClassLabel {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct InstanceLabel {
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RejectLabels {
    pub instance: String,
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub version: String,
    /// The plugin interface the host speaks (an SDK of the same minor version builds for it).
    pub sdk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SinkLabel {
    pub sink: String,
}

/// Every metric the host exposes, registered under the `calllogger_` prefix.
pub(super) struct Metrics {
    registry: Registry,
    pub pushed: Family<ClassLabel, Counter>,
    pub rejected: Family<RejectLabels, Counter>,
    pub spool_pending: Gauge,
    pub spool_dead: Gauge,
    pub spool_oldest_age: Gauge,
    pub push_stalls: Counter,
    pub delivery_attempts: Family<StatusLabel, Counter>,
    pub retry_wait: Family<SinkLabel, Gauge<f64, AtomicU64>>,
    pub delivered: Family<SinkLabel, Counter>,
    pub refused: Family<SinkLabel, Counter>,
    pub last_delivery: Family<SinkLabel, Gauge>,
    pub restarts: Family<InstanceLabel, Counter>,
    pub reloads: Family<OutcomeLabel, Counter>,
    pub libraries_loaded: Gauge,
    pub libraries_retired: Gauge,
    pub instance_up: Family<InstanceLabel, Gauge>,
    build_info: Family<BuildLabels, Gauge>,
}

impl Metrics {
    /// Registers every metric, all at zero.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("calllogger"),
            pushed: Family::default(),
            rejected: Family::default(),
            spool_pending: Gauge::default(),
            spool_dead: Gauge::default(),
            spool_oldest_age: Gauge::default(),
            push_stalls: Counter::default(),
            delivery_attempts: Family::default(),
            retry_wait: Family::default(),
            delivered: Family::default(),
            refused: Family::default(),
            last_delivery: Family::default(),
            restarts: Family::default(),
            reloads: Family::default(),
            libraries_loaded: Gauge::default(),
            libraries_retired: Gauge::default(),
            instance_up: Family::default(),
            build_info: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "records_pushed",
            "Records pushed by plugin instances, by class",
            m.pushed.clone(),
        );
        r.register(
            "rejected_lines",
            "Input lines a plugin rejected, by instance and stage",
            m.rejected.clone(),
        );
        r.register(
            "spool_pending_records",
            "Records in the spool waiting for delivery",
            m.spool_pending.clone(),
        );
        r.register(
            "spool_dead_letters",
            "Records the frontend refused, kept aside",
            m.spool_dead.clone(),
        );
        r.register(
            "spool_oldest_pending_age_seconds",
            "Age of the oldest record waiting for delivery (0 when none waits)",
            m.spool_oldest_age.clone(),
        );
        r.register(
            "push_stalls",
            "Pushes held because the spool journal could not be written (each retry counts)",
            m.push_stalls.clone(),
        );
        r.register(
            "delivery_attempts",
            "POSTs to the frontend, by HTTP status (or \"error\" without one)",
            m.delivery_attempts.clone(),
        );
        r.register(
            "delivery_retry_wait_seconds",
            "A sink's current wait before its next attempt (0 when delivering), by sink",
            m.retry_wait.clone(),
        );
        r.register(
            "delivered_records",
            "Records a sink delivered (or skipped by its policy), by sink",
            m.delivered.clone(),
        );
        r.register(
            "refused_records",
            "Records a sink's destination refused (moved to the dead letters), by sink",
            m.refused.clone(),
        );
        r.register(
            "last_delivery_timestamp_seconds",
            "Unix time of a sink's last successful delivery, by sink",
            m.last_delivery.clone(),
        );
        r.register(
            "plugin_restarts",
            "Instance restarts after a failure, panic or early return",
            m.restarts.clone(),
        );
        r.register(
            "reloads",
            "Plugin folder changes and SIGHUPs, by outcome (applied, refused)",
            m.reloads.clone(),
        );
        r.register(
            "libraries_loaded",
            "Plugin libraries in use",
            m.libraries_loaded.clone(),
        );
        r.register(
            "libraries_retired",
            "Replaced plugin libraries, still mapped (never unloaded)",
            m.libraries_retired.clone(),
        );
        r.register(
            "instance_up",
            "1 while an instance's run is running, else 0",
            m.instance_up.clone(),
        );
        r.register(
            "build_info",
            "1, labelled with the host's version and the plugin interface it speaks",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                sdk: calllogger_plugin_abi::ABI_VERSION.to_owned(),
            })
            .set(1);
        m
    }

    /// The OpenMetrics text exposition, with the process's own figures: its start time
    /// (`started`, Unix seconds) and, where the platform gives them (Linux), resident memory,
    /// CPU time, open files and threads.
    pub fn encode(&self, started: u64) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if let Some(end) = out.rfind("# EOF") {
            let mut process = process_metrics();
            process.push_str(&family(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                "gauge",
                started as f64,
            ));
            out.insert_str(end, &process);
        }
        out
    }
}

/// The standard `process_*` metrics, as Prometheus' client libraries name them.
#[cfg(target_os = "linux")]
fn process_metrics() -> String {
    use nix::unistd::{sysconf, SysconfVar};
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as f64;
    let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // Field N of proc_pid_stat(5) is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let fds = std::fs::read_dir("/proc/self/fd").map(Iterator::count).ok();
    let mut out = String::new();
    let mut add = |name: &str, help: &str, kind: &str, value: Option<f64>| {
        if let Some(value) = value {
            out.push_str(&family(name, help, kind, value));
        }
    };
    add(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds",
        "counter",
        field(14)
            .zip(field(15))
            .map(|(user, system)| (user + system) / ticks),
    );
    add(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        "gauge",
        field(24).map(|pages| pages * page),
    );
    add(
        "process_open_fds",
        "Number of open file descriptors",
        "gauge",
        fds.map(|n| n as f64 - 1.0),
    );
    add(
        "process_threads",
        "Number of OS threads in the process",
        "gauge",
        field(20),
    );
    out
}

/// One metric family of one sample, in the exposition's text.
fn family(name: &str, help: &str, kind: &str, value: f64) -> String {
    let family = name.strip_suffix("_total").unwrap_or(name);
    format!("# HELP {family} {help}.\n# TYPE {family} {kind}\n{name} {value}\n")
}

#[cfg(not(target_os = "linux"))]
fn process_metrics() -> String {
    String::new()
}

/// Records per minute over the last hour, without a lock on the push path.
pub(super) struct HourCounter {
    minutes: [AtomicU64; 60],
    counts: [AtomicU64; 60],
}

impl HourCounter {
    pub fn new() -> Self {
        Self {
            minutes: std::array::from_fn(|_| AtomicU64::new(0)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub fn add(&self, now: u64) {
        let minute = now / 60;
        let slot = (minute % 60) as usize;
        if self.minutes[slot].swap(minute, Ordering::Relaxed) != minute {
            self.counts[slot].store(0, Ordering::Relaxed);
        }
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
    }

    pub fn last_hour(&self, now: u64) -> u64 {
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
    pub(super) total: Counter,
    pub(super) hour: Arc<HourCounter>,
}

impl PushCounter {
    /// One record pushed.
    pub fn add(&self) {
        self.total.inc();
        self.hour.add(unix_now());
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
}
