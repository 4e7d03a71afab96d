//! The echo stage: with no frontend configured, one thread writes every record the instances
//! push (already durable in the spool) to an [`Output`]: JSON lines on stdout.

use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

/// How many records may wait for the output before `push` blocks the plugin.
const QUEUE: usize = 1024;

enum Message {
    Line(String),
    Close,
}

/// Where records end up.
pub trait Output: Send {
    /// Takes one record's JSON.
    fn write(&mut self, json: &str) -> io::Result<()>;
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
    fn write(&mut self, json: &str) -> io::Result<()> {
        self.0.write_all(json.as_bytes())?;
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
    /// Queues a record's JSON; blocks while the queue is full. Fails only once the output
    /// has stopped.
    pub fn push(&self, json: String) -> Result<(), OutputStopped> {
        self.0.send(Message::Line(json)).map_err(|_| OutputStopped)
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
) -> io::Result<(RecordSender, OutputStage)> {
    let (tx, rx) = sync_channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("output".into())
        .spawn(move || {
            let result = drain(&rx, &mut output);
            if let Err(e) = &result {
                on_failure(e);
            }
            result
        })?;
    let sender = RecordSender(tx);
    Ok((sender.clone(), OutputStage { sender, thread }))
}

fn drain(rx: &Receiver<Message>, output: &mut dyn Output) -> io::Result<u64> {
    let mut written = 0;
    while let Ok(mut message) = rx.recv() {
        loop {
            match message {
                Message::Line(json) => {
                    output.write(&json)?;
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
    use std::sync::{Arc, Mutex};

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
        let (sender, stage) = start(JsonLines::new(buffer.clone()), |_| {}).unwrap();
        for n in 0..1000 {
            sender
                .push(format!(r#"{{"call_type":2,"line":{n}}}"#))
                .unwrap();
        }
        assert_eq!(stage.finish().unwrap(), 1000);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], r#"{"call_type":2,"line":999}"#);
        assert!(
            sender.push("{}".into()).is_err(),
            "a finished output refuses records"
        );
    }

    struct Broken;
    impl Output for Broken {
        fn write(&mut self, _: &str) -> io::Result<()> {
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
        let (sender, stage) = start(Broken, move |e| tx.send(e.kind()).unwrap()).unwrap();
        sender.push("{}".into()).unwrap();
        assert_eq!(rx.recv().unwrap(), io::ErrorKind::BrokenPipe);
        assert!(stage.finish().is_err());
    }
}
