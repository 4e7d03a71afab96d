//! The state folder as the host relies on it: what is in it is delivered with the token, so it
//! gets the plugins folder's owner and mode check; and its free space is what the spool has left.

use std::path::{Path, PathBuf};

use super::trust::{self, LoaderPolicy};
use calllogger_spool as spool;

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
pub fn prepare(policy: &LoaderPolicy, dir: &Path) -> Result<(), StateDirError> {
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
pub fn check(policy: &LoaderPolicy, dir: &Path) -> Result<(), StateDirError> {
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
