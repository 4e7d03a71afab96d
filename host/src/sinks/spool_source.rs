//! Each sink's [`Source`] is its own cursor into the spool (`calllogger_spool::Cursor`).

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use calllogger_plugin_abi::TimeoutSettings;
use calllogger_spool::{AckError, Cursor, CursorError, Mode, Queue, ReadError};

use super::{Pending, Sink, SinkEvent, Source};
use crate::stop::Stop;
use crate::telemetry::Telemetry;

/// Why a sink did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the spool cursor of sink {sink}: {source}")]
    Cursor { sink: String, source: CursorError },
    #[error("cannot start the thread of sink {sink}: {source}")]
    Thread {
        sink: String,
        source: std::io::Error,
    },
}

/// Why a sink's cursor could not read or move.
#[derive(Debug, thiserror::Error)]
pub enum CursorFailed {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Ack(#[from] AckError),
}

/// Starts `sink` (see [`super::start`]) over its own cursor into `queue`, with its metrics.
pub fn start<K: Sink + 'static, E: From<SinkEvent> + Send + 'static>(
    sink: K,
    mode: Mode,
    retry: TimeoutSettings,
    queue: &Queue,
    stop: &Arc<Stop>,
    telemetry: &Telemetry,
    events: &Sender<E>,
) -> Result<JoinHandle<()>, StartError> {
    let name = sink.name().to_owned();
    let cursor = queue
        .cursor(&name, mode)
        .map_err(|source| StartError::Cursor {
            sink: name.clone(),
            source,
        })?;
    let metrics = telemetry.sink(&name);
    super::start(sink, cursor, retry, stop.clone(), metrics, events.clone())
        .map_err(|source| StartError::Thread { sink: name, source })
}

impl Source for Cursor {
    type Error = CursorFailed;

    fn sink(&self) -> &str {
        Cursor::sink(self)
    }

    fn backlog(&self) -> u64 {
        Cursor::backlog(self)
    }

    fn read(&self, limit: usize) -> Result<Vec<Pending>, CursorFailed> {
        Ok(Cursor::read(self, limit)?)
    }

    fn wait(&self) {
        Cursor::wait(self, None);
    }

    fn ack(&mut self, through_seq: i64) -> Result<(), CursorFailed> {
        Ok(Cursor::ack(self, through_seq)?)
    }

    fn bury(&mut self, seq: i64, status: u16, response: &str) -> Result<(), CursorFailed> {
        Ok(Cursor::bury(self, seq, status, response)?)
    }
}
