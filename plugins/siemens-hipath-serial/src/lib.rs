//! `SiemensHipathSerial`: Siemens HiPath / Hicom call records from the PBX's serial port.
//!
//! The PBX prints one fixed-width record per call (see [`format`]); the SDK's serial base
//! opens the port, reads the lines and drops control bytes, and this plugin validates and
//! parses them. Settings, besides the port keys (`port`, `rate`, …):
//!
//! - `timezone`: the IANA zone the PBX's clock runs in (default: this machine's zone), so
//!   that each record's date carries the right UTC offset, daylight saving included.

pub mod format;

use calllogger_plugin_sdk::jiff::tz::TimeZone;
use calllogger_plugin_sdk::prelude::*;
use calllogger_plugin_sdk::serial::SerialPlugin;

/// Settings of the `SiemensHipathSerial:` section, besides the port keys.
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

impl SerialPlugin for SiemensHipathSerial {
    type Settings = Settings;
    const DESCRIPTION: &'static str = "Siemens HiPath / Hicom call records from a serial port";

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

    fn parse(&mut self, text: &str) -> Result<Record, Error> {
        Ok(format::parse(text, &self.tz)?)
    }
}

export_plugins!(serial SiemensHipathSerial);
