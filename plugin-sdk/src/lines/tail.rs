//! The file transport: follows a file the PBX appends to, across rotation and restarts.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{FileSettings, Found, LineBuffer, Shared, SourceError, StartAt, Stopper, Transport};

/// A place in a file: which file (device and inode) and the byte after a line end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    dev: u64,
    ino: u64,
    offset: u64,
}

/// The file being read.
struct Open {
    file: File,
    dev: u64,
    ino: u64,
    /// File offset of the buffer's first byte of stream.
    base: u64,
    /// File offset up to which bytes were read.
    read: u64,
    buffer: LineBuffer,
}

impl Open {
    fn at(file: File, offset: u64, shared: &Shared) -> io::Result<Self> {
        let (dev, ino) = identity(&file)?;
        let mut open = Self {
            file,
            dev,
            ino,
            base: offset,
            read: offset,
            buffer: shared.buffer(),
        };
        open.file.seek(SeekFrom::Start(offset))?;
        Ok(open)
    }

    /// Where the next line starts.
    fn position(&self) -> Position {
        Position {
            dev: self.dev,
            ino: self.ino,
            offset: self.base + self.buffer.consumed(),
        }
    }
}

/// Follows `settings.path`, remembering the position of the last consumed line.
pub(crate) struct Tail {
    settings: FileSettings,
    dir: PathBuf,
    state: PathBuf,
    watch: Option<Watch>,
    file: Option<Open>,
    /// Where to open at next: the remembered position, or where a failed read left off.
    resume: Option<Position>,
    /// No position was ever remembered: `start_at` applies to the first open.
    first: bool,
    /// After the last line returned.
    last: Option<Position>,
}

impl Tail {
    pub(crate) fn new(settings: FileSettings, state_dir: &Path) -> Result<Self, SourceError> {
        let name: String = settings
            .path
            .to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let state = state_dir.join(format!("tail-{name}.pos"));
        let resume = match fs::read_to_string(&state) {
            Ok(text) => Some(parse_position(&text).ok_or_else(|| {
                SourceError::Settings(format!(
                    "{} is not a `device inode offset` position; delete it to read {} from \
                     its start",
                    state.display(),
                    settings.path.display()
                ))
            })?),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => {
                return Err(SourceError::io(
                    format!("cannot read {}", state.display()),
                    e,
                ))
            }
        };
        let dir = match settings.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        Ok(Self {
            first: resume.is_none(),
            settings,
            dir,
            state,
            watch: None,
            file: None,
            resume,
            last: None,
        })
    }

    fn path(&self) -> String {
        self.settings.path.display().to_string()
    }

    /// Opens the file to read next: the remembered one (even renamed away) at its position,
    /// else the file at `path`. `Ok(None)` while there is none.
    fn open_next(&mut self, shared: &mut Shared) -> io::Result<Option<Open>> {
        let path = &self.settings.path;
        if let Some(pos) = self.resume.take() {
            let same = |p: &Path| identity_of(p).is_ok_and(|id| id == (pos.dev, pos.ino));
            let found = match same(path) {
                true => Some(path.clone()),
                false => fs::read_dir(&self.dir)?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| same(p)),
            };
            if let Some(found) = found {
                let file = File::open(&found)?;
                let offset = if file.metadata()?.len() >= pos.offset {
                    pos.offset
                } else {
                    shared.closed(&format!(
                        "{} is shorter than its remembered position {}: reading it from the start",
                        found.display(),
                        pos.offset
                    ));
                    0
                };
                shared.opened(&format!("following {} from byte {offset}", found.display()));
                return Open::at(file, offset, shared).map(Some);
            }
            shared.closed(&format!(
                "the file last read (inode {}) is gone from {}: reading {} from the start",
                pos.ino,
                self.dir.display(),
                self.path()
            ));
        }
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let offset = match std::mem::take(&mut self.first) {
            true if self.settings.start_at == StartAt::End => file.metadata()?.len(),
            _ => 0,
        };
        shared.opened(&format!("following {} from byte {offset}", self.path()));
        Open::at(file, offset, shared).map(Some)
    }

    /// Waits for a change in the folder; `false` when stopped.
    fn wait(&mut self, shared: &mut Shared) -> Result<bool, SourceError> {
        let Some(watch) = &self.watch else {
            return Ok(true);
        };
        watch
            .wait(&shared.stopper)
            .map_err(|e| SourceError::io("cannot wait for file changes", e))
    }

    /// At the end of the open file: starts over if it shrank, moves on if it was renamed
    /// away. `false` when there is nothing to do but wait.
    fn at_end(&mut self, shared: &mut Shared) -> io::Result<bool> {
        let path = self.path();
        let Some(open) = &mut self.file else {
            return Ok(true);
        };
        if open.file.metadata()?.len() < open.read {
            shared.unterminated(&open.buffer);
            shared.closed(&format!("{path} was truncated: reading it from the start"));
            let file = open.file.try_clone()?;
            *open = Open::at(file, 0, shared)?;
            return Ok(true);
        }
        let replaced = match identity_of(&self.settings.path) {
            Ok(id) => id != (open.dev, open.ino),
            Err(_) => false,
        };
        if !replaced {
            return Ok(false);
        }
        // Lines written just before the rename are still to be read from the old file.
        if self.read_more(shared)? {
            return Ok(true);
        }
        if let Some(open) = self.file.take() {
            shared.unterminated(&open.buffer);
            shared.closed(&format!(
                "{path} (inode {}) was rotated away at byte {}",
                open.ino, open.read
            ));
        }
        Ok(true)
    }

    /// Reads what the open file has; `false` at its end.
    fn read_more(&mut self, shared: &mut Shared) -> io::Result<bool> {
        let Some(open) = &mut self.file else {
            return Ok(false);
        };
        loop {
            match open.file.read(open.buffer.space()) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    open.buffer.filled(n);
                    open.read += n as u64;
                    shared.retry.reset();
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One step of reading: `Ok(Some(_))` is a line, `Ok(None)` asks to wait.
    fn step(&mut self, shared: &mut Shared) -> io::Result<Option<Option<Found>>> {
        if let Some(open) = &mut self.file {
            if let Some(range) = shared.scan(&mut open.buffer) {
                self.last = Some(open.position());
                return Ok(Some(Some(Found { conn: 0, range })));
            }
        }
        if shared.stopper.is_stopped() {
            return Ok(None);
        }
        if self.watch.is_none() {
            self.watch = Some(Watch::new(&self.dir)?);
        }
        if self.file.is_none() {
            self.file = self.open_next(shared)?;
            return Ok(self.file.as_ref().map(|_| None));
        }
        if self.read_more(shared)? || self.at_end(shared)? {
            return Ok(Some(None));
        }
        Ok(None)
    }
}

fn parse_position(text: &str) -> Option<Position> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    let position = Position {
        dev: fields.next()??,
        ino: fields.next()??,
        offset: fields.next()??,
    };
    fields.next().is_none().then_some(position)
}

impl Transport for Tail {
    fn next(&mut self, shared: &mut Shared) -> Result<Option<Found>, SourceError> {
        loop {
            match self.step(shared) {
                Ok(Some(Some(found))) => return Ok(Some(found)),
                Ok(Some(None)) => {}
                Ok(None) => {
                    if !self.wait(shared)? {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    // Start again from the last line returned, with a fresh watch.
                    if let Some(open) = self.file.take() {
                        self.resume = Some(open.position());
                    }
                    self.watch = None;
                    let error = SourceError::io(format!("cannot follow {}", self.path()), e);
                    if !shared.retry_after(&error) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn line(&self, found: &Found) -> &[u8] {
        let open = self.file.as_ref().expect("a line comes from the open file");
        open.buffer.get(found.range.clone())
    }

    fn commit(&mut self) -> Result<(), SourceError> {
        let Some(pos) = self.last.take() else {
            return Ok(());
        };
        let temporary = self.state.with_extension("pos.tmp");
        fs::write(
            &temporary,
            format!("{} {} {}\n", pos.dev, pos.ino, pos.offset),
        )
        .and_then(|()| fs::rename(&temporary, &self.state))
        .map_err(|e| SourceError::io(format!("cannot write {}", self.state.display()), e))
    }
}

/// The identity of the file at `path`: device and inode (Unix), or volume serial number and
/// file index (Windows).
fn identity_of(path: &Path) -> io::Result<(u64, u64)> {
    #[cfg(unix)]
    return fs::metadata(path).map(|m| unix_identity(&m));
    #[cfg(windows)]
    return identity(&File::open(path)?);
}

/// The identity of an open file (see [`identity_of`]).
fn identity(file: &File) -> io::Result<(u64, u64)> {
    #[cfg(unix)]
    return file.metadata().map(|m| unix_identity(&m));
    #[cfg(windows)]
    return windows_identity(file);
}

#[cfg(unix)]
fn unix_identity(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

#[cfg(windows)]
fn windows_identity(file: &File) -> io::Result<(u64, u64)> {
    use std::os::windows::io::AsRawHandle as _;
    use windows_sys::Win32::Storage::FileSystem::{
        GetFileInformationByHandle, BY_HANDLE_FILE_INFORMATION,
    };
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: the handle belongs to `file`, open for this call; `info` is writable.
    if unsafe { GetFileInformationByHandle(file.as_raw_handle(), &mut info) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let index = (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow);
    Ok((u64::from(info.dwVolumeSerialNumber), index))
}

/// Changes in the file's folder: inotify (Unix).
#[cfg(unix)]
struct Watch(nix::sys::inotify::Inotify);

#[cfg(unix)]
impl Watch {
    fn new(dir: &Path) -> io::Result<Self> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_ATTRIB,
        )?;
        Ok(Self(inotify))
    }

    /// Waits for a change; `false` when stopped.
    fn wait(&self, stopper: &Stopper) -> io::Result<bool> {
        use std::os::fd::AsFd as _;
        let source = (self.0.as_fd(), calllogger_poll::Interest::Read);
        if stopper.poll(&[source], None)?.is_none() {
            return Ok(false);
        }
        // Every change leads to the same checks: the events themselves do not matter.
        while self.0.read_events().is_ok_and(|events| !events.is_empty()) {}
        Ok(true)
    }
}

/// Changes in the file's folder (Windows): looked for every [`Watch::EVERY`], since `WSAPoll`
/// cannot wait on a change notification beside the stop signal.
#[cfg(windows)]
struct Watch;

#[cfg(windows)]
impl Watch {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(250);

    fn new(_: &Path) -> io::Result<Self> {
        Ok(Self)
    }

    /// Waits [`Watch::EVERY`]; `false` when stopped.
    fn wait(&self, stopper: &Stopper) -> io::Result<bool> {
        Ok(stopper.sleep(Self::EVERY))
    }
}
