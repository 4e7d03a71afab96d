//! What `/health` shows, and its rules: the host is healthy (200) unless an instance is not
//! running, the spool is in trouble, or a sink's deliveries have failed for longer than
//! `stuck_after`; each such problem is named (503).

use std::time::Duration;

use serde::Serialize;

use super::recent_log::LogLine;

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

/// One sink (a destination the spool is delivered to), as `/health` shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SinkStatus {
    pub name: String,
    /// Unix seconds of the last delivery.
    pub last_delivery: Option<u64>,
    /// Unix seconds since when every attempt has failed.
    pub failing_since: Option<u64>,
    pub last_error: Option<String>,
    /// The current retry wait, seconds.
    pub retry_wait: f64,
}

/// Delivery as a whole, as the status page shows it (every sink's figures combined).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SenderStatus {
    /// Whether records are delivered to a frontend (else only spooled and echoed).
    pub enabled: bool,
    /// Unix seconds of the last delivery of any sink.
    pub last_delivery: Option<u64>,
    /// Unix seconds since when a sink's every attempt has failed (the earliest such sink).
    pub failing_since: Option<u64>,
    /// That sink's last error.
    pub last_error: Option<String>,
    /// The longest current retry wait, seconds.
    pub retry_wait: f64,
}

impl SenderStatus {
    /// The sinks' figures combined; `enabled` when a frontend is delivered to.
    pub fn combined(enabled: bool, sinks: &[SinkStatus]) -> Self {
        let failing = sinks
            .iter()
            .filter(|s| s.failing_since.is_some())
            .min_by_key(|s| s.failing_since);
        Self {
            enabled,
            last_delivery: sinks.iter().filter_map(|s| s.last_delivery).max(),
            failing_since: failing.and_then(|s| s.failing_since),
            last_error: failing.and_then(|s| s.last_error.clone()),
            retry_wait: sinks.iter().map(|s| s.retry_wait).fold(0.0, f64::max),
        }
    }
}

/// The spool's counts and troubles, read when asked for.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpoolFigures {
    pub pending: u64,
    pub dead: u64,
    /// Unix seconds the oldest pending record was pushed.
    pub oldest_pending: Option<i64>,
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
    pub sinks: Vec<SinkStatus>,
    pub spool: SpoolFigures,
    pub libraries_loaded: u64,
    pub libraries_retired: u64,
    /// Recent warnings and errors, newest first.
    pub recent: Vec<LogLine>,
}

/// Every problem, in the order instances, spool, sinks.
pub fn problems(
    instances: &[InstanceStatus],
    spool: &SpoolFigures,
    sinks: &[SinkStatus],
    now: u64,
    stuck_after: Duration,
) -> Vec<String> {
    let mut problems = readiness_problems(instances, spool);
    problems.extend(
        sinks
            .iter()
            .filter_map(|s| sink_problem(s, now, stuck_after)),
    );
    problems
}

/// What keeps records from being taken: an instance not running, a spool in trouble.
pub fn readiness_problems(instances: &[InstanceStatus], spool: &SpoolFigures) -> Vec<String> {
    instances
        .iter()
        .filter_map(instance_problem)
        .chain(spool_problems(spool))
        .collect()
}

/// An instance that is not running is a problem, named with why.
fn instance_problem(i: &InstanceStatus) -> Option<String> {
    Some(match (&i.state, &i.last_error) {
        (InstanceState::Running, _) => return None,
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
}

/// Whatever keeps the spool from taking or storing records is a problem.
fn spool_problems(spool: &SpoolFigures) -> impl Iterator<Item = String> + '_ {
    spool.trouble.iter().map(|t| format!("spool: {t}"))
}

/// A sink whose every attempt has failed for `stuck_after` or longer is stuck.
fn sink_problem(sink: &SinkStatus, now: u64, stuck_after: Duration) -> Option<String> {
    let failing = now.saturating_sub(sink.failing_since?);
    (failing >= stuck_after.as_secs()).then(|| {
        format!(
            "delivery has failed for {failing} s (sink {}): {}",
            sink.name,
            sink.last_error.as_deref().unwrap_or("")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(state: InstanceState, error: Option<&str>) -> InstanceStatus {
        InstanceStatus {
            name: "Echo@a".into(),
            class: "Echo".into(),
            library: None,
            state,
            since: 0,
            retry_in: None,
            last_error: error.map(Into::into),
            restarts: 0,
            records_last_hour: 0,
        }
    }

    #[test]
    fn a_running_instance_is_fine_any_other_state_is_named_with_why() {
        assert_eq!(
            instance_problem(&instance(InstanceState::Running, Some("old"))),
            None
        );
        assert_eq!(
            instance_problem(&instance(InstanceState::Retrying, Some("port gone"))).unwrap(),
            "instance Echo@a is not running: port gone"
        );
        assert_eq!(
            instance_problem(&instance(InstanceState::Retrying, None)).unwrap(),
            "instance Echo@a is not running"
        );
        assert_eq!(
            instance_problem(&instance(InstanceState::WaitingForLibrary, None)).unwrap(),
            "instance Echo@a is waiting for a plugin library that exports class Echo"
        );
        assert_eq!(
            instance_problem(&instance(InstanceState::Failed, Some("bad port"))).unwrap(),
            "instance Echo@a failed: bad port (fatal: not retried until its config section or \
             library changes)"
        );
    }

    #[test]
    fn each_spool_trouble_is_a_problem() {
        let spool = SpoolFigures {
            trouble: vec!["cannot write to the spool journal: No space left on device".into()],
            ..SpoolFigures::default()
        };
        assert_eq!(
            spool_problems(&spool).collect::<Vec<_>>(),
            ["spool: cannot write to the spool journal: No space left on device"]
        );
        assert_eq!(spool_problems(&SpoolFigures::default()).count(), 0);
    }

    #[test]
    fn a_sink_is_stuck_once_it_has_failed_for_stuck_after() {
        let failing = SinkStatus {
            name: "frontend".into(),
            failing_since: Some(1000),
            last_error: Some("HTTP 503".into()),
            ..SinkStatus::default()
        };
        let after = Duration::from_secs(60);
        assert_eq!(sink_problem(&failing, 1059, after), None, "not yet");
        assert_eq!(
            sink_problem(&failing, 1060, after).unwrap(),
            "delivery has failed for 60 s (sink frontend): HTTP 503"
        );
        assert_eq!(
            sink_problem(&failing, 900, after),
            None,
            "a clock stepped back"
        );
        let delivering = SinkStatus {
            last_delivery: Some(1000),
            failing_since: None,
            ..failing
        };
        assert_eq!(sink_problem(&delivering, 99_999, Duration::ZERO), None);
    }

    #[test]
    fn problems_list_instances_then_the_spool_then_the_sinks() {
        let spool = SpoolFigures {
            trouble: vec!["full".into()],
            ..SpoolFigures::default()
        };
        let sink = SinkStatus {
            name: "frontend".into(),
            failing_since: Some(0),
            ..SinkStatus::default()
        };
        let found = problems(
            &[
                instance(InstanceState::Running, None),
                instance(InstanceState::Retrying, None),
            ],
            &spool,
            &[sink],
            10,
            Duration::ZERO,
        );
        assert_eq!(
            found,
            [
                "instance Echo@a is not running",
                "spool: full",
                "delivery has failed for 10 s (sink frontend): "
            ]
        );
        assert!(problems(&[], &SpoolFigures::default(), &[], 10, Duration::ZERO).is_empty());
    }

    #[test]
    fn the_status_page_sees_the_sinks_combined() {
        let sinks = [
            SinkStatus {
                name: "a".into(),
                last_delivery: Some(5),
                failing_since: Some(8),
                last_error: Some("later".into()),
                retry_wait: 1.0,
            },
            SinkStatus {
                name: "b".into(),
                last_delivery: Some(7),
                failing_since: Some(6),
                last_error: Some("earlier".into()),
                retry_wait: 0.5,
            },
        ];
        let combined = SenderStatus::combined(true, &sinks);
        assert!(combined.enabled);
        assert_eq!(combined.last_delivery, Some(7));
        assert_eq!(combined.failing_since, Some(6));
        assert_eq!(combined.last_error.as_deref(), Some("earlier"));
        assert_eq!(combined.retry_wait, 1.0);
        assert_eq!(SenderStatus::combined(false, &[]).failing_since, None);
    }
}
