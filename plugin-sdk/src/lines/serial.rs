//! The serial-port transport (feature `serial`).

use std::io::ErrorKind;

use super::{FlowControl, LineBuffer, Parity, PortSettings, Stopper};
use super::{Found, Shared, SourceError, Transport};

#[cfg(unix)]
type Port = serialport::TTYPort;
#[cfg(windows)]
type Port = serialport::COMPort;

/// How long a read waits on Windows before it checks for a stop (on Unix the stop wakes the
/// wait itself).
#[cfg(windows)]
const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Opens the port as configured.
pub(crate) fn open(settings: &PortSettings) -> Result<Port, SourceError> {
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
    let builder = serialport::new(&settings.port, settings.rate);
    #[cfg(windows)]
    let builder = builder.timeout(STOP_CHECK);
    builder
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
    port: Option<Port>,
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
            let lost = match read(port, &shared.stopper, self.buffer.space()) {
                Ok(None) => return Ok(None),
                Ok(Some(0)) => std::io::Error::new(ErrorKind::UnexpectedEof, "the device closed"),
                Ok(Some(n)) => {
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

/// Waits for bytes and reads what came; `None` when stopped.
#[cfg(unix)]
fn read(port: &mut Port, stopper: &Stopper, into: &mut [u8]) -> std::io::Result<Option<usize>> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `port`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(port.as_raw_fd()) };
    if stopper
        .poll(&[(fd, calllogger_poll::Interest::Read)], None)?
        .is_none()
    {
        return Ok(None);
    }
    // One read(2) of what poll(2) found; the port's own `Read` would poll it again.
    Ok(Some(nix::unistd::read(fd, into)?))
}

/// Waits up to [`STOP_CHECK`] for bytes and reads what came (`TimedOut` if none); `None`
/// when stopped. `WSAPoll` cannot wait on a port, so an idle port wakes every 100 ms.
#[cfg(windows)]
fn read(port: &mut Port, stopper: &Stopper, into: &mut [u8]) -> std::io::Result<Option<usize>> {
    if stopper.is_stopped() {
        return Ok(None);
    }
    std::io::Read::read(port, into).map(Some)
}
