//! [`LinePlugin`]: the base for PBXs that send one record per line, over any [`LineSource`].

use std::borrow::Cow;
use std::time::Duration;

use calllogger_plugin_abi::{PluginError, PluginKind, PushError, PushErrorKind};
use serde::de::DeserializeOwned;

use super::{Event, LineEnd, LineSettings, LineSource, Retry, Source, Stopper};
use crate::plugin::{construction_error, parse_settings_value, split_settings, Class};
use crate::{Backoff, Context, Error, ErrorKind, Record};

/// A plugin that turns lines into records; export it with `export_plugins!(lines MyPbx)`.
/// Only [`new`](LinePlugin::new) and [`parse`](LinePlugin::parse) are required.
///
/// The base reads the [`LineSettings`] keys (`source:`, `port:`, `connect:`, …) from the
/// class's section and gives the plugin the rest as its [`Settings`](LinePlugin::Settings).
/// It runs each line through `decode`, `validate` and `parse` and pushes the records `parse`
/// returns. A line a stage refuses is counted (`ctx.rejected(stage)`), logged with its raw
/// bytes escaped, and skipped. A line is consumed only once all its records are stored: a
/// push the host cannot take now is tried again after the decayed timeout, and a stop while
/// it waits ends the run with the line unconsumed (a file source reads it again at the next
/// start; the records of that line stored before the stop come again with it).
/// The base stops at once, waiting in `poll(2)` (`WSAPoll` on Windows) on the source and
/// woken by its stop hook; a Windows serial port or file is looked at every 100 or 250 ms
/// instead, so there it stops within that.
pub trait LinePlugin: Sized + Send + 'static {
    /// The plugin's own settings: the keys of its section that are not [`LineSettings::KEYS`].
    type Settings: DeserializeOwned;

    /// One line saying what the class does.
    const DESCRIPTION: &'static str;

    /// Builds the plugin from its settings.
    fn new(settings: Self::Settings) -> Result<Self, Error>;

    /// Turns a line's bytes (without its line end) into text. The default is
    /// [`decode_ascii`].
    fn decode<'a>(&mut self, bytes: &'a [u8]) -> Result<Cow<'a, str>, Error> {
        decode_ascii(bytes)
    }

    /// Rejects a decoded line before parsing. The default accepts every line.
    fn validate(&mut self, _text: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Turns a decoded, valid line into its records: [`Records::none`] for a header or a
    /// heartbeat (skipped quietly), `record.into()` for one, `vec![a, b].into()` for several.
    /// `ctx` logs, and gives the state folder.
    fn parse(&mut self, text: &str, ctx: &Context) -> Result<Records, Error>;
}

/// The records one line gave: none, one or several (from `Record`, `Option<Record>`,
/// `Vec<Record>` or an array, with `.into()`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Records(Vec<Record>);

impl Records {
    /// No record: the line is skipped without being counted as rejected.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// The records, in order.
    pub fn as_slice(&self) -> &[Record] {
        &self.0
    }
}

impl From<Record> for Records {
    fn from(record: Record) -> Self {
        Self(vec![record])
    }
}

impl From<Option<Record>> for Records {
    fn from(record: Option<Record>) -> Self {
        Self(record.into_iter().collect())
    }
}

impl From<Vec<Record>> for Records {
    fn from(records: Vec<Record>) -> Self {
        Self(records)
    }
}

impl<const N: usize> From<[Record; N]> for Records {
    fn from(records: [Record; N]) -> Self {
        Vec::from(records).into()
    }
}

impl FromIterator<Record> for Records {
    fn from_iter<I: IntoIterator<Item = Record>>(records: I) -> Self {
        records.into_iter().collect::<Vec<_>>().into()
    }
}

/// The default [`LinePlugin::decode`]: drop bytes 0x00–0x1F (a stray CR, a control-byte
/// prefix), then require ASCII. Borrows the line when there is nothing to drop.
pub fn decode_ascii(bytes: &[u8]) -> Result<Cow<'_, str>, Error> {
    if !bytes.is_ascii() {
        let at = bytes.iter().position(|b| !b.is_ascii()).unwrap_or_default();
        return Err(format!("byte {at} is 0x{:02X}, not ASCII", bytes[at]).into());
    }
    if !bytes.iter().any(|b| *b < 0x20) {
        return Ok(Cow::Borrowed(
            std::str::from_utf8(bytes).expect("ASCII is UTF-8"),
        ));
    }
    let mut text = Vec::with_capacity(bytes.len());
    for run in bytes.split(|b| *b < 0x20) {
        text.extend_from_slice(run);
    }
    Ok(Cow::Owned(String::from_utf8(text).expect("ASCII is UTF-8")))
}

/// Lines seen and what became of them (logged when the run ends).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct LineCounts {
    lines: u64,
    records: u64,
    decode: u64,
    validate: u64,
    parse: u64,
}

/// A [`LinePlugin`] running on the line base: what `export_plugins!(lines X)` exports.
#[doc(hidden)]
pub struct Lines<P> {
    lines: LineSettings,
    plugin: P,
    counts: LineCounts,
}

impl<P: LinePlugin> Class for Lines<P> {
    const DESCRIPTION: &'static str = P::DESCRIPTION;
    const KIND: PluginKind = PluginKind::Lines;

    fn build(class: &str, yaml: &str) -> Result<Self, PluginError> {
        let config = |e: String| PluginError::new(ErrorKind::Config, e);
        let (keys, own) = split_settings(class, yaml, &LineSettings::KEYS)?;
        let line_end_given = keys.get("line_end").is_some();
        let mut lines: LineSettings = parse_settings_value(class, keys).map_err(config)?;
        if matches!(lines.source, Source::Serial(_)) && !line_end_given {
            // As the 0.2 serial base: a line ends at LF; a CR is dropped, never a line end.
            lines.line_end = LineEnd::Lf;
        }
        let plugin = parse_settings_value(class, own).map_err(config)?;
        Ok(Self {
            lines,
            plugin: P::new(plugin).map_err(|e| construction_error(class, &*e))?,
            counts: LineCounts::default(),
        })
    }

    fn run_class(&mut self, ctx: &Context) -> Result<(), Error> {
        let stopper = Stopper::new()?;
        ctx.on_stop({
            let stopper = stopper.clone();
            move || stopper.stop()
        });
        let events = ctx.clone();
        let state_dir = ctx.state_dir();
        let mut source = LineSource::open(
            &self.lines,
            &stopper,
            Some(&state_dir),
            HostRetry(ctx.backoff()),
        )?
        .on_event(move |event| report(&events, event));
        let mut push_retry = ctx.backoff();
        while let Some(line) = source.next_line()? {
            if self.handle_line(line, ctx, &mut push_retry).is_err() {
                // Stopping before its records were stored: the line is not consumed.
                source.unread();
                break;
            }
        }
        let c = self.counts;
        ctx.info(format_args!(
            "{} lines read, {} records; skipped: {} too long, {} undecodable, {} invalid, {} unparsable",
            c.lines, c.records, source.counts().overlong, c.decode, c.validate, c.parse
        ));
        Ok(())
    }
}

/// The host's decayed timeout as the line source's waits.
struct HostRetry(Backoff);

impl Retry for HostRetry {
    fn next_wait(&mut self) -> Duration {
        self.0.advance()
    }
    fn reset(&mut self) {
        self.0.reset();
    }
}

/// Logs what the line source reports.
fn report(ctx: &Context, event: Event<'_>) {
    match event {
        Event::Opened(_) => ctx.info(&event),
        Event::Overlong { .. } => {
            ctx.rejected("overlong");
            ctx.warn(&event);
        }
        _ => ctx.warn(&event),
    }
}

impl<P: LinePlugin> Lines<P> {
    /// Decodes, validates and parses one line, pushing its records or counting the reject.
    /// `Err` when the instance stops before they are all stored.
    fn handle_line(
        &mut self,
        bytes: &[u8],
        ctx: &Context,
        retry: &mut Backoff,
    ) -> Result<(), PushError> {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.is_empty() {
            return Ok(());
        }
        self.counts.lines += 1;
        let outcome = self
            .plugin
            .decode(bytes)
            .map_err(|e| ("decode", &mut self.counts.decode, e))
            .and_then(|text| {
                self.plugin
                    .validate(&text)
                    .map_err(|e| ("validate", &mut self.counts.validate, e))?;
                self.plugin
                    .parse(&text, ctx)
                    .map_err(|e| ("parse", &mut self.counts.parse, e))
            });
        let records = match outcome {
            Ok(records) => records,
            Err((stage, count, e)) => {
                *count += 1;
                ctx.rejected(stage);
                ctx.warn(format_args!(
                    "line rejected by {stage}: {e}: \"{}\"",
                    bytes.escape_ascii()
                ));
                return Ok(());
            }
        };
        for record in records.as_slice() {
            push(ctx, record, retry)?;
            self.counts.records += 1;
        }
        Ok(())
    }
}

/// Pushes `record`, again after the decayed timeout while the host cannot take it; `Err`
/// when the instance stops first.
fn push(ctx: &Context, record: &Record, retry: &mut Backoff) -> Result<(), PushError> {
    loop {
        match ctx.push(record.clone()) {
            Ok(()) => {
                retry.reset();
                return Ok(());
            }
            Err(e) if e.kind == PushErrorKind::Stopping => return Err(e),
            Err(e) => {
                ctx.warn(format_args!(
                    "{e}; pushing it again in {:.1} s",
                    retry.current().as_secs_f64()
                ));
                if !retry.sleep() {
                    return Err(e);
                }
            }
        }
    }
}
