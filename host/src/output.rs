//! The output stage: one thread takes every record the instances push and hands it to an
//! [`Output`]. Today that is JSON lines on stdout; the durable spool and the frontend sender
//! plug in here.

use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use calllogger_plugin_sdk::Record;

use crate::json::RecordJson;

/// How many records may wait for the output before `push` blocks the plugin. The queue's
/// slots are allocated up front (a record is ~500 bytes), so it is kept small.
const QUEUE: usize = 1024;

#[allow(clippy::large_enum_variant)] // `Close` is sent once; boxing every record would cost more
enum Message {
    Record { source: Arc<str>, record: Record },
    Close,
}

/// Where records end up.
pub trait Output: Send {
    /// Takes one record pushed by instance `source`.
    fn write(&mut self, source: &str, record: &Record) -> io::Result<()>;
    /// Called whenever the queue runs dry, and at the end.
    fn flush(&mut self) -> io::Result<()>;
}

/// Writes each record as one JSON object per line.
pub struct JsonLines<W: Write + Send>(BufWriter<W>);

impl<W: Write + Send> JsonLines<W> {
    /// JSON lines to `writer`, buffered.
    pub fn new(writer: W) -> Self {
        Self(BufWriter::with_capacity(64 * 1024, writer))
    }
}

impl<W: Write + Send> Output for JsonLines<W> {
    fn write(&mut self, _source: &str, record: &Record) -> io::Result<()> {
        serde_json::to_writer(&mut self.0, &RecordJson(record))?;
        self.0.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The output has stopped: the record was not taken.
#[derive(Debug, PartialEq, Eq)]
pub struct OutputStopped;

/// The handle instances push records through. Cheap to clone.
#[derive(Clone)]
pub struct RecordSender(SyncSender<Message>);

impl RecordSender {
    /// Queues a record; blocks while the queue is full. Fails only once the output has stopped.
    pub fn push(&self, source: &Arc<str>, record: Record) -> Result<(), OutputStopped> {
        let message = Message::Record {
            source: source.clone(),
            record,
        };
        self.0.send(message).map_err(|_| OutputStopped)
    }
}

/// The running output thread.
pub struct OutputStage {
    sender: RecordSender,
    thread: JoinHandle<io::Result<u64>>,
}

/// Starts the output thread. `on_failure` is called (on that thread) if the output fails,
/// so that the host can shut down rather than silently drop records.
pub fn start(
    mut output: impl Output + 'static,
    on_failure: impl FnOnce(&io::Error) + Send + 'static,
) -> (RecordSender, OutputStage) {
    let (tx, rx) = sync_channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("output".into())
        .spawn(move || {
            let result = drain(&rx, &mut output);
            if let Err(e) = &result {
                on_failure(e);
            }
            result
        })
        .expect("spawning the output thread");
    let sender = RecordSender(tx);
    (sender.clone(), OutputStage { sender, thread })
}

fn drain(rx: &Receiver<Message>, output: &mut dyn Output) -> io::Result<u64> {
    let mut written = 0;
    while let Ok(mut message) = rx.recv() {
        loop {
            match message {
                Message::Record { source, record } => {
                    output.write(&source, &record)?;
                    written += 1;
                }
                Message::Close => {
                    output.flush()?;
                    return Ok(written);
                }
            }
            message = match rx.try_recv() {
                Ok(next) => next,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
        }
        output.flush()?;
    }
    output.flush()?;
    Ok(written)
}

impl OutputStage {
    /// Writes everything queued so far, stops the thread and returns how many records it wrote.
    pub fn finish(self) -> io::Result<u64> {
        let _ = self.sender.0.send(Message::Close);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the output thread panicked")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calllogger_plugin_sdk::CallType;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn records_come_out_in_order_one_line_each_and_finish_drains_the_queue() {
        let buffer = Shared::default();
        let (sender, stage) = start(JsonLines::new(buffer.clone()), |_| {});
        let source: Arc<str> = "Test".into();
        for n in 0..1000 {
            sender
                .push(&source, Record::new(CallType::OUTGOING).line(n))
                .unwrap();
        }
        assert_eq!(stage.finish().unwrap(), 1000);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], r#"{"call_type":2,"line":999}"#);
        assert!(
            sender
                .push(&source, Record::new(CallType::OUTGOING))
                .is_err(),
            "a finished output refuses records"
        );
    }

    struct Broken;
    impl Output for Broken {
        fn write(&mut self, _: &str, _: &Record) -> io::Result<()> {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "reader went away",
            ))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_reports_its_error() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (sender, stage) = start(Broken, move |e| tx.send(e.kind()).unwrap());
        sender
            .push(&"Test".into(), Record::new(CallType::OUTGOING))
            .unwrap();
        assert_eq!(rx.recv().unwrap(), io::ErrorKind::BrokenPipe);
        assert!(stage.finish().is_err());
    }
}
