//! The optional HTTP listener (`settings.metrics_addr`): `/health` (JSON; 200 when healthy,
//! else 503), `/metrics` (Prometheus text) and `/`, a self-contained status page that reads
//! `/health` every 5 seconds.
//!
//! A small blocking server (tiny_http) on one thread: scrapes and page loads are rare, and
//! nothing here should compete with the record path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Response, Server};

use crate::spool::Spool;
use crate::telemetry::{SpoolFigures, Telemetry};

const PAGE: &str = include_str!("status/page.html");

/// The running listener.
pub struct Listener {
    server: Arc<Server>,
    thread: JoinHandle<()>,
    /// The address it listens on (the port is chosen by the OS when it was 0).
    pub addr: SocketAddr,
}

/// What the listener reads from.
pub struct Sources {
    pub telemetry: Arc<Telemetry>,
    pub spool: Arc<Spool>,
    /// How long deliveries may fail before the sender counts as stuck.
    pub stuck_after: Duration,
}

/// Listens on `addr` (e.g. `127.0.0.1:9464`).
pub fn start(addr: &str, sources: Sources) -> std::io::Result<Listener> {
    let server = Arc::new(Server::http(addr).map_err(std::io::Error::other)?);
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
    let serving = server.clone();
    let thread = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for request in serving.incoming_requests() {
                let response = respond(request.method(), request.url(), &sources);
                let _ = request.respond(response);
            }
        })?;
    Ok(Listener {
        server,
        thread,
        addr,
    })
}

impl Listener {
    /// Stops listening and waits for the request in hand.
    pub fn stop(self) {
        self.server.unblock();
        let _ = self.thread.join();
    }
}

fn respond(method: &Method, url: &str, sources: &Sources) -> Response<std::io::Cursor<Vec<u8>>> {
    let path = url.split('?').next().unwrap_or(url);
    if !matches!(method, Method::Get | Method::Head) {
        return text(405, "text/plain; charset=utf-8", "GET only\n".into());
    }
    match path {
        "/health" => {
            let health = sources
                .telemetry
                .health(spool_figures(&sources.spool), sources.stuck_after);
            let code = if health.healthy { 200 } else { 503 };
            let body = serde_json::to_string_pretty(&health).unwrap_or_default();
            text(code, "application/json", body)
        }
        "/metrics" => text(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            sources.telemetry.encode(spool_figures(&sources.spool)),
        ),
        "/" | "/index.html" => text(200, "text/html; charset=utf-8", PAGE.into()),
        _ => text(
            404,
            "text/plain; charset=utf-8",
            "not found: try /, /health or /metrics\n".into(),
        ),
    }
}

fn text(code: u16, content_type: &str, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut response = Response::from_string(body).with_status_code(code);
    if let Ok(header) = Header::from_bytes("Content-Type", content_type) {
        response.add_header(header);
    }
    if let Ok(header) = Header::from_bytes("Cache-Control", "no-store") {
        response.add_header(header);
    }
    response
}

fn spool_figures(spool: &Spool) -> SpoolFigures {
    let trouble = spool.trouble();
    match spool.counts() {
        Ok(counts) => SpoolFigures {
            pending: counts.pending + counts.unapplied,
            dead: counts.dead,
            trouble,
        },
        Err(e) => {
            tracing::warn!("status: cannot count the spool: {e}");
            SpoolFigures {
                trouble,
                ..SpoolFigures::default()
            }
        }
    }
}
