//! The serial-port base (feature `serial`): for PBXs that print one record per line on a
//! serial port. Implement [`SerialPlugin`] — usually just [`parse`](SerialPlugin::parse) — and
//! export it with `export_plugins!(serial MyPbx)`.
//!
//! The base opens the port from the section's `port`, `rate`, `data_bits`, `parity`,
//! `stop_bits` and `flow_control` keys (defaults 9600 8N1, no flow control), retrying with the
//! host's decayed timeout while it cannot; reads LF-terminated lines (CR stripped, at most
//! `max_line_length` bytes, so a stream without newlines cannot eat memory); runs each through
//! `decode`, `validate` and `parse`, and pushes the record. A line that fails a stage is
//! counted, logged with its raw bytes escaped, and skipped. A read error or a vanished device
//! closes the port and reopens it with the decayed timeout; data read resets the timeout.
//! The port and the lines are a [`crate::lines::LineSource`] (see
//! [`lines`](crate::lines) for TCP and file transports).
//!
//! ```
//! use calllogger_plugin_sdk::prelude::*;
//! use calllogger_plugin_sdk::serial::SerialPlugin;
//!
//! pub struct PrinterPbx;
//!
//! impl SerialPlugin for PrinterPbx {
//!     type Settings = NoSettings;
//!     const DESCRIPTION: &'static str = "Reads `number,ext` lines from a serial port";
//!
//!     fn new(_: NoSettings) -> Result<Self, Error> {
//!         Ok(Self)
//!     }
//!
//!     fn parse(&mut self, text: &str) -> Result<Record, Error> {
//!         let (number, ext) = text.split_once(',').ok_or("expected `number,ext`")?;
//!         Ok(Record::new(CallType::RECEIVED).number(number).ext(ext).raw(text))
//!     }
//! }
//!
//! export_plugins!(serial PrinterPbx);
//! # fn main() {}
//! ```

use std::borrow::Cow;
use std::time::Duration;

use calllogger_plugin_abi::{PluginError, PluginKind, PushError, PushErrorKind};
use serde::de::DeserializeOwned;

use crate::lines::{Event, LineSettings, LineSource, Retry, Stopper};
pub use crate::lines::{FlowControl, Parity, PortSettings};
use crate::plugin::{construction_error, parse_settings_value, Class};
use crate::{Context, Error, Record, Timeout};

/// A plugin that turns serial-port lines into records. Only `parse` is required.
pub trait SerialPlugin: Sized + Send + 'static {
    /// The plugin's own settings, read from its section next to the port keys.
    type Settings: DeserializeOwned;

    /// One line saying what the class does.
    const DESCRIPTION: &'static str;

    /// Builds the plugin from its settings.
    fn new(settings: Self::Settings) -> Result<Self, Error>;

    /// Turns a line's bytes (without the LF) into text. The default drops bytes 0x00–0x1F
    /// (CR and any control-byte prefix) and requires the rest to be ASCII.
    fn decode<'a>(&mut self, bytes: &'a [u8]) -> Result<Cow<'a, str>, Error> {
        decode_ascii(bytes)
    }

    /// Rejects a decoded line before parsing. The default accepts every line.
    fn validate(&mut self, _text: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Turns a decoded, valid line into a record.
    fn parse(&mut self, text: &str) -> Result<Record, Error>;
}

/// The default [`SerialPlugin::decode`]: drop bytes 0x00–0x1F, then require ASCII. Borrows
/// the line when there is nothing to drop.
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

/// The keys of [`PortSettings`]; every other key of the section is the plugin's.
const PORT_KEYS: [&str; 7] = [
    "port",
    "rate",
    "data_bits",
    "parity",
    "stop_bits",
    "flow_control",
    "max_line_length",
];

/// Lines seen and what became of them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LineCounts {
    /// Complete lines read (blank ones not counted).
    pub lines: u64,
    /// Records pushed.
    pub records: u64,
    /// Lines longer than `max_line_length`, skipped.
    pub overlong: u64,
    /// Lines `decode` refused.
    pub decode: u64,
    /// Lines `validate` refused.
    pub validate: u64,
    /// Lines `parse` refused.
    pub parse: u64,
}

/// A [`SerialPlugin`] running on the serial base: what `export_plugins!(serial X)` exports.
pub struct Serial<P> {
    port: PortSettings,
    plugin: P,
    counts: LineCounts,
}

impl<P: SerialPlugin> Class for Serial<P> {
    const DESCRIPTION: &'static str = P::DESCRIPTION;
    const KIND: PluginKind = PluginKind::Serial;

    fn build(class: &str, yaml: &str) -> Result<Self, PluginError> {
        let config = |e: String| PluginError::new(crate::ErrorKind::Config, e);
        let value: serde_yaml::Value = serde_yaml::from_str(yaml)
            .map_err(|e| config(format!("{class}: settings are not valid YAML: {e}")))?;
        let mut own = match value {
            serde_yaml::Value::Mapping(mapping) => mapping,
            serde_yaml::Value::Null => Default::default(),
            _ => return Err(config(format!("{class}: settings must be a mapping"))),
        };
        let mut port = serde_yaml::Mapping::new();
        for key in PORT_KEYS {
            if let Some(value) = own.remove(key) {
                port.insert(key.into(), value);
            }
        }
        let port: PortSettings =
            parse_settings_value(class, serde_yaml::Value::Mapping(port)).map_err(config)?;
        let plugin =
            parse_settings_value(class, serde_yaml::Value::Mapping(own)).map_err(config)?;
        let fail = |e: Error| construction_error(class, &*e);
        port.check().map_err(|e| config(format!("{class}: {e}")))?;
        Ok(Self {
            port,
            plugin: P::new(plugin).map_err(fail)?,
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
        let mut source = LineSource::open(
            &LineSettings::serial(self.port.clone()),
            &stopper,
            None,
            HostRetry(ctx.timeout()),
        )?
        .on_event(move |event| report(&events, event));
        let mut push_retry = ctx.timeout();
        while let Some(line) = source.next_line()? {
            if self.handle_line(line, ctx, &mut push_retry).is_err() {
                // Stopping before its record was stored: the line is not consumed.
                source.unread();
                break;
            }
        }
        let c = LineCounts {
            overlong: source.counts().overlong,
            ..self.counts
        };
        ctx.info(format_args!(
            "{} lines read, {} records; skipped: {} too long, {} undecodable, {} invalid, {} unparsable",
            c.lines, c.records, c.overlong, c.decode, c.validate, c.parse
        ));
        Ok(())
    }
}

/// The host's decayed timeout as the line source's waits.
struct HostRetry(Timeout);

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

impl<P: SerialPlugin> Serial<P> {
    /// Decodes, validates and parses one line, pushing the record or counting the reject. A
    /// push the host cannot take now is retried after the decayed timeout (reading waits);
    /// `Err` when the instance stops before the record is stored.
    fn handle_line(
        &mut self,
        bytes: &[u8],
        ctx: &Context,
        retry: &mut crate::Timeout,
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
                    .parse(&text)
                    .map_err(|e| ("parse", &mut self.counts.parse, e))
            });
        let record = match outcome {
            Ok(record) => record,
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
        loop {
            match ctx.push(record.clone()) {
                Ok(()) => {
                    self.counts.records += 1;
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
}
