//! The plugin cdylibs, built by cargo once per process and profile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::workspace;

/// Every plugin package the kit builds, in one cargo invocation: the shipped plugins and the
/// test fixtures.
const PACKAGES: &[&str] = &[
    "calllogger-mock-calls",
    "calllogger-siemens-hipath-serial",
    "calllogger-beronet",
    "calllogger-test-plugins",
    "calllogger-test-plugins-v2",
    "calllogger-incompatible-plugin",
    "calllogger-old-sdk-plugin",
    "calllogger-abort-plugin",
];

/// What the libraries (and, for Windows, the host) are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// This machine: the host under test is `target/<profile>/calllogger`.
    Native,
    /// `x86_64-pc-windows-gnu` (`.dll` libraries and `calllogger.exe`), run under Wine.
    Windows,
}

impl Platform {
    /// The target triple to pass to cargo, if not this machine's.
    pub fn triple(self) -> Option<&'static str> {
        match self {
            Self::Native => None,
            Self::Windows => Some("x86_64-pc-windows-gnu"),
        }
    }

    /// A library's file name as an installer names it there: `lib<stem>.so`, `<stem>.dll`.
    pub fn library_file_name(self, name: &str) -> String {
        match self {
            Self::Native => format!(
                "{}{name}.{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_EXTENSION
            ),
            Self::Windows => format!("{name}.dll"),
        }
    }

    fn library_extension(self) -> &'static str {
        match self {
            Self::Native => std::env::consts::DLL_EXTENSION,
            Self::Windows => "dll",
        }
    }

    fn library_prefix(self) -> &'static str {
        match self {
            Self::Native => std::env::consts::DLL_PREFIX,
            Self::Windows => "",
        }
    }
}

/// The cargo profile the libraries are built in: the host binary's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `target/debug`, as `cargo test` builds the host.
    Debug,
    /// `target/release`, as the benchmark builds it.
    Release,
}

impl Profile {
    /// The profile a binary under `target/` was built in (by its folder's name).
    pub fn of(binary: &Path) -> Self {
        if binary
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "release")
        {
            Self::Release
        } else {
            Self::Debug
        }
    }
}

/// The cargo running this build (`$CARGO`), for a build of its own. Without the
/// `CARGO_MANIFEST_DIR` cargo gives the process that runs it (a test, `cargo run`): ring's build
/// script reruns whenever that variable changes, so builds started from different places would
/// each rebuild ring and everything above it, and undo one another's.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.env_remove("CARGO_MANIFEST_DIR");
    command
}

/// The built library file for a crate's lib stem (`calllogger_mock_calls`), in `profile`, for
/// `platform`. The first call in a process builds every package in [`PACKAGES`] in one cargo
/// invocation (for Windows, the host too: see [`windows_host`]); the paths come from cargo's
/// own artifact messages, not from guessing its output folders.
pub(crate) fn library(profile: Profile, platform: Platform, stem: &str) -> PathBuf {
    let built = built(profile, platform);
    built
        .get(stem)
        .unwrap_or_else(|| panic!("cargo built no library {stem}: {:?}", built.keys()))
        .clone()
}

/// `calllogger.exe`, built for Windows (debug) with the Windows libraries.
pub fn windows_host() -> PathBuf {
    library(Profile::Debug, Platform::Windows, HOST_EXE)
}

/// The key of the Windows host among the built files.
const HOST_EXE: &str = "calllogger.exe";

fn built(profile: Profile, platform: Platform) -> &'static BTreeMap<String, PathBuf> {
    static BUILT: [OnceLock<BTreeMap<String, PathBuf>>; 4] = [const { OnceLock::new() }; 4];
    BUILT[profile as usize * 2 + platform as usize].get_or_init(|| build(profile, platform))
}

fn build(profile: Profile, platform: Platform) -> BTreeMap<String, PathBuf> {
    let mut build = cargo();
    build
        .current_dir(workspace())
        .args(["build", "--quiet", "--message-format=json"]);
    for package in PACKAGES {
        build.args(["-p", package]);
    }
    if let Some(triple) = platform.triple() {
        // The host is built for the other platform too (the native one is cargo test's own).
        build.args(["-p", "calllogger", "--target", triple]);
    }
    if profile == Profile::Release {
        build.arg("--release");
    }
    let output = build
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build for the plugin libraries");
    assert!(
        output.status.success(),
        "building the plugin libraries failed"
    );
    let mut libraries = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(exe) = message["executable"].as_str() {
            if exe.ends_with(".exe") {
                libraries.insert(HOST_EXE.to_owned(), PathBuf::from(exe));
            }
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
                .is_some_and(|e| e == platform.library_extension())
            {
                let stem = path.file_stem().unwrap().to_string_lossy();
                let stem = stem
                    .strip_prefix(platform.library_prefix())
                    .unwrap_or(&stem)
                    .to_owned();
                libraries.insert(stem, path);
            }
        }
    }
    libraries
}

/// Builds the crate in `fixture` the way a vendor does: out of the workspace, in release
/// mode, with its own lock file (`--locked`), into `target/<fixture name>`. Returns the path
/// of its `lib<library>.so`.
pub fn build_out_of_tree(fixture: &Path, library: &str) -> PathBuf {
    build_out_of_tree_for(Platform::Native, fixture, library)
}

/// [`build_out_of_tree`] for `platform` (`cargo build --target …`); returns the path of its
/// library file there (`<library>.dll` for Windows).
pub fn build_out_of_tree_for(platform: Platform, fixture: &Path, library: &str) -> PathBuf {
    let target = workspace()
        .join("target")
        .join(fixture.file_name().expect("a fixture folder"));
    let mut build = cargo();
    build
        .current_dir(fixture)
        .args(["build", "--release", "--locked", "--quiet"])
        .env("CARGO_TARGET_DIR", &target);
    let mut out = target.clone();
    if let Some(triple) = platform.triple() {
        build.args(["--target", triple]);
        out.push(triple);
    }
    let status = build
        .status()
        .expect("running cargo build for an out-of-tree fixture");
    assert!(status.success(), "building {} failed", fixture.display());
    out.join("release")
        .join(platform.library_file_name(library))
}
