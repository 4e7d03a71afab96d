//! A scratch installation of the host: `plugins/`, `state/` and a `config.yml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures::{library, windows_host, Platform, Profile};
use crate::{windows, Host};

/// A scratch installation of the host binary `host`, removed when dropped.
pub struct Install {
    /// The installation's folder (`plugins/`, `state/`, `config.yml`).
    pub dir: tempfile::TempDir,
    host: PathBuf,
    platform: Platform,
}

impl Install {
    /// An installation of the host binary `host` with these libraries (by stem, e.g.
    /// [`crate::TEST_PLUGINS`]; built in the host's profile) in its plugins folder, as
    /// `lib<stem>.so`, and this config.
    pub fn new(host: impl Into<PathBuf>, libraries: &[&str], config: &str) -> Self {
        Self::with(host.into(), Platform::Native, libraries, config)
    }

    /// The same for the Windows host (`calllogger.exe`, built on first use) and its `.dll`
    /// libraries (as `<stem>.dll`), run under Wine.
    pub fn windows(libraries: &[&str], config: &str) -> Self {
        Self::with(windows_host(), Platform::Windows, libraries, config)
    }

    fn with(host: PathBuf, platform: Platform, libraries: &[&str], config: &str) -> Self {
        let dir = tempfile::tempdir().expect("a scratch folder");
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        let install = Self {
            dir,
            host,
            platform,
        };
        // As an installer sets them, whatever the umask: the host refuses a writable folder.
        install.chmod(&install.plugins(), 0o755);
        for stem in libraries {
            install.add_library(stem, &platform.library_file_name(stem));
        }
        install.write_config(config);
        install
    }

    /// The built library file for a crate's lib stem, in the host binary's profile and for
    /// its platform (built on first use, once per process).
    pub fn library(&self, stem: &str) -> PathBuf {
        library(Profile::of(&self.host), self.platform, stem)
    }

    /// The platform the installation's host and libraries are built for.
    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// The plugins folder.
    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// The state folder (created by the host on its first run).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// Replaces the config file's text.
    pub fn write_config(&self, config: &str) {
        std::fs::write(self.config_path(), config).unwrap();
    }

    /// Copies a built library into the plugins folder under `file_name`, as `cp` does: over
    /// an existing file, its inode is rewritten in place.
    pub fn add_library(&self, stem: &str, file_name: &str) -> PathBuf {
        self.add_library_file(&self.library(stem), file_name)
    }

    /// Copies the library file `library` (built elsewhere) into the plugins folder under
    /// `file_name`, as [`Install::add_library`] does.
    pub fn add_library_file(&self, library: &Path, file_name: &str) -> PathBuf {
        let target = self.plugins().join(file_name);
        std::fs::copy(library, &target)
            .unwrap_or_else(|e| panic!("copying {}: {e}", library.display()));
        self.chmod(&target, 0o644);
        target
    }

    /// Installs a built library the careful way: copy to a hidden temporary name in the same
    /// folder, then rename over `file_name` (a new inode, atomically).
    pub fn replace_library_by_rename(&self, stem: &str, file_name: &str) -> PathBuf {
        let temporary = self.plugins().join(format!(".{file_name}.partial"));
        std::fs::copy(self.library(stem), &temporary).unwrap();
        self.chmod(&temporary, 0o644);
        let target = self.plugins().join(file_name);
        std::fs::rename(&temporary, &target).unwrap();
        target
    }

    /// Sets a file's or folder's permission bits.
    pub fn chmod(&self, path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The host command on this installation, with a clean environment for its settings and
    /// `RUST_LOG=info` (for Windows, under Wine, from the installation's folder).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = match self.platform {
            Platform::Native => Command::new(&self.host),
            Platform::Windows => {
                let mut wine = windows::wine(&self.host);
                wine.current_dir(self.dir.path());
                wine
            }
        };
        command
            .arg("--config")
            .arg(self.config_path())
            .arg("--plugin-dir")
            .arg(self.plugins())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(args)
            .env_remove("TOKEN")
            .env_remove("PLUGIN")
            .env_remove("CALLLOGGER_CONFIG")
            .env_remove("CALLLOGGER_PLUGIN_DIR")
            .env_remove("CALLLOGGER_STATE_DIR")
            .env("RUST_LOG", "info");
        command
    }

    /// Runs a one-shot command (`plugins`, `check`) and returns (success, stdout, stderr).
    pub fn run_cli(&self, args: &[&str]) -> (bool, String, String) {
        let output = self.command(args).output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Starts `calllogger run` in the background.
    pub fn start(&self) -> Host {
        let host = Host::spawn(self.command(&["run"]));
        match self.platform {
            Platform::Native => host,
            Platform::Windows => host.stopped_by(nix::sys::signal::Signal::SIGINT),
        }
    }
}
