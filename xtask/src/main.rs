//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `demo [HOST ARGS…]`: build the host and the shipped plugins, stage the plugins into
//!   `target/demo/plugins`, and run the host on them with MockCalls (`target/demo/config.yml`
//!   over the built-in defaults, which run no plugin).
//! - `stage DIR [--release]`: build the shipped plugins and install them into DIR, the way an
//!   operator should (copy to a temporary name, then rename over the old file).
//! - `bench [NAME…]`: build in release mode and print the benchmark table (of the benchmarks
//!   named, or all).
//! - `hot-code [--check]`: record which of the release host's functions run after start-up
//!   into `host/hot-code.txt` (root and tracefs needed), or check that the release build lays
//!   them out together (`bench/hot_code.rs`).
//! - `deb [--arch amd64|arm64] [--out DIR]`: build the Debian package (`deb.rs`).
//! - `image [--rebuild-bases]`: build the Dockerfile with buildah on locally made base images and
//!   run `plugins`, `check` and `run` in the image (`image.rs`; slow, not run by CI).

mod bench;
mod deb;
mod image;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The plugin crates that ship with calllogger, by package and library file stem.
pub const SHIPPED_PLUGINS: &[(&str, &str)] = &[
    ("calllogger-mock-calls", "calllogger_mock_calls"),
    (
        "calllogger-siemens-hipath-serial",
        "calllogger_siemens_hipath_serial",
    ),
    ("calllogger-beronet", "calllogger_beronet"),
];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "demo" => demo(&rest),
        "stage" => {
            let release = rest.iter().any(|a| a == "--release");
            let Some(dir) = rest.iter().find(|a| !a.starts_with("--")) else {
                bail!("usage: cargo xtask stage DIR [--release]");
            };
            stage(Path::new(dir), release)?;
            Ok(())
        }
        "bench" => bench::run(&rest),
        "hot-code" => bench::hot_code(&rest),
        "deb" => deb::run(&rest),
        "image" => image::run(&rest),
        // The benchmark's read-only floor (`bench rates`), not for people.
        "floor" => match rest.as_slice() {
            [path] => bench::floor(path, None),
            [path, url, journal] => bench::floor(path, Some((url, journal))),
            _ => bail!(
                "usage: xtask floor PATH [FRONTEND_URL JOURNAL] (then the line count on stdin)"
            ),
        },
        _ => bail!(
            "usage: cargo xtask demo [HOST ARGS…] | stage DIR [--release] | bench [NAME…] | \
             hot-code [--check] | deb [--arch amd64|arm64] [--out DIR] | image [--rebuild-bases]"
        ),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn cargo() -> Command {
    let mut command = calllogger_test_kit::cargo();
    command.current_dir(root());
    command
}

/// Builds the host and the shipped plugins; returns the folder the artifacts are in.
pub fn build(release: bool) -> Result<PathBuf> {
    let mut packages = vec!["calllogger"];
    packages.extend(SHIPPED_PLUGINS.iter().map(|(package, _)| *package));
    build_packages(&packages, release)
}

/// Builds these packages; returns the folder the artifacts are in.
pub fn build_packages(packages: &[&str], release: bool) -> Result<PathBuf> {
    let mut build = cargo();
    build.arg("build");
    for package in packages {
        build.args(["-p", package]);
    }
    if release {
        build.arg("--release");
    }
    if !build.status().context("running cargo build")?.success() {
        bail!("cargo build failed");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target.join(if release { "release" } else { "debug" }))
}

/// Builds and installs the shipped plugins into `dir`; returns the artifacts folder.
pub fn stage(dir: &Path, release: bool) -> Result<PathBuf> {
    let artifacts = build(release)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Whatever the umask: the host refuses a folder or library others may write to.
    set_mode(dir, 0o755)?;
    for (_, stem) in SHIPPED_PLUGINS {
        let name = format!(
            "{}{stem}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        );
        // A new inode, never an overwrite: a running host has the old file mapped.
        let temporary = dir.join(format!(".{name}.partial"));
        std::fs::copy(artifacts.join(&name), &temporary)
            .with_context(|| format!("copying {name}"))?;
        set_mode(&temporary, 0o644)?;
        std::fs::rename(&temporary, dir.join(&name))?;
    }
    Ok(artifacts)
}

/// Sets a file's or folder's permission bits (Unix).
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// The demo's config: the built-in defaults run no plugin, the demo runs MockCalls.
const DEMO_CONFIG: &str = "# Written by `cargo demo`: MockCalls over the built-in defaults.\n\
                           settings:\n  plugins: [MockCalls]\n";

fn demo(host_args: &[String]) -> Result<()> {
    let demo = root().join("target").join("demo");
    let plugins = demo.join("plugins");
    let artifacts = stage(&plugins, false)?;
    let mut host =
        Command::new(artifacts.join(format!("calllogger{}", std::env::consts::EXE_SUFFIX)));
    host.arg("--plugin-dir")
        .arg(&plugins)
        .arg("--state-dir")
        .arg(demo.join("state"));
    if !host_args.iter().any(|a| a == "--config") {
        // MockCalls over the built-in defaults, whatever /etc/calllogger holds.
        let config = demo.join("config.yml");
        std::fs::write(&config, DEMO_CONFIG)
            .with_context(|| format!("writing {}", config.display()))?;
        host.arg("--config").arg(config);
    }
    host.args(host_args);
    eprintln!(
        "calllogger demo: plugins in {}; Ctrl-C to stop",
        plugins.display()
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        Err(host.exec()).context("starting the host")
    }
    #[cfg(not(unix))]
    {
        let status = host.status().context("starting the host")?;
        std::process::exit(status.code().unwrap_or(1));
    }
}
