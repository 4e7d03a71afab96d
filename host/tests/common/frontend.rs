//! A real HTTP frontend on 127.0.0.1 for the delivery tests, answering as a script says.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request the frontend received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub user_agent: String,
    pub content_type: String,
    pub body: Value,
    /// What the frontend answered.
    pub status: u16,
}

impl Received {
    /// The records in the body: one object, or each element of an array.
    pub fn records(&self) -> Vec<Value> {
        match &self.body {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        }
    }
}

/// What to answer: status, extra headers, body.
pub type Reply = (u16, Vec<(&'static str, String)>, String);

type Script = Box<dyn FnMut(&Received, usize) -> Reply + Send>;

/// The frontend: every request is recorded; replies come from the script.
pub struct Frontend {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Frontend {
    /// Starts answering every request with `script(request, index)`.
    pub fn start(script: impl FnMut(&Received, usize) -> Reply + Send + 'static) -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Box::new(script)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, script, stop) = (received.clone(), script.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Some(mut request)) = server.recv_timeout(Duration::from_millis(50))
                    else {
                        continue;
                    };
                    let header = |name: &str| {
                        request
                            .headers()
                            .iter()
                            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                            .map(|h| h.value.to_string())
                            .unwrap_or_default()
                    };
                    let (authorization, user_agent, content_type) = (
                        header("Authorization"),
                        header("User-Agent"),
                        header("Content-Type"),
                    );
                    let mut text = String::new();
                    std::io::Read::read_to_string(request.as_reader(), &mut text).unwrap();
                    let got = Received {
                        at: Instant::now(),
                        method: request.method().to_string(),
                        path: request.url().to_owned(),
                        authorization,
                        user_agent,
                        content_type,
                        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                        status: 0,
                    };
                    let index = received.lock().unwrap().len();
                    let (status, headers, body) = (script.lock().unwrap())(&got, index);
                    received.lock().unwrap().push(Received { status, ..got });
                    let mut response =
                        tiny_http::Response::from_string(body).with_status_code(status);
                    for (name, value) in headers {
                        response.add_header(
                            tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                                .unwrap(),
                        );
                    }
                    let _ = request.respond(response);
                }
            })
        };
        Self {
            url,
            received,
            script,
            stop,
            thread: Some(thread),
        }
    }

    /// Replaces the script.
    pub fn answer(&self, script: impl FnMut(&Received, usize) -> Reply + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every record delivered (answered 2xx) so far, in arrival order.
    pub fn delivered(&self) -> Vec<Value> {
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(Received::records)
            .collect()
    }

    /// Waits until `pred` holds over the requests so far (panics after `timeout`).
    pub fn wait_until(&self, timeout: Duration, what: &str, pred: impl Fn(&[Received]) -> bool) {
        let until = Instant::now() + timeout;
        while !pred(&self.received()) {
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; {} requests",
                self.received().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A 201 with no headers.
pub fn created() -> Reply {
    (201, vec![], "{}".into())
}

/// A plain reply with this status.
pub fn status(code: u16) -> Reply {
    (code, vec![], format!("status {code}"))
}
