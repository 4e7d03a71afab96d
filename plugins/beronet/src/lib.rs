//! `BeroNet`: call records from a beroNet VoIP gateway, polled over its HTTP API.
//!
//! Every `poll_seconds` the plugin downloads the gateway's CDR list
//! (`GET http://<address>/app/api/api.php?apiCommand=TelephonyGetCdr&Action=download`, with
//! HTTP basic auth), parses each line (see [`cdr`]) and pushes the calls it has not pushed
//! before, remembering them durably (see [`seen`]). A failed poll (unreachable gateway,
//! timeout, refused credentials) is logged and retried after the host's decayed timeout.
//!
//! Settings (`BeroNet:` section):
//!
//! - `address`: the gateway, `192.168.0.2`, `gw.local:8080` or a base URL `http://…`;
//! - `username`, `password`: the gateway's API login (the password is never logged);
//! - `poll_seconds`: seconds between polls (default 60);
//! - `request_timeout`: seconds a download may take (default 10);
//! - `timezone`: the IANA zone of the gateway's clock (default: this machine's).

pub mod cdr;
pub mod seen;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use calllogger_plugin_sdk::jiff::tz::TimeZone;
use calllogger_plugin_sdk::prelude::*;
use calllogger_plugin_sdk::PushError;

use seen::Seen;

/// The API call that downloads the CDR list.
pub const CDR_PATH: &str = "/app/api/api.php?apiCommand=TelephonyGetCdr&Action=download";

/// Settings of the `BeroNet:` section.
#[settings]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The gateway: host, host:port, or a base URL.
    address: String,
    /// API user name.
    username: String,
    /// API password (never shown, not even in a settings error).
    password: Secret,
    /// Seconds between polls.
    #[serde(default = "default_poll")]
    poll_seconds: f64,
    /// Seconds a download may take.
    #[serde(default = "default_timeout")]
    request_timeout: f64,
    /// IANA zone of the gateway's clock; this machine's zone when absent.
    timezone: Option<String>,
}

fn default_poll() -> f64 {
    60.0
}

fn default_timeout() -> f64 {
    10.0
}

/// The plugin: an HTTP client for one gateway.
pub struct BeroNet {
    url: String,
    authorization: String,
    poll: f64,
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
    #[error("cannot keep the list of calls already pushed ({0}): {1}")]
    State(String, std::io::Error),
    #[error(transparent)]
    Push(#[from] PushError),
}

impl Plugin for BeroNet {
    type Settings = Settings;
    const DESCRIPTION: &'static str = "beroNet gateway call records, polled over its HTTP API";

    fn new(settings: Settings) -> Result<Self, Error> {
        let tz = match &settings.timezone {
            Some(name) => TimeZone::get(name).map_err(|e| format!("timezone `{name}`: {e}"))?,
            None => TimeZone::system(),
        };
        for (key, value) in [
            ("poll_seconds", settings.poll_seconds),
            ("request_timeout", settings.request_timeout),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(
                    format!("{key} must be a number of seconds above 0, not {value}").into(),
                );
            }
        }
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
            .timeout_global(Some(Duration::from_secs_f64(settings.request_timeout)))
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
            poll: settings.poll_seconds,
            tz,
            agent,
            reported: BTreeSet::new(),
        })
    }

    fn run(&mut self, ctx: &Context) -> Result<(), Error> {
        let file = ctx.state_dir().join("seen-cdrs");
        let mut seen =
            Seen::open(file.clone()).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        ctx.info(format_args!(
            "polling {} every {} s ({} calls already pushed)",
            self.url,
            self.poll,
            seen.len()
        ));
        let mut retry = ctx.timeout();
        while ctx.running() {
            match self.poll(ctx, &mut seen) {
                Ok(pushed) => {
                    if pushed > 0 {
                        ctx.debug(format_args!("pushed {pushed} new calls"));
                    }
                    retry.reset();
                    ctx.wait(self.poll);
                }
                Err(e) => {
                    ctx.error(format_args!(
                        "poll failed: {e}; next try in {:.1} s",
                        retry.current().as_secs_f64()
                    ));
                    retry.sleep();
                }
            }
        }
        Ok(())
    }
}

impl BeroNet {
    /// One poll: download, push what is new, remember it. Returns how many were pushed.
    pub fn poll(&mut self, ctx: &Context, seen: &mut Seen) -> Result<usize, PollError> {
        let mut response = self
            .agent
            .get(&self.url)
            .header("Authorization", &self.authorization)
            .call()?;
        match response.status().as_u16() {
            200..=299 => {}
            code @ (401 | 403) => return Err(PollError::Unauthorized(code)),
            code => return Err(PollError::Status(code)),
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()?;
        // Caller names may come in another encoding than UTF-8: keep the line, mark the bytes.
        let body = String::from_utf8_lossy(&bytes);
        let mut pushed = 0;
        // A call is seen only once the host stored it: one it refused is pushed next poll.
        let mut refused = None;
        for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if seen.contains(line) {
                continue;
            }
            match cdr::parse(line, &self.tz) {
                Ok(record) => {
                    if let Err(e) = ctx.push(record) {
                        refused = Some(e);
                        break;
                    }
                    seen.insert(line);
                    pushed += 1;
                }
                Err(e) => {
                    if self.reported.insert(line.to_owned()) {
                        ctx.rejected("parse");
                        ctx.warn(format_args!("CDR line rejected: {e}: \"{line}\""));
                    }
                }
            }
        }
        seen.save()
            .map_err(|e| PollError::State("writing it".into(), e))?;
        refused.map_or(Ok(pushed), |e| Err(e.into()))
    }
}

export_plugins!(BeroNet);
