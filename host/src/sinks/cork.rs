//! A request leaves in one write.
//!
//! The HTTP client writes a request's head and its body as two writes; with `TCP_NODELAY`
//! (which a request-response exchange needs) each becomes its own TCP segment, and the
//! frontend reads twice. [`Cork`] holds what is written until the client waits for the
//! response, then writes it at once: for a one-record POST, one `send` instead of two (the
//! profile showed each `send` on loopback costing about a tenth of the sink's thread).

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// The last link of the client's connector chain: each connection, [`Corked`].
#[derive(Debug)]
pub struct Cork;

impl<In: Transport> Connector<In> for Cork {
    type Out = Corked<In>;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Corked<In>>, ureq::Error> {
        Ok(chained.map(|inner| Corked {
            inner,
            held: Vec::new(),
        }))
    }
}

/// A connection whose writes wait for the next read (or the next wait for input).
#[derive(Debug)]
pub struct Corked<T> {
    inner: T,
    /// Written by the client, not yet sent.
    held: Vec<u8>,
}

/// Past this, the buffer of held bytes is not kept for the next request (a large batch).
const KEEP: usize = 64 << 10;

impl<T: Transport> Corked<T> {
    /// Sends what is held, in pieces the size of the connection's output buffer.
    fn release(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let mut sent = 0;
        while sent < self.held.len() {
            let output = self.inner.buffers().output();
            let n = output.len().min(self.held.len() - sent);
            output[..n].copy_from_slice(&self.held[sent..sent + n]);
            self.inner.transmit_output(n, timeout)?;
            sent += n;
        }
        self.held.clear();
        if self.held.capacity() > KEEP {
            self.held = Vec::new();
        }
        Ok(())
    }
}

impl<T: Transport> Transport for Corked<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), ureq::Error> {
        let output = self.inner.buffers().output();
        self.held.extend_from_slice(&output[..amount]);
        Ok(())
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.release(timeout)?;
        self.inner.maybe_await_input(timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.release(timeout)?;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

#[cfg(test)]
mod tests {
    use ureq::unversioned::transport::LazyBuffers;

    use super::*;

    /// A connection that records each write it is asked for.
    #[derive(Debug)]
    struct Recording {
        buffers: LazyBuffers,
        writes: Vec<Vec<u8>>,
    }

    impl Transport for Recording {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }

        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), ureq::Error> {
            let written = self.buffers.output()[..amount].to_vec();
            self.writes.push(written);
            Ok(())
        }

        fn await_input(&mut self, _: NextTimeout) -> Result<bool, ureq::Error> {
            Ok(false)
        }

        fn is_open(&mut self) -> bool {
            true
        }
    }

    fn corked(output_size: usize) -> Corked<Recording> {
        Corked {
            inner: Recording {
                buffers: LazyBuffers::new(16, output_size),
                writes: Vec::new(),
            },
            held: Vec::new(),
        }
    }

    fn write(corked: &mut Corked<Recording>, bytes: &[u8]) {
        corked.buffers().output()[..bytes.len()].copy_from_slice(bytes);
        corked
            .transmit_output(bytes.len(), NextTimeout::default())
            .unwrap();
    }

    #[test]
    fn head_and_body_leave_in_one_write_when_the_response_is_awaited() {
        let mut corked = corked(1024);
        write(&mut corked, b"POST / HTTP/1.1\r\n\r\n");
        write(&mut corked, b"{\"id\":1}");
        assert!(corked.inner.writes.is_empty(), "held until the response");
        corked.await_input(NextTimeout::default()).unwrap();
        assert_eq!(
            corked.inner.writes,
            [b"POST / HTTP/1.1\r\n\r\n{\"id\":1}".to_vec()]
        );
        write(&mut corked, b"next");
        corked.maybe_await_input(NextTimeout::default()).unwrap();
        assert_eq!(corked.inner.writes.len(), 2, "the next request, once");
    }

    #[test]
    fn more_than_the_output_buffer_leaves_in_pieces_of_its_size_in_order() {
        let mut corked = corked(8);
        write(&mut corked, b"01234567");
        write(&mut corked, b"89abcdef");
        write(&mut corked, b"gh");
        corked.await_input(NextTimeout::default()).unwrap();
        assert_eq!(corked.inner.writes.concat(), b"0123456789abcdefgh");
        assert!(corked.inner.writes.iter().all(|w| w.len() <= 8));
        assert_eq!(corked.inner.writes.len(), 3);
    }
}
