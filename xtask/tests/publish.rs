//! The crates vendors build on stay publishable: the README's `cargo package` command (which
//! verifies each package against the others' through a local overlay) passes offline.

use std::path::Path;
use std::process::Command;

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
