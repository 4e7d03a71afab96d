//! A minimal HTTP/1.1 client for the frontend sink: POSTs to one URL over one kept-alive
//! connection, plain or TLS (rustls), on the calling thread.
//!
//! Why not a general-purpose client: at the rates PBXs send, every record is one POST, and
//! such a client's work per request (a request object and header maps, a probe of the pooled
//! connection before and after each use, both socket timeouts set anew) cost the sink's
//! thread more than the rest of its work. Here a request leaves in one `send` and its answer
//! usually comes in one `recv`; the socket's timeouts change only when the time left differs
//! from them by more than [`SLACK`].
//!
//! Every socket call is bounded by the request's deadline, TLS included (the session is
//! driven one socket read or write at a time).
//!
//! A connection idle for [`MAX_IDLE`] is not used again; one idle for [`PROBE_AFTER`] is
//! first checked for an end or for bytes the server sent meanwhile. A kept-alive connection
//! the server closed shows when it is used, too: the write fails, or the connection ends
//! before any byte of an answer. The request is then sent once more, on a new connection
//! (every record carries its id, so the frontend can drop a copy). A timeout never sends a
//! request again: the sink retries later.
//!
//! A proxy from the environment (the first of `ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`, upper
//! or lower case, set to a URL, and `NO_PROXY`) is passed through with `CONNECT`, for http
//! and https frontends alike; only an `http://` proxy is supported.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::resolve::Resolver;

/// How far a socket timeout may run past the request's deadline, so that the timeouts are
/// not set again before every read and write.
const SLACK: Duration = Duration::from_millis(20);
/// The longest response head read.
const MAX_HEAD: usize = 64 << 10;
/// The longest response body read; a longer one is cut there and costs the connection.
const MAX_BODY: usize = 64 << 10;
/// How much room each read of a response is given.
const READ: usize = 8 << 10;
/// The most room kept in the request and response buffers between two requests.
const KEEP: usize = 64 << 10;
/// A connection idle this long is not used again: a NAT or firewall on the way may have
/// dropped it without a word.
const MAX_IDLE: Duration = Duration::from_secs(15);
/// A connection idle this long is checked before it is used: not closed, and holding nothing
/// the server sent meanwhile (a 408 before it closed).
const PROBE_AFTER: Duration = Duration::from_secs(1);
/// The most headers a response head may have.
const MAX_HEADERS: usize = 128;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("timed out")]
    Timeout,
    /// No connection to the server (or the proxy, or no TLS session with it).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection failed while the request was sent or its answer read, or the answer
    /// was not HTTP.
    #[error("request failed: {0}")]
    Failed(String),
}

/// A response: its status, the headers the sink reads, and up to [`MAX_BODY`] of its body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// Where the requests go and how: see the module's documentation.
pub struct Client {
    /// The host to connect to (no brackets around an IPv6 address) and its port.
    host: String,
    port: u16,
    /// `host:port` as `CONNECT` names it.
    authority: String,
    /// For an https URL.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    proxy: Option<Proxy>,
    resolver: Resolver,
    /// The request line and the headers every request carries, up to `Content-Length`.
    head: Vec<u8>,
    /// The kept-alive connection, if any.
    connection: Option<Connection>,
    /// [`MAX_IDLE`] and [`PROBE_AFTER`] (shorter in tests).
    max_idle: Duration,
    probe_after: Duration,
    /// The `User-Agent` among the headers, which `CONNECT` carries too.
    user_agent: Option<String>,
    /// The request being sent and the response being read, kept for the next.
    request: Vec<u8>,
    input: Vec<u8>,
}

impl Client {
    /// A client for `url` (http or https, with a host) whose requests carry `headers`; `tls`
    /// is required for an https URL. Uses the proxy that the environment variables (`env`
    /// looks one up) name for the URL's host.
    pub fn new(
        url: &url::Url,
        headers: &[(&str, &str)],
        tls: Option<Arc<ClientConfig>>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("the URL names no host".into()),
        };
        let port = url
            .port_or_known_default()
            .ok_or("the URL's scheme has no port")?;
        let tls = match (url.scheme(), tls) {
            ("https", Some(config)) => {
                let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
                Some((config, name))
            }
            ("https", None) => return Err("an https URL needs a TLS configuration".into()),
            _ => None,
        };
        let host_header = url.host_str().unwrap_or_default();
        let authority = format!("{host_header}:{port}");
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {host_header}",
            &url[url::Position::BeforePath..]
        );
        if let Some(port) = url.port() {
            head.push_str(&format!(":{port}"));
        }
        head.push_str("\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let proxy = Proxy::from_env(env, host_header);
        let user_agent = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
            .map(|(_, value)| value.to_string());
        Ok(Self {
            host,
            port,
            authority,
            tls,
            proxy,
            resolver: Resolver::default(),
            head: head.into_bytes(),
            connection: None,
            max_idle: MAX_IDLE,
            probe_after: PROBE_AFTER,
            user_agent,
            request: Vec::new(),
            input: Vec::new(),
        })
    }

    /// The proxy the requests go through, as the environment named it (no password).
    pub fn proxy(&self) -> Option<&str> {
        self.proxy.as_ref().map(|p| p.shown.as_str())
    }

    /// POSTs `body` (`Content-Type` is among the client's headers), waiting at most
    /// `timeout` for the whole exchange (connecting included).
    pub fn post(&mut self, body: &[u8], timeout: Duration) -> Result<Response, HttpError> {
        let deadline = Instant::now() + timeout;
        self.request.clear();
        self.request.extend_from_slice(&self.head);
        // Writing into a Vec cannot fail.
        let _ = write!(self.request, "Content-Length: {}\r\n\r\n", body.len());
        self.request.extend_from_slice(body);
        loop {
            let idle = |c: &Connection| c.used.elapsed();
            let kept = self
                .connection
                .take()
                .filter(|c| idle(c) < self.max_idle)
                .and_then(|mut c| (idle(&c) < self.probe_after || c.quiet()).then_some(c));
            let reused = kept.is_some();
            let mut connection = match kept {
                Some(connection) => connection,
                None => self.connect(deadline)?,
            };
            let exchanged = exchange(&mut connection, &self.request, &mut self.input, deadline);
            match exchanged {
                Ok((response, keep)) => {
                    if keep {
                        connection.used = Instant::now();
                        self.connection = Some(connection);
                    }
                    // A large batch's buffers are not kept for the records that follow.
                    for buffer in [&mut self.request, &mut self.input] {
                        if buffer.capacity() > KEEP {
                            *buffer = Vec::new();
                        }
                    }
                    return Ok(response);
                }
                // Closed by the server while idle: once more, on a new connection.
                Err(Failed::Unanswered(_)) if reused => {}
                Err(Failed::Unanswered(e) | Failed::Io(e)) => {
                    return Err(HttpError::Failed(e.to_string()))
                }
                Err(Failed::Timeout) => return Err(HttpError::Timeout),
                Err(Failed::Protocol(what)) => return Err(HttpError::Failed(what)),
            }
        }
    }

    /// A new connection to the server (through the proxy, if any), TLS set up when the URL
    /// is https.
    fn connect(&mut self, deadline: Instant) -> Result<Connection, HttpError> {
        let (host, port) = match &self.proxy {
            Some(proxy) => (proxy.host.as_str(), proxy.port),
            None => (self.host.as_str(), self.port),
        };
        let addrs = self
            .resolver
            .resolve(host, port, left(deadline)?)
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => HttpError::Timeout,
                _ => HttpError::Connect(e.to_string()),
            })?;
        let tcp = connect_any(&addrs, deadline)?;
        tcp.set_nodelay(true)
            .map_err(|e| HttpError::Connect(e.to_string()))?;
        let mut connection = Connection {
            stream: Stream::Plain(tcp),
            timeout: None,
            used: Instant::now(),
        };
        if let Some(proxy) = &self.proxy {
            let to = Tunnel {
                authority: &self.authority,
                user_agent: self.user_agent.as_deref(),
            };
            tunnel(&mut connection, proxy, to, &mut self.input, deadline)?;
        }
        connection.stream = match (connection.stream, &self.tls) {
            (Stream::Plain(tcp), Some((config, name))) => {
                let connect = |e: &dyn std::fmt::Display| HttpError::Connect(e.to_string());
                let mut session =
                    ClientConnection::new(config.clone(), name.clone()).map_err(|e| connect(&e))?;
                // A request is handed over whole; the socket writes are bounded instead.
                session.set_buffer_limit(None);
                let mut tls = Box::new(Tls {
                    session,
                    tcp,
                    records: Records::default(),
                });
                while tls.session.is_handshaking() {
                    bound(&tls.tcp, &mut connection.timeout, deadline)?;
                    let io = if tls.session.wants_write() {
                        tls.session.write_tls(&mut tls.tcp)
                    } else {
                        match tls.read_tls() {
                            Ok(0) => Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the server closed the connection during the TLS handshake",
                            )),
                            read => read,
                        }
                    };
                    match io {
                        Err(e) if retried(&e) => continue,
                        Err(e) => return Err(connect(&e)),
                        Ok(_) => {}
                    }
                    if let Err(e) = tls.session.process_new_packets() {
                        tls.send_alert();
                        return Err(connect(&e));
                    }
                }
                Stream::Tls(tls)
            }
            (stream, _) => stream,
        };
        Ok(connection)
    }
}

/// The time left before `deadline`; none left is a timeout.
fn left(deadline: Instant) -> Result<Duration, Failed> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Failed::Timeout);
    }
    Ok(left)
}

/// Connects to the first of `addrs` that answers, each tried with a share of the time left.
fn connect_any(addrs: &[SocketAddr], deadline: Instant) -> Result<TcpStream, HttpError> {
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let share = left(deadline)? / (addrs.len() - i) as u32;
        match TcpStream::connect_timeout(addr, share.max(Duration::from_millis(1))) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if timed_out(&e) => HttpError::Timeout,
        Some(e) => HttpError::Connect(e.to_string()),
        None => HttpError::Connect("no address to connect to".into()),
    })
}

/// Why one exchange failed.
enum Failed {
    Timeout,
    /// The connection failed or ended before any byte of an answer.
    Unanswered(io::Error),
    /// The connection failed or ended in the middle of the answer.
    Io(io::Error),
    /// The answer is not HTTP/1.x as the client reads it.
    Protocol(String),
}

impl From<Failed> for HttpError {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Timeout => HttpError::Timeout,
            Failed::Unanswered(e) | Failed::Io(e) => HttpError::Connect(e.to_string()),
            Failed::Protocol(what) => HttpError::Connect(what),
        }
    }
}

/// Whether an I/O error is a socket timeout (`EAGAIN` on Unix, `WSAETIMEDOUT` on Windows).
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One connection, plain or TLS, the socket timeout it has now, and when it was last used.
struct Connection {
    stream: Stream,
    timeout: Option<Duration>,
    used: Instant,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<Tls>),
}

impl Stream {
    /// The socket.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.tcp,
        }
    }
}

/// A TLS session and its socket.
struct Tls {
    session: ClientConnection,
    tcp: TcpStream,
    /// Where the bytes read so far end in the server's records.
    records: Records,
}

/// Follows the record boundaries of a TLS byte stream (each record: a 5-byte header whose
/// last two bytes give the length of what follows), which the session does not tell.
#[derive(Debug, Default)]
struct Records {
    header: [u8; 5],
    /// Bytes of the next header read so far.
    have: usize,
    /// Bytes of the current record still to come.
    left: usize,
}

impl Records {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = self.left.min(bytes.len());
                self.left -= n;
                bytes = &bytes[n..];
            } else {
                let n = (5 - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have == 5 {
                    self.have = 0;
                    self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                }
            }
        }
    }

    /// Whether the bytes so far end with a whole record.
    fn whole(&self) -> bool {
        self.have == 0 && self.left == 0
    }
}

/// The socket as the session reads it, its bytes followed through [`Records`].
struct Counted<'a> {
    tcp: &'a TcpStream,
    records: &'a mut Records,
}

impl Read for Counted<'_> {
    fn read(&mut self, into: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(into)?;
        self.records.feed(&into[..n]);
        Ok(n)
    }
}

impl Tls {
    /// Reads what the socket has into the session.
    fn read_tls(&mut self) -> io::Result<usize> {
        let mut socket = Counted {
            tcp: &self.tcp,
            records: &mut self.records,
        };
        self.session.read_tls(&mut socket)
    }

    /// Processes the records read so far; whether they hold plaintext not yet read, the
    /// server's `close_notify`, part of a record (the rest of which would be read as the next
    /// request's answer), or an error (whose alert is sent).
    fn holds_more(&mut self) -> bool {
        match self.session.process_new_packets() {
            Ok(io) => {
                io.plaintext_bytes_to_read() > 0 || io.peer_has_closed() || !self.records.whole()
            }
            Err(_) => {
                self.send_alert();
                true
            }
        }
    }

    /// Writes the alert rustls queued for an error, if the socket takes it at once.
    fn send_alert(&mut self) {
        if self.tcp.set_nonblocking(true).is_ok() {
            let _ = self.session.write_tls(&mut self.tcp);
            let _ = self.tcp.set_nonblocking(false);
        }
    }
}

impl Connection {
    /// Writes all of `bytes` by the deadline.
    fn send(&mut self, mut bytes: &[u8], deadline: Instant) -> Result<(), Failed> {
        let unanswered = |e| failed(e, false);
        if let Stream::Tls(tls) = &mut self.stream {
            // Taken whole (no buffer limit): what goes out is the session's to write.
            tls.session.writer().write_all(bytes).map_err(unanswered)?;
            bytes = &[];
        }
        while let (false, Stream::Plain(tcp)) = (bytes.is_empty(), &mut self.stream) {
            bound(tcp, &mut self.timeout, deadline)?;
            match tcp.write(bytes) {
                Ok(0) => return Err(unanswered(io::ErrorKind::WriteZero.into())),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if retried(&e) => {}
                Err(e) => return Err(unanswered(e)),
            }
        }
        self.flush(deadline, false)
    }

    /// Writes what a TLS session holds (records, alerts), by the deadline.
    fn flush(&mut self, deadline: Instant, answered: bool) -> Result<(), Failed> {
        while let Stream::Tls(tls) = &mut self.stream {
            if !tls.session.wants_write() {
                break;
            }
            bound(&tls.tcp, &mut self.timeout, deadline)?;
            match tls.session.write_tls(&mut tls.tcp) {
                Err(e) if retried(&e) => {}
                Err(e) => return Err(failed(e, answered)),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Reads what comes into `into`, by the deadline; 0 at the end of the connection (for
    /// TLS, with or without the server's `close_notify`: the framing notices a cut answer).
    /// `answered`: whether a byte of the answer came already.
    fn receive(
        &mut self,
        into: &mut [u8],
        deadline: Instant,
        answered: bool,
    ) -> Result<usize, Failed> {
        loop {
            match &mut self.stream {
                Stream::Plain(tcp) => {
                    bound(tcp, &mut self.timeout, deadline)?;
                    match tcp.read(into) {
                        Ok(n) => return Ok(n),
                        Err(e) if retried(&e) => {}
                        Err(e) => return Err(failed(e, answered)),
                    }
                }
                Stream::Tls(tls) => {
                    match tls.session.reader().read(into) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(failed(e, answered)),
                    }
                    bound(&tls.tcp, &mut self.timeout, deadline)?;
                    match tls.read_tls() {
                        Err(e) if retried(&e) => continue,
                        Err(e) => return Err(failed(e, answered)),
                        Ok(_) => {}
                    }
                    if let Err(e) = tls.session.process_new_packets() {
                        tls.send_alert();
                        let e = io::Error::new(io::ErrorKind::InvalidData, e);
                        return Err(failed(e, answered));
                    }
                    // An alert or a key update to answer.
                    self.flush(deadline, answered)?;
                }
            }
        }
    }

    /// Whether nothing waits to be read on an idle connection: neither its end nor bytes
    /// the server sent meanwhile. On TLS, records that carry neither (a session ticket, a
    /// key update) are taken in and the connection stays quiet.
    fn quiet(&mut self) -> bool {
        if self.stream.tcp().set_nonblocking(true).is_err() {
            return false;
        }
        let quiet = match &mut self.stream {
            Stream::Plain(tcp) => {
                matches!(tcp.peek(&mut [0]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Tls(tls) => loop {
                match tls.read_tls() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break !tls.holds_more(),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(0) | Err(_) => break false,
                    Ok(_) => {}
                }
            },
        };
        self.stream.tcp().set_nonblocking(false).is_ok() && quiet
    }

    /// Whether the session, not the socket, holds what comes after an answer: bytes of
    /// another, part of a record, or the server's end (`close_notify`); see [`Tls::holds_more`].
    fn holds_more(&mut self) -> bool {
        match &mut self.stream {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls.holds_more(),
        }
    }
}

/// Whether a read or write that failed this way is tried again (by the deadline): a signal,
/// or the socket's timeout, which may end a little before the deadline.
fn retried(e: &io::Error) -> bool {
    timed_out(e) || e.kind() == io::ErrorKind::Interrupted
}

/// Sets the socket's timeouts (`timeout`, as last set) to the time left when they fall short
/// of it or exceed it by more than [`SLACK`]; a timeout once the deadline passed.
fn bound(tcp: &TcpStream, timeout: &mut Option<Duration>, deadline: Instant) -> Result<(), Failed> {
    let left = left(deadline)?;
    let fits = timeout.is_some_and(|t| t >= left && t - left <= SLACK);
    if !fits {
        // Half the slack over: the next request's time left still fits, unless it starts
        // more than that later than this one's was measured.
        let set = left + SLACK / 2;
        tcp.set_read_timeout(Some(set)).map_err(Failed::Io)?;
        tcp.set_write_timeout(Some(set)).map_err(Failed::Io)?;
        *timeout = Some(set);
    }
    Ok(())
}

/// An error on a connection, before or after a byte of the answer came.
fn failed(e: io::Error, answered: bool) -> Failed {
    if answered {
        Failed::Io(e)
    } else {
        Failed::Unanswered(e)
    }
}

/// Sends `request` and reads the answer; returns it and whether the connection can carry
/// the next request.
fn exchange(
    connection: &mut Connection,
    request: &[u8],
    input: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(Response, bool), Failed> {
    let mut incoming = Incoming::answering(connection, request, input, deadline)?;
    let head = loop {
        let head = incoming.head()?;
        // An interim answer (100 Continue, 103 Early Hints) comes before the final one.
        if !(100..=199).contains(&head.status) || head.status == 101 {
            break head;
        }
    };
    // Anything but HTTP/1.1 after a 101: not ours to read.
    let mut keep = head.keep && head.status != 101;
    let mut body = Vec::new();
    match head.framing {
        Framing::None => {}
        Framing::Length(length) => {
            keep &= length <= MAX_BODY;
            incoming.exactly(length.min(MAX_BODY), &mut body)?;
        }
        Framing::Chunked => keep &= incoming.chunked(&mut body)?,
        Framing::UntilClose => {
            keep = false;
            incoming.until_close(&mut body)?;
        }
    }
    // Bytes past the answer (or the server's end): not ours to read as the next one's.
    keep &= incoming.start == incoming.buffer.len() && !incoming.connection.holds_more();
    let response = Response {
        status: head.status,
        retry_after: head.retry_after,
        location: head.location,
        body,
    };
    Ok((response, keep))
}

/// How a response's body ends.
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// A response's head, as far as the client reads it.
struct Head {
    status: u16,
    keep: bool,
    framing: Framing,
    retry_after: Option<String>,
    location: Option<String>,
}

/// The bytes read from a connection, not yet taken (from `start` on).
struct Incoming<'a> {
    connection: &'a mut Connection,
    buffer: &'a mut Vec<u8>,
    start: usize,
    /// Whether a byte of the answer came.
    answered: bool,
    deadline: Instant,
}

impl<'a> Incoming<'a> {
    /// Sends `request` on `connection`; its answer is to be read into `input`.
    fn answering(
        connection: &'a mut Connection,
        request: &[u8],
        input: &'a mut Vec<u8>,
        deadline: Instant,
    ) -> Result<Self, Failed> {
        connection.send(request, deadline)?;
        input.clear();
        Ok(Self {
            connection,
            buffer: input,
            start: 0,
            answered: false,
            deadline,
        })
    }

    /// Reads more; 0 at the end of the connection.
    fn more(&mut self) -> Result<usize, Failed> {
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        let filled = self.buffer.len();
        self.buffer.resize(filled + READ, 0);
        let read =
            self.connection
                .receive(&mut self.buffer[filled..], self.deadline, self.answered);
        let n = *read.as_ref().unwrap_or(&0);
        self.buffer.truncate(filled + n);
        self.answered |= n > 0;
        read
    }

    fn waiting(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// The next response head.
    fn head(&mut self) -> Result<Head, Failed> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(self.waiting()) {
                Ok(httparse::Status::Complete(length)) => {
                    let head = read_head(&parsed);
                    self.start += length;
                    return head;
                }
                Ok(httparse::Status::Partial) if self.waiting().len() > MAX_HEAD => {
                    return Err(Failed::Protocol(format!(
                        "the response head is longer than {} KiB",
                        MAX_HEAD >> 10
                    )))
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(Failed::Protocol(format!(
                        "the response is not HTTP/1.x ({e})"
                    )))
                }
            }
            if self.more()? == 0 {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                );
                return Err(failed(e, self.answered));
            }
        }
    }

    /// Reads more where the answer must go on.
    fn more_of_the_body(&mut self) -> Result<(), Failed> {
        if self.more()? == 0 {
            return Err(Failed::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection in the middle of the response",
            )));
        }
        Ok(())
    }

    /// Moves `length` bytes into `body`.
    fn exactly(&mut self, mut length: usize, body: &mut Vec<u8>) -> Result<(), Failed> {
        while length > 0 {
            if self.waiting().is_empty() {
                self.more_of_the_body()?;
            }
            let n = self.waiting().len().min(length);
            body.extend_from_slice(&self.waiting()[..n]);
            self.start += n;
            length -= n;
        }
        Ok(())
    }

    /// The next line, without its CRLF (or a bare LF).
    fn line(&mut self) -> Result<String, Failed> {
        loop {
            if let Some(end) = self.waiting().iter().position(|b| *b == b'\n') {
                let line = &self.waiting()[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let line = String::from_utf8_lossy(line).into_owned();
                self.start += end + 1;
                return Ok(line);
            }
            if self.waiting().len() > MAX_HEAD {
                return Err(Failed::Protocol("a chunk line is too long".into()));
            }
            self.more_of_the_body()?;
        }
    }

    /// A chunked body, into `body` up to [`MAX_BODY`]; whether it was read to its end.
    fn chunked(&mut self, body: &mut Vec<u8>) -> Result<bool, Failed> {
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = Some(size)
                .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|s| usize::from_str_radix(s, 16).ok())
                .ok_or_else(|| Failed::Protocol(format!("a chunk's size is not hex: {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(true);
            }
            if size > MAX_BODY - body.len() {
                self.exactly(MAX_BODY - body.len(), body)?;
                return Ok(false);
            }
            self.exactly(size, body)?;
            if !self.line()?.is_empty() {
                return Err(Failed::Protocol("a chunk is longer than its size".into()));
            }
        }
    }

    /// A body that ends with the connection, into `body` up to [`MAX_BODY`].
    fn until_close(&mut self, body: &mut Vec<u8>) -> Result<(), Failed> {
        loop {
            let n = self.waiting().len().min(MAX_BODY - body.len());
            body.extend_from_slice(&self.waiting()[..n]);
            self.start += n;
            if body.len() == MAX_BODY || self.more()? == 0 {
                return Ok(());
            }
        }
    }
}

/// The parts of a parsed head the client uses.
fn read_head(parsed: &httparse::Response<'_, '_>) -> Result<Head, Failed> {
    let status = parsed.code.unwrap_or_default();
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
            .next()
    };
    let has_token = |name: &str, token: &str| {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    let encoded = header("transfer-encoding");
    let length = header("content-length");
    // Both: a message read by its encoding, on a connection not trusted with another.
    let keep = parsed.version == Some(1)
        && !has_token("connection", "close")
        && !(encoded.is_some() && length.is_some());
    let framing = match (encoded, length) {
        _ if matches!(status, 100..=199 | 204 | 304) => Framing::None,
        // Chunked when that is the last coding; any other ends with the connection.
        (Some(codings), _) => match codings.rsplit(',').next() {
            Some(last) if last.trim().eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        },
        (None, Some(length)) => {
            let not_a_number =
                || Failed::Protocol(format!("a Content-Length that is not a number: {length:?}"));
            if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
                return Err(not_a_number());
            }
            Framing::Length(length.parse().map_err(|_| not_a_number())?)
        }
        (None, None) => Framing::UntilClose,
    };
    Ok(Head {
        status,
        keep,
        framing,
        retry_after: header("retry-after"),
        location: header("location"),
    })
}

/// A proxy the environment names, for `CONNECT`.
#[derive(Debug, Clone, PartialEq)]
struct Proxy {
    host: String,
    port: u16,
    /// `Basic …` from the URL's user and password.
    authorization: Option<String>,
    /// `host:port`, for the log.
    shown: String,
}

/// Where a proxy may be named, in the order they are read.
const PROXY_VARIABLES: [&str; 6] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

impl Proxy {
    /// The proxy for `host` (as a URL writes it) from the variables `var` gives: the first
    /// set to a URL (a bare `host:port` is an http one), unless `NO_PROXY` (or `no_proxy`)
    /// exempts the host. A proxy that is not `http://` is not used (with a warning).
    fn from_env(var: impl Fn(&str) -> Option<String>, host: &str) -> Option<Self> {
        let no_proxy = var("NO_PROXY")
            .or_else(|| var("no_proxy"))
            .unwrap_or_default();
        if no_proxy.split(',').any(|entry| exempts(entry.trim(), host)) {
            return None;
        }
        let (name, url) = PROXY_VARIABLES.iter().find_map(|name| {
            let value = var(name).filter(|v| !v.trim().is_empty())?;
            let value = value.trim();
            let url = match value.contains("://") {
                true => url::Url::parse(value),
                false => url::Url::parse(&format!("http://{value}")),
            };
            match url {
                Ok(url) if url.host_str().is_some() => Some((name, url)),
                _ => {
                    tracing::warn!("{name} is not a proxy URL; it is not used for the frontend");
                    None
                }
            }
        })?;
        if url.scheme() != "http" {
            tracing::warn!(
                "{name} names a {}:// proxy, which the frontend sink does not support (http:// \
                 only): the frontend is reached directly",
                url.scheme()
            );
            return None;
        }
        let proxy_host = match url.host()? {
            url::Host::Ipv6(ip) => ip.to_string(),
            other => other.to_string(),
        };
        let port = url.port().unwrap_or(80);
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let has_credentials = !url.username().is_empty() || url.password().is_some();
        let authorization = has_credentials.then(|| {
            let credentials = format!(
                "{}:{}",
                decode(url.username()),
                decode(url.password().unwrap_or_default())
            );
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        });
        Some(Self {
            shown: format!("{}:{port}", url.host_str()?),
            host: proxy_host,
            port,
            authorization,
        })
    }
}

/// Whether a `NO_PROXY` entry covers `host`, in any case: `*`; a suffix, `.example.com` or
/// `*.example.com` (its subdomains, not `example.com`); a prefix, `10.*` or `192.168.`; or
/// the host itself (an IPv6 address in brackets).
fn exempts(entry: &str, host: &str) -> bool {
    let (entry, host) = (entry.to_ascii_lowercase(), host.to_ascii_lowercase());
    if entry.is_empty() {
        return false;
    }
    if entry == "*" {
        return true;
    }
    if let Some(suffix) = entry.strip_prefix('*') {
        return host.ends_with(suffix);
    }
    if entry.starts_with('.') {
        return host.ends_with(&entry);
    }
    if let Some(prefix) = entry.strip_suffix('*') {
        return host.starts_with(prefix);
    }
    if entry.ends_with('.') {
        return host.starts_with(&entry);
    }
    host == entry
}

/// What a tunnel leads to: the frontend's `host:port`, and the client's `User-Agent`.
struct Tunnel<'a> {
    authority: &'a str,
    user_agent: Option<&'a str>,
}

/// Asks the proxy on `connection` for a tunnel.
fn tunnel(
    connection: &mut Connection,
    proxy: &Proxy,
    to: Tunnel<'_>,
    input: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), HttpError> {
    let authority = to.authority;
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(user_agent) = to.user_agent {
        request.push_str(&format!("User-Agent: {user_agent}\r\n"));
    }
    if let Some(authorization) = &proxy.authorization {
        request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    request.push_str("\r\n");
    let mut incoming = Incoming::answering(connection, request.as_bytes(), input, deadline)?;
    let head = incoming.head()?;
    if !(200..=299).contains(&head.status) {
        return Err(HttpError::Connect(format!(
            "the proxy {} answered HTTP {} to CONNECT {authority}",
            proxy.shown, head.status
        )));
    }
    if !incoming.waiting().is_empty() {
        return Err(HttpError::Connect(format!(
            "the proxy {} sent more than its answer to CONNECT",
            proxy.shown
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A loopback server that runs `serve` on each connection it accepts, in turn, until
    /// `serve` returns false; the thread gives how many connections it accepted.
    fn server(
        mut serve: impl FnMut(TcpStream) -> bool + Send + 'static,
    ) -> (u16, JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let mut accepted = 0;
            for stream in listener.incoming() {
                accepted += 1;
                if !serve(stream.unwrap()) {
                    break;
                }
            }
            accepted
        });
        (port, thread)
    }

    /// Reads one request (its head, then `Content-Length` bytes); empty at the end of the
    /// connection.
    fn request(stream: &mut impl Read) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut byte = [0];
        while !bytes.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap() == 0 {
                return bytes;
            }
            bytes.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |l| l.trim().parse().unwrap());
        let mut body = vec![0; length];
        stream.read_exact(&mut body).unwrap();
        bytes.extend(body);
        bytes
    }

    fn client(url: &str) -> Client {
        let url = url::Url::parse(url).unwrap();
        Client::new(&url, &[("A", "b")], None, |_| None).unwrap()
    }

    fn created(length: usize) -> Vec<u8> {
        format!(
            "HTTP/1.1 201 Created\r\nContent-Length: {length}\r\n\r\n{}",
            "x".repeat(length)
        )
        .into_bytes()
    }

    #[test]
    fn a_request_is_written_whole_and_a_chunked_answer_keeps_the_connection() {
        let (port, server) = server(move |mut stream| {
            let first = request(&mut stream);
            let port = stream.local_addr().unwrap().port();
            assert_eq!(
                String::from_utf8(first).unwrap(),
                format!(
                    "POST /api/x/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nA: b\r\n\
                     Content-Length: 2\r\n\r\n{{}}"
                )
            );
            stream
                .write_all(
                    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nRetry-After: 5\r\n\
                      Location: /there\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n",
                )
                .unwrap();
            assert!(
                !request(&mut stream).is_empty(),
                "the second on the same connection"
            );
            stream.write_all(&created(2)).unwrap();
            false
        });
        let mut client = client(&format!("http://127.0.0.1:{port}/api/x/"));
        let first = client.post(b"{}", TIMEOUT).unwrap();
        assert_eq!(first.status, 201);
        assert_eq!(first.body, b"abcde");
        assert_eq!(first.retry_after.as_deref(), Some("5"));
        assert_eq!(first.location.as_deref(), Some("/there"));
        assert_eq!(client.post(b"{}", TIMEOUT).unwrap().body, b"xx");
        assert_eq!(server.join().unwrap(), 1, "one connection");
    }

    /// A server that answers one request per connection with `answer` and closes it, until
    /// [`finish`] connects and sends nothing.
    fn answering(answer: Vec<u8>) -> (u16, JoinHandle<usize>) {
        server(move |mut stream| {
            if request(&mut stream).is_empty() {
                return false;
            }
            // The client may close before reading it all.
            let _ = stream.write_all(&answer);
            true
        })
    }

    /// Ends an [`answering`] server: how many connections the client made.
    /// Two POSTs `idle` apart, to a server that sends a 408 after its first answer: both
    /// get their 201.
    fn posts_past_a_late_408(client: &mut Client, idle: Duration) {
        assert_eq!(client.post(b"{}", TIMEOUT).unwrap().status, 201);
        std::thread::sleep(idle);
        assert_eq!(
            client.post(b"{}", TIMEOUT).unwrap().status,
            201,
            "the 408 is not taken for the answer"
        );
    }

    fn finish(port: u16, server: JoinHandle<usize>) -> usize {
        TcpStream::connect(("127.0.0.1", port)).unwrap();
        server.join().unwrap() - 1
    }

    #[test]
    fn an_answer_that_ends_with_its_connection_is_read_whole_and_the_next_post_connects_again() {
        let (port, server) =
            answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it".to_vec());
        let mut client = client(&format!("http://127.0.0.1:{port}/"));
        for _ in 0..2 {
            let response = client.post(b"{}", TIMEOUT).unwrap();
            assert_eq!(
                (response.status, &response.body[..]),
                (200, &b"all of it"[..])
            );
        }
        drop(client);
        assert_eq!(finish(port, server), 2, "one per POST");
    }

    #[test]
    fn a_kept_alive_connection_closed_while_idle_is_replaced_and_the_request_sent_on_it_once() {
        let (port, first) = server(|mut stream| {
            assert!(!request(&mut stream).is_empty());
            stream.write_all(&created(0)).unwrap();
            // Closed after one answer, as a server closes an idle connection.
            false
        });
        let mut client = client(&format!("http://127.0.0.1:{port}/"));
        assert_eq!(client.post(b"{}", TIMEOUT).unwrap().status, 201);
        assert_eq!(first.join().unwrap(), 1);
        let (port2, second) = server(|mut stream| {
            let got = request(&mut stream);
            stream.write_all(&created(0)).unwrap();
            assert!(request(&mut stream).is_empty(), "no second copy");
            assert!(!got.is_empty());
            false
        });
        // The same client's host, another port: the replacement goes there.
        client.port = port2;
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(client.post(b"{}", TIMEOUT).unwrap().status, 201);
        drop(client);
        assert_eq!(second.join().unwrap(), 1);
    }

    #[test]
    fn a_new_connection_that_ends_before_an_answer_is_an_error_and_not_sent_again() {
        let (port, server) = server(|mut stream| {
            assert!(!request(&mut stream).is_empty());
            false
        });
        let mut client = client(&format!("http://127.0.0.1:{port}/"));
        let error = client.post(b"{}", TIMEOUT).err().unwrap();
        assert!(
            matches!(&error, HttpError::Failed(why) if why.contains("closed")),
            "{error}"
        );
        assert_eq!(server.join().unwrap(), 1, "one attempt");
    }

    #[test]
    fn an_interim_answer_is_skipped_and_a_body_over_the_limit_costs_the_connection() {
        let long = MAX_BODY + 10;
        let (port, server) = answering(
            format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\n\
                 Content-Length: {long}\r\n\r\n{}",
                "y".repeat(long)
            )
            .into_bytes(),
        );
        let mut client = client(&format!("http://127.0.0.1:{port}/"));
        let response = client.post(b"{}", TIMEOUT).unwrap();
        assert_eq!((response.status, response.body.len()), (400, MAX_BODY));
        assert!(client.connection.is_none(), "not kept");
        drop(client);
        assert_eq!(finish(port, server), 1);
    }

    /// Posts with a 300 ms timeout, which must be what ends it; how long it took.
    fn times_out(client: &mut Client) -> Duration {
        let start = Instant::now();
        let error = client
            .post(b"{}", Duration::from_millis(300))
            .err()
            .unwrap();
        assert!(matches!(error, HttpError::Timeout), "{error}");
        start.elapsed()
    }

    #[test]
    fn a_server_that_does_not_answer_times_out_by_the_deadline() {
        let (port, server) = server(|mut stream| {
            request(&mut stream);
            // Silent until the client gives up.
            assert!(request(&mut stream).is_empty());
            false
        });
        let took = times_out(&mut client(&format!("http://127.0.0.1:{port}/")));
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        server.join().unwrap();
    }

    #[test]
    fn a_proxy_is_taken_from_the_first_variable_set_unless_no_proxy_exempts_the_host() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let proxy = Proxy::from_env(
            env(&[
                ("HTTPS_PROXY", "http://user:p%40ss@127.0.0.1:3128"),
                ("http_proxy", "http://other:1"),
            ]),
            "frontend.example",
        )
        .unwrap();
        assert_eq!(
            (proxy.host.as_str(), proxy.port, proxy.shown.as_str()),
            ("127.0.0.1", 3128, "127.0.0.1:3128")
        );
        assert_eq!(
            proxy.authorization.as_deref(),
            Some("Basic dXNlcjpwQHNz"),
            "user:p@ss"
        );
        let bare = Proxy::from_env(env(&[("https_proxy", "proxy.example")]), "f").unwrap();
        assert_eq!(
            (bare.host.as_str(), bare.port, bare.authorization),
            ("proxy.example", 80, None)
        );
        assert_eq!(
            Proxy::from_env(
                env(&[("ALL_PROXY", "socks5://p:1"), ("HTTP_PROXY", "http://p:2")]),
                "f"
            ),
            None,
            "the first set decides, and a SOCKS proxy is not used"
        );
        let empty = env(&[("HTTPS_PROXY", " "), ("HTTP_PROXY", "http://:pw@p:2")]);
        let password_only = Proxy::from_env(empty, "f").unwrap();
        assert_eq!(
            (password_only.port, password_only.authorization.as_deref()),
            (2, Some("Basic OnB3")),
            "an empty variable is not set; a password alone is sent"
        );
        assert_eq!(Proxy::from_env(env(&[]), "f"), None);
        for (no_proxy, host, exempt) in [
            (".example.com", "a.example.com", true),
            (".example.com", "example.com", false),
            ("192.168.", "192.168.1.7", true),
            ("[fd00::5]", "[fd00::5]", true),
            ("*.example.com", "b.a.example.com", true),
            ("example.com", "a.example.com", false),
            ("Frontend.Example", "frontend.example", true),
            ("10.*", "10.1.2.3", true),
            ("other, *", "anything", true),
            ("", "anything", false),
        ] {
            let vars: &'static [(&str, &str)] =
                Box::leak(Box::new([("HTTP_PROXY", "p:1"), ("no_proxy", no_proxy)]));
            assert_eq!(
                Proxy::from_env(env(vars), host).is_none(),
                exempt,
                "NO_PROXY={no_proxy} for {host}"
            );
        }
    }

    #[test]
    fn a_request_through_a_proxy_goes_through_its_tunnel_and_a_refused_connect_is_named() {
        // The proxy answers CONNECT and then serves the tunnelled request itself.
        let (port, proxy) = server(|mut stream| {
            let connect = String::from_utf8(request(&mut stream)).unwrap();
            if !connect.contains("Proxy-Authorization: Basic dTpw\r\n") {
                stream
                    .write_all(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
                    )
                    .unwrap();
                return true;
            }
            assert!(
                connect.starts_with(
                    "CONNECT frontend.example:8443 HTTP/1.1\r\nHost: frontend.example:8443\r\n\
                     User-Agent: cl/1\r\n"
                ),
                "{connect}"
            );
            stream
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            let tunnelled = String::from_utf8(request(&mut stream)).unwrap();
            assert!(tunnelled.starts_with("POST /cdr/ HTTP/1.1\r\nHost: frontend.example:8443\r\n"));
            stream.write_all(&created(0)).unwrap();
            false
        });
        let url = url::Url::parse("http://frontend.example:8443/cdr/").unwrap();
        let through = |proxy: String| {
            Client::new(&url, &[("User-Agent", "cl/1")], None, move |name| {
                (name == "HTTP_PROXY").then(|| proxy.clone())
            })
            .unwrap()
        };
        let error = through(format!("127.0.0.1:{port}"))
            .post(b"{}", TIMEOUT)
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot connect: the proxy 127.0.0.1:{port} answered HTTP 407 to CONNECT \
                 frontend.example:8443"
            )
        );
        let mut client = through(format!("http://u:p@127.0.0.1:{port}"));
        assert_eq!(client.proxy(), Some(format!("127.0.0.1:{port}").as_str()));
        assert_eq!(client.post(b"{}", TIMEOUT).unwrap().status, 201);
        assert_eq!(proxy.join().unwrap(), 2);
    }

    #[test]
    fn an_idle_connection_holding_a_late_answer_or_idle_too_long_is_not_used_again() {
        let (port, server) = server(|mut stream| {
            if request(&mut stream).is_empty() {
                return false;
            }
            stream.write_all(&created(0)).unwrap();
            // What some servers send before they close an idle connection.
            std::thread::sleep(Duration::from_millis(20));
            let _ = stream.write_all(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n");
            true
        });
        let mut client = client(&format!("http://127.0.0.1:{port}/"));
        client.probe_after = Duration::from_millis(100);
        posts_past_a_late_408(&mut client, Duration::from_millis(200));

        // Idle past the limit: a new connection, with no probe of the old one.
        client.probe_after = Duration::MAX;
        client.max_idle = Duration::from_millis(100);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(client.post(b"{}", TIMEOUT).unwrap().status, 201);
        drop(client);
        assert_eq!(finish(port, server), 3, "one connection per POST");
    }

    /// Posts once to a server that gives `answer`: an error saying `why`.
    fn refused(answer: &[u8], why: &str) {
        let (port, server) = answering(answer.to_vec());
        let mut client = client(&format!("http://127.0.0.1:{port}/"));
        let error = client.post(b"{}", TIMEOUT).err().unwrap();
        assert!(
            matches!(&error, HttpError::Failed(said) if said.contains(why)),
            "{error}"
        );
        drop(client);
        assert_eq!(finish(port, server), 1);
    }

    #[test]
    fn a_chunk_size_past_any_limit_is_an_error_not_a_panic() {
        refused(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n\
              ffffffffffffffff\r\nb",
            "middle of the response",
        );
    }

    /// A client of `https://127.0.0.1:port/` that trusts `roots`.
    fn tls_client(port: u16, roots: rustls::RootCertStore) -> Client {
        let url = url::Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        Client::new(&url, &[], Some(Arc::new(config)), |_| None).unwrap()
    }

    #[test]
    fn a_tls_handshake_that_trickles_is_held_to_the_deadline() {
        // A TLS record header announcing 100 bytes, then a byte every 50 ms.
        let (port, server) = server(|mut stream| {
            let mut hello = [0; 512];
            let _ = stream.read(&mut hello);
            let _ = stream.write_all(&[0x16, 0x03, 0x03, 0x00, 0x64]);
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(50));
                if stream.write_all(&[0]).is_err() {
                    break;
                }
            }
            false
        });
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut client = tls_client(port, roots);
        let took = times_out(&mut client);
        assert!(took < Duration::from_millis(1000), "{took:?}");
        drop(client);
        server.join().unwrap();
    }

    /// A loopback TLS 1.3 server for `connections` connections in turn: on each, it answers
    /// the first request 201, then runs `then` with the connection's number (from 1); and a
    /// client of it that trusts its certificate, probing idle connections after 10 ms.
    fn tls_server(
        connections: usize,
        mut then: impl FnMut(usize, &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>)
            + Send
            + 'static,
    ) -> (Client, u16, JoinHandle<usize>) {
        let tls = calllogger_test_kit::tls::loopback_tls(&[&rustls::version::TLS13]);
        let server_config = tls.server;
        let mut accepted = 0;
        let (port, server) = server(move |stream| {
            accepted += 1;
            if accepted > connections {
                return false;
            }
            // Each record sent at once, not held back for an ack (Nagle).
            stream.set_nodelay(true).unwrap();
            let session = rustls::ServerConnection::new(server_config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(session, stream);
            assert!(!request(&mut tls).is_empty());
            tls.write_all(&created(0)).unwrap();
            tls.flush().unwrap();
            then(accepted, &mut tls);
            true
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(tls.ca).unwrap();
        let mut client = tls_client(port, roots);
        client.probe_after = Duration::from_millis(10);
        (client, port, server)
    }

    #[test]
    fn tls_records_after_an_answer_keep_the_connection_unless_one_is_the_servers_end() {
        let (mut client, port, server) = tls_server(2, |accepted, tls| {
            if accepted == 1 {
                // A key update after the answer: nothing for the client to read.
                std::thread::sleep(Duration::from_millis(20));
                tls.conn.refresh_traffic_keys().unwrap();
                assert!(tls.conn.write_tls(&mut tls.sock).unwrap() > 0);
                assert!(!request(tls).is_empty());
                // The answer and the server's end in one write.
                tls.conn.writer().write_all(&created(0)).unwrap();
                tls.conn.send_close_notify();
                tls.conn.write_tls(&mut tls.sock).unwrap();
            }
        });
        assert_eq!(client.post(b"{}", TIMEOUT).unwrap().status, 201);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(client.post(b"{}", TIMEOUT).unwrap().status, 201);
        assert!(
            client.connection.is_none(),
            "the close_notify ends the connection"
        );
        assert_eq!(client.post(b"{}", TIMEOUT).unwrap().status, 201);
        drop(client);
        assert_eq!(finish(port, server), 2, "the key update cost no connection");
    }

    #[test]
    fn an_idle_tls_connection_with_part_of_a_late_answer_is_not_used_again() {
        let (mut client, port, server) = tls_server(2, |accepted, tls| {
            if accepted == 1 {
                // A late 408 whose record comes in two parts, the probe between them.
                let mut late = Vec::new();
                tls.conn
                    .writer()
                    .write_all(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
                tls.conn.write_tls(&mut late).unwrap();
                tls.sock.write_all(&late[..10]).unwrap();
                std::thread::sleep(Duration::from_millis(300));
                let _ = tls.sock.write_all(&late[10..]);
            }
        });
        posts_past_a_late_408(&mut client, Duration::from_millis(100));
        drop(client);
        assert_eq!(finish(port, server), 2);
    }

    #[test]
    fn record_boundaries_are_followed_across_reads_of_any_size() {
        // A record of 3 bytes, an empty one, then one of 258 bytes.
        let mut stream = vec![23, 3, 3, 0, 3, 1, 2, 3, 21, 3, 3, 0, 0, 23, 3, 3, 1, 2];
        stream.extend([0; 258]);
        let ends = [8, 13, stream.len()];
        for size in [1, 2, 5, 7, 100, stream.len()] {
            let mut records = Records::default();
            let mut read = 0;
            for piece in stream.chunks(size) {
                records.feed(piece);
                read += piece.len();
                assert_eq!(records.whole(), ends.contains(&read), "{size}: {read}");
            }
        }
    }

    #[test]
    fn a_chunk_size_with_a_sign_is_refused() {
        refused(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n+1\r\na\r\n0\r\n\r\n",
            "not hex",
        );
    }
}
