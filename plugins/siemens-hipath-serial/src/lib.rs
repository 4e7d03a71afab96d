//! `SiemensHipathSerial`: Siemens HiPath / Hicom call records from the PBX's serial port or
//! over TCP.
//!
//! The PBX prints one fixed-width record per call (see [`format`]); the SDK's line base
//! reads the lines from the source the section names (no `source:`: the serial port of the
//! `port`, `rate`, … keys; or `source: tcp-client` with `connect: host:port`, or
//! `source: tcp-server` with `bind:`), drops control bytes, and this plugin validates and
//! parses them. Its own setting:
//!
//! - `timezone`: the IANA zone the PBX's clock runs in (default: this machine's zone), so
//!   that each record's date carries the right UTC offset, daylight saving included.

pub mod format;

use calllogger_plugin_sdk::jiff::tz::TimeZone;
use calllogger_plugin_sdk::prelude::*;

/// Settings of the `SiemensHipathSerial:` section, besides the line source keys.
#[settings]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// IANA time zone of the PBX's clock; the machine's own zone when absent.
    timezone: Option<String>,
}

/// The plugin: a parser bound to the PBX's time zone.
pub struct SiemensHipathSerial {
    tz: TimeZone,
}

impl LinePlugin for SiemensHipathSerial {
    type Settings = Settings;
    const DESCRIPTION: &'static str =
        "Siemens HiPath / Hicom call records from a serial port or TCP";

    fn new(settings: Settings) -> Result<Self, Error> {
        let tz = match settings.timezone {
            Some(name) => TimeZone::get(&name).map_err(|e| format!("timezone `{name}`: {e}"))?,
            None => TimeZone::system(),
        };
        Ok(Self { tz })
    }

    fn validate(&mut self, text: &str) -> Result<(), Error> {
        Ok(format::validate(text)?)
    }

    fn parse(&mut self, text: &str, _: &Context) -> Result<Records, Error> {
        Ok(format::parse(text, &self.tz)?.into())
    }
}

export_plugins!(lines SiemensHipathSerial);
