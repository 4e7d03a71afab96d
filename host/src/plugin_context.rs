//! The host's side of a plugin's `Context` (the ABI's `HostApi`): what one instance's
//! `running()`, `wait()`, `push()` and logging do.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RResult, RStr, RString},
};
use calllogger_plugin_abi::{
    HostApi, HostApi_TO, HostHandle, LogLevel, PushError, PushErrorKind, Record, TimeoutSettings,
};
use calllogger_plugin_sdk::Backoff;
use parking_lot::Mutex;

use crate::runtime::supervisor::{Contexts, InstanceHost};
use crate::stop::Stop;
use crate::telemetry::{PushCounter, Telemetry};
use crate::{ids, json};
use calllogger_spool::Writer;

/// Where pushed records go (the spool; the sinks read them from there), and what instances
/// share: telemetry and the folder for their state.
#[derive(Clone)]
pub struct Intake {
    pub spool: Writer,
    pub telemetry: Arc<Telemetry>,
    /// `state_dir/plugins`: one folder per instance below it.
    pub plugin_state: PathBuf,
}

/// One instance's view of the host.
#[derive(Clone)]
pub struct InstanceContext {
    name: Arc<str>,
    stop: Arc<Stop>,
    intake: Intake,
    timeouts: TimeoutSettings,
    pushed: PushCounter,
    repeats: Arc<Mutex<Repeats>>,
}

impl InstanceContext {
    /// The context of instance `name` of `class`.
    pub fn new(
        name: &str,
        class: &str,
        stop: Arc<Stop>,
        intake: Intake,
        timeouts: TimeoutSettings,
    ) -> Self {
        Self {
            name: name.into(),
            pushed: intake.telemetry.push_counter(name, class),
            stop,
            intake,
            timeouts,
            repeats: Arc::default(),
        }
    }

    /// Logs how often the last message was held back, if it was (see [`Repeats`]): called
    /// when a run ends, so a burst is summed up even if the instance logs nothing more.
    fn log_held_repeats(&self) {
        if let Some(held) = self.repeats.lock().take_held() {
            self.emit(held.level, &held.summary());
        }
    }

    fn emit(&self, level: LogLevel, message: &str) {
        let name = &*self.name;
        match level {
            LogLevel::Trace => tracing::trace!(target: "plugin", instance = %name, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "plugin", instance = %name, "{message}"),
            LogLevel::Info => tracing::info!(target: "plugin", instance = %name, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "plugin", instance = %name, "{message}"),
            LogLevel::Error => tracing::error!(target: "plugin", instance = %name, "{message}"),
        }
    }
}

impl InstanceHost for InstanceContext {
    fn handle(&self) -> HostHandle {
        HostApi_TO::from_ptr(RArc::new(self.clone()), TD_Opaque)
    }

    fn run_ended(&self) {
        self.log_held_repeats();
    }
}

impl Intake {
    /// The host side of every instance the supervisor starts: pushing into this intake.
    pub fn contexts(self) -> Contexts {
        Arc::new(move |name, class, stop, retry| {
            Box::new(InstanceContext::new(name, class, stop, self.clone(), retry))
        })
    }
}

impl HostApi for InstanceContext {
    fn running(&self) -> bool {
        self.stop.running()
    }

    fn wait(&self, seconds: f64) -> bool {
        let timeout = Duration::try_from_secs_f64(seconds).unwrap_or(if seconds > 0.0 {
            Duration::MAX
        } else {
            Duration::ZERO
        });
        self.stop.wait(timeout)
    }

    /// Gives the record its id and makes it durable before returning. While the spool cannot
    /// store it (a full disk, an I/O error), the push is held and retried with the instance's
    /// decayed timeout, so the plugin stops reading and its source keeps what follows; told
    /// to stop meanwhile, it returns `Stopping` and the plugin keeps the record unread.
    fn push(&self, record: Record) -> RResult<(), PushError> {
        let id = ids::new_id();
        let body = json::to_json(&id, &record);
        let mut retry: Option<Backoff> = None;
        while let Err(e) = self.intake.spool.append(&id, record.call_type.0, &body) {
            self.intake.telemetry.push_stalled();
            let wait = retry
                .get_or_insert_with(|| Backoff::new(self.timeouts))
                .advance();
            if !self.stop.running() {
                tracing::warn!(instance = %self.name, "cannot store a record while stopping: {e}; handed back to the plugin");
                return RResult::RErr(PushError::new(PushErrorKind::Stopping, e.to_string()));
            }
            tracing::error!(instance = %self.name, "cannot store a record: {e}; the push is held and retried in {:.1} s (nothing is dropped)", wait.as_secs_f64());
            self.stop.wait(wait);
        }
        self.pushed.add();
        RResult::ROk(())
    }

    /// Logs the message with its control characters escaped, at most [`REPEATS_SHOWN`] times
    /// a second when it repeats.
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        let message = escape_controls(message.as_str());
        let (held, show) = self.repeats.lock().admit(level, &message, Instant::now());
        if let Some(held) = held {
            self.emit(held.level, &held.summary());
        }
        if show {
            self.emit(level, &message);
        }
    }

    fn log_enabled(&self, level: LogLevel) -> bool {
        match level {
            LogLevel::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            LogLevel::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            LogLevel::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        }
    }

    fn timeouts(&self) -> TimeoutSettings {
        self.timeouts
    }

    fn rejected(&self, stage: RStr<'_>) {
        self.intake.telemetry.rejected(&self.name, stage.as_str());
    }

    /// `state_dir/plugins/<instance>`, created (owner-only) on first use.
    fn state_dir(&self) -> RString {
        let dir = self.intake.plugin_state.join(&*self.name);
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        if let Err(e) = builder.create(&dir) {
            tracing::error!(instance = %self.name, "cannot create its state folder {}: {e}", dir.display());
        }
        dir.to_string_lossy().into_owned().into()
    }
}

/// `message` with its control characters (C0, DEL and C1: newlines, tabs, ESC, …) escaped as
/// Rust writes them (`\n`, `\u{1b}`), so a plugin cannot forge log lines or send terminal
/// sequences.
fn escape_controls(message: &str) -> Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return Cow::Borrowed(message);
    }
    let mut escaped = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// How many copies of one message an instance may log in [`REPEAT_WINDOW`]; further copies
/// are counted and summed up in one line.
const REPEATS_SHOWN: u32 = 5;
const REPEAT_WINDOW: Duration = Duration::from_secs(1);

/// An instance's last log message, and how often it repeated in the current window.
#[derive(Default)]
struct Repeats {
    last: Option<(LogLevel, String)>,
    since: Option<Instant>,
    shown: u32,
    held: u64,
}

/// Copies of a message that were not logged.
struct Held {
    level: LogLevel,
    message: String,
    count: u64,
}

impl Held {
    fn summary(&self) -> String {
        format!("{} … (repeated {} more times)", self.message, self.count)
    }
}

impl Repeats {
    /// Whether to log `message` now; first, what to sum up of the copies held back before it.
    fn admit(&mut self, level: LogLevel, message: &str, now: Instant) -> (Option<Held>, bool) {
        let same = self
            .last
            .as_ref()
            .is_some_and(|(l, m)| *l == level && m == message);
        let in_window = self
            .since
            .is_some_and(|since| now.duration_since(since) < REPEAT_WINDOW);
        if same && in_window {
            if self.shown < REPEATS_SHOWN {
                self.shown += 1;
                return (None, true);
            }
            self.held += 1;
            return (None, false);
        }
        let held = self.take_held();
        if !same {
            self.last = Some((level, message.to_owned()));
        }
        self.since = Some(now);
        self.shown = 1;
        (held, true)
    }

    /// The copies held back so far, if any (and forgets them).
    fn take_held(&mut self) -> Option<Held> {
        let count = std::mem::take(&mut self.held);
        let (level, message) = self.last.as_ref()?;
        (count > 0).then(|| Held {
            level: *level,
            message: message.clone(),
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(escape_controls("plain – ü"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nb\r\tc\u{1b}[31md\u{7f}\u{9b}e"),
            "a\\nb\\r\\tc\\u{1b}[31md\\u{7f}\\u{9b}e"
        );
    }

    #[test]
    fn a_repeated_message_is_shown_five_times_a_second_then_summed_up() {
        let mut repeats = Repeats::default();
        let t0 = Instant::now();
        let shown = (0..100)
            .filter(|i| {
                let (held, show) =
                    repeats.admit(LogLevel::Warn, "same", t0 + Duration::from_millis(*i));
                assert!(held.is_none());
                show
            })
            .count();
        assert_eq!(shown, 5);
        // A different message ends the run: the held copies are summed up first.
        let (held, show) = repeats.admit(LogLevel::Warn, "other", t0 + Duration::from_millis(200));
        let held = held.unwrap();
        assert!(show);
        assert_eq!((held.count, held.message.as_str()), (95, "same"));
        assert_eq!(held.summary(), "same … (repeated 95 more times)");
        // The same text at another level is another message; after a second, it shows again.
        assert!(
            repeats
                .admit(LogLevel::Error, "other", t0 + Duration::from_millis(300))
                .1
        );
        assert!(
            repeats
                .admit(LogLevel::Error, "other", t0 + Duration::from_millis(1400))
                .1
        );
        assert!(repeats.take_held().is_none());
    }
}
