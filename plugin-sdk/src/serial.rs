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
use std::io::{ErrorKind, Read};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use calllogger_plugin_abi::{PluginError, PluginKind, PushError, PushErrorKind};

use crate::plugin::{construction_error, parse_settings_value, Class};
use crate::{Context, Error, Record};

/// How long a read waits for data before checking whether the instance should stop.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

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

/// Parity checking on the line.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit (the default).
    #[default]
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
}

/// Flow control on the line.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    /// None (the default).
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// The port keys of a serial plugin's section.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortSettings {
    /// The device, e.g. `/dev/ttyUSB0` or `COM3`.
    pub port: String,
    /// Baud rate (default 9600).
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// Data bits, 5 to 8 (default 8).
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// `none` (default), `odd` or `even`.
    #[serde(default)]
    pub parity: Parity,
    /// Stop bits, 1 or 2 (default 1).
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// `none` (default), `software` or `hardware`.
    #[serde(default)]
    pub flow_control: FlowControl,
    /// Longest line kept, in bytes (default 1024); longer ones are counted and skipped.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
}

fn default_rate() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_max_line_length() -> usize {
    1024
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

impl PortSettings {
    fn builder(&self) -> Result<serialport::SerialPortBuilder, Error> {
        use serialport::{DataBits, StopBits};
        let data_bits = match self.data_bits {
            5 => DataBits::Five,
            6 => DataBits::Six,
            7 => DataBits::Seven,
            8 => DataBits::Eight,
            n => return Err(format!("data_bits must be 5 to 8, not {n}").into()),
        };
        let stop_bits = match self.stop_bits {
            1 => StopBits::One,
            2 => StopBits::Two,
            n => return Err(format!("stop_bits must be 1 or 2, not {n}").into()),
        };
        if self.rate == 0 {
            return Err("rate must be a baud rate such as 9600".into());
        }
        if self.max_line_length == 0 {
            return Err("max_line_length must be at least 1".into());
        }
        Ok(serialport::new(&self.port, self.rate)
            .data_bits(data_bits)
            .parity(match self.parity {
                Parity::None => serialport::Parity::None,
                Parity::Odd => serialport::Parity::Odd,
                Parity::Even => serialport::Parity::Even,
            })
            .stop_bits(stop_bits)
            .flow_control(match self.flow_control {
                FlowControl::None => serialport::FlowControl::None,
                FlowControl::Software => serialport::FlowControl::Software,
                FlowControl::Hardware => serialport::FlowControl::Hardware,
            })
            .timeout(READ_TIMEOUT))
    }
}

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
        port.builder().map_err(fail)?;
        Ok(Self {
            port,
            plugin: P::new(plugin).map_err(fail)?,
            counts: LineCounts::default(),
        })
    }

    fn run_class(&mut self, ctx: &Context) -> Result<(), Error> {
        let mut retry = ctx.timeout();
        while ctx.running() {
            let opened = self
                .port
                .builder()
                .and_then(|b| b.open().map_err(Error::from));
            let mut port = match opened {
                Ok(port) => port,
                Err(e) => {
                    ctx.warn(format_args!(
                        "cannot open {}: {e}; retrying in {:.1} s",
                        self.port.port,
                        retry.current().as_secs_f64()
                    ));
                    retry.sleep();
                    continue;
                }
            };
            ctx.info(format_args!(
                "reading {} at {} baud",
                self.port.port, self.port.rate
            ));
            if let Err(e) = self.read_lines(&mut port, ctx, &mut retry) {
                ctx.warn(format_args!(
                    "lost {}: {e}; reopening in {:.1} s",
                    self.port.port,
                    retry.current().as_secs_f64()
                ));
                drop(port);
                retry.sleep();
            }
        }
        let c = self.counts;
        ctx.info(format_args!(
            "{} lines read, {} records; skipped: {} too long, {} undecodable, {} invalid, {} unparsable",
            c.lines, c.records, c.overlong, c.decode, c.validate, c.parse
        ));
        Ok(())
    }
}

impl<P: SerialPlugin> Serial<P> {
    /// Reads until the instance stops (Ok) or the port fails (Err). A line whose push fails
    /// with `Stopping` ends the loop: its record was not stored.
    fn read_lines(
        &mut self,
        port: &mut dyn Read,
        ctx: &Context,
        retry: &mut crate::Timeout,
    ) -> Result<(), Error> {
        let mut buffer = [0u8; 4096];
        let mut line: Vec<u8> = Vec::with_capacity(256);
        let mut overlong = false;
        while ctx.running() {
            let n = match port.read(&mut buffer) {
                Ok(0) => return Err("the device closed".into()),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            retry.reset();
            for piece in buffer[..n].split_inclusive(|b| *b == b'\n') {
                let complete = piece.last() == Some(&b'\n');
                let body = if complete {
                    &piece[..piece.len() - 1]
                } else {
                    piece
                };
                if !overlong && line.len() + body.len() > self.port.max_line_length {
                    overlong = true;
                    self.counts.overlong += 1;
                    ctx.rejected("overlong");
                    ctx.warn(format_args!(
                        "line longer than {} bytes skipped (max_line_length), starting {}",
                        self.port.max_line_length,
                        line.iter()
                            .chain(body)
                            .take(80)
                            .copied()
                            .collect::<Vec<u8>>()
                            .escape_ascii()
                    ));
                    line.clear();
                }
                if !overlong {
                    line.extend_from_slice(body);
                }
                if complete {
                    if !overlong && self.handle_line(&line, ctx, retry).is_err() {
                        return Ok(());
                    }
                    line.clear();
                    overlong = false;
                }
            }
        }
        Ok(())
    }

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
