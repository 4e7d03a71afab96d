//! For the sinks' tests: an in-memory [`Source`], a loopback HTTP frontend on 127.0.0.1 and a
//! log capture.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::{Pending, Source};
use crate::stop::Stop;

/// `n` records, seq 1..=n, call type 2 (an outgoing call), `{"n":seq}` as JSON.
pub fn records(n: i64) -> Vec<Pending> {
    (1..=n)
        .map(|seq| Pending {
            seq,
            id: format!("id-{seq}"),
            kind: 2,
            body: format!(r#"{{"n":{seq}}}"#),
        })
        .collect()
}

/// What a [`Memory`] source saw.
#[derive(Default)]
pub struct State {
    pub records: Vec<Pending>,
    /// Acked through here.
    pub cursor: i64,
    /// Every ack asked for, failed or not.
    pub acks: Vec<i64>,
    pub buried: Vec<(i64, u16, String)>,
    /// The next this many acks fail.
    pub failing_acks: usize,
    /// How often the sink waited for records.
    pub waits: usize,
    /// Set by [`Shared::wake`]: the next wait returns at once.
    pub woken: bool,
}

/// The state of a [`Memory`] source, shared with the test.
#[derive(Default)]
pub struct Shared {
    pub state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    /// Ends the sink's current (or next) wait, as the spool's wake does at a stop.
    pub fn wake(&self) {
        self.state.lock().woken = true;
        self.changed.notify_all();
    }
}

/// An in-memory cursor. With `stop_when_done`, it stops the sink once every record is acked.
pub struct Memory {
    pub shared: Arc<Shared>,
    pub stop_when_done: Option<Arc<Stop>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the disk is full")]
pub struct Full;

impl Memory {
    pub fn new(records: Vec<Pending>) -> (Self, Arc<Shared>) {
        let shared = Arc::new(Shared::default());
        shared.state.lock().records = records;
        (
            Self {
                shared: shared.clone(),
                stop_when_done: None,
            },
            shared,
        )
    }

    fn moved(&self, state: &mut State) {
        let last = state.records.last().map_or(0, |p| p.seq);
        if state.cursor >= last {
            if let Some(stop) = &self.stop_when_done {
                // As the host does: stop, then wake the spool.
                stop.stop();
                state.woken = true;
            }
        }
        self.shared.changed.notify_all();
    }
}

impl Source for Memory {
    type Error = Full;

    fn sink(&self) -> &str {
        "memory"
    }

    fn backlog(&self) -> u64 {
        let state = self.shared.state.lock();
        state
            .records
            .iter()
            .filter(|p| p.seq > state.cursor)
            .count() as u64
    }

    fn read(&self, limit: usize) -> Result<Vec<Pending>, Full> {
        let state = self.shared.state.lock();
        Ok(state
            .records
            .iter()
            .filter(|p| p.seq > state.cursor)
            .take(limit)
            .cloned()
            .collect())
    }

    fn wait(&self) {
        let mut state = self.shared.state.lock();
        state.waits += 1;
        let cursor = state.cursor;
        if !state.records.iter().any(|p| p.seq > cursor) && !state.woken {
            self.shared.changed.wait(&mut state);
        }
        state.woken = false;
    }

    fn ack(&mut self, through_seq: i64) -> Result<(), Full> {
        let mut state = self.shared.state.lock();
        state.acks.push(through_seq);
        if state.failing_acks > 0 {
            state.failing_acks -= 1;
            self.shared.changed.notify_all();
            return Err(Full);
        }
        state.cursor = state.cursor.max(through_seq);
        self.moved(&mut state);
        Ok(())
    }

    fn bury(&mut self, seq: i64, status: u16, response: &str) -> Result<(), Full> {
        self.shared
            .state
            .lock()
            .buried
            .push((seq, status, response.to_owned()));
        self.ack(seq)
    }
}

/// One request the loopback frontend received.
#[derive(Debug, Clone)]
pub struct Received {
    pub authorization: Option<String>,
    pub body: String,
}

/// An answer: status, extra headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

/// A loopback HTTP server on 127.0.0.1 answering each request (its number from 0, its body)
/// with `answer`; one request per connection.
pub struct Frontend {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Frontend {
    pub fn start(answer: impl Fn(usize, &str) -> Answer + Send + 'static) -> Self {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", socket.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in socket.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut length, mut authorization) = (0, None);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                    let value = value.trim().to_owned();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.parse().unwrap_or(0),
                        "authorization" => authorization = Some(value),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                let n = {
                    let mut log = log.lock();
                    log.push(Received {
                        authorization,
                        body: body.clone(),
                    });
                    log.len() - 1
                };
                let (status, headers, text) = answer(n, &body);
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    text.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                let _ = write!(stream, "{head}\r\n{text}");
            }
        });
        Self { url, received }
    }

    /// The bodies received, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.received
            .lock()
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }
}

/// The messages logged (with `tracing`) while `f` ran on this thread.
pub fn logs<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
    let out = tracing::subscriber::with_default(subscriber, f);
    let lines = lines.lock().clone();
    (out, lines)
}

struct Capture(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.lock().push(message.0);
    }
}
