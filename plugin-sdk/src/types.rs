//! Value types for plugin settings, each deserializing with a clear error:
//! [`TimeZone`] (an IANA name), [`HostPort`] (`host:port`) and [`Seconds`] (`1.5`).
//!
//! ```
//! use calllogger_plugin_sdk::prelude::*;
//! use calllogger_plugin_sdk::types::{HostPort, Seconds, TimeZone};
//!
//! #[settings]
//! struct Settings {
//!     pbx: HostPort,
//!     #[serde(default)]
//!     timezone: TimeZone,
//!     every: Seconds,
//! }
//!
//! let s: Settings = calllogger_plugin_sdk::parse_settings(
//!     "Demo",
//!     "pbx: 10.0.0.5\ntimezone: Europe/Berlin\nevery: 1.5",
//! )
//! .unwrap();
//! assert_eq!((s.pbx.host(), s.pbx.port_or(2300)), ("10.0.0.5", 2300));
//! assert_eq!(s.timezone.name(), Some("Europe/Berlin"));
//! assert_eq!(s.every.as_secs_f64(), 1.5);
//!
//! let Err(e) = calllogger_plugin_sdk::parse_settings::<Settings>("Demo", "pbx: a\nevery: 0") else {
//!     panic!("every: 0 is refused");
//! };
//! assert!(e.contains("`every`") && e.contains("above 0"), "{e}");
//! ```

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error as _};

/// A time zone given by its IANA name (`Europe/Berlin`, `UTC`); the default is this machine's.
#[derive(Clone, Debug)]
pub struct TimeZone {
    name: Option<String>,
    zone: jiff::tz::TimeZone,
}

impl TimeZone {
    /// The zone named `name` in the IANA database.
    pub fn get(name: &str) -> Result<Self, String> {
        jiff::tz::TimeZone::get(name)
            .map(|zone| Self {
                name: Some(name.to_owned()),
                zone,
            })
            .map_err(|e| {
                format!("unknown time zone `{name}` (give an IANA name like Europe/Berlin): {e}")
            })
    }

    /// The name it was given by, `None` for the machine's zone.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl Default for TimeZone {
    /// This machine's zone.
    fn default() -> Self {
        Self {
            name: None,
            zone: jiff::tz::TimeZone::system(),
        }
    }
}

impl Deref for TimeZone {
    type Target = jiff::tz::TimeZone;

    fn deref(&self) -> &jiff::tz::TimeZone {
        &self.zone
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::get(name.trim()).map_err(D::Error::custom)
    }
}

/// A network address `host:port` (`pbx.local:2300`, `10.0.0.5`, `[fe80::1]:2300`) whose
/// port may be left out: the plugin supplies its default with [`port_or`](HostPort::port_or).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    host: String,
    port: Option<u16>,
}

impl HostPort {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = |why: &str| format!("`{text}` is not host:port: {why}");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("no closing `]`"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("text after `]`"))?,
                    ),
                ),
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => (text, None), // a bare IPv6 address
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port must be a number from 1 to 65535"))
            })
            .transpose()?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The host name or address (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, if one was given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port given, or `default`.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.host.contains(':'), self.port) {
            (true, Some(port)) => write!(f, "[{}]:{port}", self.host),
            (false, Some(port)) => write!(f, "{}:{port}", self.host),
            _ => f.write_str(&self.host),
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// A duration given in seconds, fractions allowed (`60`, `1.5`); it must be above 0.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Seconds(Duration);

impl Seconds {
    /// `seconds`, if it is a finite number above 0.
    pub fn new(seconds: f64) -> Result<Self, String> {
        if seconds.is_finite() && seconds > 0.0 {
            Duration::try_from_secs_f64(seconds)
                .map(Self)
                .map_err(|e| format!("{seconds} s: {e}"))
        } else {
            Err(format!(
                "must be a number of seconds above 0, like 1.5, not {seconds}"
            ))
        }
    }

    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl Deref for Seconds {
    type Target = Duration;

    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl From<Seconds> for Duration {
    fn from(s: Seconds) -> Duration {
        s.0
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.0.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(f64::deserialize(d)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let hp = |t: &str| HostPort::parse(t).map(|h| (h.host().to_owned(), h.port()));
        assert_eq!(hp("pbx.local:2300"), Ok(("pbx.local".into(), Some(2300))));
        assert_eq!(hp(" 10.0.0.5 "), Ok(("10.0.0.5".into(), None)));
        assert_eq!(hp("[fe80::1]:99"), Ok(("fe80::1".into(), Some(99))));
        assert_eq!(hp("fe80::1"), Ok(("fe80::1".into(), None)));
        for bad in [
            "",
            ":80",
            "pbx:0",
            "pbx:http",
            "pbx:70000",
            "[::1",
            "[::1]x",
        ] {
            assert!(hp(bad).is_err(), "{bad}");
        }
        assert_eq!(HostPort::parse("[::1]:5").unwrap().to_string(), "[::1]:5");
    }

    #[test]
    fn seconds_accept_integers_and_fractions_only_above_zero() {
        let s = |y: &str| yaml_serde::from_str::<Seconds>(y).map_err(|e| e.to_string());
        assert_eq!(s("60").unwrap().as_secs(), 60);
        assert_eq!(s("0.25").unwrap().as_millis(), 250);
        for bad in ["0", "-1", ".nan", ".inf"] {
            assert!(s(bad).unwrap_err().contains("above 0"), "{bad}");
        }
        assert!(s("ten").is_err());
    }

    #[test]
    fn time_zones_by_name_with_a_clear_error() {
        let z: TimeZone = yaml_serde::from_str("UTC").unwrap();
        assert_eq!(z.name(), Some("UTC"));
        let e = yaml_serde::from_str::<TimeZone>("Mars/Olympus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown time zone `Mars/Olympus`"), "{e}");
        assert_eq!(TimeZone::default().name(), None);
    }
}
