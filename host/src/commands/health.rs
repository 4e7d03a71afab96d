//! `calllogger health`: asks the running host's status listener one probe, for a container's
//! `HEALTHCHECK` and for scripts (the image has no `curl`).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::load_config;
use crate::cli::{Cli, HealthProbe};

/// How long the host has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Prints the probe's answer; exit status 0 if it passed, 1 if not or if no host answered.
pub fn health(cli: &Cli, probe: HealthProbe) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?.config;
    let Some(listening) = config.metrics_addr else {
        bail!(
            "the status listener is off (settings.metrics_addr): set it (e.g. 127.0.0.1:9464) \
             for `calllogger health` to ask it"
        );
    };
    if listening.port() == 0 {
        bail!(
            "settings.metrics_addr {listening} has port 0 (any free port): give it a fixed \
             port for `calllogger health` to find it"
        );
    }
    // A listener on every address answers on loopback.
    let ip = match listening.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, listening.port());
    let path = match probe {
        HealthProbe::Ready => "/readyz",
        HealthProbe::Live => "/livez",
        HealthProbe::Full => "/health",
    };
    let (status, body) =
        get(addr, path).with_context(|| format!("asking the host at http://{addr}{path}"))?;
    print!("{body}");
    if !body.ends_with('\n') {
        println!();
    }
    Ok(if status == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `GET path` from the listener at `addr`: the status and the body.
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        addr.ip()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {head:?}"))?;
    Ok((status, body.to_owned()))
}
