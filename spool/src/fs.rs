//! The file operations the journal and the state folder's handling need, behind a seam, so
//! that tests can make them fail the way disks do (a full disk, an I/O error on flush).
//! SQLite does its own file access, and the state folder's lock file is taken with the
//! standard library: neither is behind this seam.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// How [`Filesystem::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// An existing file, for reading.
    Read,
    /// An existing file, for reading and writing.
    ReadWrite,
    /// A new file (owner-only), for reading and writing; fails if it exists.
    CreateNew,
}

/// What the spool needs to know of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// Its length in bytes.
    pub len: u64,
    /// Which file it is (device and inode on Unix): a file replaced under a path differs.
    pub identity: (u64, u64),
}

/// An open file.
pub trait FileHandle: Send + Sync {
    /// Reads at `offset` into `bytes`; returns how many were read (0 at the end).
    fn read_at(&self, bytes: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes some of `bytes` at `offset`; returns how many were written.
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<usize>;
    /// Flushes the file's data to the disk.
    fn sync_data(&self) -> io::Result<()>;
    /// Cuts or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The open file's metadata.
    fn metadata(&self) -> io::Result<Metadata>;

    /// Writes all of `bytes` at `offset`.
    fn write_all_at(&self, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.write_at(bytes, offset)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => {
                    bytes = &bytes[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }

    /// Reads into all of `bytes` from `offset`, or until the end; returns how many.
    fn fill_at(&self, bytes: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut filled = 0;
        while filled < bytes.len() {
            match self.read_at(&mut bytes[filled..], offset + filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
}

/// The file operations of the spool's journal and state folder.
pub trait Filesystem: Send + Sync {
    /// Opens the file at `path`.
    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn FileHandle>>;
    /// The metadata of the file at `path`.
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Creates the folder `path` and its parents, owner-only, if missing.
    fn create_private_dir(&self, path: &Path) -> io::Result<()>;
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFilesystem;

impl Filesystem for RealFilesystem {
    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn FileHandle>> {
        let mut options = OpenOptions::new();
        options.read(true);
        match how {
            Open::Read => {}
            Open::ReadWrite => {
                options.write(true);
            }
            Open::CreateNew => {
                options.write(true).create_new(true);
            }
        }
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        Ok(Box::new(options.open(path)?))
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        std::fs::metadata(path).map(|m| metadata_of(&m))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn create_private_dir(&self, path: &Path) -> io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(path)
    }
}

fn metadata_of(meta: &std::fs::Metadata) -> Metadata {
    #[cfg(unix)]
    let identity = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let identity = (0, 0);
    Metadata {
        len: meta.len(),
        identity,
    }
}

impl FileHandle for File {
    #[cfg(unix)]
    fn read_at(&self, bytes: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, bytes, offset)
    }

    #[cfg(windows)]
    fn read_at(&self, bytes: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(self, bytes, offset)
    }

    #[cfg(unix)]
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(self, bytes, offset)
    }

    #[cfg(windows)]
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_write(self, bytes, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn metadata(&self) -> io::Result<Metadata> {
        File::metadata(self).map(|m| metadata_of(&m))
    }
}

/// A [`RealFilesystem`] that fails on demand, for tests: writes past a budget of bytes, and
/// flushes, fail with the errors disks give.
#[cfg(test)]
pub(crate) mod fault {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    /// What to break, shared by the file system and every file it opened.
    #[derive(Default)]
    pub struct Faults {
        /// Bytes writes may still put in files before they fail with "no space left".
        write_budget: AtomicU64,
        /// Whether `write_budget` applies.
        limited: AtomicBool,
        /// Whether `sync_data` fails with an I/O error.
        sync_fails: AtomicBool,
    }

    impl Faults {
        /// From now on, writes fail with ENOSPC once `bytes` more were written.
        pub fn fill_disk_after(&self, bytes: u64) {
            self.write_budget.store(bytes, Ordering::SeqCst);
            self.limited.store(true, Ordering::SeqCst);
        }

        /// Every flush fails with EIO (`true`), or none (`false`).
        pub fn fail_sync(&self, fail: bool) {
            self.sync_fails.store(fail, Ordering::SeqCst);
        }

        /// Takes the faults away.
        pub fn heal(&self) {
            self.limited.store(false, Ordering::SeqCst);
            self.fail_sync(false);
        }
    }

    /// The file system with [`Faults`].
    #[derive(Clone, Default)]
    pub struct FaultFilesystem {
        pub faults: Arc<Faults>,
    }

    struct FaultFile {
        file: Box<dyn FileHandle>,
        faults: Arc<Faults>,
    }

    impl Filesystem for FaultFilesystem {
        fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn FileHandle>> {
            Ok(Box::new(FaultFile {
                file: RealFilesystem.open(path, how)?,
                faults: self.faults.clone(),
            }))
        }

        fn metadata(&self, path: &Path) -> io::Result<Metadata> {
            RealFilesystem.metadata(path)
        }

        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            RealFilesystem.rename(from, to)
        }

        fn remove_file(&self, path: &Path) -> io::Result<()> {
            RealFilesystem.remove_file(path)
        }

        fn create_private_dir(&self, path: &Path) -> io::Result<()> {
            RealFilesystem.create_private_dir(path)
        }
    }

    impl FileHandle for FaultFile {
        fn read_at(&self, bytes: &mut [u8], offset: u64) -> io::Result<usize> {
            self.file.read_at(bytes, offset)
        }

        /// Writes what the budget allows (a partial write, as a filling disk does), then fails.
        fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<usize> {
            if !self.faults.limited.load(Ordering::SeqCst) {
                return self.file.write_at(bytes, offset);
            }
            let budget = self.faults.write_budget.load(Ordering::SeqCst);
            if budget == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let allowed = bytes.len().min(budget as usize);
            let written = self.file.write_at(&bytes[..allowed], offset)?;
            self.faults
                .write_budget
                .fetch_sub(written as u64, Ordering::SeqCst);
            Ok(written)
        }

        fn sync_data(&self) -> io::Result<()> {
            if self.faults.sync_fails.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(5)); // EIO
            }
            self.file.sync_data()
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            self.file.set_len(len)
        }

        fn metadata(&self) -> io::Result<Metadata> {
            self.file.metadata()
        }
    }
}
