//! The journal: the spool's front, an append-only file to which each `push` writes one line.
//!
//! Why not commit each record to SQLite directly: a SQLite commit costs ~20–25 µs here
//! (locks, WAL frame, index pages), which caps a single plugin at ~40,000 records/s before
//! anything else is done. One `write(2)` of a line costs a few µs and survives a crash of
//! the process just the same (the data is in the kernel); with `spool_fsync: always` it is
//! also `fdatasync`ed. The spool moves journal lines into SQLite in batches, one
//! transaction per batch, recording in the same transaction how far it got; so every line is
//! applied exactly once, even across crashes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The append side of the journal.
pub struct Journal {
    path: PathBuf,
    append: Mutex<File>,
    fsync: bool,
}

impl Journal {
    /// Opens (or creates) the journal at `path`. A torn last line (a power loss mid-write: it
    /// was never acknowledged) is cut off so that new lines start clean.
    pub fn open(path: &Path, fsync: bool) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let keep = complete_prefix_len(&mut file, len)?;
            if keep < len {
                file.set_len(keep)?;
            }
        }
        Ok(Self {
            path: path.to_owned(),
            append: Mutex::new(file),
            fsync,
        })
    }

    /// Appends one line (which must end with `\n`) in a single write; durable against a crash
    /// of the process when this returns, and against power loss too with `fsync`.
    pub fn append(&self, line: &[u8]) -> io::Result<()> {
        debug_assert!(line.ends_with(b"\n"));
        let mut file = self.hold();
        file.write_all(line)?;
        if self.fsync {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Holds off appends (for as long as the guard lives), e.g. to truncate the journal.
    pub fn hold(&self) -> MutexGuard<'_, File> {
        self.append.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The journal's length in bytes.
    pub fn len(&self) -> io::Result<u64> {
        std::fs::metadata(&self.path).map(|m| m.len())
    }
}

/// Whole lines of the file at `path` from `offset`, at most `max` bytes (more if one line is
/// longer); empty when there are none. Readers need no [`Journal`].
pub fn read_lines(path: &Path, offset: u64, max: usize) -> io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    (&mut file).take(max as u64).read_to_end(&mut bytes)?;
    match bytes.iter().rposition(|b| *b == b'\n') {
        Some(last) => bytes.truncate(last + 1),
        // One line longer than `max`: read on to its end.
        None if bytes.len() == max => {
            let mut rest = Vec::new();
            file.read_to_end(&mut rest)?;
            bytes.extend_from_slice(&rest);
            let end = bytes.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
            bytes.truncate(end);
        }
        None => bytes.clear(),
    }
    Ok(bytes)
}

/// The length of the file up to and including its last `\n`.
fn complete_prefix_len(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buffer = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buffer.len() as u64);
        let chunk = &mut buffer[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
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

    #[test]
    fn whole_lines_are_read_back_and_a_torn_tail_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::open(&path, false).unwrap();
        journal.append(b"one\n").unwrap();
        journal.append(b"two\n").unwrap();
        assert_eq!(read_lines(&path, 0, 1024).unwrap(), b"one\ntwo\n");
        assert_eq!(read_lines(&path, 4, 1024).unwrap(), b"two\n");
        assert_eq!(
            read_lines(&path, 0, 5).unwrap(),
            b"one\n",
            "only whole lines"
        );
        assert_eq!(
            read_lines(&path, 0, 2).unwrap(),
            b"one\n",
            "a line longer than max is read whole"
        );
        drop(journal);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"thr")
            .unwrap();
        let journal = Journal::open(&path, false).unwrap();
        assert_eq!(journal.len().unwrap(), 8, "the torn line is gone");
        journal.append(b"three\n").unwrap();
        assert_eq!(read_lines(&path, 0, 1024).unwrap(), b"one\ntwo\nthree\n");
    }
}
