//! `poll(2)` with a pipe as the waker.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::Interest;

/// What can be waited for: any file descriptor.
pub type Source<'a> = BorrowedFd<'a>;

/// Something that has a [`Source`]: every [`AsFd`] type.
pub trait AsSource {
    /// The descriptor to wait on.
    fn as_source(&self) -> Source<'_>;
}

impl<T: AsFd> AsSource for T {
    fn as_source(&self) -> Source<'_> {
        self.as_fd()
    }
}

#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    pub(crate) fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe()?;
        for fd in [&read, &write] {
            fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        Ok(Self { read, write })
    }

    pub(crate) fn fire(&self) {
        // One byte, never read: the pipe stays readable for good.
        let _ = nix::unistd::write(&self.write, &[1]);
    }

    pub(crate) fn source(&self) -> Source<'_> {
        self.read.as_fd()
    }
}

pub(crate) fn poll(
    pipe: &Pipe,
    sources: &[(Source<'_>, Interest)],
    timeout_ms: Option<i32>,
) -> io::Result<Vec<bool>> {
    let mut polled: Vec<PollFd<'_>> = sources
        .iter()
        .map(|(fd, interest)| {
            let events = match interest {
                Interest::Read => PollFlags::POLLIN,
                Interest::Write => PollFlags::POLLOUT,
            };
            PollFd::new(*fd, events)
        })
        .collect();
    polled.push(PollFd::new(pipe.source(), PollFlags::POLLIN));
    let timeout = match timeout_ms {
        None => PollTimeout::NONE,
        Some(ms) => PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    };
    nix::poll::poll(&mut polled, timeout)?;
    Ok(polled[..sources.len()]
        .iter()
        .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
        .collect())
}
