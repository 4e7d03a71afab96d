//! [`Secret`]: a setting that must never be shown (a password, a token).

use serde::{Deserialize, Deserializer};

/// A setting that must never be shown: its `Debug` prints `"<redacted>"`, and a value of the
/// wrong type is reported without echoing it. Use it for passwords and tokens in your settings
/// struct, and [`expose`](Secret::expose) it only where it is sent.
///
/// A number is taken as its digits (an all-digit password in YAML is a number). For a key
/// named like a secret (`token`, `password`, `passwd`, `secret`, `api_key` or `credential`,
/// or a name ending in `_` and one of them, such as `pbx_password`), the host refuses a number
/// that YAML would have changed (`0x1F` read as 31) before the plugin sees it: name a `Secret`
/// field that way, or such a number reaches it changed.
///
/// For such a key the host also reads `<key>_file: PATH` (e.g. `password_file`) itself and
/// hands the plugin `<key>` with the file's content, so do not use a field named
/// `<secret>_file` for a purpose of your own.
///
/// ```
/// use calllogger_plugin_sdk::{parse_settings, Secret};
///
/// #[derive(serde::Deserialize)]
/// struct Settings { password: Secret }
///
/// let s: Settings = parse_settings("Pbx", "password: 123456").unwrap();
/// assert_eq!(s.password.expose(), "123456");
/// assert_eq!(format!("{:?}", s.password), "\"<redacted>\"");
/// let error = parse_settings::<Settings>("Pbx", "password: [hunter2]").err().unwrap();
/// assert!(!error.contains("hunter2"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match yaml_serde::Value::deserialize(deserializer)? {
            yaml_serde::Value::String(s) => Ok(Self(s)),
            yaml_serde::Value::Number(n) => Ok(Self(n.to_string())),
            yaml_serde::Value::Null => Ok(Self::default()),
            _ => Err(serde::de::Error::custom(
                "a secret (token, password) must be a string; its value is not shown",
            )),
        }
    }
}
