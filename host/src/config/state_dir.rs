//! Whether `settings.state_dir` can hold the host's private files, checked without changing it.

use std::path::{Path, PathBuf};

/// What `state_dir` offers: its free space, and whether it still has to be created.
#[derive(Debug)]
pub struct StateDirSpace {
    /// Bytes available to this service on its file system.
    pub free_bytes: u64,
    /// The folder does not exist yet; it is created in a folder that does.
    pub created_in: Option<PathBuf>,
}

/// Why `state_dir` cannot hold the host's private files.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("settings.state_dir {path} is a file, not a folder")]
    File { path: PathBuf },
    #[error("settings.state_dir {path} cannot be created: {blocker} is not a folder")]
    UnderAFile { path: PathBuf, blocker: PathBuf },
    #[error("settings.state_dir {path} cannot be used: {at}: {error}")]
    Io {
        path: PathBuf,
        at: PathBuf,
        error: std::io::Error,
    },
    #[error("settings.state_dir {path} is not writable by this service: {error}")]
    NotWritable {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Checks that `state_dir` is a folder this service can write in (or can be created as one),
/// without changing anything, and says how much space its file system has left.
pub fn inspect_state_dir(path: &Path) -> Result<StateDirSpace, StateDirError> {
    // The folder itself, else the nearest existing folder it would be created in.
    let mut existing = path;
    loop {
        let shown = if existing.as_os_str().is_empty() {
            Path::new(".")
        } else {
            existing
        };
        match std::fs::metadata(shown) {
            Ok(meta) if meta.is_dir() => {
                existing = shown;
                break;
            }
            Ok(_) if existing == path => {
                return Err(StateDirError::File {
                    path: path.to_owned(),
                })
            }
            Ok(_) => {
                return Err(StateDirError::UnderAFile {
                    path: path.to_owned(),
                    blocker: existing.to_owned(),
                })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                existing = existing.parent().unwrap_or(Path::new(""));
            }
            Err(error) => {
                return Err(StateDirError::Io {
                    path: path.to_owned(),
                    at: shown.to_owned(),
                    error,
                })
            }
        }
    }
    // An unnamed file (O_TMPFILE where supported): writing is tried, nothing is left behind.
    tempfile::tempfile_in(existing).map_err(|error| StateDirError::NotWritable {
        path: path.to_owned(),
        error,
    })?;
    let free_bytes = free_bytes(existing).map_err(|error| StateDirError::Io {
        path: path.to_owned(),
        at: existing.to_owned(),
        error,
    })?;
    Ok(StateDirSpace {
        free_bytes,
        created_in: (existing != path).then(|| existing.to_owned()),
    })
}

/// The bytes this process may still write to the file system holding `dir`.
#[cfg(unix)]
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir)?;
    Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// The bytes this process may still write to the volume holding `dir` (its quota included).
#[cfg(windows)]
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::windows::ffi::OsStrExt as _;
    use windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW;
    let wide: Vec<u16> = dir.as_os_str().encode_wide().chain([0]).collect();
    let mut available = 0u64;
    // SAFETY: `wide` is a NUL-terminated UTF-16 path; the one output pointer is a live u64,
    // the two others are null (not wanted), as the API allows.
    let ok = unsafe {
        GetDiskFreeSpaceExW(
            wide.as_ptr(),
            &mut available,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    match ok {
        0 => Err(std::io::Error::last_os_error()),
        _ => Ok(available),
    }
}
