//! Real small file systems for fault tests: a tmpfs mounted for the test's life.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a fixed size mounted on a folder, unmounted when dropped (also on a panic).
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount` reads it: `64m`) on `path`, creating the folder.
    /// Needs root, as the project's machines and CI have; anywhere else the test fails and
    /// says so rather than passing without having run.
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("this test needs mount(8): run `bash .ci/setup` (as root) first");
        assert!(
            output.status.success(),
            "this test needs a real small file system: `mount -t tmpfs` failed (run the suite as root, as CI does): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self {
            path: path.to_owned(),
        }
    }

    /// Fills the file system up to the last byte with `filler`; returns the file's path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        for chunk in [1 << 16, 1 << 12, 1] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a host killed by the test may still hold files open for a moment.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
