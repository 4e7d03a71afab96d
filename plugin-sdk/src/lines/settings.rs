//! [`LineSettings`]: the source keys of a line plugin's section.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::LineEnd;
use crate::Secret;

/// Parity checking on a serial line.
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

/// Flow control on a serial line.
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

/// The keys of a serial port, as a 0.2 serial plugin's section has them.
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

impl PortSettings {
    /// Checks the values serde cannot: data bits, stop bits, rate, line length.
    pub fn check(&self) -> Result<(), String> {
        if !(5..=8).contains(&self.data_bits) {
            return Err(format!("data_bits must be 5 to 8, not {}", self.data_bits));
        }
        if !(1..=2).contains(&self.stop_bits) {
            return Err(format!("stop_bits must be 1 or 2, not {}", self.stop_bits));
        }
        if self.rate == 0 {
            return Err("rate must be a baud rate such as 9600".into());
        }
        check_max_line_length(self.max_line_length)
    }
}

/// The most a line may be set to: each input holds a buffer of this size.
pub const MAX_LINE_LENGTH: usize = 1 << 20;

fn check_max_line_length(n: usize) -> Result<(), String> {
    if !(1..=MAX_LINE_LENGTH).contains(&n) {
        return Err(format!(
            "max_line_length must be 1 to {MAX_LINE_LENGTH} bytes, not {n}"
        ));
    }
    Ok(())
}

/// One step of a login dialogue: wait for `expect` (if given), then send `send` (if given).
#[non_exhaustive]
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LoginStep {
    /// Text to wait for (exact bytes, anywhere in what the PBX sent since the last step).
    #[serde(default)]
    pub expect: Option<String>,
    /// Text to send, e.g. `"PCCSMDR\r\n"` (YAML double quotes make `\r\n` a CR LF).
    #[serde(default)]
    pub send: Option<Secret>,
}

/// Connect to the PBX (`source: tcp-client`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct TcpClientSettings {
    /// `host:port` of the PBX (key `connect`).
    pub connect: String,
    /// The login dialogue, run on every connect (key `login`, default none).
    pub login: Vec<LoginStep>,
    /// How long one connect attempt (key `connect_timeout`, default 10 s) and the whole
    /// login (key `login_timeout`, default 10 s) may take.
    pub connect_timeout: Duration,
    /// See `connect_timeout`.
    pub login_timeout: Duration,
    /// TCP keep-alive probes after this much silence (key `keepalive`, seconds; default off).
    pub keepalive: Option<Duration>,
    /// Reconnect after this much silence (key `idle_timeout`, seconds; default off).
    pub idle_timeout: Option<Duration>,
}

/// Listen for the PBX (`source: tcp-server`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct TcpServerSettings {
    /// Address to listen on, e.g. `0.0.0.0:1150` (key `bind`).
    pub bind: String,
    /// Connections kept at once (key `max_connections`, default 8); a new one beyond that
    /// closes the one silent longest.
    pub max_connections: usize,
    /// TCP keep-alive probes on each connection (key `keepalive`, seconds; default off).
    pub keepalive: Option<Duration>,
    /// Close a connection silent this long (key `idle_timeout`, seconds; default off).
    pub idle_timeout: Option<Duration>,
}

/// Where a file source starts when it has no remembered position.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Read the whole file (the default).
    #[default]
    Beginning,
    /// Only lines written from now on.
    End,
}

/// Follow a file the PBX appends to (`source: file`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct FileSettings {
    /// The file (key `path`).
    pub path: PathBuf,
    /// Where to start the first time (key `start_at`: `beginning`, the default, or `end`).
    pub start_at: StartAt,
}

/// The transport, chosen by the `source` key.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `source: serial`, or no `source` key: the 0.2 serial keys.
    Serial(PortSettings),
    /// `source: tcp-client`.
    TcpClient(TcpClientSettings),
    /// `source: tcp-server`.
    TcpServer(TcpServerSettings),
    /// `source: file`.
    File(FileSettings),
}

/// Where a line plugin's lines come from, read from its config section.
///
/// ```
/// use calllogger_plugin_sdk::lines::{LineSettings, Source};
///
/// // A 0.2 serial section reads unchanged.
/// let s: LineSettings = calllogger_plugin_sdk::parse_settings("Pbx", "port: /dev/ttyS0\nrate: 19200").unwrap();
/// assert!(matches!(&s.source, Source::Serial(p) if p.rate == 19200));
/// // Keys of another transport are refused by name.
/// let e = calllogger_plugin_sdk::parse_settings::<LineSettings>("Pbx", "source: tcp-server\nbind: 0.0.0.0:1150\nrate: 9600");
/// assert!(e.unwrap_err().contains("`rate` does not apply to source `tcp-server`"));
/// ```
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[non_exhaustive]
#[serde(try_from = "Raw")]
pub struct LineSettings {
    /// The transport and its keys.
    pub source: Source,
    /// What ends a line (key `line_end`: `auto`, the default, `lf`, `cr` or `crlf`).
    pub line_end: LineEnd,
    /// Longest line kept, in bytes (key `max_line_length`, default 1024).
    pub max_line_length: usize,
}

impl LineSettings {
    /// Every key these settings read: the rest of a section is the plugin's own.
    pub const KEYS: [&'static str; 19] = [
        "source",
        "line_end",
        "max_line_length",
        "port",
        "rate",
        "data_bits",
        "parity",
        "stop_bits",
        "flow_control",
        "connect",
        "login",
        "connect_timeout",
        "login_timeout",
        "keepalive",
        "idle_timeout",
        "bind",
        "max_connections",
        "path",
        "start_at",
    ];

    /// Serial settings as a 0.2 serial plugin reads them (LF line ends, CR dropped).
    pub fn serial(port: PortSettings) -> Self {
        Self {
            line_end: LineEnd::Lf,
            max_line_length: port.max_line_length,
            source: Source::Serial(port),
        }
    }
}

/// Which transport; the value of `source`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    Serial,
    TcpClient,
    TcpServer,
    File,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Serial => "serial",
            Kind::TcpClient => "tcp-client",
            Kind::TcpServer => "tcp-server",
            Kind::File => "file",
        }
    }
}

/// Every key, typed but unchecked; [`LineSettings::try_from`] checks which apply.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    source: Option<Kind>,
    line_end: Option<LineEnd>,
    max_line_length: Option<usize>,
    port: Option<String>,
    rate: Option<u32>,
    data_bits: Option<u8>,
    parity: Option<Parity>,
    stop_bits: Option<u8>,
    flow_control: Option<FlowControl>,
    connect: Option<String>,
    login: Option<Vec<LoginStep>>,
    connect_timeout: Option<f64>,
    login_timeout: Option<f64>,
    keepalive: Option<f64>,
    idle_timeout: Option<f64>,
    bind: Option<String>,
    max_connections: Option<usize>,
    path: Option<PathBuf>,
    start_at: Option<StartAt>,
}

/// A positive number of seconds from key `key`.
fn seconds(key: &str, value: Option<f64>) -> Result<Option<Duration>, String> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("`{key}` must be a positive number of seconds, not {s}"))
        })
        .transpose()
}

impl TryFrom<Raw> for LineSettings {
    type Error = String;

    fn try_from(raw: Raw) -> Result<Self, String> {
        let kind = raw.source.unwrap_or(Kind::Serial);
        let given: [(&str, bool, &[Kind]); 16] = [
            ("port", raw.port.is_some(), &[Kind::Serial]),
            ("rate", raw.rate.is_some(), &[Kind::Serial]),
            ("data_bits", raw.data_bits.is_some(), &[Kind::Serial]),
            ("parity", raw.parity.is_some(), &[Kind::Serial]),
            ("stop_bits", raw.stop_bits.is_some(), &[Kind::Serial]),
            ("flow_control", raw.flow_control.is_some(), &[Kind::Serial]),
            ("connect", raw.connect.is_some(), &[Kind::TcpClient]),
            ("login", raw.login.is_some(), &[Kind::TcpClient]),
            (
                "connect_timeout",
                raw.connect_timeout.is_some(),
                &[Kind::TcpClient],
            ),
            (
                "login_timeout",
                raw.login_timeout.is_some(),
                &[Kind::TcpClient],
            ),
            (
                "keepalive",
                raw.keepalive.is_some(),
                &[Kind::TcpClient, Kind::TcpServer],
            ),
            (
                "idle_timeout",
                raw.idle_timeout.is_some(),
                &[Kind::TcpClient, Kind::TcpServer],
            ),
            ("bind", raw.bind.is_some(), &[Kind::TcpServer]),
            (
                "max_connections",
                raw.max_connections.is_some(),
                &[Kind::TcpServer],
            ),
            ("path", raw.path.is_some(), &[Kind::File]),
            ("start_at", raw.start_at.is_some(), &[Kind::File]),
        ];
        if let Some((key, ..)) = given
            .iter()
            .find(|(_, set, kinds)| *set && !kinds.contains(&kind))
        {
            return Err(format!(
                "`{key}` does not apply to source `{}`",
                kind.name()
            ));
        }
        let missing = |key: &str| format!("source `{}` needs `{key}`", kind.name());
        let max_line_length = raw.max_line_length.unwrap_or_else(default_max_line_length);
        check_max_line_length(max_line_length)?;
        let keepalive = seconds("keepalive", raw.keepalive)?;
        let idle_timeout = seconds("idle_timeout", raw.idle_timeout)?;
        let source = match kind {
            Kind::Serial => {
                let port = PortSettings {
                    port: raw.port.ok_or_else(|| {
                        "missing key `port` (a serial device; or set `source:` to tcp-client, \
                         tcp-server or file)"
                            .to_string()
                    })?,
                    rate: raw.rate.unwrap_or_else(default_rate),
                    data_bits: raw.data_bits.unwrap_or_else(default_data_bits),
                    parity: raw.parity.unwrap_or_default(),
                    stop_bits: raw.stop_bits.unwrap_or_else(default_stop_bits),
                    flow_control: raw.flow_control.unwrap_or_default(),
                    max_line_length,
                };
                port.check()?;
                Source::Serial(port)
            }
            Kind::TcpClient => {
                let login = raw.login.unwrap_or_default();
                if let Some(i) = login
                    .iter()
                    .position(|s| s.expect.is_none() && s.send.is_none())
                {
                    return Err(format!(
                        "login step {} has neither `expect` nor `send`",
                        i + 1
                    ));
                }
                Source::TcpClient(TcpClientSettings {
                    connect: raw.connect.ok_or_else(|| missing("connect"))?,
                    login,
                    connect_timeout: seconds("connect_timeout", raw.connect_timeout)?
                        .unwrap_or(Duration::from_secs(10)),
                    login_timeout: seconds("login_timeout", raw.login_timeout)?
                        .unwrap_or(Duration::from_secs(10)),
                    keepalive,
                    idle_timeout,
                })
            }
            Kind::TcpServer => {
                let max_connections = raw.max_connections.unwrap_or(8);
                if max_connections == 0 {
                    return Err("max_connections must be at least 1".into());
                }
                Source::TcpServer(TcpServerSettings {
                    bind: raw.bind.ok_or_else(|| missing("bind"))?,
                    max_connections,
                    keepalive,
                    idle_timeout,
                })
            }
            Kind::File => Source::File(FileSettings {
                path: raw.path.ok_or_else(|| missing("path"))?,
                start_at: raw.start_at.unwrap_or_default(),
            }),
        };
        Ok(Self {
            source,
            line_end: raw.line_end.unwrap_or_default(),
            max_line_length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_settings;

    #[test]
    fn every_raw_key_is_listed_in_keys() {
        let raw = "source: file\nline_end: lf\nmax_line_length: 5\npath: /x\nstart_at: end";
        assert!(parse_settings::<LineSettings>("P", raw).is_ok());
        for key in LineSettings::KEYS {
            let refused = parse_settings::<LineSettings>("P", &format!("{key}: 1"))
                .err()
                .unwrap_or_default();
            assert!(!refused.contains("unknown field"), "{key}: {refused}");
        }
    }

    #[test]
    fn each_source_reads_its_keys_with_defaults() {
        let s: LineSettings = parse_settings(
            "P",
            "source: tcp-client\nconnect: pbx:2300\nlogin:\n  - expect: 'Enter Password:'\n    send: \"PCCSMDR\\r\\n\"\n  - send: x\nidle_timeout: 30",
        )
        .unwrap();
        let Source::TcpClient(c) = s.source else {
            panic!("{s:?}")
        };
        assert_eq!(c.login[0].send.as_ref().unwrap().expose(), "PCCSMDR\r\n");
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            (c.keepalive, c.connect_timeout),
            (None, Duration::from_secs(10))
        );
        let s: LineSettings =
            parse_settings("P", "source: tcp-server\nbind: 0.0.0.0:1150").unwrap();
        assert!(matches!(s.source, Source::TcpServer(ref t) if t.max_connections == 8));
        assert_eq!((s.line_end, s.max_line_length), (LineEnd::Auto, 1024));
    }

    #[test]
    fn the_module_docs_panasonic_login_reads_as_two_steps() {
        let yaml = r#"{source: tcp-client, connect: "pbx:2300", login: [{send: "SMDR\r\n"}, {expect: "Enter Password:", send: "PCCSMDR\r\n"}]}"#;
        let s: LineSettings = parse_settings("P", yaml).unwrap();
        let Source::TcpClient(c) = s.source else {
            panic!("{s:?}")
        };
        assert_eq!(c.login.len(), 2);
        assert_eq!(c.login[0].send.as_ref().unwrap().expose(), "SMDR\r\n");
        assert_eq!(c.login[1].expect.as_deref(), Some("Enter Password:"));
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        for (yaml, needle) in [
            ("rate: 9600", "missing key `port`"),
            ("source: tcp-client", "needs `connect`"),
            (
                "source: file\nbind: x",
                "`bind` does not apply to source `file`",
            ),
            (
                "source: tcp-client\nconnect: a:1\nidle_timeout: 0",
                "`idle_timeout` must be a positive",
            ),
            (
                "source: tcp-client\nconnect: a:1\nlogin: [{}]",
                "login step 1 has neither",
            ),
            ("source: udp", "unknown variant `udp`"),
            ("port: /dev/x\ndata_bits: 9", "data_bits must be 5 to 8"),
            (
                "port: /dev/x\nmax_line_length: 0",
                "max_line_length must be 1 to 1048576",
            ),
            (
                "source: file\npath: x\nmax_line_length: 99999999",
                "not 99999999",
            ),
        ] {
            let e = parse_settings::<LineSettings>("P", yaml).unwrap_err();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }
}
