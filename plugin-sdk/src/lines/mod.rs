//! Line sources (feature `lines`; serial ports with feature `serial`): the transports of a
//! PBX that sends one record per line, behind one reader.
//!
//! A [`LineSource`] reads lines from a serial port, a TCP connection to the PBX, TCP
//! connections from the PBX, or a file the PBX appends to — chosen by the `source` key of
//! the plugin's section ([`LineSettings`]). Whatever the transport, it
//! - splits the bytes into lines ended by CR, LF or CR LF ([`LineEnd`]), skipping blank lines;
//! - keeps at most `max_line_length` bytes of a line: a longer one is counted, reported
//!   ([`Event::Overlong`]) and skipped, never buffered without bound;
//! - reopens or reconnects after a failure, waiting what the caller's [`Retry`] says (the
//!   host's decayed backoff), reset by data read;
//! - sleeps in `poll(2)` (`WSAPoll` on Windows) with no timer while idle (a Windows serial
//!   port or file is looked at every 100 or 250 ms), and returns `Ok(None)` as soon as its
//!   [`Stopper`] is stopped (from the plugin's stop hook), even in the middle of a wait;
//! - treats a line as consumed only when the caller is done with it: the next
//!   [`next_line`](LineSource::next_line) (or [`commit`](LineSource::commit)) consumes it,
//!   [`unread`](LineSource::unread) gives it again. A file source remembers the position
//!   of the last consumed line in the caller's state folder, so a restart neither loses nor
//!   repeats lines.
//!
//! ```no_run
//! use calllogger_plugin_sdk::lines::{LineSettings, LineSource, Stopper};
//! use std::time::Duration;
//!
//! # fn store(_: &[u8]) -> Result<(), Box<dyn std::error::Error>> { Ok(()) }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let settings: LineSettings = calllogger_plugin_sdk::parse_settings(
//!     "AvayaIpo",
//!     "source: tcp-server\nbind: 0.0.0.0:1150",
//! )?;
//! let stopper = Stopper::new()?; // `stopper.stop()` from the stop hook ends the loop
//! let mut source = LineSource::open(&settings, &stopper, None, || Duration::from_secs(10))?;
//! while let Some(line) = source.next_line()? {
//!     store(line)?; // an error here leaves the line unconsumed
//! }
//! # Ok(()) }
//! ```
//!
//! # Line plugins
//!
//! Most plugins need no loop of their own: a [`LinePlugin`] is a parser, and the base reads
//! the source its section names, pushes what `parse` returns and consumes a line only once
//! its records are stored. `parse` keeps state in `&mut self` when a call spans lines, and
//! overrides `decode` when the text is not ASCII:
//!
//! ```
//! use std::borrow::Cow;
//! use calllogger_plugin_sdk::prelude::*;
//!
//! /// Avaya IP Office SMDR: CSV segments; the call is complete at Continuation = 0.
//! pub struct AvayaIpo {
//!     segments: Vec<Record>,
//! }
//!
//! impl LinePlugin for AvayaIpo {
//!     type Settings = NoSettings; // the section: `source: tcp-server`, `bind: 0.0.0.0:1150`
//!     const DESCRIPTION: &'static str = "Avaya IP Office SMDR over TCP";
//!
//!     fn new(_: NoSettings) -> Result<Self, Error> {
//!         Ok(Self { segments: Vec::new() })
//!     }
//!
//!     fn decode<'a>(&mut self, bytes: &'a [u8]) -> Result<Cow<'a, str>, Error> {
//!         let bytes = &bytes[bytes.iter().take_while(|&&b| b == 0).count()..]; // NUL prefix
//!         Ok(match std::str::from_utf8(bytes) {
//!             Ok(text) => Cow::Borrowed(text),
//!             Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()), // Latin-1
//!         })
//!     }
//!
//!     fn parse(&mut self, text: &str, _: &Context) -> Result<Records, Error> {
//!         let fields: Vec<&str> = text.split(',').collect();
//!         if fields.len() < 17 {
//!             return Err(format!("{} fields, expected at least 17", fields.len()).into());
//!         }
//!         let call_type = if fields[4] == "I" { CallType::RECEIVED } else { CallType::OUTGOING };
//!         self.segments.push(Record::new(call_type).number(fields[3]).raw(text));
//!         Ok(match fields[10] {
//!             "0" => std::mem::take(&mut self.segments).into(), // the whole call at once
//!             _ => Records::none(),                             // more segments follow
//!         })
//!     }
//! }
//!
//! calllogger_plugin_sdk::export_plugins!(lines AvayaIpo);
//! # fn main() {}
//! ```
//!
//! How the other PBXs of the table below come out (sketches; `tests/data/hipath` and the
//! `SiemensHipathSerial` plugin are the full example):
//! - **Avaya IP Office** (above): `source: tcp-server` when the PBX connects to us, or
//!   `source: tcp-client` in its "Listen" mode; the settings add `timezone`. `parse` splits
//!   on every comma (fields are never quoted), reads Call Start as local time in the zone,
//!   maps Party1/Party2 devices (`E…` extension, `T9000+n` line), skips a Delta Server
//!   header row with `Records::none()`, and returns a call's segments together.
//! - **Panasonic KX-TDA/TDE/NS**: `source: tcp-client`, `connect: pbx:2300` and the `login:`
//!   steps of the table, or the serial keys (7E2, line end CR). `parse` slices Pattern A's
//!   fixed columns; page headers, dashed separators and events (`LOG IN`, …) give
//!   `Records::none()`, so only malformed lines count as rejected.
//! - **Mitel MiVoice Business**: `source: tcp-client`, `connect: mivb:1752`; settings add the
//!   layout (`standard-90` or `extended-observed`) and `timezone`. The record has month/day
//!   but no year: `parse` takes the year from the clock of its context
//!   (`jiff::Zoned::now().with_time_zone(tz.clone()).date()`; a date after today is last year's),
//!   through a `today` function held in `self` so a test pins it.
//! - **Asterisk `Master.csv`**: `source: file`, `path: /var/log/asterisk/cdr-csv/Master.csv`
//!   (`start_at: end` to skip the history), `line_end: lf`; settings add `timezone` and the
//!   trunk channel prefixes (`trunks: [SIP/sip0-, PJSIP/trunk-]`). `decode` is UTF-8; `parse`
//!   splits quoted CSV (`"` doubled inside, commas inside quotes, an unquoted empty field for
//!   an unset time) and picks the direction from which channel is a trunk. The file source
//!   follows logrotate and keeps its position, so a restart repeats nothing.
//! - **Unify OpenScape Business**: the HiPath keys (serial) or `source: tcp-client`/
//!   `tcp-server`; `parse` splits on `|` (each field ends with one), maps the fields as
//!   HiPath does, and skips the column-name line `Datum|Uhrzeit|…` with `Records::none()`.
//!
//! # The PBXs and their settings
//!
//! | PBX | transport | section keys |
//! |---|---|---|
//! | Siemens HiPath / Hicom | serial, CR LF | `port: /dev/ttyS0`, `rate: 9600` (0.2 keys, no `source`) |
//! | Avaya IP Office SMDR (PBX connects to us) | TCP server | `source: tcp-server`, `bind: 0.0.0.0:1150`, `idle_timeout: 3600` |
//! | Avaya IP Office, "Listen" mode (0.0.0.0 set on the PBX) | TCP client | `source: tcp-client`, `connect: ipo:1150` |
//! | Panasonic KX-TDA/TDE/NS over LAN | TCP client + login | `source: tcp-client`, `connect: pbx:2300`, `login: [{send: "SMDR\r\n"}, {expect: "Enter Password:", send: "PCCSMDR\r\n"}]` |
//! | Panasonic over RS-232 (new line CR) | serial | `port: /dev/ttyUSB0`, `data_bits: 7`, `parity: even`, `stop_bits: 2` |
//! | Mitel MiVoice Business / 3300 | TCP client | `source: tcp-client`, `connect: mivb:1752`, `keepalive: 60` |
//! | Asterisk / FreePBX `Master.csv` | file tail | `source: file`, `path: /var/log/asterisk/cdr-csv/Master.csv` |
//! | Unify OpenScape Business (bar-ended fields, CR LF) | serial or TCP | as HiPath, or `source: tcp-client`/`tcp-server` as installed |
//!
//! The line end is `auto` for all of them (HiPath/Avaya/OpenScape CR LF, Panasonic CR or
//! CR LF, Mitel assumed CR LF, Asterisk LF). A Panasonic that echoes the password sends it
//! back as a line: the plugin's validation rejects it like any header.
//!
//! # Files and rotation
//!
//! A file source waits for changes with inotify on the file's folder (on Windows it looks
//! every 250 ms; its position names the volume serial number and file index there, as
//! `device inode` on Unix). When the file is
//! renamed away (logrotate `create`) it reads the old file to its end before it follows the
//! new one; when the file shrinks (logrotate `copytruncate`) it starts again at byte 0; a
//! file that does not exist yet is waited for. Its position (device, inode, offset) is kept
//! in `tail-<path>.pos` in the state folder; at start, a remembered file that was rotated
//! away meanwhile is found by its inode in the same folder and finished first. Writers must
//! reopen the file for each record or be told to reopen at rotation (Asterisk's `cdr_csv`
//! opens it for every record): lines written to a renamed file after the new one appeared
//! are not read. With `copytruncate`, lines written between logrotate's copy and its
//! truncation are in the copy only, as for every reader of the file. The position is
//! written (write + rename, no fsync) each time a line is consumed: a crash of the process
//! repeats nothing, a power cut may repeat the lines of the last moments.

mod buffer;
mod plugin;
#[cfg(feature = "serial")]
pub(crate) mod serial;
mod settings;
mod stop;
mod tail;
mod tcp;

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

pub use buffer::LineEnd;
pub(crate) use buffer::{LineBuffer, Next};
#[doc(hidden)]
pub use plugin::Lines;
pub use plugin::{decode_ascii, LinePlugin, Records};
pub use settings::{
    FileSettings, FlowControl, LineSettings, LoginStep, Parity, PortSettings, Source, StartAt,
    TcpClientSettings, TcpServerSettings, MAX_LINE_LENGTH,
};
pub use stop::Stopper;

/// Why a source could not read; a [`LineSource`] retries these itself and returns only what
/// it cannot retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Settings that cannot work, e.g. a file source without a state folder.
    #[error("{0}")]
    Settings(String),
    /// An I/O failure, with what was being done.
    #[error("{what}: {cause}")]
    Io {
        /// What failed, e.g. `cannot connect to pbx:2300`.
        what: String,
        /// The operating system's error.
        cause: io::Error,
    },
}

impl SourceError {
    pub(crate) fn io(what: impl Into<String>, cause: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            cause,
        }
    }
}

/// The waits between a source's attempts: the host's decayed backoff, or any closure
/// returning a [`Duration`].
pub trait Retry {
    /// The wait before the next attempt; lengthens the one after.
    fn next_wait(&mut self) -> Duration;
    /// Back to the shortest wait: data arrived.
    fn reset(&mut self);
}

impl<F: FnMut() -> Duration> Retry for F {
    fn next_wait(&mut self) -> Duration {
        self()
    }
    fn reset(&mut self) {}
}

/// What a source reports while it reads (log these; see [`LineSource::on_event`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Reading from this: a port, a connection, a file (e.g. `connected to pbx:2300`).
    Opened(&'a str),
    /// An attempt failed or the source was lost; the next comes after `retry_in`.
    Retrying {
        /// What went wrong.
        error: &'a SourceError,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// One of several inputs ended (a connection from the PBX, a rotated file), and why.
    Closed(&'a str),
    /// A line longer than `max` bytes was skipped; `start` is its first bytes.
    Overlong {
        /// `max_line_length`.
        max: usize,
        /// The line's first bytes (at most 80).
        start: &'a [u8],
    },
    /// Bytes without a line end were dropped when their input ended.
    Unterminated(&'a [u8]),
}

impl fmt::Display for Event<'_> {
    /// One line for the log, e.g. `lost pbx:2300: closed by the other end; retrying in 10.0 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Opened(what) => write!(f, "reading {what}"),
            Event::Retrying { error, retry_in } => {
                write!(f, "{error}; retrying in {:.1} s", retry_in.as_secs_f64())
            }
            Event::Closed(what) => f.write_str(what),
            Event::Overlong { max, start } => write!(
                f,
                "line longer than {max} bytes skipped (max_line_length), starting {}",
                start.escape_ascii()
            ),
            Event::Unterminated(start) => write!(
                f,
                "input ended inside a line, dropped: {}",
                start.escape_ascii()
            ),
        }
    }
}

/// What a source has read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceCounts {
    /// Lines returned (blank lines not counted; a line given again by `unread` counts once).
    pub lines: u64,
    /// Lines longer than `max_line_length`, skipped.
    pub overlong: u64,
    /// Unterminated ends of inputs, dropped.
    pub unterminated: u64,
}

/// A line reader over the transport the settings choose. See the [module docs](self).
pub struct LineSource {
    transport: Box<dyn Transport>,
    shared: Shared,
    last: Option<Found>,
    again: bool,
}

impl fmt::Debug for LineSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineSource")
            .field("counts", &self.shared.counts)
            .finish_non_exhaustive()
    }
}

impl LineSource {
    /// A source for these settings. Nothing is opened yet: the first
    /// [`next_line`](LineSource::next_line) opens, and every failure after that is retried.
    /// A file source needs `state_dir`, the folder where it remembers its position.
    pub fn open(
        settings: &LineSettings,
        stopper: &Stopper,
        state_dir: Option<&Path>,
        retry: impl Retry + Send + 'static,
    ) -> Result<Self, SourceError> {
        let shared = Shared {
            stopper: stopper.clone(),
            retry: Box::new(retry),
            events: Box::new(|_| {}),
            counts: SourceCounts::default(),
            max: settings.max_line_length,
            line_end: settings.line_end,
        };
        let transport: Box<dyn Transport> = match &settings.source {
            #[cfg(feature = "serial")]
            Source::Serial(port) => {
                port.check().map_err(SourceError::Settings)?;
                Box::new(serial::Serial::new(port.clone(), &shared))
            }
            #[cfg(not(feature = "serial"))]
            Source::Serial(_) => {
                return Err(SourceError::Settings(
                    "serial ports need the SDK's `serial` feature".into(),
                ))
            }
            Source::TcpClient(client) => Box::new(tcp::Client::new(client.clone(), &shared)),
            Source::TcpServer(server) => Box::new(tcp::Server::new(server.clone())),
            Source::File(file) => {
                let dir = state_dir.ok_or_else(|| {
                    SourceError::Settings(format!(
                        "the file source for {} needs a state folder",
                        file.path.display()
                    ))
                })?;
                Box::new(tail::Tail::new(file.clone(), dir)?)
            }
        };
        Ok(Self {
            transport,
            shared,
            last: None,
            again: false,
        })
    }

    /// Sends the source's [`Event`]s to `report` (by default they are dropped).
    pub fn on_event(mut self, report: impl FnMut(Event<'_>) + Send + 'static) -> Self {
        self.shared.events = Box::new(report);
        self
    }

    /// The next non-blank line, without its line end, waiting as long as it takes. Once the
    /// stopper is stopped it gives only the lines already complete in memory (no more I/O,
    /// no waiting), then `None`. Consumes the line returned before, unless it was
    /// [`unread`](LineSource::unread). Errors only when the source cannot go on (a state
    /// file that cannot be written, say): every transport failure is retried.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, SourceError> {
        if self.again && self.shared.stopper.is_stopped() {
            // A line given back is not given again after a stop: it stays unconsumed.
            return Ok(None);
        }
        if !std::mem::take(&mut self.again) {
            self.commit()?;
            self.last = self.transport.next(&mut self.shared)?;
        }
        Ok(self.last.as_ref().map(|found| self.transport.line(found)))
    }

    /// Gives the last line again on the next [`next_line`](LineSource::next_line): its
    /// record could not be stored.
    pub fn unread(&mut self) {
        self.again = self.last.is_some();
    }

    /// Consumes the last line now (a file source writes its position), rather than on the
    /// next `next_line`.
    pub fn commit(&mut self) -> Result<(), SourceError> {
        self.again = false;
        if self.last.take().is_some() {
            self.transport.commit()?;
        }
        Ok(())
    }

    /// What has been read so far.
    pub fn counts(&self) -> SourceCounts {
        self.shared.counts
    }
}

/// A line found by a transport: which of its inputs, and where in that input's buffer.
#[derive(Debug)]
pub(crate) struct Found {
    conn: usize,
    range: Range<usize>,
}

/// One kind of input.
trait Transport: Send {
    /// The next line, retrying failures; `None` when stopped.
    fn next(&mut self, shared: &mut Shared) -> Result<Option<Found>, SourceError>;
    /// The bytes of a line `next` returned, valid until `next` runs again.
    fn line(&self, found: &Found) -> &[u8];
    /// The caller is done with the last line `next` returned.
    fn commit(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
}

/// What every transport of a source shares: the stop signal, waits, reports and counts.
pub(crate) struct Shared {
    stopper: Stopper,
    retry: Box<dyn Retry + Send>,
    events: Box<dyn FnMut(Event<'_>) + Send>,
    counts: SourceCounts,
    max: usize,
    line_end: LineEnd,
}

impl Shared {
    /// An empty line buffer with the source's limits.
    fn buffer(&self) -> LineBuffer {
        LineBuffer::new(self.max, self.line_end)
    }

    /// The next complete line in `buffer`, counting and reporting what it skips.
    fn scan(&mut self, buffer: &mut LineBuffer) -> Option<Range<usize>> {
        loop {
            match buffer.next() {
                Next::Line(range) => {
                    self.counts.lines += 1;
                    return Some(range);
                }
                Next::Overlong(start) => {
                    self.counts.overlong += 1;
                    (self.events)(Event::Overlong {
                        max: self.max,
                        start: buffer.get(start),
                    });
                }
                Next::More => return None,
            }
        }
    }

    /// Reports an input ended with bytes left after its last line end, if any.
    fn unterminated(&mut self, buffer: &LineBuffer) {
        let rest = buffer.remainder();
        if !rest.is_empty() {
            self.counts.unterminated += 1;
            (self.events)(Event::Unterminated(&rest[..rest.len().min(buffer::SHOWN)]));
        }
    }

    fn opened(&mut self, what: &str) {
        (self.events)(Event::Opened(what));
    }

    fn closed(&mut self, what: &str) {
        (self.events)(Event::Closed(what));
    }

    /// Reports `error` and waits the next backoff. `false` when stopped meanwhile.
    fn retry_after(&mut self, error: &SourceError) -> bool {
        let retry_in = self.retry.next_wait();
        (self.events)(Event::Retrying { error, retry_in });
        self.stopper.sleep(retry_in)
    }
}
