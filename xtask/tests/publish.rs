//! The crates vendors build on stay publishable: the README's `cargo package` command (which
//! verifies each package against the others' through a local overlay) passes offline.

use std::path::{Path, PathBuf};

/// A cargo home of the test's own, in `dir`, sharing the real one's registry index and
/// downloaded crates. Cargo unpacks the overlay's packages into `registry/src` and never unpacks
/// a name and version twice, so the unpacked copies of this workspace's crates are removed
/// before each run: a crate changed since the last run without a new version would otherwise be
/// verified from its stale sources. The real cargo home is left alone.
fn cargo_home(dir: &Path) -> PathBuf {
    let real = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let home = dir.join("cargo-home");
    let registry = home.join("registry");
    std::fs::create_dir_all(registry.join("src")).unwrap();
    for shared in ["index", "cache"] {
        if !registry.join(shared).exists() {
            std::os::unix::fs::symlink(real.join("registry").join(shared), registry.join(shared))
                .unwrap();
        }
    }
    for source in std::fs::read_dir(registry.join("src")).unwrap() {
        for unpacked in std::fs::read_dir(source.unwrap().path()).unwrap() {
            let unpacked = unpacked.unwrap();
            if unpacked
                .file_name()
                .to_string_lossy()
                .starts_with("calllogger-")
            {
                std::fs::remove_dir_all(unpacked.path()).unwrap();
            }
        }
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
    let publish = root.join("target/publish");
    let output = calllogger_test_kit::cargo()
        .args(&args)
        // A working tree with changes, as during development. A cargo home and a target
        // folder of its own: dependencies unpacked elsewhere but built into the workspace's
        // target folder replace its libraries under the same names, and the next workspace
        // build rebuilds them all again.
        .arg("--allow-dirty")
        .env("CARGO_HOME", cargo_home(&publish))
        .env("CARGO_TARGET_DIR", publish.join("target"))
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
