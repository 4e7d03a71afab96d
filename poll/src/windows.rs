//! `WSAPoll` with a loopback UDP socket as the waker (`WSAPoll` takes sockets only).

use std::io;
use std::net::UdpSocket;
use std::os::windows::io::{AsRawSocket, AsSocket, BorrowedSocket};

use windows_sys::Win32::Networking::WinSock::{
    WSAGetLastError, WSAPoll, POLLRDNORM, POLLWRNORM, SOCKET, WSAPOLLFD,
};

use super::Interest;

/// What can be waited for: a socket.
pub type Source<'a> = BorrowedSocket<'a>;

/// Something that has a [`Source`]: every [`AsSocket`] type.
pub trait AsSource {
    /// The socket to wait on.
    fn as_source(&self) -> Source<'_>;
}

impl<T: AsSocket> AsSource for T {
    fn as_source(&self) -> Source<'_> {
        self.as_socket()
    }
}

#[derive(Debug)]
pub(crate) struct Pipe {
    /// Bound to 127.0.0.1 and connected to itself.
    socket: UdpSocket,
}

impl Pipe {
    pub(crate) fn new() -> io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(socket.local_addr()?)?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket })
    }

    pub(crate) fn fire(&self) {
        // One datagram, never received: the socket stays readable for good.
        let _ = self.socket.send(&[1]);
    }

    pub(crate) fn source(&self) -> Source<'_> {
        self.socket.as_socket()
    }
}

pub(crate) fn poll(
    pipe: &Pipe,
    sources: &[(Source<'_>, Interest)],
    timeout_ms: Option<i32>,
) -> io::Result<Vec<bool>> {
    let entry = |socket: &Source<'_>, events| WSAPOLLFD {
        fd: socket.as_raw_socket() as SOCKET,
        events,
        revents: 0,
    };
    let mut polled: Vec<WSAPOLLFD> = sources
        .iter()
        .map(|(socket, interest)| {
            let events = match interest {
                Interest::Read => POLLRDNORM,
                Interest::Write => POLLWRNORM,
            };
            entry(socket, events)
        })
        .collect();
    polled.push(entry(&pipe.source(), POLLRDNORM));
    // SAFETY: `polled` is a live, writable array of `polled.len()` entries, each naming a
    // socket borrowed for the duration of this call.
    let n = unsafe {
        WSAPoll(
            polled.as_mut_ptr(),
            polled.len() as u32,
            timeout_ms.unwrap_or(-1),
        )
    };
    if n < 0 {
        // SAFETY: reads this thread's last Winsock error; no arguments.
        return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
    }
    Ok(polled[..sources.len()]
        .iter()
        .map(|p| p.revents != 0)
        .collect())
}
