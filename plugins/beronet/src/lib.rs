//! `BeroNet`: call records from a beroNet VoIP gateway, polled over its HTTP API.
//!
//! Every `poll_seconds` the plugin downloads the gateway's CDR list
//! (`GET http://<address>/app/api/api.php?apiCommand=TelephonyGetCdr&Action=download`, with
//! HTTP basic auth) and parses each line (see [`cdr`]). It runs on the SDK's polling base,
//! which pushes the calls not pushed before, keyed by their line, remembering them in
//! `seen-cdrs` under the instance's state folder, and retries a failed poll (unreachable
//! gateway, timeout, refused credentials) after the host's decayed timeout.
//!
//! Settings (`BeroNet:` section):
//!
//! - `address`: the gateway, `192.168.0.2`, `gw.local:8080` or a base URL `http://…`;
//! - `username`, `password`: the gateway's API login (the password is never logged);
//! - `poll_seconds`: seconds between polls (default 60; read by the polling base);
//! - `request_timeout`: seconds a download may take (default 10), which also bounds how long
//!   a stop waits for a download in flight;
//! - `timezone`: the IANA zone of the gateway's clock (default: this machine's).

pub mod cdr;

use std::collections::BTreeSet;

use base64::Engine as _;
use calllogger_plugin_sdk::polling::{Polled, PollingPlugin};
use calllogger_plugin_sdk::prelude::*;
use calllogger_plugin_sdk::types::{Seconds, TimeZone};

/// The API call that downloads the CDR list.
pub const CDR_PATH: &str = "/app/api/api.php?apiCommand=TelephonyGetCdr&Action=download";

/// Settings of the `BeroNet:` section (the polling base reads `poll_seconds`).
#[settings]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The gateway: host, host:port, or a base URL.
    address: String,
    /// API user name.
    username: String,
    /// API password (never shown, not even in a settings error).
    password: Secret,
    /// Seconds a download may take.
    #[serde(default = "default_timeout")]
    request_timeout: Seconds,
    /// IANA zone of the gateway's clock; this machine's zone when absent.
    #[serde(default)]
    timezone: TimeZone,
}

fn default_timeout() -> Seconds {
    Seconds::new(10.0).expect("10 s is above 0")
}

/// The plugin: an HTTP client for one gateway.
pub struct BeroNet {
    url: String,
    authorization: String,
    tz: TimeZone,
    agent: ureq::Agent,
    /// Malformed lines already reported, so each is logged once per run, not once per poll.
    reported: BTreeSet<String>,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("the gateway refused the credentials (HTTP {0}): check username and password")]
    Unauthorized(u16),
    #[error("the gateway answered HTTP {0}")]
    Status(u16),
    #[error("cannot reach the gateway: {0}")]
    Http(#[from] ureq::Error),
}

impl PollingPlugin for BeroNet {
    type Settings = Settings;
    const DESCRIPTION: &'static str = "beroNet gateway call records, polled over its HTTP API";
    const SEEN_FILE: &'static str = "seen-cdrs";

    fn new(settings: Settings) -> Result<Self, Error> {
        let base = settings.address.trim().trim_end_matches('/');
        if base.is_empty() {
            return Err("address must name the gateway, e.g. 192.168.0.2".into());
        }
        let url = if base.contains("://") {
            format!("{base}{CDR_PATH}")
        } else {
            format!("http://{base}{CDR_PATH}")
        };
        if url.split("://").nth(1).is_some_and(|rest| {
            rest.split('/')
                .next()
                .is_some_and(|host| host.contains('@'))
        }) {
            return Err(
                "address must not carry a login (user@host): give username and password instead"
                    .into(),
            );
        }
        let credentials = format!("{}:{}", settings.username, settings.password.expose());
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.request_timeout.duration()))
            .http_status_as_error(false)
            .user_agent(concat!("calllogger-beronet/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Self {
            url,
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
            tz: settings.timezone,
            agent,
            reported: BTreeSet::new(),
        })
    }

    fn source(&self) -> String {
        self.url.clone()
    }

    /// Downloads the CDR list and parses it; each call is keyed by its line.
    fn poll(&mut self, ctx: &Context) -> Result<Vec<Polled>, Error> {
        let mut response = self
            .agent
            .get(&self.url)
            .header("Authorization", &self.authorization)
            .call()
            .map_err(PollError::from)?;
        match response.status().as_u16() {
            200..=299 => {}
            code @ (401 | 403) => return Err(PollError::Unauthorized(code).into()),
            code => return Err(PollError::Status(code).into()),
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .map_err(PollError::from)?;
        // Caller names may come in another encoding than UTF-8: keep the line, mark the bytes.
        let body = String::from_utf8_lossy(&bytes);
        let mut calls = Vec::new();
        for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match cdr::parse(line, &self.tz) {
                Ok(record) => calls.push(Polled::once(line, record)),
                Err(e) => {
                    if self.reported.insert(line.to_owned()) {
                        ctx.rejected("parse");
                        ctx.warn(format_args!("CDR line rejected: {e}: \"{line}\""));
                    }
                }
            }
        }
        Ok(calls)
    }
}

export_plugins!(polling BeroNet);
