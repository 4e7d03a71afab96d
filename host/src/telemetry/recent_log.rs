//! The latest warnings and errors, for `/health` and the status page: a `tracing` layer
//! feeding a small ring buffer.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::{unix_now, Telemetry};

/// How many warnings and errors the status page keeps.
const RECENT: usize = 20;

/// A warning or error from the log.
#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    /// Unix seconds.
    pub at: u64,
    pub level: String,
    pub message: String,
}

/// The last [`RECENT`] warnings and errors.
#[derive(Default)]
pub(super) struct RecentLines(Mutex<VecDeque<LogLine>>);

impl RecentLines {
    pub fn push(&self, level: &str, message: String) {
        let mut recent = self.0.lock();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(LogLine {
            at: unix_now(),
            level: level.to_owned(),
            message,
        });
    }

    /// Newest first.
    pub fn newest_first(&self) -> Vec<LogLine> {
        self.0.lock().iter().rev().cloned().collect()
    }
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
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn warnings_and_errors_are_kept_newest_first_with_their_fields_and_infos_are_not() {
        let telemetry = Telemetry::new();
        let subscriber = tracing_subscriber::registry().with(RecentLog(telemetry.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(instance = "Echo", "first");
            for n in 0..RECENT {
                tracing::error!("error {n}");
            }
        });
        let recent = telemetry.recent.newest_first();
        assert_eq!(recent.len(), RECENT, "the oldest goes");
        assert_eq!(recent[0].message, format!("error {}", RECENT - 1));
        assert_eq!(recent[0].level, "ERROR");
        assert_eq!(recent[RECENT - 1].message, "error 0");

        let subscriber = tracing_subscriber::registry().with(RecentLog(telemetry.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(instance = "Echo", "with a field");
        });
        assert_eq!(
            telemetry.recent.newest_first()[0].message,
            "with a field instance=Echo"
        );
    }
}
