//! Running the Windows host under Wine: Debian's `wine` (which `.ci/setup` installs), a Wine
//! prefix of the kit's own under `target/`, and the one DLL Wine 8.0 lacks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::workspace;

/// Debian's 64-bit Wine loader; `wine` on the PATH elsewhere.
fn loader() -> PathBuf {
    let debian = Path::new("/usr/lib/wine/wine64");
    if debian.exists() {
        return debian.to_owned();
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("wine"))
        .find(|wine| wine.exists());
    found.unwrap_or_else(|| {
        panic!(
            "the Windows tests need Wine (Debian's `wine`, with `gcc-mingw-w64-x86-64` and the \
             x86_64-pc-windows-gnu Rust target): run `bash .ci/setup` (as root) first"
        )
    })
}

/// The kit's own Wine prefix (created on first use, kept between runs); its `C:` drive is
/// `drive_c` in it.
pub fn prefix() -> PathBuf {
    workspace().join("target/wine-prefix")
}

/// `program` (a Windows `.exe`) under Wine, quiet, in the kit's prefix. The first call in a
/// process makes the prefix and puts the missing DLL beside `program`.
pub fn wine(program: &Path) -> Command {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    let loader = READY.get_or_init(|| {
        let loader = loader();
        let status = Command::new(&loader)
            .args(["wineboot", "--init"])
            .env("WINEPREFIX", prefix())
            .env("WINEDEBUG", "-all")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running wineboot");
        assert!(status.success(), "wineboot --init failed ({status})");
        loader
    });
    shim_beside(program);
    let mut command = Command::new(loader);
    command
        .arg(program)
        .env("WINEPREFIX", prefix())
        .env("WINEDEBUG", "-all");
    command
}

/// Builds `tests/fixtures/wine/bcryptprimitives.c` into `bcryptprimitives.dll` beside
/// `program`, unless it is there already.
fn shim_beside(program: &Path) {
    let dll = program.with_file_name("bcryptprimitives.dll");
    if dll.exists() {
        return;
    }
    let source = workspace().join("tests/fixtures/wine/bcryptprimitives.c");
    let partial = dll.with_extension(format!("{}.partial", std::process::id()));
    let status = Command::new("x86_64-w64-mingw32-gcc")
        .args(["-shared", "-O2", "-o"])
        .arg(&partial)
        .arg(&source)
        .arg("-ladvapi32")
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "the Windows tests need MinGW (Debian's `gcc-mingw-w64-x86-64`): run `bash \
                 .ci/setup` (as root) first ({e})"
            )
        });
    assert!(status.success(), "building {} failed", source.display());
    std::fs::rename(&partial, &dll).unwrap();
}
