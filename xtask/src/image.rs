//! `cargo xtask image [--rebuild-bases]`: builds the repository's `Dockerfile`, unchanged, with
//! buildah, and runs the image. No Docker engine and no registry are needed: the two base images
//! the `FROM` lines name are made here and stored under those names (`docker.io/library/NAME`,
//! so buildah finds the short names locally, and never pulls) — the Debian one with
//! `mmdebstrap --variant=minbase` from the apt sources of this machine, the Rust one as the
//! official image is made (that base plus gcc, libc6-dev and ca-certificates) but with this
//! machine's Rust toolchain copied in. They are kept, and made again with `--rebuild-bases`.
//!
//! The build stage gets this machine's cargo registry as a volume, with cargo set offline (the
//! crates are fetched here first), so the build needs no network in the container. The image
//! store is `target/buildah` (overlay driver, chroot isolation: no daemon, no cgroups; override
//! with `$STORAGE_DRIVER` and `$BUILDAH_ISOLATION`). In the built image, as its user and with
//! its environment and entrypoint, it runs `plugins`, `check` (with MockCalls, and with a HiPath
//! section's time zone, a real and a made-up one) and a few seconds of `run` on MockCalls, with
//! the image's `HEALTHCHECK` command while `run` runs; then it removes the container and prints
//! how long each phase took. Needs root, buildah and mmdebstrap (`apt-get install buildah
//! mmdebstrap`). About 5 minutes on 2 cores with the bases to make, 3 with them stored.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{cargo, root};

/// The built image.
const IMAGE: &str = "calllogger:test";
/// The working container the checks run in.
const CONTAINER: &str = "calllogger-image-test";
/// What the official rust slim image installs on top of Debian that a build needs.
const RUST_BASE_PACKAGES: &str = "gcc libc6-dev ca-certificates";
/// Where the toolchain goes in the Rust base image (the official image's `CARGO_HOME`, and
/// the toolchain without rustup).
const CARGO_HOME: &str = "/usr/local/cargo";
const TOOLCHAIN: &str = "/usr/local/rust";
/// What Debian's slim images leave out (as debuerreotype's `slimify` does).
const SLIM_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
];
/// How long `calllogger run` runs before SIGINT.
const RUN_SECONDS: u64 = 8;

pub fn run(args: &[String]) -> Result<()> {
    let rebuild_bases = match args {
        [] => false,
        [flag] if flag == "--rebuild-bases" => true,
        _ => bail!("usage: cargo xtask image [--rebuild-bases]"),
    };
    check_tools()?;
    let bases = Bases::from_dockerfile(&root().join("Dockerfile"))?;
    let buildah = Buildah::new();
    let mut times = Vec::new();

    let started = Instant::now();
    bases.make(&buildah, rebuild_bases)?;
    times.push(("bases", started.elapsed()));

    let started = Instant::now();
    build(&buildah)?;
    times.push(("build", started.elapsed()));

    let started = Instant::now();
    let checked = check_image(&buildah);
    let removed = buildah.remove_container(CONTAINER);
    times.push(("runs", started.elapsed()));

    for (phase, time) in &times {
        println!("image: {phase:>5} {:6.1} s", time.as_secs_f64());
    }
    checked?;
    removed?;
    println!("image: {IMAGE} built and checked");
    Ok(())
}

fn check_tools() -> Result<()> {
    for tool in ["buildah", "mmdebstrap"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        ensure!(
            found,
            "{tool} is missing: apt-get install buildah mmdebstrap (and run this as root)"
        );
    }
    Ok(())
}

/// buildah with its image store in `target/buildah`.
struct Buildah {
    dir: PathBuf,
}

impl Buildah {
    fn new() -> Self {
        Buildah {
            dir: root().join("target").join("buildah"),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("buildah");
        command
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .current_dir(root());
        for (key, default) in [
            ("STORAGE_DRIVER", "overlay"),
            ("BUILDAH_ISOLATION", "chroot"),
        ] {
            if std::env::var_os(key).is_none() {
                command.env(key, default);
            }
        }
        command
    }

    /// Runs buildah with these arguments, its output passed through.
    fn run(&self, args: &[&str]) -> Result<()> {
        let status = self
            .command()
            .args(args)
            .status()
            .context("running buildah")?;
        ensure!(status.success(), "buildah {} failed", args.join(" "));
        Ok(())
    }

    /// Runs buildah with these arguments; returns its trimmed stdout.
    fn output(&self, args: &[&str]) -> Result<String> {
        let output = self
            .command()
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .context("running buildah")?;
        ensure!(output.status.success(), "buildah {} failed", args.join(" "));
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn image_exists(&self, image: &str) -> bool {
        self.command()
            .args(["inspect", "--type", "image", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// A working container from a local image (never pulled).
    fn from(&self, image: &str, name: &str) -> Result<()> {
        self.remove_container(name)?;
        self.output(&["from", "--pull=never", "--quiet", "--name", name, image])?;
        Ok(())
    }

    fn remove_container(&self, name: &str) -> Result<()> {
        let exists = self
            .command()
            .args(["inspect", "--type", "container", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if exists {
            self.output(&["rm", name])?;
        }
        Ok(())
    }

    /// A value of the image's config, as a Go template gives it.
    fn inspect(&self, image: &str, template: &str) -> Result<String> {
        self.output(&["inspect", "--type", "image", "--format", template, image])
    }
}

/// The images the Dockerfile's `FROM` lines name.
struct Bases {
    /// `debian:SUITE-slim`, the runtime stage's.
    debian: String,
    /// `rust:VERSION-slim-SUITE`, the build stage's.
    rust: String,
    suite: String,
    rust_version: String,
}

impl Bases {
    fn from_dockerfile(path: &Path) -> Result<Self> {
        let dockerfile =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let images: Vec<&str> = dockerfile
            .lines()
            .filter_map(|line| line.strip_prefix("FROM "))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        let find = |prefix: &str| {
            images
                .iter()
                .find_map(|image| image.strip_prefix(prefix))
                .with_context(|| format!("the Dockerfile has no FROM {prefix}…: {images:?}"))
        };
        let debian_tag = find("debian:")?;
        let rust_tag = find("rust:")?;
        let suite = debian_tag
            .strip_suffix("-slim")
            .with_context(|| format!("debian:{debian_tag} is not a slim image"))?;
        let Some((rust_version, rust_suite)) = rust_tag.split_once("-slim-") else {
            bail!("rust:{rust_tag} is not VERSION-slim-SUITE");
        };
        ensure!(
            rust_suite == suite,
            "the stages' Debian releases differ: {rust_suite} and {suite}"
        );
        Ok(Bases {
            debian: format!("docker.io/library/debian:{debian_tag}"),
            rust: format!("docker.io/library/rust:{rust_tag}"),
            suite: suite.to_owned(),
            rust_version: rust_version.to_owned(),
        })
    }

    /// Makes the base images not yet stored (or all, if `rebuild`).
    fn make(&self, buildah: &Buildah, rebuild: bool) -> Result<()> {
        if rebuild {
            for image in [&self.rust, &self.debian] {
                if buildah.image_exists(image) {
                    buildah.output(&["rmi", "--force", image])?;
                }
            }
        }
        if buildah.image_exists(&self.debian) {
            println!("image: {} is stored", self.debian);
        } else {
            self.make_debian(buildah)?;
        }
        if buildah.image_exists(&self.rust) {
            println!("image: {} is stored", self.rust);
        } else {
            self.make_rust(buildah)?;
        }
        Ok(())
    }

    /// `debian:SUITE-slim`: mmdebstrap's minbase, without docs, as one layer.
    fn make_debian(&self, buildah: &Buildah) -> Result<()> {
        println!("image: making {} with mmdebstrap", self.debian);
        std::fs::create_dir_all(&buildah.dir)
            .with_context(|| format!("creating {}", buildah.dir.display()))?;
        let tarball = buildah.dir.join(format!("{}.tar", self.suite));
        let mut mmdebstrap = Command::new("mmdebstrap");
        mmdebstrap.arg("--variant=minbase");
        for option in SLIM_EXCLUDES {
            mmdebstrap.arg(format!("--dpkgopt={option}"));
        }
        let status = mmdebstrap
            .arg(&self.suite)
            .arg(&tarball)
            .arg(mirror(&self.suite))
            .status()
            .context("running mmdebstrap")?;
        ensure!(status.success(), "mmdebstrap failed");

        let container = "calllogger-base-debian";
        buildah.remove_container(container)?;
        buildah.output(&["from", "--quiet", "--name", container, "scratch"])?;
        let tarball = tarball.to_str().context("a non-UTF-8 path")?;
        buildah.run(&["add", "--quiet", container, tarball, "/"])?;
        buildah.run(&["config", "--cmd", "bash", container])?;
        buildah.run(&["commit", "--quiet", "--rm", container, &self.debian])?;
        std::fs::remove_file(tarball).with_context(|| format!("removing {tarball}"))?;
        Ok(())
    }

    /// `rust:VERSION-slim-SUITE`: the Debian base, what the official image installs for
    /// builds, and this machine's toolchain (it must be that version) without rustup.
    fn make_rust(&self, buildah: &Buildah) -> Result<()> {
        let version = host_output("rustc", &["--version"])?;
        ensure!(
            version.split_whitespace().nth(1).is_some_and(
                |v| v == self.rust_version || v.starts_with(&format!("{}.", self.rust_version))
            ),
            "{} needs Rust {}, this machine's rustc is {version} (rustup toolchain install {})",
            self.rust,
            self.rust_version,
            self.rust_version
        );
        let sysroot = PathBuf::from(host_output("rustc", &["--print", "sysroot"])?);
        let host = host_output("rustc", &["-vV"])?
            .lines()
            .find_map(|line| line.strip_prefix("host: "))
            .context("rustc -vV names no host")?
            .to_owned();
        println!(
            "image: making {} with the toolchain in {}",
            self.rust,
            sysroot.display()
        );

        let container = "calllogger-base-rust";
        buildah.from(&self.debian, container)?;
        let install = format!(
            "apt-get update && apt-get install -y --no-install-recommends {RUST_BASE_PACKAGES} \
             && rm -rf /var/lib/apt/lists/* && mkdir -p {CARGO_HOME}/registry"
        );
        buildah.run(&["run", container, "--", "sh", "-c", &install])?;
        for (from, to) in toolchain_files(&sysroot, &host)? {
            let from = from.to_str().context("a non-UTF-8 path")?;
            buildah.run(&["copy", "--quiet", container, from, &to])?;
        }
        let path = format!(
            "PATH={CARGO_HOME}/bin:{TOOLCHAIN}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:\
             /usr/bin:/sbin:/bin"
        );
        let cargo_home = format!("CARGO_HOME={CARGO_HOME}");
        let rust_version = format!("RUST_VERSION={}", self.rust_version);
        buildah.run(&[
            "config",
            "--env",
            &path,
            "--env",
            &cargo_home,
            "--env",
            &rust_version,
            container,
        ])?;
        buildah.run(&["run", container, "--", "cargo", "--version"])?;
        buildah.run(&["commit", "--quiet", "--rm", container, &self.rust])?;
        Ok(())
    }
}

/// The apt sources for mmdebstrap: this machine's, if they are for `suite`, else Debian's.
fn mirror(suite: &str) -> String {
    let sources = "/etc/apt/sources.list.d/debian.sources";
    match std::fs::read_to_string(sources) {
        Ok(text)
            if text.lines().any(|line| {
                line.starts_with("Suites:") && line.split_whitespace().any(|s| s == suite)
            }) =>
        {
            sources.to_owned()
        }
        _ => "http://deb.debian.org/debian".to_owned(),
    }
}

/// What to copy of the toolchain in `sysroot`, and where: the programs and the libraries for
/// `host`; not the docs, nor the standard libraries for other targets.
fn toolchain_files(sysroot: &Path, host: &str) -> Result<Vec<(PathBuf, String)>> {
    let mut files = vec![
        (sysroot.join("bin"), format!("{TOOLCHAIN}/bin/")),
        (sysroot.join("libexec"), format!("{TOOLCHAIN}/libexec/")),
    ];
    for (dir, to) in [("lib", "lib"), ("lib/rustlib", "lib/rustlib")] {
        let dir = sysroot.join(dir);
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // A folder with a `lib` in it is a target's standard library.
            let other_target = path.join("lib").is_dir() && name != host;
            if name == "rustlib" || other_target {
                continue;
            }
            let to = if path.is_dir() {
                format!("{TOOLCHAIN}/{to}/{name}/")
            } else {
                format!("{TOOLCHAIN}/{to}/")
            };
            files.push((path, to));
        }
    }
    Ok(files)
}

fn host_output(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        output.status.success(),
        "{program} {} failed",
        args.join(" ")
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Fetches the crates here, then builds the Dockerfile with the cargo registry as a volume.
fn build(buildah: &Buildah) -> Result<()> {
    let fetched = cargo()
        .args(["fetch", "--locked"])
        .status()
        .context("running cargo fetch")?;
    ensure!(fetched.success(), "cargo fetch failed");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    std::fs::create_dir_all(&buildah.dir)
        .with_context(|| format!("creating {}", buildah.dir.display()))?;
    let config = buildah.dir.join("cargo-offline.toml");
    std::fs::write(&config, "[net]\noffline = true\n")
        .with_context(|| format!("writing {}", config.display()))?;
    let registry = format!(
        "{}:{CARGO_HOME}/registry",
        cargo_home.join("registry").display()
    );
    let config = format!("{}:{CARGO_HOME}/config.toml:ro", config.display());
    println!("image: building {IMAGE} from the Dockerfile");
    // The docker format keeps HEALTHCHECK, which OCI image configs have no field for.
    buildah.run(&[
        "bud",
        "--pull=never",
        "--format=docker",
        "--volume",
        &registry,
        "--volume",
        &config,
        "--tag",
        IMAGE,
        ".",
    ])?;
    // The image this replaced, now untagged.
    buildah.output(&["rmi", "--prune"])?;
    Ok(())
}

/// Runs the built image's commands in a container from it; prints each result.
fn check_image(buildah: &Buildah) -> Result<()> {
    let entrypoint = buildah.inspect(IMAGE, "{{range .Docker.Config.Entrypoint}}{{.}}\n{{end}}")?;
    let entrypoint: Vec<&str> = entrypoint.lines().collect();
    let user = buildah.inspect(IMAGE, "{{.Docker.Config.User}}")?;
    let healthcheck = buildah.inspect(
        IMAGE,
        "{{range .Docker.Config.Healthcheck.Test}}{{.}}\n{{end}}",
    )?;
    let healthcheck: Vec<&str> = healthcheck.lines().skip(1).collect();
    ensure!(!entrypoint.is_empty(), "{IMAGE} has no ENTRYPOINT");
    ensure!(!healthcheck.is_empty(), "{IMAGE} has no HEALTHCHECK CMD");
    buildah.from(IMAGE, CONTAINER)?;
    println!("image: running {entrypoint:?} as user {user:?} in {CONTAINER}");
    // `options`: buildah run's (--env, --volume); `before`: a wrapper around the entrypoint.
    let run_in = |options: &[&str], before: &[&str], args: &[&str]| {
        let mut command = buildah.command();
        command.arg("run").args(options);
        command.args([CONTAINER, "--"]).args(before);
        command.args(&entrypoint).args(args);
        command
    };

    let whoami = output_of(
        buildah
            .command()
            .args(["run", CONTAINER, "--", "id", "-un"]),
    )?;
    step("runs as the image's user", whoami.status.success(), &whoami)?;
    ensure!(
        String::from_utf8_lossy(&whoami.stdout).trim() == user,
        "buildah run did not use the image's USER {user}"
    );

    let mock_calls = ["--env", "PLUGIN=MockCalls"];
    let plugins = output_of(&mut run_in(&[], &[], &["plugins"]))?;
    let listed = String::from_utf8_lossy(&plugins.stdout);
    let all = ["BeroNet", "MockCalls", "SiemensHipathSerial"]
        .iter()
        .all(|class| listed.contains(class));
    step(
        "plugins lists BeroNet, MockCalls, SiemensHipathSerial",
        plugins.status.success() && all,
        &plugins,
    )?;

    let check = output_of(&mut run_in(&mock_calls, &[], &["check"]))?;
    step(
        "check with PLUGIN=MockCalls",
        check.status.success(),
        &check,
    )?;

    for (zone, valid) in [("Europe/Dublin", true), ("Nowhere/Atlantis", false)] {
        let config = buildah.dir.join("hipath.yml");
        std::fs::write(&config, hipath_config(zone))
            .with_context(|| format!("writing {}", config.display()))?;
        // Not at /etc/calllogger/config.yml: the mount point stays in the container, empty.
        let volume = format!("{}:/tmp/hipath.yml:ro", config.display());
        let options = [
            "--volume",
            &volume,
            "--env",
            "CALLLOGGER_CONFIG=/tmp/hipath.yml",
        ];
        let check = output_of(&mut run_in(&options, &[], &["check"]))?;
        let verdict = if valid { "takes" } else { "refuses" };
        step(
            &format!("check {verdict} a HiPath section with timezone {zone}"),
            check.status.success() == valid,
            &check,
        )?;
    }

    // buildah run kills its process on SIGINT instead of passing it on: `timeout` sends it.
    let seconds = RUN_SECONDS.to_string();
    let timeout = ["timeout", "--preserve-status", "--signal=INT", &seconds];
    run_with_health(
        &mut run_in(&mock_calls, &timeout, &["run"]),
        &mut || {
            let mut command = buildah.command();
            command.args(["run", CONTAINER, "--"]).args(&healthcheck);
            command
        },
        &buildah.dir,
    )
}

/// A config running SiemensHipathSerial in time zone `zone`.
fn hipath_config(zone: &str) -> String {
    format!(
        "settings:\n  plugins: [SiemensHipathSerial]\n\
         SiemensHipathSerial:\n  port: /dev/ttyUSB0\n  timezone: {zone}\n"
    )
}

/// Runs `host` (which stops itself after [`RUN_SECONDS`]), asking `health` meanwhile until
/// it passes; its stdout (in `logs`) must hold JSON records with an "id".
fn run_with_health(
    host: &mut Command,
    health: &mut dyn FnMut() -> Command,
    logs: &Path,
) -> Result<()> {
    let (stdout, stderr) = (logs.join("run.stdout"), logs.join("run.stderr"));
    let create = |path: &Path| {
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))
    };
    let mut child = host
        .stdin(Stdio::null())
        .stdout(create(&stdout)?)
        .stderr(create(&stderr)?)
        .spawn()
        .context("starting buildah run")?;
    let mut healthy: Option<Output> = None;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the host")? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
        if !healthy.as_ref().is_some_and(|o| o.status.success()) {
            healthy = Some(output_of(&mut health())?);
        }
    };
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let output = Output {
        status,
        stdout: read(&stdout)?,
        stderr: read(&stderr)?,
    };
    let records = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with('{') && line.contains("\"id\":"))
        .count();
    let healthy = healthy.context("the host stopped before health was asked")?;
    step(
        "HEALTHCHECK while run runs",
        healthy.status.success(),
        &healthy,
    )?;
    step(
        &format!("run for {RUN_SECONDS} s, stopped by SIGINT: {records} JSON records with an id"),
        output.status.success() && records > 0,
        &output,
    )
}

fn output_of(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .context("running buildah run")
}

/// Prints a step's result; on failure also its output, and fails.
fn step(what: &str, passed: bool, output: &Output) -> Result<()> {
    if passed {
        println!("image: ok   {what}");
        return Ok(());
    }
    println!("image: FAIL {what} ({})", output.status);
    let tail = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    println!("--- stdout\n{}", tail(&output.stdout));
    println!("--- stderr\n{}", tail(&output.stderr));
    bail!("{what}: failed")
}
