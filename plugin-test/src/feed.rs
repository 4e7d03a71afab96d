//! Byte sources for the SDK's line bases: a pseudo-terminal for a serial section, TCP peers
//! for `source: tcp-client` and `source: tcp-server`, a file for `source: file`.
//!
//! Each has `settings()`, the section keys that point the plugin at it; append the plugin's
//! own keys (`format!("{}\ntimezone: UTC", pty.settings())`).

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};

/// How long the peers wait for the plugin to connect or listen.
const CONNECT_WAIT: Duration = Duration::from_secs(20);

/// A pseudo-terminal: the plugin opens its slave side as a serial port (a section without
/// `source`, the 0.2 serial keys), the test writes to the master side.
pub struct Pty {
    master: TTYPort,
    path: String,
}

impl Pty {
    /// A new pair; the slave is closed so the plugin can open it exclusively.
    pub fn new() -> io::Result<Self> {
        let (master, slave) = TTYPort::pair()?;
        let path = slave
            .name()
            .ok_or_else(|| io::Error::other("the pseudo-terminal has no path"))?;
        drop(slave);
        Ok(Self { master, path })
    }

    /// The slave's path, e.g. `/dev/pts/7`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `port: <path>`.
    pub fn settings(&self) -> String {
        format!("port: {}", self.path)
    }

    /// Writes `bytes` to the port (what the PBX prints). Wait until the plugin has opened it
    /// (the serial base logs `reading <path>`) or the bytes may be lost.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.master.write_all(bytes)?;
        self.master.flush()
    }
}

/// A PBX that the plugin connects to (`source: tcp-client`), listening on 127.0.0.1.
pub struct PbxServer {
    listener: TcpListener,
    connection: Option<TcpStream>,
}

impl PbxServer {
    /// Listens on a free port of 127.0.0.1.
    pub fn listen() -> io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind("127.0.0.1:0")?,
            connection: None,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// `source: tcp-client` and `connect: 127.0.0.1:<port>`.
    pub fn settings(&self) -> String {
        format!("source: tcp-client\nconnect: {}", self.addr())
    }

    /// The plugin's connection: waits up to 20 s for the next one if there is none.
    pub fn accept(&mut self) -> io::Result<&mut TcpStream> {
        if self.connection.is_none() {
            self.listener.set_nonblocking(true)?;
            let until = Instant::now() + CONNECT_WAIT;
            let stream = loop {
                match self.listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the plugin did not connect to {} within {CONNECT_WAIT:?}",
                                self.addr()
                            ),
                        ))
                    }
                    Err(e) => return Err(e),
                }
            };
            stream.set_nonblocking(false)?;
            self.connection = Some(stream);
        }
        Ok(self.connection.as_mut().expect("just set"))
    }

    /// Sends `bytes` on the plugin's connection (accepting it first).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.accept()?.write_all(bytes)
    }

    /// Reads what the plugin sends until it contains `text` (a login dialogue), up to 20 s.
    /// Returns everything read.
    pub fn expect(&mut self, text: &str) -> io::Result<String> {
        let stream = self.accept()?;
        stream.set_read_timeout(Some(CONNECT_WAIT))?;
        let mut seen = Vec::new();
        let mut buf = [0; 1024];
        while !String::from_utf8_lossy(&seen).contains(text) {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the plugin closed the connection before sending {text:?}"),
                ));
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&seen).into_owned())
    }

    /// Closes the plugin's connection (a PBX restart); the next `send` waits for it to
    /// reconnect.
    pub fn disconnect(&mut self) {
        self.connection = None;
    }
}

/// A PBX that connects to the plugin (`source: tcp-server`) from 127.0.0.1.
pub struct PbxClient {
    bind: SocketAddr,
    connection: Option<TcpStream>,
}

impl PbxClient {
    /// Picks a free port of 127.0.0.1 for the plugin to listen on.
    pub fn new() -> io::Result<Self> {
        let bind = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        Ok(Self {
            bind,
            connection: None,
        })
    }

    /// The address the plugin listens on.
    pub fn addr(&self) -> SocketAddr {
        self.bind
    }

    /// `source: tcp-server` and `bind: 127.0.0.1:<port>`.
    pub fn settings(&self) -> String {
        format!("source: tcp-server\nbind: {}", self.bind)
    }

    /// Connects to the plugin, retrying for up to 20 s while it does not listen yet.
    pub fn connect(&mut self) -> io::Result<&mut TcpStream> {
        if self.connection.is_none() {
            let until = Instant::now() + CONNECT_WAIT;
            let stream = loop {
                match TcpStream::connect(self.bind) {
                    Ok(stream) => break stream,
                    Err(_) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => return Err(e),
                }
            };
            self.connection = Some(stream);
        }
        Ok(self.connection.as_mut().expect("just set"))
    }

    /// Sends `bytes` (connecting first).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.connect()?.write_all(bytes)
    }

    /// Closes the connection; the next `send` opens a new one.
    pub fn disconnect(&mut self) {
        self.connection = None;
    }
}

/// A file the PBX appends to (`source: file`), in a temporary folder of its own.
pub struct PbxFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl PbxFile {
    /// `cdr.csv` in a fresh folder; not created until the first `append`.
    pub fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("calllogger-test-pbx-")
            .tempdir()?;
        let path = dir.path().join("cdr.csv");
        Ok(Self { dir, path })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `source: file` and `path: <path>`.
    pub fn settings(&self) -> String {
        format!("source: file\npath: {}", self.path.display())
    }

    /// Opens the file for appending, writes `bytes`, closes it (as Asterisk's `cdr_csv` does
    /// for every record).
    pub fn append(&self, bytes: &[u8]) -> io::Result<()> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(bytes)
    }

    /// Renames the file to `cdr.csv.1` (logrotate's `create`); the next `append` starts a
    /// new one.
    pub fn rotate(&self) -> io::Result<()> {
        std::fs::rename(&self.path, self.dir.path().join("cdr.csv.1"))
    }
}
