//! The serial-port transport (feature `serial`).

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::poll::PollFlags;
use serialport::TTYPort;

use super::{FlowControl, LineBuffer, Parity, PortSettings};
use super::{Found, Shared, SourceError, Transport};

/// Opens the port as configured.
pub(crate) fn open(settings: &PortSettings) -> Result<TTYPort, SourceError> {
    use serialport::{DataBits, StopBits};
    let data_bits = match settings.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let stop_bits = match settings.stop_bits {
        2 => StopBits::Two,
        _ => StopBits::One,
    };
    serialport::new(&settings.port, settings.rate)
        .data_bits(data_bits)
        .parity(match settings.parity {
            Parity::None => serialport::Parity::None,
            Parity::Odd => serialport::Parity::Odd,
            Parity::Even => serialport::Parity::Even,
        })
        .stop_bits(stop_bits)
        .flow_control(match settings.flow_control {
            FlowControl::None => serialport::FlowControl::None,
            FlowControl::Software => serialport::FlowControl::Software,
            FlowControl::Hardware => serialport::FlowControl::Hardware,
        })
        .open_native()
        .map_err(|e| SourceError::io(format!("cannot open {}", settings.port), e.into()))
}

/// A serial port, reopened with the backoff when it fails or vanishes.
pub(crate) struct Serial {
    settings: PortSettings,
    port: Option<TTYPort>,
    buffer: LineBuffer,
}

impl Serial {
    pub(crate) fn new(settings: PortSettings, shared: &Shared) -> Self {
        Self {
            settings,
            port: None,
            buffer: shared.buffer(),
        }
    }
}

impl Transport for Serial {
    fn next(&mut self, shared: &mut Shared) -> Result<Option<Found>, SourceError> {
        loop {
            if let Some(range) = shared.scan(&mut self.buffer) {
                return Ok(Some(Found { conn: 0, range }));
            }
            if shared.stopper.is_stopped() {
                return Ok(None);
            }
            let Some(port) = &mut self.port else {
                match open(&self.settings) {
                    Ok(port) => {
                        shared.opened(&format!(
                            "{} at {} baud",
                            self.settings.port, self.settings.rate
                        ));
                        self.port = Some(port);
                        self.buffer = shared.buffer();
                    }
                    Err(e) if shared.retry_after(&e) => {}
                    Err(_) => return Ok(None),
                }
                continue;
            };
            // SAFETY: the descriptor belongs to `port`, which outlives this borrow.
            let fd = unsafe { BorrowedFd::borrow_raw(port.as_raw_fd()) };
            let polled = shared.stopper.poll(&[(fd, PollFlags::POLLIN)], None);
            if polled
                .map_err(|e| SourceError::io("cannot wait for the serial port", e))?
                .is_none()
            {
                return Ok(None);
            }
            // One read(2) of what poll(2) found; the port's own `Read` would poll it again.
            let read = nix::unistd::read(fd, self.buffer.space()).map_err(std::io::Error::from);
            let lost = match read {
                Ok(0) => std::io::Error::new(ErrorKind::UnexpectedEof, "the device closed"),
                Ok(n) => {
                    self.buffer.filled(n);
                    shared.retry.reset();
                    continue;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => e,
            };
            self.port = None;
            let error = SourceError::io(format!("lost {}", self.settings.port), lost);
            if !shared.retry_after(&error) {
                return Ok(None);
            }
        }
    }

    fn line(&self, found: &Found) -> &[u8] {
        self.buffer.get(found.range.clone())
    }
}
