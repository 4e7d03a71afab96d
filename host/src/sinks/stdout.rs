//! The stdout echo: with no frontend configured, every record applied to the spool is written
//! to stdout as one JSON line. It follows the spool (it holds no record back) and drains what
//! the spool holds before it stops, so that nothing applied is missing at a clean stop.

use std::io::{self, BufWriter, Write};

use super::{AtStop, Outcome, Pending, Sink};

/// The echo sink's name: its cursor, metrics label and log name.
pub const NAME: &str = "stdout";

/// Records read per batch: each batch is one buffered write, flushed at its end.
const BATCH: usize = 1024;

/// Writing to stdout failed: the host stops rather than lose the echo silently.
#[derive(Debug, thiserror::Error)]
#[error("stdout failed: {0}")]
pub struct StdoutFailed(#[from] io::Error);

/// Writes each record as one JSON object per line, one write per batch.
pub struct JsonLines<W: Write + Send>(BufWriter<W>);

impl<W: Write + Send> JsonLines<W> {
    /// JSON lines to `writer`, buffered.
    pub fn new(writer: W) -> Self {
        Self(BufWriter::with_capacity(64 * 1024, writer))
    }

    fn write(&mut self, batch: &[Pending]) -> io::Result<()> {
        for record in batch {
            self.0.write_all(record.body.as_bytes())?;
            self.0.write_all(b"\n")?;
        }
        // The batch is what the spool had: the queue has run dry, so the reader gets it now.
        self.0.flush()
    }
}

impl<W: Write + Send> Sink for JsonLines<W> {
    fn name(&self) -> &str {
        NAME
    }

    fn take(&mut self, _backlog: u64) -> usize {
        BATCH
    }

    fn deliver(&mut self, batch: &[Pending]) -> Outcome {
        match self.write(batch) {
            Ok(()) => Outcome::Delivered {
                through: batch.last().map_or(i64::MIN, |p| p.seq),
            },
            Err(e) => Outcome::Fatal(Box::new(StdoutFailed(e))),
        }
    }

    fn at_stop(&self) -> AtStop {
        AtStop::Drain
    }
}

/// Standard output without the line buffering `std::io::Stdout` adds: [`JsonLines`] does its
/// own buffering and flushes at the end of every batch.
#[cfg(unix)]
pub fn stdout() -> io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    let fd = io::stdout().as_fd().try_clone_to_owned()?;
    Ok(std::fs::File::from(fd))
}

/// Standard output (no unbuffered handle on this platform).
#[cfg(not(unix))]
pub fn stdout() -> io::Result<io::Stdout> {
    Ok(io::stdout())
}
