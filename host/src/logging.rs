//! The host's log: stderr (stdout carries records), filtered by `RUST_LOG`.

use std::sync::Arc;

use crate::telemetry::{self, Telemetry};

/// Logs to stderr at `default` level unless `RUST_LOG` says otherwise; the latest warnings
/// and errors also go to `telemetry`'s status page.
pub fn init(default: &str, telemetry: &Arc<Telemetry>) {
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
