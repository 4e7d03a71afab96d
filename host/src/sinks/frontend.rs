//! The HTTP frontend sink: delivers spooled records to the frontend, oldest first, following
//! its contract.
//!
//! `POST {frontend}/api/v1/monitor/cdr/` with `Authorization: Token …`: one record as a JSON
//! object, or a batch as an array while a backlog is being worked off. 2xx: delivered. 401, 402,
//! 403: the token is not accepted; the host keeps every record and exits non-zero. Another 4xx:
//! the frontend refuses that record; it goes to the dead letters (in a refused batch, each
//! record is tried alone to find the culprit, so a 413 for a batch delivers it one by one).
//! Anything else (3xx, connection errors, timeouts, 404, 408, 429, 5xx): retry after the
//! decayed timeout, or after `Retry-After` when the frontend asks for longer, at most
//! `max_timeout`. Redirects are never followed: the token and the records go only to
//! `settings.frontend`, and a 3xx is logged with where it pointed. Under a backlog, INCOMING
//! ("ringing now") records can be skipped (`drop_stale_incoming`): the next ack covers them.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use calllogger_plugin_sdk::Secret;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::http::{Client, HttpError, Response};
use super::{AtStop, Outcome, Pending, Sink};
use crate::config::{self, Config};
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
    /// Longest a request may take.
    #[serde(deserialize_with = "request_timeout")]
    pub request_timeout: Duration,
    /// `settings.ca_file`: the CAs to trust for an https frontend (empty: see [`trust`]).
    pub ca_file: PathBuf,
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
        if !self.ca_file.as_os_str().is_empty() {
            if let Err(e) = read_certificates(&self.ca_file) {
                problems.push(config.problem("ca_file", e));
            }
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
    match url::Url::parse(url) {
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

/// The frontend sink's name: its cursor, metrics label and log name.
pub const NAME: &str = "frontend";

/// Why the frontend sink cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error(
        "the frontend refused the token (HTTP {0}): set a valid settings.token (or TOKEN) for {1}; \
         every record is kept in the spool and will be delivered once the token is accepted"
    )]
    Unauthorized(u16, String),
    #[error("settings.frontend is not a URL ({0})")]
    Url(#[from] url::ParseError),
    #[error("settings.token holds characters an HTTP header cannot carry")]
    TokenCharacters,
    #[error("the frontend's certificate authorities ({0}): {1}")]
    Trust(&'static str, String),
    #[error("TLS for the frontend: {0}")]
    Tls(#[from] rustls::Error),
    #[error("settings.frontend cannot be posted to: {0}")]
    Client(String),
}

/// The system's CA bundles, where Debian, Fedora and Alpine keep them.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The CAs an https frontend's certificate may chain to: `settings.ca_file`, else
/// `$SSL_CERT_FILE`, else the system's bundle, else the Mozilla roots built in.
fn trust(ca_file: &Path) -> Result<RootCertStore, FrontendError> {
    let env = std::env::var_os("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let (path, from) = if !ca_file.as_os_str().is_empty() {
        (ca_file.to_owned(), "settings.ca_file")
    } else if let Some(path) = env {
        (path, "SSL_CERT_FILE")
    } else if let Some(path) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
        (path.to_owned(), "the system's bundle")
    } else {
        tracing::info!("trusting the Mozilla root certificates built in for the frontend");
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let certificates = read_certificates(&path).map_err(|e| FrontendError::Trust(from, e))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    tracing::info!(
        "trusting the {added} certificate authorities in {} ({from}) for the frontend",
        path.display()
    );
    Ok(roots)
}

/// The TLS client settings for an https frontend trusting `roots`: TLS 1.2 and 1.3, ring.
fn tls_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, FrontendError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificates in a PEM file; an error if it cannot be read or holds none.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certificates.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates)
}

/// Why one attempt failed in a way that keeps the records for a retry.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The request did not get an answer.
    #[error("{0}")]
    Request(HttpError),
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

/// The frontend, as a [`Sink`].
pub struct FrontendSink {
    settings: SenderSettings,
    /// Every POST goes through it, on the sink's thread, over one kept-alive connection.
    client: Client,
    /// The record URL as the `url` crate writes it (a non-ASCII host in punycode, a path
    /// percent-encoded).
    url: String,
    telemetry: Arc<Telemetry>,
    /// The backlog [`take`](Sink::take) last saw, when it is one (more than
    /// `backlog_trigger`).
    backlog: Option<u64>,
}

impl FrontendSink {
    /// The HTTP client for `settings.frontend`, with the token; redirects are not followed.
    pub fn new(settings: SenderSettings, telemetry: Arc<Telemetry>) -> Result<Self, FrontendError> {
        let base = settings.frontend.trim_end_matches('/');
        let url = url::Url::parse(&format!("{base}/{CDR_PATH}"))?;
        let tls = match url.scheme() {
            "https" => Some(tls_config(trust(&settings.ca_file)?)?),
            _ => None,
        };
        let authorization = format!("Token {}", settings.token.expose());
        if !header_value(&authorization) {
            return Err(FrontendError::TokenCharacters);
        }
        let client = Client::new(
            &url,
            &[
                (
                    "User-Agent",
                    concat!("calllogger/", env!("CARGO_PKG_VERSION")),
                ),
                ("Authorization", &authorization),
                ("Content-Type", "application/json"),
            ],
            tls,
            |name| std::env::var(name).ok(),
        )
        .map_err(FrontendError::Client)?;
        let url = url.to_string();
        match client.proxy() {
            Some(proxy) => tracing::info!("delivering records to {url} through the proxy {proxy}"),
            None => tracing::info!("delivering records to {url}"),
        }
        Ok(Self {
            settings,
            client,
            url,
            telemetry,
            backlog: None,
        })
    }

    fn post(&mut self, batch: &[Pending]) -> Outcome {
        // One record as it is (the client copies it into the request), a batch as an array.
        let body = match batch {
            [one] => Cow::Borrowed(one.body.as_str()),
            many => Cow::Owned(format!(
                "[{}]",
                many.iter()
                    .map(|p| p.body.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        };
        let response = match self
            .client
            .post(body.as_bytes(), self.settings.request_timeout)
        {
            Ok(response) => response,
            Err(e) => {
                self.telemetry.delivery_attempt(None);
                return retry(Failure::Request(e), None);
            }
        };
        let Response {
            status,
            retry_after,
            location,
            body,
        } = response;
        self.telemetry.delivery_attempt(Some(status));
        let told = retry_after.and_then(|v| self::retry_after(&v));
        let through = batch.last().map_or(i64::MIN, |p| p.seq);
        match status {
            200..=299 => Outcome::Delivered { through },
            300..=399 => {
                let location = location
                    .map(
                        |l| match url::Url::parse(&self.url).and_then(|u| u.join(&l)) {
                            Ok(url) => url.to_string(),
                            Err(_) => l,
                        },
                    )
                    .map(|l| l.chars().take(200).collect())
                    .unwrap_or_else(|| "nowhere (no Location)".into());
                retry(Failure::Redirect { status, location }, told)
            }
            401..=403 => Outcome::Fatal(Box::new(FrontendError::Unauthorized(
                status,
                self.url.clone(),
            ))),
            404 | 408 | 429 => retry(Failure::Status(status), told),
            400..=499 => Outcome::Refused {
                status,
                response: String::from_utf8_lossy(&body).into_owned(),
            },
            _ => retry(Failure::Status(status), told),
        }
    }
}

/// Whether `value` can be an HTTP header's value: no control character but tab.
fn header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

fn retry(failure: Failure, after: Option<Duration>) -> Outcome {
    Outcome::Retry {
        reason: failure.to_string(),
        after,
    }
}

impl Sink for FrontendSink {
    fn name(&self) -> &str {
        NAME
    }

    /// A batch while more than `backlog_trigger` records wait, else one record.
    fn take(&mut self, backlog: u64) -> usize {
        self.backlog = (backlog > self.settings.backlog_trigger).then_some(backlog);
        if self.backlog.is_some() {
            self.settings.batch_size.get()
        } else {
            1
        }
    }

    /// Posts the batch; under a backlog with `drop_stale_incoming`, INCOMING records are not
    /// sent (the ack through the batch's last record covers them).
    fn deliver(&mut self, batch: &[Pending]) -> Outcome {
        let through = batch.last().map_or(i64::MIN, |p| p.seq);
        let Some(backlog) = self.backlog.filter(|_| self.settings.drop_stale_incoming) else {
            return self.post(batch);
        };
        let rest: Vec<Pending> = batch.iter().filter(|p| p.kind != 0).cloned().collect();
        if rest.len() < batch.len() {
            tracing::info!(
                "backlog of {backlog} records: dropped {} stale INCOMING (ringing) records",
                batch.len() - rest.len()
            );
        }
        if rest.is_empty() {
            return Outcome::Delivered { through };
        }
        match self.post(&rest) {
            Outcome::Delivered { .. } => Outcome::Delivered { through },
            other => other,
        }
    }

    fn at_stop(&self) -> AtStop {
        AtStop::End
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
    use std::net::TcpListener;
    use std::time::Instant;

    use calllogger_test_kit::frontend::{created, Answer, Frontend};

    use super::*;

    /// The sink posting to `frontend`.
    fn sink_to(frontend: &Frontend, request_timeout: Duration) -> FrontendSink {
        sink(&frontend.url, "t0ken", request_timeout).unwrap()
    }

    /// Every request so far, as `METHOD path`.
    fn requests(frontend: &Frontend) -> Vec<String> {
        frontend
            .received()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn sink(
        frontend: &str,
        token: &str,
        request_timeout: Duration,
    ) -> Result<FrontendSink, FrontendError> {
        let settings = SenderSettings {
            frontend: frontend.to_owned(),
            token: Secret::from(token.to_owned()),
            backlog_trigger: 100,
            batch_size: NonZeroUsize::new(10).unwrap(),
            drop_stale_incoming: false,
            request_timeout,
            ca_file: std::path::PathBuf::new(),
        };
        FrontendSink::new(settings, Telemetry::new())
    }

    fn record(seq: i64) -> Pending {
        Pending {
            seq,
            id: format!("id{seq}"),
            kind: 1,
            body: format!(r#"{{"n":{seq}}}"#),
        }
    }

    fn reason(outcome: Outcome) -> String {
        match outcome {
            Outcome::Retry { reason, .. } => reason,
            other => panic!("not a retry: {other:?}"),
        }
    }

    #[test]
    fn posts_reuse_one_kept_alive_connection() {
        let server = Frontend::start(|_, _| created());
        let mut sink = sink_to(&server, Duration::from_secs(10));
        for seq in 1..=3 {
            let outcome = sink.deliver(&[record(seq)]);
            assert!(
                matches!(outcome, Outcome::Delivered { through } if through == seq),
                "{outcome:?}"
            );
        }
        assert_eq!(requests(&server), ["POST /api/v1/monitor/cdr/"; 3]);
        assert_eq!(server.connections(), 1, "one connection for three POSTs");
    }

    #[test]
    fn a_redirect_is_not_followed_and_the_connection_is_kept() {
        let server = Frontend::start(|_, n| match n {
            0 => (302, vec![("Location", "/login".into())], "login".into()),
            _ => created(),
        });
        let mut sink = sink_to(&server, Duration::from_secs(10));
        assert_eq!(
            reason(sink.deliver(&[record(1)])),
            format!(
                "HTTP 302, a redirect to {}/login, which is not followed",
                server.url
            )
        );
        assert!(matches!(
            sink.deliver(&[record(1)]),
            Outcome::Delivered { through: 1 }
        ));
        assert_eq!(
            requests(&server),
            ["POST /api/v1/monitor/cdr/"; 2],
            "no GET /login"
        );
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn a_silent_frontend_times_out_after_request_timeout_and_the_next_post_connects_again() {
        let server = Frontend::start_with(|_, n| match n {
            0 => Answer::Hang,
            _ => Answer::Reply(created()),
        });
        let mut sink = sink_to(&server, Duration::from_millis(300));
        let start = Instant::now();
        assert_eq!(reason(sink.deliver(&[record(1)])), "timed out");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert!(matches!(
            sink.deliver(&[record(1)]),
            Outcome::Delivered { through: 1 }
        ));
        assert_eq!(server.connections(), 2, "the hung connection is dropped");
    }

    #[test]
    fn a_closed_port_is_cannot_connect_connection_refused() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut sink = sink(
            &format!("http://127.0.0.1:{port}"),
            "t",
            Duration::from_secs(5),
        )
        .unwrap();
        let reason = reason(sink.deliver(&[record(1)]));
        assert!(
            reason.starts_with("cannot connect: ") && reason.contains("refused"),
            "{reason}"
        );
    }

    #[test]
    fn a_refused_record_keeps_the_response_and_a_token_a_header_cannot_carry_is_refused_at_start() {
        let server = Frontend::start(|_, _| (422, vec![], "bad record".into()));
        let outcome = sink_to(&server, Duration::from_secs(10)).deliver(&[record(1)]);
        assert!(
            matches!(&outcome, Outcome::Refused { status: 422, response } if response == "bad record"),
            "{outcome:?}"
        );
        let error = sink(&server.url, "t\nken", Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            "settings.token holds characters an HTTP header cannot carry"
        );
    }

    #[test]
    fn a_non_ascii_host_is_posted_to_in_punycode() {
        let sink = sink(
            "http://b\u{fc}cher.example:1/x/",
            "t",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            sink.url,
            "http://xn--bcher-kva.example:1/x/api/v1/monitor/cdr/"
        );
    }

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
