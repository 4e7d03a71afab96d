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

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The built library file for a crate's lib stem (`calllogger_mock_calls`), in `profile`.
/// The first call in a process builds every package in [`PACKAGES`] in one cargo invocation;
/// the paths come from cargo's own artifact messages, not from guessing its output folders.
pub(crate) fn library(profile: Profile, stem: &str) -> PathBuf {
    static BUILT: [OnceLock<BTreeMap<String, PathBuf>>; 2] = [OnceLock::new(), OnceLock::new()];
    let built = BUILT[profile as usize].get_or_init(|| build(profile));
    built
        .get(stem)
        .unwrap_or_else(|| panic!("cargo built no library {stem}: {:?}", built.keys()))
        .clone()
}

fn build(profile: Profile) -> BTreeMap<String, PathBuf> {
    let mut build = cargo();
    build
        .current_dir(workspace())
        .args(["build", "--quiet", "--message-format=json"]);
    for package in PACKAGES {
        build.args(["-p", package]);
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
}

/// Builds the crate in `fixture` the way a vendor does: out of the workspace, in release
/// mode, with its own lock file (`--locked`), into `target/<fixture name>`. Returns the path
/// of its `lib<library>.so`.
pub fn build_out_of_tree(fixture: &Path, library: &str) -> PathBuf {
    let target = workspace()
        .join("target")
        .join(fixture.file_name().expect("a fixture folder"));
    let status = cargo()
        .current_dir(fixture)
        .args(["build", "--release", "--locked", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("running cargo build for an out-of-tree fixture");
    assert!(status.success(), "building {} failed", fixture.display());
    target.join(format!("release/lib{library}.so"))
}
