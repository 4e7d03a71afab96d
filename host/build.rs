//! Lays out the release host's hot code together (see `host/hot-code.txt`).
//!
//! The kernel maps a binary's code 64 KiB around each page a process touches, so code that
//! runs for every record, spread over the binary, keeps most of it resident (the README's
//! "At the rates PBXs send, and idle"). `hot-code.txt` lists the functions a running host
//! executes after start-up, as `cargo xtask hot-code` recorded them; LLD's
//! `--symbol-ordering-file` puts them first in the text. Only where the linker of a release
//! build for x86_64 Linux takes that flag (LLD, Rust's default there since rustc 1.90), which
//! a probe link finds out. Elsewhere the build is unchanged: the same code, laid out as the compiler emits it.

use std::path::Path;

/// The list, beside this file.
const LIST: &str = "hot-code.txt";

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-env-changed=CALLLOGGER_LINK_MAP");
    let list = Path::new(&env("CARGO_MANIFEST_DIR")).join(LIST);
    if !list.exists() || !linker_takes_ordering(&list) {
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

/// Whether this build's linker takes the ordering file: a release build for x86_64 Linux
/// whose linker, asked to link an empty program with the same flags, accepts
/// `--symbol-ordering-file`. Rust's own linker for that target is LLD, which does, since
/// rustc 1.90; GNU ld (a distro's rustc, `-fuse-ld=bfd`) does not.
fn linker_takes_ordering(list: &Path) -> bool {
    if env("TARGET") != "x86_64-unknown-linux-gnu" || env("PROFILE") != "release" {
        return false;
    }
    let out = Path::new(&env("OUT_DIR")).join("lld-probe");
    let source = out.with_extension("rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let mut rustc = std::process::Command::new(env("RUSTC"));
    rustc
        .args(
            env("CARGO_ENCODED_RUSTFLAGS")
                .split('\x1f')
                .filter(|f| !f.is_empty()),
        )
        .args(["--target", "x86_64-unknown-linux-gnu", "-o"])
        .arg(&out)
        .arg(format!(
            "-Clink-arg=-Wl,--symbol-ordering-file={}",
            list.display()
        ))
        .arg("-Clink-arg=-Wl,--no-warn-symbol-ordering")
        .arg(&source)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        rustc
            .arg("-C")
            .arg(format!("linker={}", Path::new(&linker).display()));
    }
    rustc.status().is_ok_and(|status| status.success())
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}
