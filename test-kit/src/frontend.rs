//! A real HTTP frontend on 127.0.0.1 for the delivery tests and the benchmark, answering as a
//! script says.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::Host;

/// One request the frontend received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When its body had been read.
    pub at: Instant,
    /// The same moment on the wall clock (to compare with a UUIDv7 record id's time).
    pub wall_clock: SystemTime,
    /// The request line's method.
    pub method: String,
    /// The request line's path.
    pub path: String,
    /// The `Authorization` header (empty if none).
    pub authorization: String,
    /// The `User-Agent` header (empty if none).
    pub user_agent: String,
    /// The `Content-Type` header (empty if none).
    pub content_type: String,
    /// The body as JSON (a string if it is not JSON).
    pub body: Value,
    /// What the frontend answered (0: nothing, it hung).
    pub status: u16,
}

/// What the frontend stored of a fixture `Echo` instance's records `1..=pushed` (the instance's
/// `label` is each record's `number`, its `line` counts from 1), counted by `line` and `id`.
#[derive(Debug, PartialEq, Eq)]
pub struct Tally {
    /// Lines stored (answered 2xx) at least once.
    pub delivered: usize,
    /// Copies stored beyond the first, per line.
    pub duplicated: usize,
    /// Lines pushed but never stored.
    pub lost: Vec<u64>,
}

impl Received {
    /// The records in the body: one object, or each element of an array.
    pub fn records(&self) -> Vec<Value> {
        match &self.body {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        }
    }

    /// How many records the body holds.
    fn record_count(&self) -> usize {
        self.body.as_array().map_or(1, Vec::len)
    }

    /// Whether the frontend stored them (answered 2xx).
    fn stored(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What to answer: status, extra headers, body.
pub type Reply = (u16, Vec<(&'static str, String)>, String);

/// How to answer one request.
pub enum Answer {
    /// At once.
    Reply(Reply),
    /// Never: the connection stays open, silent, until the client gives up.
    Hang,
    /// The whole response (status line included) one byte at a time, `Duration` apart. The
    /// request counts as stored with the reply's status, as by a server that stored the
    /// records before answering slowly.
    Trickle(Reply, Duration),
}

type Script = Box<dyn FnMut(&Received, usize) -> Answer + Send>;

/// The frontend: every request is recorded; answers come from the script. A plain HTTP/1.1
/// server on a `TcpListener` (one thread per connection, keep-alive), so that it can also
/// hang and trickle.
pub struct Frontend {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    connections: Arc<std::sync::atomic::AtomicUsize>,
    addr: std::net::SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Frontend {
    /// Starts answering every request with `script(request, index)`.
    pub fn start(mut script: impl FnMut(&Received, usize) -> Reply + Send + 'static) -> Self {
        Self::start_with(move |r, n| Answer::Reply(script(r, n)))
    }

    /// A frontend for loads of many thousand records: answers 201 at once, and keeps of each
    /// record only its `id` (the rest of the body is dropped as it arrives).
    pub fn ids_only() -> Self {
        Self::serve_with(|_, _| Answer::Reply(created()), true)
    }

    /// Starts answering every request as `script(request, index)` says.
    pub fn start_with(script: impl FnMut(&Received, usize) -> Answer + Send + 'static) -> Self {
        Self::serve_with(script, false)
    }

    fn serve_with(
        script: impl FnMut(&Received, usize) -> Answer + Send + 'static,
        ids_only: bool,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Box::new(script)));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = {
            let (received, script, stop) = (received.clone(), script.clone(), stop.clone());
            let accepted = connections.clone();
            // Blocks in accept (a poll with sleeps would add its period to every new
            // connection, and show in the latency benchmark); Drop wakes it with a connection.
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        let (received, script) = (received.clone(), script.clone());
                        std::thread::spawn(move || serve(stream, &received, &script, ids_only));
                    }
                }
            })
        };
        Self {
            url,
            received,
            script,
            stop,
            connections,
            addr,
            thread: Some(thread),
        }
    }

    /// Replaces the script.
    pub fn answer(&self, mut script: impl FnMut(&Received, usize) -> Reply + Send + 'static) {
        self.answer_with(move |r, n| Answer::Reply(script(r, n)));
    }

    /// Replaces the script with one that may also hang or trickle.
    pub fn answer_with(&self, script: impl FnMut(&Received, usize) -> Answer + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    /// How many connections it has accepted (a client that keeps its connection alive
    /// opens one).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every record delivered (answered 2xx) so far, in arrival order.
    pub fn delivered(&self) -> Vec<Value> {
        self.received()
            .iter()
            .filter(|r| r.stored())
            .flat_map(Received::records)
            .collect()
    }

    /// How many records were delivered (answered 2xx) so far; cheap (copies nothing).
    pub fn delivered_count(&self) -> usize {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter(|r| r.stored())
            .map(Received::record_count)
            .sum()
    }

    /// Waits until `pred` holds over the requests so far (panics after `timeout`).
    pub fn wait_until(&self, timeout: Duration, what: &str, pred: impl Fn(&[Received]) -> bool) {
        // On a copy: `pred` may look at the frontend itself (`tally`).
        let waited = crate::poll(timeout, || pred(&self.received()).then_some(()));
        assert!(
            waited.is_some(),
            "timed out waiting for {what}; {} requests",
            self.received().len()
        );
    }

    /// What was stored of fixture `Echo` instance `label`'s records `1..=pushed`. Panics if
    /// one line arrived under two ids (a record pushed twice).
    pub fn tally(&self, label: &str, pushed: u64) -> Tally {
        let mut by_line: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        let mut copies = 0;
        for record in self.delivered() {
            if record["number"] == label {
                copies += 1;
                by_line
                    .entry(record["line"].as_u64().unwrap())
                    .or_default()
                    .insert(record["id"].as_str().unwrap().to_owned());
            }
        }
        for (line, ids) in &by_line {
            assert_eq!(
                ids.len(),
                1,
                "line {line} was pushed once but has ids {ids:?}"
            );
        }
        Tally {
            delivered: by_line.len(),
            duplicated: copies - by_line.len(),
            lost: (1..=pushed).filter(|l| !by_line.contains_key(l)).collect(),
        }
    }

    /// Waits until every one of fixture `Echo` instance `label`'s records `1..=pushed` was
    /// stored at least once (panics after `timeout`, with `host`'s log).
    pub fn wait_delivered(&self, host: &Host, label: &str, pushed: u64, timeout: Duration) {
        let waited = crate::poll(timeout, || {
            self.tally(label, pushed).lost.is_empty().then_some(())
        });
        assert!(
            waited.is_some(),
            "not all delivered within {timeout:?}: {:?}; log:\n{}",
            self.tally(label, pushed),
            host.log()
        );
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop, which then sees `stop`.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers the requests on one connection until the client closes it.
fn serve(
    stream: TcpStream,
    received: &Mutex<Vec<Received>>,
    script: &Mutex<Script>,
    ids_only: bool,
) {
    stream.set_nonblocking(false).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(mut got) = read_request(&mut reader) {
        if ids_only {
            got.body = only_ids(std::mem::take(&mut got.body));
        }
        let index = received.lock().unwrap().len();
        let answer = (script.lock().unwrap())(&got, index);
        let (reply, gap) = match answer {
            Answer::Reply(reply) => (reply, None),
            Answer::Trickle(reply, gap) => (reply, Some(gap)),
            Answer::Hang => {
                received.lock().unwrap().push(got);
                // Silent until the client hangs up (or sends anything).
                let _ = reader.read(&mut [0; 1]);
                return;
            }
        };
        let (status, headers, body) = reply;
        received.lock().unwrap().push(Received { status, ..got });
        let mut response = format!(
            "HTTP/1.1 {status} Answer\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&body);
        let sent = match gap {
            None => writer.write_all(response.as_bytes()),
            Some(gap) => response.bytes().try_for_each(|byte| {
                std::thread::sleep(gap);
                writer.write_all(&[byte])
            }),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The body with each record reduced to its `id`.
fn only_ids(body: Value) -> Value {
    let id = |record: &Value| serde_json::json!({ "id": record["id"] });
    match body {
        Value::Array(records) => records.iter().map(id).collect(),
        one => id(&one),
    }
}

/// One HTTP/1.1 request (request line, headers, a `Content-Length` body); `None` at the end of
/// the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(
        header("transfer-encoding").is_empty(),
        "the test frontend reads Content-Length bodies only"
    );
    let mut body = vec![0; header("content-length").parse().unwrap_or(0)];
    reader.read_exact(&mut body).ok()?;
    let text = String::from_utf8_lossy(&body).into_owned();
    Some(Received {
        at: Instant::now(),
        wall_clock: SystemTime::now(),
        method,
        path,
        authorization: header("authorization"),
        user_agent: header("user-agent"),
        content_type: header("content-type"),
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        status: 0,
    })
}

/// A 201 with no headers.
pub fn created() -> Reply {
    (201, vec![], "{}".into())
}

/// A plain reply with this status.
pub fn status(code: u16) -> Reply {
    (code, vec![], format!("status {code}"))
}
