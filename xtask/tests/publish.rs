//! The crates vendors build on stay publishable: the README's `cargo package` command (which
//! verifies each package against the others' through a local overlay) passes offline.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A cargo home of the test's own that shares the real one's registry index and downloaded
/// crates but unpacks sources afresh. Cargo unpacks the overlay's packages into
/// `registry/src` and never unpacks the same name and version twice, so with the real cargo
/// home a crate changed since the last run would be verified from its stale, earlier sources.
fn fresh_cargo_home(target: &Path) -> PathBuf {
    let real = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let home = target.join("publish-cargo-home");
    if home.exists() {
        std::fs::remove_dir_all(&home).unwrap();
    }
    std::fs::create_dir_all(home.join("registry")).unwrap();
    for shared in ["index", "cache"] {
        std::os::unix::fs::symlink(
            real.join("registry").join(shared),
            home.join("registry").join(shared),
        )
        .unwrap();
    }
    home
}

#[test]
fn the_readmes_cargo_package_command_packages_and_verifies_the_sdk_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let command = readme
        .lines()
        .find(|l| l.starts_with("cargo package "))
        .expect("the README gives the cargo package command");
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    for crate_name in [
        "calllogger-plugin-abi",
        "calllogger-poll",
        "calllogger-plugin-sdk-macros",
        "calllogger-plugin-sdk",
        "calllogger-plugin-test",
    ] {
        assert!(
            args.contains(&crate_name),
            "{command} packages {crate_name}"
        );
    }
    let output = Command::new(env!("CARGO"))
        .args(&args)
        // A working tree with changes, as during development. In the workspace's target
        // folder: the verification builds reuse what the test run built (91 s cold in a
        // folder of its own, 63 s here, on this project's machine).
        .arg("--allow-dirty")
        .env("CARGO_HOME", fresh_cargo_home(&root.join("target")))
        .current_dir(root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command} failed:\n{stderr}");
    for crate_name in ["calllogger-plugin-sdk", "calllogger-plugin-test"] {
        assert!(
            stderr.contains(&format!("Verifying {crate_name} v")),
            "{crate_name} was verified:\n{stderr}"
        );
    }
}
