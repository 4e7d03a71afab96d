//! `cargo xtask deb [--arch amd64|arm64] [--out DIR]`: the Debian package. The host and the
//! shipped plugins are cross-built with `cargo zigbuild` against glibc [`GLIBC_BASELINE`] (so
//! the package installs on Debian 11 and Raspberry Pi OS 11 as well as on newer releases),
//! laid out by `dist/install-root.sh` (as in the container image), with the systemd unit, a
//! starting config (a conffile), the man page, shell completions and the maintainer scripts of
//! `dist/deb/`. The package's `Depends` is read off the built files' ELF dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::{root, set_mode};

/// The oldest glibc the packages run on: Debian 11's.
pub const GLIBC_BASELINE: (u32, u32) = (2, 31);

/// Debian's architecture names, and the Rust target built for each.
const ARCHES: &[(&str, &str)] = &[
    ("amd64", "x86_64-unknown-linux-gnu"),
    ("arm64", "aarch64-unknown-linux-gnu"),
];

/// The libraries of glibc itself, which `libc6` provides.
const GLIBC_LIBRARIES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libutil.so.1",
];

/// `cargo xtask deb [--arch amd64|arm64] [--out DIR]`: prints the package's path.
pub fn run(args: &[String]) -> Result<()> {
    let usage = "usage: cargo xtask deb [--arch amd64|arm64] [--out DIR]";
    let mut arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
    .to_owned();
    let mut out = root().join("target").join("deb");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--arch" => arch = args.next().context(usage)?.clone(),
            "--out" => out = args.next().context(usage)?.into(),
            _ => bail!("{usage}"),
        }
    }
    let package = build(&arch, &out)?;
    println!("{}", package.display());
    Ok(())
}

/// Builds the package for Debian architecture `arch` into `out`; returns its path.
pub fn build(arch: &str, out: &Path) -> Result<PathBuf> {
    let Some((_, triple)) = ARCHES.iter().find(|(name, _)| *name == arch) else {
        bail!("no package for architecture {arch}: amd64 or arm64");
    };
    let stage = out.join(format!(".stage-{arch}"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    std::fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    set_mode(&stage, 0o755)?;

    let (major, minor) = GLIBC_BASELINE;
    let installed = Command::new("sh")
        .arg(root().join("dist/install-root.sh"))
        .arg(&stage)
        .env(
            "CALLLOGGER_BUILD_TARGET",
            format!("{triple}.{major}.{minor}"),
        )
        .current_dir(root())
        .status()
        .context("running dist/install-root.sh")?;
    ensure!(
        installed.success(),
        "dist/install-root.sh failed (cargo zigbuild needs `cargo install cargo-zigbuild` and \
         zig, e.g. `pip install ziglang`: `.ci/setup` installs both)"
    );

    let dist = root().join("dist");
    copy(
        &dist.join("calllogger.service"),
        &stage,
        "usr/lib/systemd/system/calllogger.service",
        0o644,
    )?;
    copy(
        &dist.join("config.yml"),
        &stage,
        "etc/calllogger/config.yml",
        0o640,
    )?;
    copy(
        &root().join("README.md"),
        &stage,
        "usr/share/doc/calllogger/README.md",
        0o644,
    )?;
    write(
        &stage,
        "usr/share/doc/calllogger/copyright",
        COPYRIGHT.as_bytes(),
        0o644,
    )?;
    let man = gzip(&host_output(&["man"])?)?;
    write(&stage, "usr/share/man/man1/calllogger.1.gz", &man, 0o644)?;
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/calllogger"),
        ("zsh", "usr/share/zsh/vendor-completions/_calllogger"),
        (
            "fish",
            "usr/share/fish/vendor_completions.d/calllogger.fish",
        ),
    ] {
        write(&stage, path, &host_output(&["completions", shell])?, 0o644)?;
    }

    let depends = depends(&stage)?;
    let control = control(arch, &depends, installed_size(&stage)?)?;
    write(&stage, "DEBIAN/control", control.as_bytes(), 0o644)?;
    write(
        &stage,
        "DEBIAN/conffiles",
        b"/etc/calllogger/config.yml\n",
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        copy(
            &dist.join("deb").join(script),
            &stage,
            &format!("DEBIAN/{script}"),
            0o755,
        )?;
    }

    let package = out.join(format!("calllogger_{}_{arch}.deb", version()?));
    let built = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&package)
        .status()
        .context("running dpkg-deb")?;
    ensure!(built.success(), "dpkg-deb --build failed");
    std::fs::remove_dir_all(&stage)?;
    Ok(package)
}

const COPYRIGHT: &str = "calllogger: call records from the PBX to the call-monitoring frontend.\n\
\n\
Copyright: the calllogger developers.\n\
License: MIT OR Apache-2.0 (either, at your option), for calllogger and for the Rust crates\n\
compiled into it, whose licenses permit this redistribution.\n";

/// The package's control file.
fn control(arch: &str, depends: &str, installed_kib: u64) -> Result<String> {
    Ok(format!(
        "Package: calllogger\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: calllogger developers <calllogger@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Description: call data records from office phone systems to a frontend\n \
         calllogger collects call data records (CDRs) from PBXs through plugins (Siemens\n \
         HiPath on a serial port, beroNet gateways, a mock PBX for trials) and delivers\n \
         them to a call-monitoring frontend over HTTP. Every record is kept in a spool\n \
         until the frontend has taken it. Runs as the systemd service calllogger.\n",
        version = version()?,
    ))
}

/// The host's version, from `host/Cargo.toml`.
fn version() -> Result<String> {
    let manifest = std::fs::read_to_string(root().join("host/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .context("no version in host/Cargo.toml")
}

/// `Depends`, from the libraries the staged ELF files need: `libc6` at the newest glibc
/// symbol version any of them uses (never newer than [`GLIBC_BASELINE`]), `libgcc-s1` if
/// unwinding needs it, and `passwd` for the postinst's `useradd`.
fn depends(stage: &Path) -> Result<String> {
    let mut newest = (2, 0);
    let mut gcc = false;
    for file in elf_files(stage)? {
        let needs = readelf(&file)?;
        for library in &needs.libraries {
            if library.starts_with("libgcc_s.so") {
                gcc = true;
            } else if !GLIBC_LIBRARIES.contains(&library.as_str())
                && !library.starts_with("ld-linux")
            {
                bail!(
                    "{} needs {library}, which no dependency provides",
                    file.display()
                );
            }
        }
        newest = newest.max(needs.glibc);
    }
    ensure!(
        newest <= GLIBC_BASELINE,
        "the build needs glibc {}.{}, newer than the baseline {}.{}",
        newest.0,
        newest.1,
        GLIBC_BASELINE.0,
        GLIBC_BASELINE.1
    );
    let mut depends = format!("libc6 (>= {}.{})", newest.0, newest.1);
    if gcc {
        depends.push_str(", libgcc-s1");
    }
    depends.push_str(", passwd");
    Ok(depends)
}

/// The shared libraries an ELF file needs, and the newest `GLIBC_x.y` version it uses.
struct Needs {
    libraries: Vec<String>,
    glibc: (u32, u32),
}

/// Reads `file`'s dynamic section and version needs with binutils' `readelf`, which reads
/// any architecture's ELF.
fn readelf(file: &Path) -> Result<Needs> {
    let output = Command::new("readelf")
        .args(["--dynamic", "--version-info", "--wide"])
        .arg(file)
        .output()
        .context("running readelf (binutils)")?;
    ensure!(output.status.success(), "readelf {} failed", file.display());
    let text = String::from_utf8_lossy(&output.stdout);
    let libraries = text
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| Some(line.split_once('[')?.1.split_once(']')?.0.to_owned()))
        .collect();
    let glibc = text
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|version| {
            let mut parts = version.split('.').map(str::parse::<u32>);
            Some((parts.next()?.ok()?, parts.next().unwrap_or(Ok(0)).ok()?))
        })
        .max()
        .unwrap_or((2, 0));
    Ok(Needs { libraries, glibc })
}

/// The staged ELF files: the host and the plugins.
fn elf_files(stage: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![stage.join("usr/bin/calllogger")];
    for entry in std::fs::read_dir(stage.join("usr/lib/calllogger/plugins"))? {
        files.push(entry?.path());
    }
    Ok(files)
}

/// The staged tree's size in KiB, as `Installed-Size` counts it.
fn installed_size(dir: &Path) -> Result<u64> {
    fn bytes(dir: &Path) -> Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            total += if entry.file_type()?.is_dir() {
                bytes(&entry.path())?
            } else {
                entry.metadata()?.len()
            };
        }
        Ok(total)
    }
    Ok(bytes(dir)?.div_ceil(1024))
}

/// What this machine's own build of the host prints (the man page, completions: the same for
/// every architecture).
fn host_output(args: &[&str]) -> Result<Vec<u8>> {
    let output = crate::cargo()
        .args(["run", "--quiet", "--locked", "-p", "calllogger", "--"])
        .args(args)
        .output()
        .context("running cargo run -p calllogger")?;
    ensure!(
        output.status.success(),
        "calllogger {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

/// `data` compressed as `gzip -9n` does (no name or time in the header: reproducible).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-9n")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    child.stdin.take().unwrap().write_all(data)?;
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "gzip failed");
    Ok(output.stdout)
}

fn copy(from: &Path, stage: &Path, to: &str, mode: u32) -> Result<()> {
    let data = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(stage, to, &data, mode)
}

fn write(stage: &Path, to: &str, data: &[u8], mode: u32) -> Result<()> {
    let path = stage.join(to);
    let mut folder = path.parent().unwrap();
    std::fs::create_dir_all(folder)?;
    while folder != stage {
        set_mode(folder, 0o755)?;
        folder = folder.parent().unwrap();
    }
    std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    set_mode(&path, mode)
}
