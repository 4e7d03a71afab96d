//! Lays out the release host's hot code together (see `host/hot-code.txt`).
//!
//! The kernel maps a binary's code 64 KiB around each page a process touches, so code that
//! runs for every record, spread over the binary, keeps most of it resident (the README's
//! "At the rates PBXs send, and idle"). `hot-code.txt` lists the functions a running host
//! executes after start-up, as `cargo xtask hot-code` recorded them; LLD's
//! `--symbol-ordering-file` puts them first in the text. Only where LLD links: a release
//! build for x86_64 Linux with Rust's default linker (rustc 1.90 and later). Elsewhere the
//! build is unchanged: the same code, laid out as the compiler emits it.

use std::path::Path;

/// The list, beside this file.
const LIST: &str = "hot-code.txt";

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-env-changed=CALLLOGGER_LINK_MAP");
    let list = Path::new(&env("CARGO_MANIFEST_DIR")).join(LIST);
    if !links_with_lld() || !list.exists() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    // A function in the list that this build does not have (another toolchain's names) is
    // left out, not reported: `cargo xtask hot-code --check` reports them.
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    // For `cargo xtask hot-code`: where each function landed.
    if let Some(map) = std::env::var_os("CALLLOGGER_LINK_MAP") {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,-Map={}",
            Path::new(&map).display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-demangle");
    }
}

/// Whether this build's binaries are linked by LLD: Rust's default for x86_64 Linux since
/// rustc 1.90, unless a linker is configured.
fn links_with_lld() -> bool {
    let default_linker = std::env::var_os("RUSTC_LINKER").is_none()
        && !env("CARGO_ENCODED_RUSTFLAGS")
            .split('\x1f')
            .any(|flag| flag.contains("linker"));
    env("TARGET") == "x86_64-unknown-linux-gnu"
        && env("PROFILE") == "release"
        && default_linker
        && rustc_minor().is_some_and(|minor| minor >= 90)
}

/// The minor version of the rustc building this (`rustc 1.95.0 (…)`).
fn rustc_minor() -> Option<u32> {
    let output = std::process::Command::new(env("RUSTC"))
        .arg("--version")
        .output()
        .ok()?;
    let version = String::from_utf8(output.stdout).ok()?;
    version.split(['.', ' ']).nth(2)?.parse().ok()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}
