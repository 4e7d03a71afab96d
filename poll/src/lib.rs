//! Waiting for I/O with no timer: [`Waker::wait`] sleeps until one of the given sources is
//! ready, a deadline passes, or another thread calls [`Waker::wake`].
//!
//! The waker is a self-pipe: on Unix a pipe, polled with `poll(2)` beside the caller's file
//! descriptors; on Windows a loopback UDP socket that sends itself one datagram, polled with
//! `WSAPoll` beside the caller's sockets (`WSAPoll` takes sockets only, so on Windows a
//! [`Source`] is a socket). A wake-up is final: the pipe or socket is never drained, so every
//! wait from then on returns at once.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[cfg(unix)]
#[path = "unix.rs"]
mod sys;
#[cfg(windows)]
#[path = "windows.rs"]
mod sys;

pub use sys::{AsSource, Source};

/// What to wait for on a [`Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Data to read, a connection to accept, or the peer hanging up.
    Read,
    /// Room to write, or a connection attempt finished (its result in `SO_ERROR`).
    Write,
}

/// A wake-up signal for waits on other threads; share it behind an `Arc`.
#[derive(Debug)]
pub struct Waker {
    woken: AtomicBool,
    pipe: sys::Pipe,
}

impl Waker {
    /// A new signal, not yet woken.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            woken: AtomicBool::new(false),
            pipe: sys::Pipe::new()?,
        })
    }

    /// Wakes every wait, now and from now on. Never blocks.
    pub fn wake(&self) {
        if !self.woken.swap(true, Ordering::SeqCst) {
            self.pipe.fire();
        }
    }

    /// Whether [`wake`](Waker::wake) was called.
    pub fn is_woken(&self) -> bool {
        self.woken.load(Ordering::SeqCst)
    }

    /// The pipe's read end (Unix) or the socket (Windows): readable once woken, for callers
    /// that poll it themselves.
    pub fn source(&self) -> Source<'_> {
        self.pipe.source()
    }

    /// Waits until one of `sources` is ready for its [`Interest`], `deadline` passes, or the
    /// signal is woken. `None` when woken; else whether each source is ready (all `false`
    /// after the deadline). An error, a hang-up or an invalid source counts as ready: the
    /// caller's next read or write reports it.
    pub fn wait(
        &self,
        sources: &[(Source<'_>, Interest)],
        deadline: Option<Instant>,
    ) -> io::Result<Option<Vec<bool>>> {
        loop {
            if self.is_woken() {
                return Ok(None);
            }
            let timeout_ms = deadline.map(|at| {
                let left = at.saturating_duration_since(Instant::now());
                // Rounded up, so a wait never ends a little before its deadline.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            });
            let ready = match sys::poll(&self.pipe, sources, timeout_ms) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => result?,
            };
            if self.is_woken() {
                return Ok(None);
            }
            let timed_out = deadline.is_some_and(|at| Instant::now() >= at);
            if ready.iter().any(|&r| r) || timed_out {
                return Ok(Some(ready));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_wake_from_another_thread_ends_a_wait_without_deadline() {
        let waker = Arc::new(Waker::new().unwrap());
        let remote = waker.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            remote.wake();
        });
        assert_eq!(waker.wait(&[], None).unwrap(), None);
        assert!(waker.is_woken());
        assert_eq!(waker.wait(&[], None).unwrap(), None, "a wake-up is final");
        thread.join().unwrap();
    }

    #[test]
    fn a_deadline_ends_a_wait_with_nothing_ready() {
        let waker = Waker::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(30);
        let ready = waker
            .wait(&[(listener.as_source(), Interest::Read)], Some(deadline))
            .unwrap();
        assert_eq!(ready, Some(vec![false]));
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn a_source_ready_to_read_or_write_is_reported_as_ready() {
        let waker = Waker::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let later = Some(Instant::now() + Duration::from_secs(60));
        let ready = waker
            .wait(
                &[
                    (server.as_source(), Interest::Read),
                    (client.as_source(), Interest::Write),
                ],
                later,
            )
            .unwrap();
        assert_eq!(
            ready,
            Some(vec![false, true]),
            "nothing sent yet, room to write"
        );
        client.write_all(b"x").unwrap();
        let ready = waker
            .wait(&[(server.as_source(), Interest::Read)], later)
            .unwrap();
        assert_eq!(ready, Some(vec![true]));
    }
}
