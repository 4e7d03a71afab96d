//! The optional HTTP listener (`settings.metrics_addr`): `/health` (JSON; 200 when healthy,
//! else 503), the probes `/livez` and `/readyz` (JSON; 200 or 503), `/metrics` (Prometheus
//! text) and `/`, a self-contained status page that reads `/health` every 5 seconds.
//!
//! Scrapes and page loads are rare, and nothing here should compete with the record path, so
//! the threads are bounded whatever the clients do: one thread polls every connection until
//! its request head has arrived (an idle connection costs a file descriptor, no thread; it is
//! closed after [`HEAD_TIMEOUT`], or when [`MAX_WAITING`] others are waiting), then hands it to
//! one of [`WORKERS`] threads through a queue of [`QUEUE`] (a connection that finds the queue
//! full is closed). Every answer closes its connection.
//!
//! Requests naming another host (`Host: evil.example`) are refused with 421, so a web page
//! cannot reach the listener through a DNS name rebound to this machine.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use calllogger_poll::{AsSource as _, Interest, Waker};
use parking_lot::Mutex;

use crate::telemetry::{Probe, SpoolFigures, Telemetry};
use calllogger_spool::Queue;

const PAGE: &str = include_str!("status/page.html");

/// Threads answering requests.
const WORKERS: usize = 4;
/// Requests read and waiting for a worker.
const QUEUE: usize = 32;
/// Connections whose request head is still being read.
const MAX_WAITING: usize = 256;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker waits for a client to take its answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read (request line and headers).
const MAX_HEAD: usize = 8 * 1024;

/// The running listener.
pub struct Listener {
    /// Woken to stop the polling thread.
    wake: Arc<Waker>,
    threads: Vec<JoinHandle<()>>,
    /// The address it listens on (the port is chosen by the OS when it was 0).
    pub addr: SocketAddr,
}

/// What the listener reads from.
pub struct Sources {
    pub telemetry: Arc<Telemetry>,
    pub spool: Queue,
    /// How long a sink's deliveries may fail before it counts as stuck.
    pub stuck_after: Duration,
}

/// Listens on `addr` (e.g. `127.0.0.1:9464`).
pub fn start(addr: &str, sources: Sources) -> std::io::Result<Listener> {
    let socket = TcpListener::bind(addr)?;
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    let wake = Arc::new(Waker::new()?);
    let woken = wake.clone();
    let (queue, requests) = sync_channel::<Request>(QUEUE);
    let requests = Arc::new(Mutex::new(requests));
    let sources = Arc::new(sources);
    let names = Arc::new(HostNames::of_this_machine());
    let mut threads = Vec::with_capacity(WORKERS + 1);
    for n in 0..WORKERS {
        let (requests, sources, names) = (requests.clone(), sources.clone(), names.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("status-{n}"))
                .spawn(move || work(&requests, &sources, &names))?,
        );
    }
    threads.push(
        std::thread::Builder::new()
            .name("status".into())
            .spawn(move || accept(&socket, &woken, &queue))?,
    );
    Ok(Listener {
        wake,
        threads,
        addr,
    })
}

impl Listener {
    /// Stops listening and waits for the requests in hand.
    pub fn stop(self) {
        // The polling thread ends when woken, and the workers when it drops the queue.
        self.wake.wake();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// A connection whose request head has arrived.
struct Request {
    stream: TcpStream,
    head: Vec<u8>,
}

/// A connection still sending its request head.
struct Waiting {
    stream: TcpStream,
    head: Vec<u8>,
    since: Instant,
}

/// The polling thread: accepts connections, reads their request heads without blocking, and
/// queues complete ones for the workers.
fn accept(socket: &TcpListener, woken: &Waker, queue: &SyncSender<Request>) {
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    loop {
        let deadline = waiting.front().map(|oldest| oldest.since + HEAD_TIMEOUT);
        let mut ready = {
            let mut sources = Vec::with_capacity(waiting.len() + 1);
            sources.push((socket.as_source(), Interest::Read));
            sources.extend(
                waiting
                    .iter()
                    .map(|w| (w.stream.as_source(), Interest::Read)),
            );
            match woken.wait(&sources, deadline) {
                Ok(Some(ready)) => ready,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("status listener stopped: cannot poll its connections: {e}");
                    return;
                }
            }
        };
        let incoming = ready.remove(0);
        // Read what arrived; the connections done with (queued, closed, too slow) go.
        let mut kept = VecDeque::with_capacity(waiting.len());
        for (mut w, ready) in waiting.drain(..).zip(ready) {
            if ready {
                match read_head(&mut w) {
                    HeadState::Partial => {}
                    HeadState::Complete => {
                        queued(
                            queue,
                            Request {
                                stream: w.stream,
                                head: w.head,
                            },
                        );
                        continue;
                    }
                    HeadState::Closed => continue,
                }
            }
            if w.since.elapsed() < HEAD_TIMEOUT {
                kept.push_back(w);
            }
        }
        waiting = kept;
        if incoming {
            accept_new(socket, &mut waiting);
        }
    }
}

/// Accepts every pending connection; beyond [`MAX_WAITING`], the oldest waiting one is closed.
fn accept_new(socket: &TcpListener, waiting: &mut VecDeque<Waiting>) {
    loop {
        match socket.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if waiting.len() >= MAX_WAITING {
                    waiting.pop_front();
                }
                waiting.push_back(Waiting {
                    stream,
                    head: Vec::new(),
                    since: Instant::now(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors, say: make room (or, with none to close, pause so
                // the still-pending connection does not spin the poll), and try again.
                tracing::debug!("status listener: cannot accept a connection: {e}");
                if waiting.pop_front().is_none() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return;
            }
        }
    }
}

/// Hands a request to the workers, or closes it when they are all busy and the queue is full.
fn queued(queue: &SyncSender<Request>, request: Request) {
    match queue.try_send(request) {
        Ok(()) => {}
        Err(TrySendError::Full(request) | TrySendError::Disconnected(request)) => {
            let _ = request.stream.shutdown(Shutdown::Both);
        }
    }
}

enum HeadState {
    Partial,
    /// The blank line ending the head arrived, or the head is too long (answered with 431).
    Complete,
    Closed,
}

fn read_head(waiting: &mut Waiting) -> HeadState {
    let mut buffer = [0u8; 2048];
    loop {
        match waiting.stream.read(&mut buffer) {
            Ok(0) => return HeadState::Closed,
            Ok(n) => {
                waiting.head.extend_from_slice(&buffer[..n]);
                if waiting.head.windows(4).any(|w| w == b"\r\n\r\n")
                    || waiting.head.len() > MAX_HEAD
                {
                    return HeadState::Complete;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return HeadState::Partial,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return HeadState::Closed,
        }
    }
}

/// A worker: answers queued requests until the queue is dropped.
fn work(requests: &Mutex<Receiver<Request>>, sources: &Sources, names: &HostNames) {
    loop {
        let Ok(Request { stream, head }) = requests.lock().recv() else {
            return;
        };
        let response = respond(&head, sources, names);
        let mut stream = stream;
        if stream.set_nonblocking(false).is_ok()
            && stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok()
        {
            let _ = stream.write_all(&response);
        }
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// The answer to a request head, status line to body.
fn respond(head: &[u8], sources: &Sources, names: &HostNames) -> Vec<u8> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if head.len() > MAX_HEAD {
        return response(431, PLAIN, "request head too long\n".into(), true);
    }
    let Some(request) = parse(head) else {
        return response(400, PLAIN, "bad request\n".into(), true);
    };
    let with_body = request.method != "HEAD";
    if request.method != "GET" && request.method != "HEAD" {
        return response(405, PLAIN, "GET only\n".into(), true);
    }
    match request.host {
        None if request.version_1_1 => {
            return response(400, PLAIN, "no Host header\n".into(), with_body);
        }
        Some(host) if !names.allows(host) => {
            return response(
                421,
                PLAIN,
                format!(
                    "this listener answers to an IP address, localhost or {}, not `{host}`\n",
                    names
                        .hostname
                        .as_deref()
                        .unwrap_or("the machine's host name")
                ),
                with_body,
            );
        }
        _ => {}
    }
    let path = request.target.split('?').next().unwrap_or(request.target);
    match path {
        "/health" => {
            let health = sources
                .telemetry
                .health(spool_figures(&sources.spool), sources.stuck_after);
            let code = if health.healthy { 200 } else { 503 };
            let body = serde_json::to_string_pretty(&health).unwrap_or_default();
            response(code, "application/json", body, with_body)
        }
        "/livez" => probe(&sources.telemetry.liveness(), with_body),
        "/readyz" => probe(
            &sources.telemetry.readiness(spool_figures(&sources.spool)),
            with_body,
        ),
        "/metrics" => response(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            sources.telemetry.encode(spool_figures(&sources.spool)),
            with_body,
        ),
        "/" | "/index.html" => response(200, "text/html; charset=utf-8", PAGE.into(), with_body),
        _ => response(
            404,
            PLAIN,
            "not found: try /, /health, /livez, /readyz or /metrics\n".into(),
            with_body,
        ),
    }
}

/// A probe's answer: 200 if it passed, else 503, with why as JSON.
fn probe(probe: &Probe, with_body: bool) -> Vec<u8> {
    let code = if probe.ok { 200 } else { 503 };
    let body = serde_json::to_string_pretty(probe).unwrap_or_default();
    response(code, "application/json", body, with_body)
}

/// What the listener reads of a request.
struct Parsed<'a> {
    method: &'a str,
    target: &'a str,
    version_1_1: bool,
    host: Option<&'a str>,
}

/// The request line and the `Host` header; `None` when the head is not HTTP/1.x.
fn parse(head: &[u8]) -> Option<Parsed<'_>> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut host = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                // Two Host headers: which one a proxy looked at is anyone's guess.
                return None;
            }
            host = Some(value.trim());
        }
    }
    Some(Parsed {
        method,
        target,
        version_1_1: version != "HTTP/1.0",
        host,
    })
}

/// The names a request may give in its `Host` header: any IP address (a DNS rebinding attack
/// needs a name it controls), `localhost`, and this machine's host name. The port is not
/// checked: a container or a proxy may publish the listener on another one.
struct HostNames {
    hostname: Option<String>,
}

/// This machine's host name.
#[cfg(unix)]
fn hostname() -> Option<String> {
    nix::unistd::gethostname().ok()?.into_string().ok()
}

/// This machine's (NetBIOS) computer name, as Windows sets it for every process.
#[cfg(windows)]
fn hostname() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}

impl HostNames {
    fn of_this_machine() -> Self {
        Self {
            hostname: hostname().filter(|name| !name.is_empty()),
        }
    }

    fn allows(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            // `[v6]` or `[v6]:port`
            Some(rest) => match rest.split_once(']') {
                Some((v6, port)) if port.is_empty() || port.starts_with(':') => {
                    return v6.parse::<std::net::Ipv6Addr>().is_ok();
                }
                _ => return false,
            },
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        name.parse::<IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self.hostname.as_deref().is_some_and(|own| {
                name.eq_ignore_ascii_case(own)
                    || own
                        .split_once('.')
                        .is_some_and(|(short, _)| name.eq_ignore_ascii_case(short))
            })
    }
}

/// A whole response; `with_body` false for HEAD (the headers still give the body's length).
fn response(code: u16, content_type: &str, body: String, with_body: bool) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         Cache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn spool_figures(spool: &Queue) -> SpoolFigures {
    let trouble = spool.trouble();
    match spool.counts() {
        Ok(counts) => SpoolFigures {
            pending: counts.pending + counts.unapplied,
            dead: counts.dead,
            oldest_pending: counts.oldest_pending,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_allowed_are_addresses_localhost_and_the_host_name() {
        let names = HostNames {
            hostname: Some("pbx-gw.example.org".into()),
        };
        for ok in [
            "127.0.0.1:9464",
            "127.0.0.1",
            "192.0.2.7:8080",
            "[::1]:9464",
            "[::1]",
            "localhost:9464",
            "LOCALHOST",
            "pbx-gw.example.org:9464",
            "pbx-gw",
        ] {
            assert!(names.allows(ok), "{ok} refused");
        }
        for refused in [
            "evil.example",
            "evil.example:9464",
            "localhost.evil.example",
            "127.0.0.1.nip.io:9464",
            "[::1",
            "[::1]x",
            "[evil]:1",
            "",
        ] {
            assert!(!names.allows(refused), "{refused} allowed");
        }
    }

    #[test]
    fn parse_reads_the_request_line_and_one_host() {
        let p = parse(b"GET /health?x HTTP/1.1\r\nhOsT: a:1\r\nAccept: */*\r\n\r\n").unwrap();
        assert_eq!(
            (p.method, p.target, p.version_1_1, p.host),
            ("GET", "/health?x", true, Some("a:1"))
        );
        assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").is_none());
        assert!(parse(b"GET / SPDY/3\r\n\r\n").is_none());
        let p = parse(b"HEAD / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!p.version_1_1 && p.host.is_none());
    }
}
