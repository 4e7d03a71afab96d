//! The journal: the spool's front, a file to which each `push` writes one line.
//!
//! Why not commit each record to SQLite directly: a SQLite commit costs ~20–25 µs here
//! (locks, WAL frame, index pages), which caps a single plugin at ~40,000 records/s before
//! anything else is done. One `write(2)` of a line costs a few µs and survives a crash of
//! the process just the same (the data is in the kernel); with `spool_fsync: always` it is
//! also `fdatasync`ed.
//!
//! The lines a push writes are also kept in memory (the *tail*) until the spool's applier
//! takes them into SQLite, so the file is only read back after a crash. It is bounded: a push
//! waits while the tail holds [`MAX_TAIL`] bytes, and once the applied part is long the spool
//! starts a new *generation* (a fresh file, written aside and renamed over the old one, that
//! carries the tail). The first line names the generation, and the spool's database records
//! the generation and offset it applied up to, in the same transaction as the records; so
//! every line is applied exactly once across crashes, a file restored from a backup or cut
//! short is recognised, and a file that is not this spool's is never applied.
//!
//! A write that fails (a full disk, an I/O error, a read-only file system) is cut back before
//! the next one, so no torn line is left in the file. A journal that is removed, shortened or
//! replaced while the host runs is noticed at the next apply ([`Journal::check`]) and written
//! afresh from memory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::error::{AppendError, JournalError};
use crate::fs::{FileHandle, Filesystem, Open};

/// Most bytes of lines that wait in memory for the applier; a push waits while there are more.
pub const MAX_TAIL: usize = 1 << 20;

/// What the first line of a journal file starts with.
const MAGIC: &str = "#calllogger-spool-journal 1 ";

/// What the first line of the file at a journal's path says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// No file, or an empty one.
    Missing,
    /// Written by calllogger 0.1 before journals had a header: lines from the first byte.
    Legacy,
    /// A journal of this generation; its lines start after the header.
    Generation(u64),
    /// Something else: not a journal this host wrote.
    Foreign,
}

impl Header {
    /// Reads the header of the file at `path`.
    pub fn read(fs: &dyn Filesystem, path: &Path) -> io::Result<Self> {
        let file = match fs.open(path, Open::Read) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::Missing),
            Err(e) => return Err(e),
        };
        let mut start = [0u8; 64];
        let read = file.fill_at(&mut start, 0)?;
        Ok(Self::parse(&start[..read]))
    }

    fn parse(start: &[u8]) -> Self {
        if start.is_empty() {
            return Self::Missing;
        }
        if let Some(rest) = start.strip_prefix(MAGIC.as_bytes()) {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if rest.get(digits) == Some(&b'\n') {
                if let Some(generation) = std::str::from_utf8(&rest[..digits])
                    .ok()
                    .and_then(|d| d.parse().ok())
                {
                    return Self::Generation(generation);
                }
            }
            return Self::Foreign;
        }
        // A 0.1 journal line: `kind \t pushed_at \t id \t body`.
        let legacy = start
            .split(|b| *b == b'\t')
            .next()
            .and_then(|t| std::str::from_utf8(t).ok())
            .is_some_and(|t| t.parse::<i32>().is_ok());
        if legacy {
            Self::Legacy
        } else {
            Self::Foreign
        }
    }
}

/// The header line of generation `generation`.
pub fn header_line(generation: u64) -> String {
    format!("{MAGIC}{generation}\n")
}

/// Lines the applier took from the tail: where they start in the file, and how many.
#[derive(Debug, Default)]
pub struct Taken {
    pub bytes: Vec<u8>,
    pub start: u64,
    pub records: u64,
}

/// What [`Journal::check`] found at the journal's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Our file, whole.
    Intact,
    /// No file at the path any more.
    Vanished,
    /// Our file, but shorter than what we wrote.
    Shrunk { len: u64 },
    /// Another file at the path.
    Replaced,
}

/// The append side of the journal, owned by the running host.
pub struct Journal {
    fs: Arc<dyn Filesystem>,
    path: PathBuf,
    fsync: bool,
    state: Mutex<State>,
    /// Signalled when the tail gains lines (work for the applier) or when it is woken.
    changed: Condvar,
    /// The applier, `changed`'s only waiter, waits on it (set and cleared under the state's
    /// lock): an append signals only then, which spares a busy applier's pusher a syscall
    /// per line.
    sleeping: AtomicBool,
    /// Signalled when a full tail is taken (room for the appends waiting for it).
    room: Condvar,
}

struct State {
    file: Box<dyn FileHandle>,
    identity: (u64, u64),
    generation: u64,
    /// Our length of the file: every byte before it is a whole line we wrote.
    end: u64,
    /// Lines appended since the applier last took them; they end at `end`.
    tail: Vec<u8>,
    tail_records: u64,
    /// A failed write may have left bytes past `end`: cut them before the next write.
    cut: bool,
    /// The applier is asked to stop waiting (see [`Journal::wake`]).
    woken: bool,
}

impl Journal {
    /// Opens the existing journal at `path` of `generation` (`0`: a legacy file without a
    /// header). A torn last line (a power loss mid-write: it was never acknowledged) is cut
    /// off so that new lines start clean. Returns the journal and the length of its whole
    /// lines.
    pub fn resume(
        fs: Arc<dyn Filesystem>,
        path: &Path,
        generation: u64,
        fsync: bool,
    ) -> Result<(Self, u64), JournalError> {
        let read = |source| JournalError::Read {
            path: path.to_owned(),
            source,
        };
        let file = fs.open(path, Open::ReadWrite).map_err(read)?;
        let meta = file.metadata().map_err(read)?;
        let end = complete_prefix_len(file.as_ref(), meta.len).map_err(read)?;
        if end < meta.len {
            file.set_len(end).map_err(|source| JournalError::Cut {
                path: path.to_owned(),
                source,
            })?;
        }
        let journal = Self::with(fs, path, fsync, file, meta.identity, generation, end);
        Ok((journal, end))
    }

    /// Writes a new, empty journal of `generation` aside and renames it over `path`. Returns
    /// the journal and the offset its lines start at.
    pub fn create(
        fs: Arc<dyn Filesystem>,
        path: &Path,
        generation: u64,
        fsync: bool,
    ) -> Result<(Self, u64), JournalError> {
        let Fresh {
            file,
            identity,
            start,
        } = write_generation(fs.as_ref(), path, generation, b"", fsync)?;
        let journal = Self::with(fs, path, fsync, file, identity, generation, start);
        Ok((journal, start))
    }

    fn with(
        fs: Arc<dyn Filesystem>,
        path: &Path,
        fsync: bool,
        file: Box<dyn FileHandle>,
        identity: (u64, u64),
        generation: u64,
        end: u64,
    ) -> Self {
        Self {
            fs,
            path: path.to_owned(),
            fsync,
            state: Mutex::new(State {
                file,
                identity,
                generation,
                end,
                tail: Vec::new(),
                tail_records: 0,
                cut: false,
                woken: false,
            }),
            changed: Condvar::new(),
            sleeping: AtomicBool::new(false),
            room: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation being written.
    #[cfg(test)]
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The applier waits for lines.
    #[cfg(test)]
    pub fn sleeping(&self) -> bool {
        self.sleeping.load(Ordering::SeqCst)
    }

    /// Appends one line (which must end with `\n`) in a single write; durable against a crash
    /// of the process when this returns, and against power loss too with `fsync`. Waits while
    /// the applier is [`MAX_TAIL`] behind. On an error nothing of the line stays in the file.
    /// Wakes nobody: the caller decides who applies the line ([`notify`](Journal::notify)
    /// for the applier).
    pub fn append(&self, line: &[u8]) -> Result<(), AppendError> {
        debug_assert!(line.ends_with(b"\n"));
        let mut state = self.lock();
        while state.tail.len() >= MAX_TAIL {
            state = self.room.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        let end = state.end;
        let written = (|| {
            if state.cut {
                state.file.set_len(end)?;
                state.cut = false;
            }
            state.file.write_all_at(line, end)?;
            if self.fsync {
                state.file.sync_data()?;
            }
            Ok(())
        })();
        if let Err(source) = written {
            // Cut back what part of the line reached the file; if even that fails, before the
            // next write.
            state.cut = state.file.set_len(end).is_err();
            return Err(AppendError {
                path: self.path.clone(),
                source,
            });
        }
        state.end += line.len() as u64;
        state.tail.extend_from_slice(line);
        state.tail_records += 1;
        Ok(())
    }

    /// Wakes the applier for the lines in the tail (its wait sees them: they were added under
    /// the lock it checks them with).
    pub fn notify(&self) {
        // An applier about to wait set this under the lock that `append` took after it, or
        // it saw the appended line before waiting.
        if self.sleeping.load(Ordering::SeqCst) {
            self.changed.notify_all();
        }
    }

    /// Takes the lines waiting in memory, for the applier (or a waiting cursor).
    pub fn take(&self) -> Taken {
        let mut state = self.lock();
        let bytes = std::mem::take(&mut state.tail);
        let records = std::mem::take(&mut state.tail_records);
        let start = state.end - bytes.len() as u64;
        drop(state);
        if bytes.len() >= MAX_TAIL {
            self.room.notify_all();
        }
        Taken {
            bytes,
            start,
            records,
        }
    }

    /// Takes the lines waiting in memory if there are some, and at most `max` records: for a
    /// sink's cursor that delivers them before they reach the queue.
    pub fn take_few(&self, max: u64) -> Option<Taken> {
        let mut state = self.lock();
        if state.tail_records == 0 || state.tail_records > max {
            return None;
        }
        let bytes = std::mem::take(&mut state.tail);
        let records = std::mem::take(&mut state.tail_records);
        Some(Taken {
            start: state.end - bytes.len() as u64,
            bytes,
            records,
        })
    }

    /// Puts lines the applier could not apply back in front of the tail.
    pub fn give_back(&self, mut taken: Taken) {
        let mut state = self.lock();
        taken.bytes.extend_from_slice(&state.tail);
        state.tail = taken.bytes;
        state.tail_records += taken.records;
    }

    /// Records waiting in memory for the applier.
    pub fn waiting(&self) -> u64 {
        self.lock().tail_records
    }

    /// Waits until lines wait in the tail, [`wake`](Journal::wake) is called, or `deadline`
    /// passes.
    pub fn wait_for_lines(&self, deadline: Option<Instant>) {
        let mut state = self.lock();
        while state.tail.is_empty() && !state.woken {
            self.sleeping.store(true, Ordering::SeqCst);
            let now = Instant::now();
            state = match deadline {
                Some(deadline) if deadline <= now => break,
                Some(deadline) => {
                    self.changed
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
        self.sleeping.store(false, Ordering::SeqCst);
        state.woken = false;
    }

    /// Ends the applier's current [`wait_for_lines`](Journal::wait_for_lines).
    pub fn wake(&self) {
        self.lock().woken = true;
        self.changed.notify_all();
    }

    /// Reads whole lines from the file between `from` and `to`: about `max` bytes, more when
    /// one line is longer.
    pub fn read_lines(&self, from: u64, to: u64, max: usize) -> Result<Vec<u8>, JournalError> {
        let state = self.lock();
        let span = to.saturating_sub(from) as usize;
        let mut want = span.min(max.max(1));
        let mut bytes = Vec::new();
        loop {
            let have = bytes.len();
            bytes.resize(want, 0);
            let filled = state
                .file
                .fill_at(&mut bytes[have..], from + have as u64)
                .map_err(|source| JournalError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            bytes.truncate(have + filled);
            let at_end = filled == 0 || bytes.len() >= span;
            if at_end || bytes[have..].contains(&b'\n') {
                whole_lines(&mut bytes, at_end);
                return Ok(bytes);
            }
            want = (want * 2).min(span);
        }
    }

    /// Whether the file at the path is still ours and whole: the same file, at least as long
    /// as what we wrote, and its header in place (a file cut short and then written past by
    /// a push has its length back, but not its start).
    pub fn check(&self) -> Found {
        let state = self.lock();
        let meta = match self.fs.metadata(&self.path) {
            Err(_) => return Found::Vanished,
            Ok(meta) if meta.identity != state.identity => return Found::Replaced,
            Ok(meta) => meta,
        };
        if meta.len < state.end {
            return Found::Shrunk { len: meta.len };
        }
        if state.generation > 0 {
            let header = header_line(state.generation);
            let mut start = vec![0; header.len()];
            let intact = state
                .file
                .fill_at(&mut start, 0)
                .is_ok_and(|n| n == start.len() && start == header.as_bytes());
            if !intact {
                return Found::Shrunk { len: meta.len };
            }
        }
        Found::Intact
    }

    /// Starts generation `generation`: a new file holding the lines still in the tail, renamed
    /// over the path (a file that is not ours is first moved to `aside`). Returns the offset
    /// the tail now starts at; the caller records it with the generation.
    pub fn rotate(&self, generation: u64, aside: Option<&Path>) -> Result<u64, JournalError> {
        let mut state = self.lock();
        if let Some(aside) = aside {
            // Best effort: it may have vanished meanwhile.
            let _ = self.fs.rename(&self.path, aside);
        }
        let Fresh {
            file,
            identity,
            start,
        } = write_generation(
            self.fs.as_ref(),
            &self.path,
            generation,
            &state.tail,
            self.fsync,
        )?;
        state.end = start + state.tail.len() as u64;
        state.file = file;
        state.identity = identity;
        state.generation = generation;
        state.cut = false;
        Ok(start)
    }
}

/// A journal file just written.
struct Fresh {
    file: Box<dyn FileHandle>,
    identity: (u64, u64),
    /// Where its lines start.
    start: u64,
}

/// Writes `header + carry` to a temporary file beside `path` and renames it over `path`.
fn write_generation(
    fs: &dyn Filesystem,
    path: &Path,
    generation: u64,
    carry: &[u8],
    fsync: bool,
) -> Result<Fresh, JournalError> {
    let create = |source| JournalError::Create {
        path: path.to_owned(),
        source,
    };
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(".new");
    let fresh = PathBuf::from(fresh);
    let header = header_line(generation);
    let file = (|| {
        let _ = fs.remove_file(&fresh);
        let file = fs.open(&fresh, Open::CreateNew)?;
        let mut bytes = Vec::with_capacity(header.len() + carry.len());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(carry);
        file.write_all_at(&bytes, 0)?;
        if fsync {
            file.sync_data()?;
        }
        fs.rename(&fresh, path)?;
        Ok(file)
    })()
    .map_err(|e| {
        let _ = fs.remove_file(&fresh);
        create(e)
    })?;
    let identity = file.metadata().map_err(create)?.identity;
    Ok(Fresh {
        file,
        identity,
        start: header.len() as u64,
    })
}

/// Keeps the whole lines of `bytes`; a last line without its `\n` stays only at the end of
/// the range (`at_end`), where the file's torn tail was already cut at open.
fn whole_lines(bytes: &mut Vec<u8>, at_end: bool) {
    match bytes.iter().rposition(|b| *b == b'\n') {
        Some(last) => bytes.truncate(last + 1),
        None if at_end => {}
        None => bytes.clear(),
    }
}

/// Whole lines of the file at `path` from `offset`, up to its end (for readers of the spool,
/// which own no [`Journal`]); empty when there is no file.
pub fn read_to_end(fs: &dyn Filesystem, path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    let file = match fs.open(path, Open::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len;
    let mut bytes = vec![0; len.saturating_sub(offset) as usize];
    let read = file.fill_at(&mut bytes, offset)?;
    bytes.truncate(read);
    whole_lines(&mut bytes, false);
    Ok(bytes)
}

/// The length of the file up to and including its last `\n`.
fn complete_prefix_len(file: &dyn FileHandle, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buffer = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buffer.len() as u64);
        let chunk = &mut buffer[..(end - start) as usize];
        if file.fill_at(chunk, start)? < chunk.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFilesystem;
    use std::io::Write;

    fn real() -> Arc<dyn Filesystem> {
        Arc::new(RealFilesystem)
    }

    fn lines(journal: &Journal) -> Vec<u8> {
        journal.take().bytes
    }

    #[test]
    fn lines_go_to_the_file_and_the_tail_and_a_torn_line_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (journal, start) = Journal::create(real(), &path, 7, false).unwrap();
        assert_eq!(
            Header::read(&RealFilesystem, &path).unwrap(),
            Header::Generation(7)
        );
        journal.append(b"1\t0\tone\t{}\n").unwrap();
        journal.append(b"1\t0\ttwo\t{}\n").unwrap();
        assert_eq!(journal.waiting(), 2);
        let taken = journal.take();
        assert_eq!((taken.start, taken.records), (start, 2));
        assert_eq!(taken.bytes, b"1\t0\tone\t{}\n1\t0\ttwo\t{}\n");
        let end = start + taken.bytes.len() as u64;
        assert_eq!(
            journal.read_lines(start, end, 1 << 20).unwrap(),
            taken.bytes
        );
        assert_eq!(
            journal.read_lines(start, end, 3).unwrap(),
            b"1\t0\tone\t{}\n",
            "whole lines only, a long one whole"
        );
        drop(journal);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"1\t0\tthr")
            .unwrap();
        let (journal, len) = Journal::resume(real(), &path, 7, false).unwrap();
        assert_eq!(len, end, "the torn line is gone");
        journal.append(b"1\t0\tthree\t{}\n").unwrap();
        assert_eq!(lines(&journal), b"1\t0\tthree\t{}\n");
        assert_eq!(
            read_to_end(&RealFilesystem, &path, start).unwrap(),
            b"1\t0\tone\t{}\n1\t0\ttwo\t{}\n1\t0\tthree\t{}\n"
        );
    }

    #[test]
    fn headers_tell_generations_legacy_files_and_strangers_apart() {
        assert_eq!(Header::parse(b""), Header::Missing);
        assert_eq!(
            Header::parse(header_line(42).as_bytes()),
            Header::Generation(42)
        );
        assert_eq!(Header::parse(b"2\t1700000000\tid\t{}\n"), Header::Legacy);
        assert_eq!(
            Header::parse(b"#calllogger-spool-journal 1 x\n"),
            Header::Foreign
        );
        assert_eq!(Header::parse(b"GET / HTTP/1.1\r\n"), Header::Foreign);
    }

    #[test]
    fn rotation_carries_the_tail_and_a_removed_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (journal, _) = Journal::create(real(), &path, 1, false).unwrap();
        journal.append(b"1\t0\ta\t{}\n").unwrap();
        assert_eq!(journal.check(), Found::Intact);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(journal.check(), Found::Vanished);
        let start = journal.rotate(2, None).unwrap();
        assert_eq!(journal.check(), Found::Intact);
        assert_eq!(
            Header::read(&RealFilesystem, &path).unwrap(),
            Header::Generation(2)
        );
        assert_eq!(
            read_to_end(&RealFilesystem, &path, start).unwrap(),
            b"1\t0\ta\t{}\n"
        );
        std::fs::write(dir.path().join("forged"), b"forged\n").unwrap();
        std::fs::rename(dir.path().join("forged"), &path).unwrap();
        assert_eq!(journal.check(), Found::Replaced);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("journal.new"));
        assert!(file.is_err(), "no temporary file is left behind");
    }

    #[test]
    fn a_shortened_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (journal, _) = Journal::create(real(), &path, 1, false).unwrap();
        journal.append(b"1\t0\ta\t{}\n").unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(3)
            .unwrap();
        assert_eq!(journal.check(), Found::Shrunk { len: 3 });
    }
}
