//! Shared test support: builds the real plugin cdylibs, and runs the real host binary on them.

#![allow(dead_code)] // each test file uses its own part of this module

pub mod frontend;
pub mod http;
pub mod mounts;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The plugin crates the tests load, by library file stem.
pub const MOCK_CALLS: &str = "calllogger_mock_calls";
pub const TEST_PLUGINS: &str = "calllogger_test_plugins";
/// The same classes as [`TEST_PLUGINS`], built as `calllogger-test-plugins-v2` 0.2.0.
pub const TEST_PLUGINS_V2: &str = "calllogger_test_plugins_v2";
pub const INCOMPATIBLE: &str = "calllogger_incompatible_plugin";
/// The incompatible fixture's source, declaring the previous plugin interface (0.2.0).
pub const OLD_SDK: &str = "calllogger_old_sdk_plugin";
pub const ABORT: &str = "calllogger_abort_plugin";
pub const HIPATH: &str = "calllogger_siemens_hipath_serial";
pub const BERONET: &str = "calllogger_beronet";

/// The library identities (`name version`) that `instance` started from, in order, from
/// the host's `started` log lines.
pub fn started_libraries(log: &str, instance: &str) -> Vec<String> {
    let needle = format!("started instance={instance} library=");
    log.lines()
        .filter_map(|l| Some(l[l.find(&needle)? + needle.len()..].trim().to_owned()))
        .collect()
}

/// Builds the crate in `fixture` the way a vendor does: out of the workspace, in release
/// mode, with its own lock file (`--locked`), into `target/<fixture name>`. Returns the path
/// of its `lib<library>.so`.
pub fn build_out_of_tree(fixture: &Path, library: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = workspace.join("target").join(fixture.file_name().unwrap());
    let status = Command::new(cargo)
        .current_dir(fixture)
        .args(["build", "--release", "--locked", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("running cargo build for an out-of-tree fixture");
    assert!(status.success(), "building {} failed", fixture.display());
    target.join(format!("release/lib{library}.so"))
}

/// The host binary under test.
pub fn host_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calllogger"))
}

/// Builds the plugin cdylibs (cargo does not build them for a test) once per test binary, in
/// the host's own profile, and returns where each library file is, by file stem. The paths
/// come from cargo's own artifact messages, not from guessing its output folders.
fn artifacts() -> &'static BTreeMap<String, PathBuf> {
    static LIBRARIES: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    LIBRARIES.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut build = Command::new(cargo);
        build
            .current_dir(workspace)
            .args(["build", "--quiet", "--message-format=json"]);
        for package in [
            "calllogger-mock-calls",
            "calllogger-siemens-hipath-serial",
            "calllogger-beronet",
            "calllogger-test-plugins",
            "calllogger-test-plugins-v2",
            "calllogger-incompatible-plugin",
            "calllogger-old-sdk-plugin",
            "calllogger-abort-plugin",
        ] {
            build.args(["-p", package]);
        }
        if host_binary()
            .parent()
            .unwrap()
            .file_name()
            .is_some_and(|n| n == "release")
        {
            build.arg("--release");
        }
        let output = build
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo build for the plugin fixtures");
        assert!(
            output.status.success(),
            "building the plugin fixtures failed"
        );
        let mut libraries = BTreeMap::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(message) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            for file in message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let path = PathBuf::from(file);
                if path
                    .extension()
                    .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
                {
                    let stem = path.file_stem().unwrap().to_string_lossy();
                    let stem = stem
                        .strip_prefix(std::env::consts::DLL_PREFIX)
                        .unwrap_or(&stem)
                        .to_owned();
                    libraries.insert(stem, path);
                }
            }
        }
        libraries
    })
}

/// The built library file for a crate's lib stem.
pub fn library(stem: &str) -> PathBuf {
    artifacts()
        .get(stem)
        .unwrap_or_else(|| panic!("cargo built no library {stem}: {:?}", artifacts().keys()))
        .clone()
}

/// A scratch installation: `plugins/`, `state/` and a `config.yml`.
pub struct Install {
    pub dir: tempfile::TempDir,
}

impl Install {
    /// An installation with these libraries in its plugins folder and this config.
    pub fn new(libraries: &[&str], config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        let install = Self { dir };
        // As an installer sets them, whatever the umask: the host refuses a writable folder.
        install.chmod(&install.plugins(), 0o755);
        for stem in libraries {
            install.add_library(stem, &format!("lib{stem}.so"));
        }
        install.write_config(config);
        install
    }

    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(self.config_path(), config).unwrap();
    }

    /// Copies a built library into the plugins folder under `file_name`, as `cp` does: over
    /// an existing file, its inode is rewritten in place.
    pub fn add_library(&self, stem: &str, file_name: &str) -> PathBuf {
        let target = self.plugins().join(file_name);
        std::fs::copy(library(stem), &target).unwrap();
        self.chmod(&target, 0o644);
        target
    }

    /// Installs a built library the careful way: copy to a hidden temporary name in the same
    /// folder, then rename over `file_name` (a new inode, atomically).
    pub fn replace_library_by_rename(&self, stem: &str, file_name: &str) -> PathBuf {
        let temporary = self.plugins().join(format!(".{file_name}.partial"));
        std::fs::copy(library(stem), &temporary).unwrap();
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

    /// The host command on this installation, with a clean environment for its settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(host_binary());
        command
            .arg("--config")
            .arg(self.config_path())
            .arg("--plugin-dir")
            .arg(self.plugins())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
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
        Host::spawn(self.command(&["run"]))
    }
}

/// A running host process whose stdout lines (records) and stderr (logs) are collected.
pub struct Host {
    pub child: Child,
    lines: Receiver<(Instant, String)>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        let stderr_reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Self {
            child,
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// The next record on stdout, with the time it was read; `None` after `timeout`.
    pub fn next_record(&self, timeout: Duration) -> Option<(Instant, Value)> {
        match self.lines.recv_timeout(timeout) {
            Ok((at, line)) => Some((
                at,
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}")),
            )),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Records until `pred` holds for one (returned last) or `timeout` passes (panics).
    pub fn records_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Vec<(Instant, Value)> {
        let until = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.next_record(left) {
                Some(record) => {
                    let done = pred(&record.1);
                    seen.push(record);
                    if done {
                        return seen;
                    }
                }
                None => panic!(
                    "no matching record within {timeout:?}; saw {} records; host log:\n{}",
                    seen.len(),
                    self.log()
                ),
            }
        }
    }

    /// Everything the host logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal to the host.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits up to `timeout` for the host to exit; kills it and panics if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Everything it wrote to stderr is in the log once the pipe is drained.
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return (status, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        panic!("host did not exit within {timeout:?}; log:\n{}", self.log());
    }

    /// Waits until the host's log contains `needle` `times` times (panics after `timeout`).
    pub fn wait_for_log(&mut self, needle: &str, times: usize, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.log().matches(needle).count() < times {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "host exited ({status}) before logging `{needle}`; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < until,
                "`{needle}` not logged within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and asserts a clean exit (status 0) within 15 s; returns the log.
    pub fn terminate(&mut self) -> String {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let (status, _) = self.wait_exit(Duration::from_secs(15));
        assert!(
            status.success(),
            "exit status {status}; log:\n{}",
            self.log()
        );
        self.log()
    }

    /// Records still buffered after exit.
    pub fn remaining_records(&self) -> Vec<Value> {
        std::iter::from_fn(|| self.next_record(Duration::from_millis(200)).map(|r| r.1)).collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
