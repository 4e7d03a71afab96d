//! Sinks: the destinations the spool's records go to, the last stage of a record's path
//! (plugin → spool → sinks).
//!
//! A [`Sink`] says how to deliver a batch (the HTTP [`frontend`], the [`stdout`] echo); a
//! [`Source`] is that sink's own cursor into the spool. [`start`] runs one sink on its own
//! thread over its source with the one delivery loop every sink shares: it waits for records
//! without spinning, reads them in order, delivers, acks, buries what the destination
//! refuses, retries with the decayed timeout, and waits out a source that fails (a full
//! disk). Delivery is at least once: a record is acked only after its sink took it, and a
//! record taken but not yet acked is never offered again (after a crash, what was acked in
//! the last second before it is: the spool saves acks with its next transaction). Several
//! sinks may run at once, each with its own cursor, retry state and metrics; a sink's fatal
//! failure is a [`SinkEvent`].

pub mod frontend;
mod http;
mod resolve;
pub mod spool_source;
pub mod stdout;

use std::error::Error;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use calllogger_plugin_abi::TimeoutSettings;
use calllogger_plugin_sdk::Backoff;

use crate::stop::Stop;
use crate::telemetry::SinkTelemetry;

/// A record waiting in the spool, as a sink reads it.
pub use calllogger_spool::Pending;

/// One sink's cursor into the spool.
pub trait Source: Send {
    /// Why the spool could not be read or changed.
    type Error: Error + Send + Sync + 'static;
    /// The sink this cursor belongs to.
    fn sink(&self) -> &str;
    /// How many records wait after this cursor.
    fn backlog(&self) -> u64;
    /// Up to `limit` records after the cursor, oldest first.
    fn read(&self, limit: usize) -> Result<Vec<Pending>, Self::Error>;
    /// Waits, with no timeout, until a record arrives after the cursor or the spool is woken
    /// (e.g. for a stop): an idle sink never wakes on its own.
    fn wait(&self);
    /// Moves the cursor past `through_seq`: every record up to it is done (on disk within
    /// about a second, or when the source is dropped).
    fn ack(&mut self, through_seq: i64) -> Result<(), Self::Error>;
    /// Puts the record `seq` in this sink's dead letters (with the destination's status and
    /// response), then acks through it.
    fn bury(&mut self, seq: i64, status: u16, response: &str) -> Result<(), Self::Error>;
}

/// What a sink does once told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtStop {
    /// Ends at once; what is left stays in the spool for the next run.
    End,
    /// First delivers what is already in the spool (an echo: nothing applied goes missing).
    Drain,
}

/// What one delivery came to.
#[derive(Debug)]
pub enum Outcome {
    /// Every record up to `through` is done: delivered, or skipped by the sink's policy.
    Delivered { through: i64 },
    /// The destination refused the batch (`status`, `response`: what the dead letter keeps).
    /// One record is buried; several are offered one by one to find the refused ones.
    Refused { status: u16, response: String },
    /// Try again later; `after` when the destination said when.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The sink cannot go on: the host shuts down.
    Fatal(Box<dyn Error + Send + Sync>),
}

/// A destination for the spool's records.
pub trait Sink: Send {
    /// The sink's name: its cursor, metrics label and log name.
    fn name(&self) -> &str;
    /// How many records to read for the next delivery, given how many wait.
    fn take(&mut self, backlog: u64) -> usize;
    /// Delivers `batch` (in order, never empty).
    fn deliver(&mut self, batch: &[Pending]) -> Outcome;
    /// Whether it drains the spool before it stops.
    fn at_stop(&self) -> AtStop;
}

/// A sink gave up: the host cannot run without it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SinkFailed {
    /// The sink's name.
    pub sink: String,
    /// Why, in words the operator can act on.
    pub error: Box<dyn Error + Send + Sync>,
}

/// What a running sink tells the host.
#[derive(Debug)]
pub enum SinkEvent {
    /// It ended with a fatal failure.
    Failed(SinkFailed),
}

/// The shortest wait between two attempts, whatever the settings and the destination say, so
/// that no failure can make a sink spin.
const MIN_RETRY_WAIT: Duration = Duration::from_millis(100);

/// Starts `sink` on its own thread over `source`, until `stop` (the caller also wakes the
/// spool, so that an idle sink sees it) or a fatal failure, which is sent on `events`.
/// `retry` is the decayed timeout between failed attempts, capped at its `max_timeout`.
pub fn start<K, S, E>(
    sink: K,
    source: S,
    retry: TimeoutSettings,
    stop: Arc<Stop>,
    telemetry: SinkTelemetry,
    events: Sender<E>,
) -> std::io::Result<JoinHandle<()>>
where
    K: Sink + 'static,
    S: Source + 'static,
    E: From<SinkEvent> + Send + 'static,
{
    std::thread::Builder::new()
        .name(format!("sink-{}", sink.name()))
        .spawn(move || {
            let mut driver = Driver::new(sink, source, retry, stop, telemetry);
            if let Err(error) = driver.run() {
                let sink = driver.sink.name().to_owned();
                let _ = events.send(E::from(SinkEvent::Failed(SinkFailed { sink, error })));
            }
        })
}

/// Why a step did not finish.
enum Halt<E> {
    /// The spool failed: waited out.
    Source(E),
    /// The sink failed: the end.
    Fatal(Box<dyn Error + Send + Sync>),
}

/// The delivery loop of one sink.
struct Driver<K, S> {
    sink: K,
    source: S,
    retry: TimeoutSettings,
    stop: Arc<Stop>,
    telemetry: SinkTelemetry,
    backoff: Backoff,
    /// Records up to here were taken by the sink, but the ack failed: acked before anything
    /// else is sent, never sent again.
    unacked: Option<i64>,
}

impl<K: Sink, S: Source> Driver<K, S> {
    fn new(
        sink: K,
        source: S,
        retry: TimeoutSettings,
        stop: Arc<Stop>,
        telemetry: SinkTelemetry,
    ) -> Self {
        Self {
            sink,
            source,
            retry,
            stop,
            telemetry,
            backoff: Backoff::new(retry).with_jitter(RETRY_JITTER),
            unacked: None,
        }
    }

    /// Delivers until stopped (then drains, if the sink does). A source that fails is waited
    /// out with the decayed timeout; only the sink's fatal failure ends it early.
    fn run(&mut self) -> Result<(), Box<dyn Error + Send + Sync>> {
        let mut source_retry = Backoff::new(self.retry);
        while self.stop.running() {
            match self.step() {
                Ok(()) => source_retry.reset(),
                Err(Halt::Source(e)) => {
                    let wait = source_retry.advance();
                    tracing::error!(
                        cursor = %self.source.sink(),
                        "delivery paused: {e}; retrying in {:.1} s (every record stays in the spool)",
                        wait.as_secs_f64()
                    );
                    self.stop.wait(wait);
                }
                Err(Halt::Fatal(e)) => return Err(e),
            }
        }
        if self.sink.at_stop() == AtStop::Drain {
            match self.drain() {
                Ok(()) => {}
                Err(Halt::Source(e)) => {
                    tracing::error!("{}: cannot deliver the rest of the spool: {e}", self.name());
                }
                Err(Halt::Fatal(e)) => {
                    // Nobody waits for the event any more: the host is stopping.
                    tracing::error!("{e}");
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        self.sink.name()
    }

    /// One round: finish the ack that failed, then deliver the next records (or wait for some).
    fn step(&mut self) -> Result<(), Halt<S::Error>> {
        self.ack_unacked()?;
        let backlog = self.source.backlog();
        let batch = if backlog == 0 {
            Vec::new()
        } else {
            let limit = self.sink.take(backlog).max(1);
            self.source.read(limit).map_err(Halt::Source)?
        };
        if batch.is_empty() {
            self.source.wait();
        } else {
            self.deliver(&batch)?;
        }
        Ok(())
    }

    /// After the stop: delivers what the spool holds now, until it is empty or a delivery
    /// must wait.
    fn drain(&mut self) -> Result<(), Halt<S::Error>> {
        self.ack_unacked()?;
        loop {
            let limit = self.sink.take(self.source.backlog()).max(1);
            let batch = self.source.read(limit).map_err(Halt::Source)?;
            if batch.is_empty() || !self.deliver(&batch)? {
                return Ok(());
            }
        }
    }

    fn ack_unacked(&mut self) -> Result<(), Halt<S::Error>> {
        if let Some(through) = self.unacked {
            self.source.ack(through).map_err(Halt::Source)?;
            self.unacked = None;
        }
        Ok(())
    }

    /// Delivers a batch (or one record), handling every outcome. Returns whether the whole
    /// batch is done (delivered, skipped or buried) rather than waiting for a retry.
    fn deliver(&mut self, batch: &[Pending]) -> Result<bool, Halt<S::Error>> {
        let last = batch.last().map_or(i64::MIN, |p| p.seq);
        match self.sink.deliver(batch) {
            Outcome::Delivered { through } => {
                self.backoff.reset();
                let done = batch.iter().filter(|p| p.seq <= through).count();
                tracing::debug!("{}: delivered {done} record(s)", self.name());
                self.telemetry.delivered(done as u64);
                if let Err(e) = self.source.ack(through) {
                    self.unacked = Some(through);
                    return Err(Halt::Source(e));
                }
                Ok(through >= last)
            }
            Outcome::Refused { status, response } if batch.len() == 1 => {
                tracing::error!(
                    id = %batch[0].id,
                    "the {} refused a record (HTTP {status}): moved to the dead letters \
                     (`calllogger spool retry-dead` puts them back); response: {}",
                    self.name(),
                    response.chars().take(200).collect::<String>()
                );
                self.source
                    .bury(batch[0].seq, status, &response)
                    .map_err(Halt::Source)?;
                self.telemetry.refused();
                Ok(true)
            }
            Outcome::Refused { status, .. } => {
                tracing::warn!(
                    "the {} refused a batch of {} (HTTP {status}): sending them one by one",
                    self.name(),
                    batch.len()
                );
                for record in batch {
                    // Stop at the first that must wait, to keep the order.
                    if !self.stop.running() || !self.deliver(std::slice::from_ref(record))? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Outcome::Retry { reason, after } => {
                let wait = self.retry_wait(after);
                tracing::warn!(
                    "delivery failed ({reason}); retrying in {:.1} s",
                    wait.as_secs_f64()
                );
                self.telemetry.failed(reason);
                self.telemetry.retry_wait(wait);
                self.stop.wait(wait);
                self.telemetry.retry_wait(Duration::ZERO);
                Ok(false)
            }
            Outcome::Fatal(e) => Err(Halt::Fatal(e)),
        }
    }

    /// How long to wait before the next attempt: the decayed timeout (which advances), or
    /// longer when the destination asked for that, but never more than `max_timeout`.
    fn retry_wait(&mut self, told: Option<Duration>) -> Duration {
        let decayed = self.backoff.advance();
        let wait = retry_wait(told, decayed, self.backoff.max());
        if let Some(told) = told.filter(|told| *told > wait) {
            tracing::warn!(
                "the {} asked to wait {} s (Retry-After), longer than settings.max_timeout: \
                 waiting {:.1} s",
                self.name(),
                told.as_secs(),
                wait.as_secs_f64()
            );
        }
        wait
    }
}

/// How far a delivery retry's wait is spread at random (±20 %): sites that lost the frontend
/// together would otherwise all come back on the same 10, 15, 22.5 s schedule.
const RETRY_JITTER: f64 = 0.2;

/// The wait before a retry: `max(told, decayed)`, at most `cap`, at least [`MIN_RETRY_WAIT`].
/// A `Retry-After` of 0 or a past date keeps the backoff; one of days is cut to `cap`.
fn retry_wait(told: Option<Duration>, decayed: Duration, cap: Duration) -> Duration {
    told.unwrap_or_default()
        .max(decayed)
        .min(cap)
        .max(MIN_RETRY_WAIT)
}

#[cfg(test)]
pub(crate) mod testkit;

#[cfg(test)]
mod tests;
