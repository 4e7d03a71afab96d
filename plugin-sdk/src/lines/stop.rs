//! [`Stopper`]: wakes a blocked read from another thread, through a pipe (a loopback socket on
//! Windows) that every wait polls.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calllogger_poll::{Interest, Source, Waker};

/// A stop signal for a [`LineSource`](super::LineSource): [`stop`](Stopper::stop) from any
/// thread (e.g. the plugin's stop hook) makes a blocked `next_line` return `Ok(None)` at once.
///
/// It is a pipe: every wait of the source polls its read end together with the source's own
/// file descriptor, so an idle source sleeps in `poll(2)` with no timer (on Windows a loopback
/// UDP socket, polled with `WSAPoll` beside the source's sockets). Stopping is final; clones
/// share the signal.
///
/// ```
/// use calllogger_plugin_sdk::lines::Stopper;
/// use std::time::Duration;
///
/// let stopper = Stopper::new().unwrap();
/// let remote = stopper.clone();
/// std::thread::spawn(move || remote.stop());
/// assert!(!stopper.sleep(Duration::from_secs(600)), "woken by stop, not after 600 s");
/// assert!(stopper.is_stopped());
/// ```
#[derive(Clone, Debug)]
pub struct Stopper(Arc<Waker>);

impl Stopper {
    /// A new, not yet stopped signal.
    pub fn new() -> io::Result<Self> {
        Waker::new().map(|waker| Self(Arc::new(waker)))
    }

    /// Stops: every wait on this signal returns now and from now on. Never blocks.
    pub fn stop(&self) {
        self.0.wake();
    }

    /// Whether [`stop`](Stopper::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.is_woken()
    }

    /// Sleeps `duration`, waking at once on stop. Returns `false` when stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        matches!(self.poll(&[], Some(Instant::now() + duration)), Ok(Some(_)))
    }

    /// Waits until one of `sources` is ready, `deadline` passes, or the signal stops. `None`
    /// when stopped; else whether each source is ready (all `false` after the deadline).
    pub(crate) fn poll(
        &self,
        sources: &[(Source<'_>, Interest)],
        deadline: Option<Instant>,
    ) -> io::Result<Option<Vec<bool>>> {
        self.0.wait(sources, deadline)
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for Stopper {
    /// The read end of the pipe: readable once stopped. Poll it with your own fds to make
    /// other blocking I/O stoppable.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.source()
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsSocket for Stopper {
    /// A loopback UDP socket: readable once stopped. Poll it with your own sockets
    /// (`WSAPoll`) to make other blocking I/O stoppable.
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        self.0.source()
    }
}
