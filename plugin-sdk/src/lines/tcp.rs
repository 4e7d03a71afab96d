//! The TCP transports: connect to the PBX (with a login dialogue), or let the PBX connect.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use calllogger_poll::{AsSource, Interest};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use super::{Found, LineBuffer, Shared, SourceError, Stopper, Transport};
use super::{TcpClientSettings, TcpServerSettings};

/// Turns on TCP keep-alive probes after `idle` of silence, if configured.
fn keepalive(stream: &TcpStream, idle: Option<Duration>) -> io::Result<()> {
    match idle {
        Some(idle) => SockRef::from(stream)
            .set_tcp_keepalive(&TcpKeepalive::new().with_time(idle).with_interval(idle)),
        None => Ok(()),
    }
}

/// Waits for `events` on `stream` until `deadline`: `Ok(None)` when stopped, an error named
/// `what` when the deadline passes.
fn wait(
    stopper: &Stopper,
    stream: &impl AsSource,
    events: Interest,
    deadline: Instant,
    what: &dyn Fn() -> String,
) -> Result<Option<()>, SourceError> {
    match stopper.poll(&[(stream.as_source(), events)], Some(deadline)) {
        Err(e) => Err(SourceError::io(what(), e)),
        Ok(None) => Ok(None),
        Ok(Some(ready)) if !ready[0] => Err(SourceError::io(
            what(),
            io::Error::new(ErrorKind::TimedOut, "timed out"),
        )),
        Ok(Some(_)) => Ok(Some(())),
    }
}

/// Whether a non-blocking `connect` failed only because it goes on in the background.
#[cfg(unix)]
fn in_progress(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32)
}

/// Windows says `WSAEWOULDBLOCK` (`WouldBlock`) where Unix says `EINPROGRESS`.
#[cfg(not(unix))]
fn in_progress(_: &io::Error) -> bool {
    false
}

/// Connects to `addr` without blocking past `deadline` or a stop.
fn connect_one(
    addr: SocketAddr,
    deadline: Instant,
    stopper: &Stopper,
) -> Result<Option<TcpStream>, SourceError> {
    let failed = |e| SourceError::io(format!("cannot connect to {addr}"), e);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(failed)?;
    socket.set_nonblocking(true).map_err(failed)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if in_progress(&e) || e.kind() == ErrorKind::WouldBlock => {
            let what = || format!("cannot connect to {addr}");
            if wait(stopper, &socket, Interest::Write, deadline, &what)?.is_none() {
                return Ok(None);
            }
            if let Some(e) = socket.take_error().map_err(failed)? {
                return Err(failed(e));
            }
        }
        Err(e) => return Err(failed(e)),
    }
    Ok(Some(socket.into()))
}

/// Writes all of `bytes` to a non-blocking stream.
fn send(
    stream: &mut TcpStream,
    bytes: &[u8],
    deadline: Instant,
    stopper: &Stopper,
    what: &dyn Fn() -> String,
) -> Result<Option<()>, SourceError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match stream.write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if wait(stopper, stream, Interest::Write, deadline, what)?.is_none() {
                    return Ok(None);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(SourceError::io(what(), e)),
        }
    }
    Ok(Some(()))
}

/// What one read from a non-blocking stream gave.
enum Read1 {
    Data,
    Nothing,
    Ended(io::Error),
}

/// Reads once into `buffer`.
fn read_once(stream: &mut TcpStream, buffer: &mut LineBuffer) -> Read1 {
    match stream.read(buffer.space()) {
        Ok(0) => Read1::Ended(io::Error::new(
            ErrorKind::UnexpectedEof,
            "closed by the other end",
        )),
        Ok(n) => {
            buffer.filled(n);
            Read1::Data
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            Read1::Nothing
        }
        Err(e) => Read1::Ended(e),
    }
}

/// A connection to the PBX, made again with the backoff whenever it is lost.
pub(crate) struct Client {
    settings: TcpClientSettings,
    stream: Option<TcpStream>,
    buffer: LineBuffer,
    last_data: Instant,
}

impl Client {
    pub(crate) fn new(settings: TcpClientSettings, shared: &Shared) -> Self {
        Self {
            settings,
            stream: None,
            buffer: shared.buffer(),
            last_data: Instant::now(),
        }
    }

    /// Connects and logs in; `Ok(None)` when stopped meanwhile.
    fn connect(&mut self, shared: &mut Shared) -> Result<Option<TcpStream>, SourceError> {
        let target = &self.settings.connect;
        let addrs = target
            .to_socket_addrs()
            .map_err(|e| SourceError::io(format!("cannot resolve {target}"), e))?;
        let mut error = SourceError::Settings(format!("{target} resolves to no address"));
        for addr in addrs {
            let deadline = Instant::now() + self.settings.connect_timeout;
            match connect_one(addr, deadline, &shared.stopper) {
                Ok(None) => return Ok(None),
                Ok(Some(mut stream)) => {
                    keepalive(&stream, self.settings.keepalive).map_err(|e| {
                        SourceError::io(format!("cannot set keepalive on {addr}"), e)
                    })?;
                    self.buffer = shared.buffer();
                    if self.login(&mut stream, addr, shared)?.is_none() {
                        return Ok(None);
                    }
                    return Ok(Some(stream));
                }
                Err(e) => error = e,
            }
        }
        Err(error)
    }

    /// Runs the login dialogue; what the PBX sent after the last expected text stays in the
    /// line buffer.
    fn login(
        &mut self,
        stream: &mut TcpStream,
        addr: SocketAddr,
        shared: &Shared,
    ) -> Result<Option<()>, SourceError> {
        let deadline = Instant::now() + self.settings.login_timeout;
        let mut seen: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        for (i, step) in self.settings.login.iter().enumerate() {
            let what = || format!("login to {addr} failed at step {}", i + 1);
            if let Some(expect) = &step.expect {
                let expect = expect.as_bytes();
                loop {
                    if let Some(at) = seen.windows(expect.len()).position(|w| w == expect) {
                        seen.drain(..at + expect.len());
                        break;
                    }
                    // Keep a window that can still hold the expected text.
                    if seen.len() > chunk.len() {
                        seen.drain(..seen.len() - expect.len());
                    }
                    let what = || {
                        format!(
                            "login to {addr} failed at step {}: no {:?} within {} s",
                            i + 1,
                            String::from_utf8_lossy(expect),
                            self.settings.login_timeout.as_secs_f64()
                        )
                    };
                    if wait(&shared.stopper, stream, Interest::Read, deadline, &what)?.is_none() {
                        return Ok(None);
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) => {
                            return Err(SourceError::io(
                                what(),
                                io::Error::new(ErrorKind::UnexpectedEof, "closed by the PBX"),
                            ))
                        }
                        Ok(n) => seen.extend_from_slice(&chunk[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock | ErrorKind::Interrupted
                            ) => {}
                        Err(e) => return Err(SourceError::io(what(), e)),
                    }
                }
            }
            if let Some(text) = &step.send {
                let sent = send(
                    stream,
                    text.expose().as_bytes(),
                    deadline,
                    &shared.stopper,
                    &what,
                )?;
                if sent.is_none() {
                    return Ok(None);
                }
            }
        }
        self.buffer
            .extend(&seen[seen.len().saturating_sub(chunk.len())..]);
        Ok(Some(()))
    }
}

impl Transport for Client {
    fn next(&mut self, shared: &mut Shared) -> Result<Option<Found>, SourceError> {
        loop {
            if let Some(range) = shared.scan(&mut self.buffer) {
                return Ok(Some(Found { conn: 0, range }));
            }
            if shared.stopper.is_stopped() {
                return Ok(None);
            }
            let Some(stream) = &mut self.stream else {
                match self.connect(shared) {
                    Ok(None) => return Ok(None),
                    Ok(Some(stream)) => {
                        shared.opened(&format!("connected to {}", self.settings.connect));
                        self.stream = Some(stream);
                        self.last_data = Instant::now();
                    }
                    Err(e) if shared.retry_after(&e) => {}
                    Err(_) => return Ok(None),
                }
                continue;
            };
            let deadline = self.settings.idle_timeout.map(|idle| self.last_data + idle);
            let ready = shared
                .stopper
                .poll(&[(stream.as_source(), Interest::Read)], deadline)
                .map_err(|e| SourceError::io("cannot wait for the connection", e))?;
            let Some(ready) = ready else { return Ok(None) };
            let lost = if !ready[0] {
                io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "no data for {} s (idle_timeout)",
                        self.settings.idle_timeout.unwrap_or_default().as_secs_f64()
                    ),
                )
            } else {
                match read_once(stream, &mut self.buffer) {
                    Read1::Data => {
                        self.last_data = Instant::now();
                        shared.retry.reset();
                        continue;
                    }
                    Read1::Nothing => continue,
                    Read1::Ended(e) => e,
                }
            };
            self.stream = None;
            shared.unterminated(&self.buffer);
            let error = SourceError::io(format!("lost {}", self.settings.connect), lost);
            if !shared.retry_after(&error) {
                return Ok(None);
            }
        }
    }

    fn line(&self, found: &Found) -> &[u8] {
        self.buffer.get(found.range.clone())
    }
}

/// A connection from the PBX.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    buffer: LineBuffer,
    last_data: Instant,
}

/// A listening socket and the connections the PBX made to it; lines are taken from each in
/// turn.
pub(crate) struct Server {
    settings: TcpServerSettings,
    listener: Option<TcpListener>,
    conns: Vec<Conn>,
    next: usize,
}

impl Server {
    pub(crate) fn new(settings: TcpServerSettings) -> Self {
        Self {
            settings,
            listener: None,
            conns: Vec::new(),
            next: 0,
        }
    }

    fn bind(&self) -> io::Result<TcpListener> {
        let listener = TcpListener::bind(&self.settings.bind)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// Takes every pending connection, closing the longest silent ones beyond the limit.
    fn accept(&mut self, shared: &mut Shared) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let error =
                        SourceError::io(format!("cannot accept on {}", self.settings.bind), e);
                    shared.retry_after(&error);
                    return;
                }
            };
            if let Err(e) = stream
                .set_nonblocking(true)
                .and_then(|()| keepalive(&stream, self.settings.keepalive))
            {
                shared.closed(&format!("connection from {peer} refused: {e}"));
                continue;
            }
            shared.opened(&format!("connection from {peer}"));
            self.conns.push(Conn {
                stream,
                peer,
                buffer: shared.buffer(),
                last_data: Instant::now(),
            });
            if self.conns.len() > self.settings.max_connections {
                let oldest = (0..self.conns.len())
                    .min_by_key(|i| self.conns[*i].last_data)
                    .unwrap_or_default();
                close(&mut self.conns, oldest, "more than max_connections", shared);
            }
        }
    }
}

/// Drops connection `i`, reporting why.
fn close(conns: &mut Vec<Conn>, i: usize, why: &str, shared: &mut Shared) {
    let conn = conns.remove(i);
    shared.unterminated(&conn.buffer);
    shared.closed(&format!("connection from {} closed: {why}", conn.peer));
}

impl Transport for Server {
    fn next(&mut self, shared: &mut Shared) -> Result<Option<Found>, SourceError> {
        loop {
            let n = self.conns.len();
            for k in 0..n {
                let i = (self.next + k) % n;
                if let Some(range) = shared.scan(&mut self.conns[i].buffer) {
                    self.next = i + 1;
                    return Ok(Some(Found { conn: i, range }));
                }
            }
            if shared.stopper.is_stopped() {
                return Ok(None);
            }
            let Some(listener) = &self.listener else {
                match self.bind() {
                    Ok(listener) => {
                        shared.opened(&format!("listening on {}", self.settings.bind));
                        self.listener = Some(listener);
                    }
                    Err(e) => {
                        let error =
                            SourceError::io(format!("cannot listen on {}", self.settings.bind), e);
                        if !shared.retry_after(&error) {
                            return Ok(None);
                        }
                    }
                }
                continue;
            };
            let mut fds = vec![(listener.as_source(), Interest::Read)];
            fds.extend(
                self.conns
                    .iter()
                    .map(|c| (c.stream.as_source(), Interest::Read)),
            );
            let deadline = self
                .settings
                .idle_timeout
                .and_then(|idle| self.conns.iter().map(|c| c.last_data + idle).min());
            let ready = shared
                .stopper
                .poll(&fds, deadline)
                .map_err(|e| SourceError::io("cannot wait for connections", e))?;
            drop(fds);
            let Some(ready) = ready else { return Ok(None) };
            for i in (0..n).rev() {
                if !ready[1 + i] {
                    continue;
                }
                let conn = &mut self.conns[i];
                match read_once(&mut conn.stream, &mut conn.buffer) {
                    Read1::Data => {
                        conn.last_data = Instant::now();
                        shared.retry.reset();
                    }
                    Read1::Nothing => {}
                    Read1::Ended(e) => close(&mut self.conns, i, &e.to_string(), shared),
                }
            }
            if let Some(idle) = self.settings.idle_timeout {
                for i in (0..self.conns.len()).rev() {
                    if self.conns[i].last_data.elapsed() >= idle {
                        let why = format!("no data for {} s (idle_timeout)", idle.as_secs_f64());
                        close(&mut self.conns, i, &why, shared);
                    }
                }
            }
            if ready[0] {
                self.accept(shared);
            }
        }
    }

    fn line(&self, found: &Found) -> &[u8] {
        self.conns[found.conn].buffer.get(found.range.clone())
    }
}
