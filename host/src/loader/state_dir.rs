//! The state folder as the host relies on it: what is in it is delivered with the token, so it
//! gets the plugins folder's owner and mode check; and its free space is what the spool has left.

use std::path::{Path, PathBuf};

use super::trust::{self, Policy};
use crate::spool;

/// Below this much free space in `state_dir`, start-up warns.
pub const LOW_SPACE: u64 = 64 * 1024 * 1024;

/// Why `state_dir` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot create the state folder {dir} (settings.state_dir): {source}")]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path} (in settings.state_dir): {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Untrusted(String),
}

/// Creates `dir` owner-only if it is missing, then [`check`]s it.
pub fn prepare(policy: &Policy, dir: &Path) -> Result<(), StateDirError> {
    if !dir.exists() {
        super::create_private_dir(dir).map_err(|source| StateDirError::Create {
            dir: dir.to_owned(),
            source,
        })?;
    }
    check(policy, dir)
}

/// Refuses `dir`, or a spool file in it, that is writable by group or others or owned by
/// another user (unless `policy` is not strict). A missing folder passes: `run` creates it.
pub fn check(policy: &Policy, dir: &Path) -> Result<(), StateDirError> {
    let wal = format!("{}-wal", spool::FILE);
    let files = [
        ("state folder", dir.to_owned()),
        ("spool journal", dir.join(spool::JOURNAL)),
        ("spool database", dir.join(spool::FILE)),
        ("spool database log", dir.join(wal)),
    ];
    for (what, path) in files {
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(StateDirError::Read { path, source }),
        };
        trust::check_record_permissions(policy, what, &path, &meta)
            .map_err(StateDirError::Untrusted)?;
    }
    Ok(())
}

/// Logs how much space `dir` has left: one info line, or a warning below [`LOW_SPACE`].
pub fn log_free_space(dir: &Path) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    match free_space(dir) {
        Ok(free) if free < LOW_SPACE => tracing::warn!(
            "state folder {}: only {:.1} MiB free (less than {:.0} MiB): the spool stores every \
             record there until it is delivered",
            dir.display(),
            mib(free),
            mib(LOW_SPACE)
        ),
        Ok(free) => tracing::info!("state folder {}: {:.1} MiB free", dir.display(), mib(free)),
        Err(e) => tracing::warn!(
            "state folder {}: cannot tell how much space is left: {e}",
            dir.display()
        ),
    }
}

/// The bytes an unprivileged writer can still store in `dir`'s filesystem.
#[cfg(unix)]
fn free_space(dir: &Path) -> std::io::Result<u64> {
    let stats = nix::sys::statvfs::statvfs(dir)?;
    Ok(stats.blocks_available() as u64 * stats.fragment_size() as u64)
}

#[cfg(not(unix))]
fn free_space(_dir: &Path) -> std::io::Result<u64> {
    Err(std::io::ErrorKind::Unsupported.into())
}
