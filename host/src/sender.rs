//! The sender: delivers spooled records to the frontend, oldest first, following its contract.
//!
//! `POST {frontend}/api/v1/monitor/cdr/` with `Authorization: Token …`: one record as a JSON
//! object, or a batch as an array while a backlog is being worked off. 2xx: delivered. 401, 402,
//! 403: the token is not accepted; the host keeps every record and exits non-zero. Another 4xx:
//! the frontend refuses that record; it goes to the dead letters (in a refused batch, each
//! record is tried alone to find the culprit, so a 413 for a batch delivers it one by one).
//! Anything else (3xx, connection errors, timeouts, 404, 408, 429, 5xx): retry after the
//! decayed timeout, or after `Retry-After` when the frontend asks for longer, at most
//! `max_timeout`. Redirects are never followed: the token and the records go only to
//! `settings.frontend`, and a 3xx is logged with where it pointed.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use calllogger_plugin_abi::TimeoutSettings;
use calllogger_plugin_sdk::{Backoff, Secret};

use crate::config::{self, Config};
use crate::spool::{Pending, Spool, SpoolError};
use crate::stop::Stop;
use crate::telemetry::Telemetry;

/// How the sender reaches the frontend and works off a backlog.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SenderSettings {
    /// The frontend's base URL (`settings.frontend`).
    pub frontend: String,
    /// `settings.token`; never logged.
    pub token: Secret,
    /// More pending records than this is a backlog: send batches.
    pub backlog_trigger: u64,
    /// Records per batch in a backlog.
    #[serde(deserialize_with = "batch_size")]
    pub batch_size: NonZeroUsize,
    /// Drop INCOMING ("ringing now") records from a backlog: they only matter live.
    pub drop_stale_incoming: bool,
    /// The host's retry timeouts (the supervisor's settings, not keys of the sender's own).
    #[serde(skip)]
    pub timeouts: TimeoutSettings,
    /// Longest a request may take.
    #[serde(deserialize_with = "request_timeout")]
    pub request_timeout: Duration,
}

fn batch_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NonZeroUsize, D::Error> {
    let n = config::within(d, 1..=10_000, "records, from 1 to 10000")?;
    NonZeroUsize::new(n).ok_or_else(|| serde::de::Error::custom("must not be 0"))
}

fn request_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    config::seconds(d, 0.1..=config::HOUR, "seconds, from 0.1 to 3600 (an hour)")
}

impl SenderSettings {
    /// Whether records go to a frontend (both `frontend` and `token` set) or only to stdout.
    pub fn delivers(&self) -> bool {
        !self.frontend.trim().is_empty() && !self.token.expose().trim().is_empty()
    }

    /// Both `frontend` and `token`, or neither; a frontend that is an http(s) base URL; a
    /// token that fits in a header. The token's value is never shown.
    pub fn check(&self, config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        let has_frontend = !self.frontend.trim().is_empty();
        let has_token = !self.token.expose().trim().is_empty();
        if has_frontend && !has_token {
            problems.push(config.problem(
                "frontend",
                "is set but no token is: set the TOKEN environment variable or settings.token \
                 (or leave the frontend empty to keep records in the spool and on stdout)",
            ));
        }
        if has_token && !has_frontend {
            problems.push(config.problem(
                "token",
                "is set but no frontend is: set settings.frontend or CALLLOGGER_FRONTEND (or \
                 remove the token to keep records in the spool and on stdout)",
            ));
        }
        if has_token && self.token.expose().chars().any(char::is_control) {
            problems.push(config.problem(
                "token",
                "contains a control character (a newline, a tab, …; often the end of the file \
                 it was copied from); its value is not shown",
            ));
        }
        if has_frontend {
            if let Some(why) = url_problem(&self.frontend) {
                problems.push(config.problem(
                    "frontend",
                    format!(
                        "`{}` {why}; it must be a base URL such as https://monitor.example.com",
                        self.frontend
                    ),
                ));
            }
        }
        problems
    }
}

/// What is wrong with a frontend URL, if anything.
pub(crate) fn url_problem(url: &str) -> Option<String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains a space or a control character".into());
    }
    match reqwest::Url::parse(url) {
        Err(e) => Some(format!("is not a URL ({e})")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => Some(format!(
            "has the scheme `{}`, not http or https",
            u.scheme()
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("names no host".into()),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            Some("has a ?query or #fragment (the record path is appended to it)".into())
        }
        Ok(_) => None,
    }
}

/// The path records are posted to, below the frontend's base URL.
pub const CDR_PATH: &str = "api/v1/monitor/cdr/";

/// The shortest wait between two attempts, whatever the settings and the frontend say, so that
/// no failure can make the sender spin.
const MIN_RETRY_WAIT: Duration = Duration::from_millis(100);

/// Why the sender gave up.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error(
        "the frontend refused the token (HTTP {0}): set a valid settings.token (or TOKEN) for {1}; \
         every record is kept in the spool and will be delivered once the token is accepted"
    )]
    Unauthorized(u16, String),
    #[error("{0}")]
    Spool(#[from] SpoolError),
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("settings.token holds characters an HTTP header cannot carry")]
    TokenCharacters,
}

/// Why one attempt failed in a way that keeps the records for a retry.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The request did not get an answer (see [`describe`]).
    #[error("{0}")]
    Request(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error(
        "HTTP {status}, a redirect to {location}, which is not followed{}",
        moved_hint(*.status, .location)
    )]
    Redirect { status: u16, location: String },
}

/// For a permanent redirect (301, 308): what to set `settings.frontend` to.
fn moved_hint(status: u16, location: &str) -> String {
    if !matches!(status, 301 | 308) {
        return String::new();
    }
    let base = location
        .strip_suffix(CDR_PATH)
        .map(|base| base.trim_end_matches('/'))
        .filter(|base| !base.is_empty())
        .unwrap_or("the new base URL");
    format!("; the frontend moved: set settings.frontend to {base}")
}

/// What one POST came to.
#[derive(Debug)]
enum Outcome {
    Delivered,
    /// Try again later; `Some` when the frontend said when (`Retry-After`).
    Retry(Failure, Option<Duration>),
    Unauthorized(u16),
    Refused(u16, String),
}

/// Starts the sender thread. It runs until `stop`, or until the token is refused
/// (`on_fatal` is called with the error).
pub fn start(
    spool: Arc<Spool>,
    settings: SenderSettings,
    stop: Arc<Stop>,
    telemetry: Arc<Telemetry>,
    on_fatal: impl FnOnce(SenderError) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    telemetry.sender_enabled(true);
    std::thread::Builder::new()
        .name("sender".into())
        .spawn(move || {
            let sender = Sender::new(spool, settings, stop, telemetry);
            if let Err(e) = sender.and_then(|mut s| s.run()) {
                on_fatal(e);
            }
        })
}

struct Sender {
    spool: Arc<Spool>,
    settings: SenderSettings,
    stop: Arc<Stop>,
    client: reqwest::blocking::Client,
    url: String,
    /// `Token …`, marked sensitive so that no HTTP-layer log shows it.
    authorization: reqwest::header::HeaderValue,
    telemetry: Arc<Telemetry>,
    backoff: Backoff,
    /// Records the frontend accepted that the spool could not remove yet: removed before
    /// anything else is sent, never sent again.
    unremoved: Vec<i64>,
}

impl Sender {
    fn new(
        spool: Arc<Spool>,
        settings: SenderSettings,
        stop: Arc<Stop>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, SenderError> {
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("calllogger/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.request_timeout)
            .build()?;
        let url = format!("{}/{CDR_PATH}", settings.frontend.trim_end_matches('/'));
        let backoff = Backoff::new(settings.timeouts);
        let mut authorization =
            reqwest::header::HeaderValue::from_str(&format!("Token {}", settings.token.expose()))
                .map_err(|_| SenderError::TokenCharacters)?;
        authorization.set_sensitive(true);
        Ok(Self {
            spool,
            settings,
            stop,
            client,
            url,
            authorization,
            telemetry,
            backoff,
            unremoved: Vec::new(),
        })
    }

    /// Delivers until stopped. A spool that cannot be read or changed (a full disk) is waited
    /// out with the decayed timeout; only a refused token ends the sender.
    fn run(&mut self) -> Result<(), SenderError> {
        tracing::info!("delivering records to {}", self.url);
        let mut spool_retry = Backoff::new(self.settings.timeouts);
        while self.stop.running() {
            match self.step() {
                Ok(()) => spool_retry.reset(),
                Err(SenderError::Spool(e)) => {
                    let wait = spool_retry.advance();
                    tracing::error!(
                        "delivery paused: {e}; retrying in {:.1} s (every record stays in the spool)",
                        wait.as_secs_f64()
                    );
                    self.stop.wait(wait);
                }
                Err(fatal) => return Err(fatal),
            }
        }
        Ok(())
    }

    /// One round: finish what was delivered, then send the oldest record or a batch.
    fn step(&mut self) -> Result<(), SenderError> {
        if !self.unremoved.is_empty() {
            self.spool.remove(&self.unremoved)?;
            self.unremoved.clear();
        }
        let pending = self.spool.pending();
        if pending == 0 {
            self.spool.wait_for_append(Duration::from_secs(1));
            return Ok(());
        }
        let backlog = pending > self.settings.backlog_trigger;
        let mut batch = self.spool.oldest(if backlog {
            self.settings.batch_size.get()
        } else {
            1
        })?;
        if backlog && self.settings.drop_stale_incoming {
            let (stale, rest): (Vec<Pending>, Vec<Pending>) =
                batch.into_iter().partition(|p| p.call_type == 0);
            if !stale.is_empty() {
                self.spool
                    .remove(&stale.iter().map(|p| p.seq).collect::<Vec<_>>())?;
                tracing::info!(
                    "backlog of {pending} records: dropped {} stale INCOMING (ringing) records",
                    stale.len()
                );
            }
            batch = rest;
        }
        if !batch.is_empty() {
            self.deliver(&batch)?;
        }
        Ok(())
    }

    /// Delivers a batch (or one record), handling every outcome. Returns whether the batch
    /// left the queue (delivered or dead-lettered) rather than waiting for a retry.
    fn deliver(&mut self, batch: &[Pending]) -> Result<bool, SenderError> {
        match self.post(batch) {
            Outcome::Delivered => {
                self.backoff.reset();
                tracing::debug!("delivered {} record(s)", batch.len());
                let seqs: Vec<i64> = batch.iter().map(|p| p.seq).collect();
                if let Err(e) = self.spool.remove(&seqs) {
                    self.unremoved = seqs;
                    return Err(e.into());
                }
                Ok(true)
            }
            Outcome::Unauthorized(status) => {
                Err(SenderError::Unauthorized(status, self.url.clone()))
            }
            Outcome::Retry(why, told) => {
                let wait = self.retry_wait(told);
                tracing::warn!(
                    "delivery failed ({why}); retrying in {:.1} s",
                    wait.as_secs_f64()
                );
                self.telemetry.retry_wait(wait);
                self.stop.wait(wait);
                self.telemetry.retry_wait(Duration::ZERO);
                Ok(false)
            }
            Outcome::Refused(status, response) if batch.len() == 1 => {
                tracing::error!(
                    id = %batch[0].id,
                    "the frontend refused a record (HTTP {status}): moved to the dead letters \
                     (`calllogger spool retry-dead` puts them back); response: {}",
                    response.chars().take(200).collect::<String>()
                );
                self.spool.bury(batch[0].seq, status, &response)?;
                Ok(true)
            }
            Outcome::Refused(status, _) => {
                tracing::warn!(
                    "the frontend refused a batch of {} (HTTP {status}): sending them one by one",
                    batch.len()
                );
                for record in batch {
                    // Stop at the first that must wait, to keep the order.
                    if !self.stop.running() || !self.deliver(std::slice::from_ref(record))? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }

    /// How long to wait before the next attempt: the decayed timeout (which advances), or
    /// longer when the frontend asked for that, but never more than `max_timeout`.
    fn retry_wait(&mut self, told: Option<Duration>) -> Duration {
        let decayed = self.backoff.advance();
        let cap = self.backoff.max();
        let wait = retry_wait(told, decayed, cap);
        if let Some(told) = told.filter(|told| *told > wait) {
            tracing::warn!(
                "the frontend asked to wait {} s (Retry-After), longer than settings.max_timeout: \
                 waiting {:.1} s",
                told.as_secs(),
                wait.as_secs_f64()
            );
        }
        wait
    }

    fn post(&self, batch: &[Pending]) -> Outcome {
        let body = match batch {
            [one] => one.body.clone(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(|p| p.body.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .header("Content-Type", "application/json")
            .body(body)
            .send();
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                let why = describe(&e);
                self.telemetry.delivery_attempt(None, Some(why.clone()));
                return Outcome::Retry(Failure::Request(why), None);
            }
        };
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let told = header(reqwest::header::RETRY_AFTER).and_then(|v| retry_after(&v));
        let failure = match status {
            200..=299 => None,
            300..=399 => Some(Failure::Redirect {
                status,
                location: header(reqwest::header::LOCATION)
                    .map(|l| match response.url().join(&l) {
                        Ok(url) => url.to_string(),
                        Err(_) => l,
                    })
                    .map(|l| l.chars().take(200).collect())
                    .unwrap_or_else(|| "nowhere (no Location)".into()),
            }),
            _ => Some(Failure::Status(status)),
        };
        self.telemetry
            .delivery_attempt(Some(status), failure.as_ref().map(Failure::to_string));
        match (status, failure) {
            (_, None) => Outcome::Delivered,
            (401..=403, _) => Outcome::Unauthorized(status),
            (404 | 408 | 429, Some(failure)) => Outcome::Retry(failure, told),
            (400..=499, _) => Outcome::Refused(status, response.text().unwrap_or_default()),
            (_, Some(failure)) => Outcome::Retry(failure, told),
        }
    }
}

/// The wait before a retry: `max(told, decayed)`, at most `cap`, at least [`MIN_RETRY_WAIT`].
/// A `Retry-After` of 0 or a past date keeps the backoff; one of days is cut to `cap`.
fn retry_wait(told: Option<Duration>, decayed: Duration, cap: Duration) -> Duration {
    told.unwrap_or_default()
        .max(decayed)
        .min(cap)
        .max(MIN_RETRY_WAIT)
}

/// A request error without the URL's query or anything secret: the kind and the cause.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause = std::error::Error::source(error);
    let mut root = None;
    while let Some(c) = cause {
        root = Some(c.to_string());
        cause = c.source();
    }
    match root {
        Some(root) => format!("{kind}: {root}"),
        None => kind.to_owned(),
    }
}

/// `Retry-After`: delay-seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a past date: now"
        );
        let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30);
        let header = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&soon)
            .unwrap();
        let wait = retry_after(&header).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{header}: {wait:?}"
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn a_retry_waits_at_least_the_backoff_and_at_most_the_cap() {
        let (s, ms) = (Duration::from_secs, Duration::from_millis);
        let cap = s(5);
        assert_eq!(retry_wait(None, s(2), cap), s(2));
        assert_eq!(
            retry_wait(Some(s(0)), s(2), cap),
            s(2),
            "0 keeps the backoff"
        );
        assert_eq!(retry_wait(Some(s(3)), s(2), cap), s(3), "longer if asked");
        assert_eq!(retry_wait(Some(s(999_999)), s(2), cap), cap, "capped");
        assert_eq!(
            retry_wait(Some(Duration::MAX), s(2), Duration::MAX),
            Duration::MAX,
            "no overflow"
        );
        assert_eq!(
            retry_wait(Some(s(0)), s(0), s(0)),
            MIN_RETRY_WAIT,
            "never spins"
        );
        assert_eq!(retry_wait(None, ms(150), cap), ms(150));
    }

    #[test]
    fn a_redirect_says_where_it_pointed_and_a_permanent_one_what_to_set() {
        let redirect = |status, location: &str| {
            Failure::Redirect {
                status,
                location: location.into(),
            }
            .to_string()
        };
        assert_eq!(
            redirect(301, "https://new.example/crm/api/v1/monitor/cdr/"),
            "HTTP 301, a redirect to https://new.example/crm/api/v1/monitor/cdr/, which is not \
             followed; the frontend moved: set settings.frontend to https://new.example/crm"
        );
        assert!(redirect(308, "https://new.example/login")
            .ends_with("set settings.frontend to the new base URL"));
        assert_eq!(
            redirect(302, "https://sso.example/login"),
            "HTTP 302, a redirect to https://sso.example/login, which is not followed"
        );
    }
}
