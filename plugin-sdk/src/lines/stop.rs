//! [`Stopper`]: wakes a blocked read from another thread, through a pipe that every wait polls.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// A stop signal for a [`LineSource`](super::LineSource): [`stop`](Stopper::stop) from any
/// thread (e.g. the plugin's stop hook) makes a blocked `next_line` return `Ok(None)` at once.
///
/// It is a pipe: every wait of the source polls its read end together with the source's own
/// file descriptor, so an idle source sleeps in `poll(2)` with no timer. Stopping is final;
/// clones share the signal.
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
pub struct Stopper(Arc<Pipe>);

#[derive(Debug)]
struct Pipe {
    stopped: AtomicBool,
    read: OwnedFd,
    write: OwnedFd,
}

impl Stopper {
    /// A new, not yet stopped signal.
    pub fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe()?;
        for fd in [&read, &write] {
            fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        Ok(Self(Arc::new(Pipe {
            stopped: AtomicBool::new(false),
            read,
            write,
        })))
    }

    /// Stops: every wait on this signal returns now and from now on. Never blocks.
    pub fn stop(&self) {
        if !self.0.stopped.swap(true, Ordering::SeqCst) {
            // The pipe is never drained, so one byte keeps it readable for good. A full pipe
            // (impossible with one byte) would be readable too.
            let _ = nix::unistd::write(&self.0.write, &[1]);
        }
    }

    /// Whether [`stop`](Stopper::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// Sleeps `duration`, waking at once on stop. Returns `false` when stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        matches!(self.poll(&[], Some(Instant::now() + duration)), Ok(Some(_)))
    }

    /// Waits until one of `fds` has one of its events, `deadline` passes, or the signal
    /// stops. `None` when stopped; else each fd's returned events (all empty after the
    /// deadline).
    pub(crate) fn poll(
        &self,
        fds: &[(BorrowedFd<'_>, PollFlags)],
        deadline: Option<Instant>,
    ) -> io::Result<Option<Vec<PollFlags>>> {
        loop {
            if self.is_stopped() {
                return Ok(None);
            }
            let mut polled: Vec<PollFd<'_>> = fds
                .iter()
                .map(|(fd, events)| PollFd::new(*fd, *events))
                .collect();
            polled.push(PollFd::new(self.0.read.as_fd(), PollFlags::POLLIN));
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    // Round up so a wait never ends a little before its deadline.
                    let ms = left.as_micros().div_ceil(1000);
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as u32)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            match nix::poll::poll(&mut polled, timeout) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            if self.is_stopped() {
                return Ok(None);
            }
            let ready: Vec<PollFlags> = polled[..fds.len()]
                .iter()
                .map(|p| p.revents().unwrap_or(PollFlags::empty()))
                .collect();
            let timed_out = deadline.is_some_and(|at| Instant::now() >= at);
            if ready.iter().any(|r| !r.is_empty()) || timed_out {
                return Ok(Some(ready));
            }
        }
    }
}

impl AsFd for Stopper {
    /// The read end of the pipe: readable once stopped. Poll it with your own fds to make
    /// other blocking I/O stoppable.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.read.as_fd()
    }
}
