//! The host's log: stderr (stdout carries records) or a file, filtered by `RUST_LOG` or else
//! `settings.log_level` (applied once the config is read, and again on a reload), as text or
//! JSON lines. Under systemd (stderr is `$JOURNAL_STREAM`) each line starts with its
//! syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald
//! takes as the entry's priority (`journalctl -p err`), and has no time stamp of its own.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Deserializer};
use tracing::{Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::Layered;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::cli::LogFormat;
use crate::telemetry::{self, Telemetry};

/// Where a log file is started anew: the previous one is kept as `PATH.1`, so the log takes at
/// most twice this.
pub const LOG_FILE_LIMIT: u64 = 10 << 20;

/// The log's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LogSettings {
    /// What the running host logs, unless `RUST_LOG` says.
    pub log_level: LogLevel,
}

/// `settings.log_level`: a level (`error`, `warn`, `info`, `debug`, `trace`, or `off`), or a
/// filter as `RUST_LOG` takes it (`info,calllogger::sinks=debug`) whose every part without a
/// `=` is a level, so that a misspelt level is refused rather than read as a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(String);

/// The words a filter takes as a level.
const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

impl LogLevel {
    /// Checks `text` as a level or a filter; the error says what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let expected = || {
            format!(
                "must be error, warn, info, debug, trace or off, or a filter as RUST_LOG takes \
                 it (e.g. `info,calllogger::sinks=debug`), not `{text}`"
            )
        };
        // Blank parts (`info,`) are skipped, as RUST_LOG skips empty ones.
        let parts: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect();
        let bare_word = |part: &&str| {
            !part.contains(['=', '['])
                && !LEVELS.iter().any(|level| part.eq_ignore_ascii_case(level))
        };
        if parts.is_empty() || parts.iter().any(bare_word) {
            return Err(expected());
        }
        let filter = parts.join(",");
        match EnvFilter::builder().parse(&filter) {
            Ok(_) => Ok(Self(filter)),
            Err(e) => Err(format!("{}: {e}", expected())),
        }
    }

    /// The filter it is.
    fn filter(&self) -> EnvFilter {
        EnvFilter::builder()
            .parse(&self.0)
            .expect("a log level is checked when it is read")
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The filter [`apply`] replaces: set only when `RUST_LOG` does not filter the log.
static FILTER: OnceLock<reload::Handle<EnvFilter, Layered<Output, Registry>>> = OnceLock::new();

/// Set when `RUST_LOG` filters the log: the levels [`apply`] was given instead.
static IGNORED: Mutex<Option<Ignored>> = Mutex::new(None);

/// Filters the log by `level` from here on, unless `RUST_LOG` filters it; then the first time
/// `level` differs from the one before, a warning says it is ignored.
pub fn apply(level: &LogLevel) {
    if let Some(filter) = FILTER.get() {
        if let Err(e) = filter.reload(level.filter()) {
            tracing::warn!("cannot set the log level to {level}: {e}");
        }
        return;
    }
    let mut ignored = IGNORED.lock().unwrap_or_else(|e| e.into_inner());
    if ignored.as_mut().is_some_and(|ignored| ignored.warns(level)) {
        tracing::warn!("settings.log_level is ignored: RUST_LOG is set");
    }
}

/// The log levels given while `RUST_LOG` filters the log.
#[derive(Debug, Default)]
struct Ignored {
    /// The level before.
    last: Option<LogLevel>,
    /// Whether a change was warned about (once is enough).
    warned: bool,
}

impl Ignored {
    /// Whether to warn about `level`: the first change from the level before.
    fn warns(&mut self, level: &LogLevel) -> bool {
        let changed = self
            .last
            .replace(level.clone())
            .is_some_and(|last| last != *level);
        let warns = changed && !self.warned;
        self.warned |= warns;
        warns
    }
}

/// Logs at `default` level until [`apply`] sets the configured one, unless `RUST_LOG` (when it
/// is a valid filter) says otherwise; in `format`, to `file` if given (appended to, rotated at
/// [`LOG_FILE_LIMIT`]; an error names it), else to stderr; the latest warnings and errors also
/// go to `telemetry`'s status page.
pub fn init(
    default: &str,
    format: LogFormat,
    telemetry: &Arc<Telemetry>,
    file: Option<&Path>,
) -> io::Result<()> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let from_env = EnvFilter::try_from_default_env().ok();
    let configurable = from_env.is_none();
    let (filter, handle) = reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new(default)));
    let output = match file {
        Some(path) => {
            let file = LogFile::open(path.to_owned(), LOG_FILE_LIMIT)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            layer(Mutex::new(file), format, Style::Plain)
        }
        None if stderr_is_journal() => layer(io::stderr, format, Style::Journal),
        None if io::IsTerminal::is_terminal(&io::stderr()) => {
            layer(io::stderr, format, Style::Coloured)
        }
        None => layer(io::stderr, format, Style::Plain),
    };
    tracing_subscriber::registry()
        .with(output)
        .with(filter)
        .with(telemetry::RecentLog(telemetry.clone()))
        .init();
    if configurable {
        let _ = FILTER.set(handle);
    } else {
        *IGNORED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Ignored::default());
    }
    Ok(())
}

/// How text lines look where they go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// A terminal: coloured levels.
    Coloured,
    /// A file or a pipe.
    Plain,
    /// journald: a priority prefix, no time stamp.
    Journal,
}

type Output = Box<dyn Layer<Registry> + Send + Sync>;

/// The formatting layer writing to `writer`.
fn layer<W>(writer: W, format: LogFormat, style: Style) -> Output
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(style == Style::Coloured);
    match (format, style) {
        (LogFormat::Json, Style::Journal) => {
            let json = tracing_subscriber::fmt::format().json().without_time();
            Box::new(base.event_format(Prioritised(json)))
        }
        (LogFormat::Json, _) => {
            Box::new(base.event_format(tracing_subscriber::fmt::format().json()))
        }
        (LogFormat::Text, Style::Journal) => {
            let text = tracing_subscriber::fmt::format().without_time();
            Box::new(base.event_format(Prioritised(text)))
        }
        (LogFormat::Text, _) => Box::new(base),
    }
}

/// A format with each line prefixed by its syslog priority, as journald reads it.
struct Prioritised<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Whether stderr is the journal stream systemd connected (`$JOURNAL_STREAM` is its
/// `device:inode`).
#[cfg(unix)]
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd as _;
    let Some(stream) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(io::stderr().as_fd()) else {
        return false;
    };
    stream == format!("{}:{}", stat.st_dev, stat.st_ino)
}

#[cfg(not(unix))]
fn stderr_is_journal() -> bool {
    false
}

/// A log file appended to, renamed to `PATH.1` (replacing the one before) and started anew
/// when a line would take it past its limit.
struct LogFile {
    path: PathBuf,
    file: File,
    /// Its length.
    written: u64,
    limit: u64,
}

impl LogFile {
    /// Opens `path` for appending (its folder created if missing).
    fn open(path: PathBuf, limit: u64) -> io::Result<Self> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)?;
        }
        let file = Self::append(&path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            written,
            limit,
        })
    }

    fn append(path: &Path) -> io::Result<File> {
        File::options().create(true).append(true).open(path)
    }

    /// Moves the file to `PATH.1` and opens a new one. If the rename fails (on Windows, a
    /// reader that does not share deletion holds it), the log goes on in the same file.
    fn rotate(&mut self) -> io::Result<()> {
        let mut previous = self.path.clone().into_os_string();
        previous.push(".1");
        if std::fs::rename(&self.path, previous).is_ok() {
            self.file = Self::append(&self.path)?;
            self.written = 0;
        }
        Ok(())
    }
}

impl Write for LogFile {
    /// Writes one formatted line (the log writes each event at once).
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + line.len() as u64 > self.limit {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.written += line.len() as u64;
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_level_is_a_level_or_a_filter_whose_bare_words_are_levels() {
        for good in [
            "info",
            "DEBUG",
            " warn ",
            "off",
            "info,calllogger::sinks=debug",
            "plugin=trace",
            "info,",
            "warn, ,plugin=debug",
        ] {
            assert!(LogLevel::parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            LogLevel::parse(" warn, ,plugin=debug,")
                .unwrap()
                .to_string(),
            "warn,plugin=debug"
        );
        for bad in ["", ",", "verbose", "debgu", "info,debgu", "calllogger=loud"] {
            let error = LogLevel::parse(bad).expect_err(bad);
            assert!(
                error.starts_with("must be error, warn, info, debug, trace or off, or a filter"),
                "{error}"
            );
            assert!(error.contains(&format!("not `{}`", bad.trim())), "{error}");
        }
        let filter = LogLevel::parse("warn,calllogger::sinks=debug")
            .unwrap()
            .filter();
        assert_eq!(
            filter.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::DEBUG)
        );
    }

    #[test]
    fn an_ignored_log_level_is_warned_about_at_its_first_change_only() {
        let level = |text| LogLevel::parse(text).unwrap();
        let mut ignored = Ignored::default();
        assert!(!ignored.warns(&level("info")), "the level at start-up");
        assert!(!ignored.warns(&level("info")), "unchanged");
        assert!(ignored.warns(&level("debug")));
        assert!(!ignored.warns(&level("warn")), "once");
    }

    #[test]
    fn a_log_file_is_appended_to_and_started_anew_at_its_limit_keeping_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/host.log");
        let old = dir.path().join("logs/host.log.1");
        let mut log = LogFile::open(path.clone(), 10).unwrap();
        log.write_all(b"one\n").unwrap();
        drop(log);
        // Reopened, it appends.
        let mut log = LogFile::open(path.clone(), 10).unwrap();
        log.write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        // A line past the limit goes to a new file; the full one is kept.
        log.write_all(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        // A line longer than the limit is written whole, to a file of its own.
        log.write_all(b"a long line\n").unwrap();
        log.write_all(b"four\n").unwrap();
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "a long line\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "four\n");
    }
}
