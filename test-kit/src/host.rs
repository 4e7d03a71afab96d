//! A running host process, its records (stdout) and its log (stderr).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The library identities (`name version`) that `instance` started from, in order, from
/// the host's `started` log lines.
pub fn started_libraries(log: &str, instance: &str) -> Vec<String> {
    let needle = format!("started instance={instance} library=");
    log.lines()
        .filter_map(|l| Some(l[l.find(&needle)? + needle.len()..].trim().to_owned()))
        .collect()
}

/// A running host process whose stdout lines (records) and stderr (logs) are collected; killed
/// when dropped.
pub struct Host {
    /// The process.
    pub child: Child,
    lines: Receiver<(Instant, String)>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// What [`Host::terminate`] sends: SIGTERM, or SIGINT under Wine (which ends a Windows
    /// program at once on SIGTERM, and turns SIGINT into its Ctrl-C event).
    stop_signal: nix::sys::signal::Signal,
}

impl Host {
    /// Starts `command`, reading its stdout as records.
    pub fn spawn(command: Command) -> Self {
        Self::start(command, true)
    }

    /// Makes [`Host::terminate`] stop it with `signal` instead of SIGTERM.
    pub fn stopped_by(mut self, signal: nix::sys::signal::Signal) -> Self {
        self.stop_signal = signal;
        self
    }

    /// Starts `command` with its stdout on `/dev/null` (for throughput: no reader in the way);
    /// [`Host::next_record`] then gives nothing.
    pub fn spawn_discarding_records(command: Command) -> Self {
        Self::start(command, false)
    }

    fn start(mut command: Command, records: bool) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(if records {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the host");
        let (tx, lines) = channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        let stderr_reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Self {
            child,
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
            stop_signal: nix::sys::signal::Signal::SIGTERM,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next record on stdout, with the time it was read; `None` after `timeout` (or at
    /// once when stdout has closed).
    pub fn next_record(&self, timeout: Duration) -> Option<(Instant, Value)> {
        let (at, line) = self.lines.recv_timeout(timeout).ok()?;
        Some((
            at,
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}")),
        ))
    }

    /// Records until `pred` holds for one (returned last) or `timeout` passes (panics).
    pub fn records_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Vec<(Instant, Value)> {
        let until = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.next_record(left) {
                Some(record) => {
                    let done = pred(&record.1);
                    seen.push(record);
                    if done {
                        return seen;
                    }
                }
                None => panic!(
                    "no matching record within {timeout:?}; saw {} records; host log:\n{}",
                    seen.len(),
                    self.log()
                ),
            }
        }
    }

    /// Everything the host logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal to the host.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Waits up to `timeout` for the host to exit; kills it and panics if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Everything it wrote to stderr is in the log once the pipe is drained.
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return (status, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        panic!("host did not exit within {timeout:?}; log:\n{}", self.log());
    }

    /// Waits until the host's log contains `needle` `times` times (panics after `timeout`, or
    /// when the host exits first).
    pub fn wait_for_log(&mut self, needle: &str, times: usize, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.log().matches(needle).count() < times {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "host exited ({status}) before logging `{needle}`; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < until,
                "`{needle}` not logged within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM (see [`Host::stopped_by`]) and asserts a clean exit (status 0) within
    /// 15 s; returns the log.
    pub fn terminate(&mut self) -> String {
        self.signal(self.stop_signal);
        let (status, _) = self.wait_exit(Duration::from_secs(15));
        assert!(
            status.success(),
            "exit status {status}; log:\n{}",
            self.log()
        );
        self.log()
    }

    /// Records still buffered after exit.
    pub fn remaining_records(&self) -> Vec<Value> {
        std::iter::from_fn(|| self.next_record(Duration::from_millis(200)).map(|r| r.1)).collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
