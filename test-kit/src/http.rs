//! A minimal HTTP/1.1 client for the host's status listener, with a deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::Host;

/// A response: status, head (status line and headers) and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line and the headers, as sent.
    pub head: String,
    /// The body.
    pub body: String,
}

/// GET `path` from the listener at `base` (`http://127.0.0.1:PORT`) within `timeout`, with
/// this `Host` header (none if `None`); `None` when it does not answer in time.
pub fn request(base: &str, path: &str, host: Option<&str>, timeout: Duration) -> Option<Response> {
    let authority = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let host = host.map_or(String::new(), |h| format!("Host: {h}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.get(9..12)?.parse().ok()?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or((response.as_ref(), ""));
    Some(Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// GET `path` from the listener at `base` (`http://127.0.0.1:PORT`) within `timeout`:
/// status and body; `None` when it does not answer in time.
pub fn get(base: &str, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let authority = base.trim_start_matches("http://").trim_end_matches('/');
    let response = request(base, path, Some(authority), timeout)?;
    Some((response.status, response.body))
}

/// The status listener's base URL, from the host's log line.
pub fn listener_url(host: &mut Host) -> String {
    host.wait_for_log(
        "/health and /metrics on http://",
        1,
        Duration::from_secs(30),
    );
    let log = host.log();
    let start = log.find("/metrics on http://").unwrap() + "/metrics on ".len();
    log[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}
