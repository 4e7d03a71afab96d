//! A minimal HTTP/1.1 client for the host's status listener, with a deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// GET `path` from the listener at `base` (`http://127.0.0.1:PORT`) within `timeout`:
/// status and body; `None` when it does not answer in time.
pub fn get(base: &str, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let authority = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let code = response.get(9..12)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Some((code, body))
}

/// The status listener's base URL, from the host's log line.
pub fn listener_url(host: &mut super::Host) -> String {
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
