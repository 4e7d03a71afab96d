//! The Debian packages (`cargo xtask deb`, `xtask/src/deb.rs`), for this machine's
//! architecture and for arm64: installed by dpkg into a scratch root (their maintainer scripts
//! run too, on that root: `--force-script-chrootless`), run from there, and purged.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use calllogger_test_kit::{workspace, Host};

/// The glibc the packages are linked against (`xtask/src/deb.rs`'s baseline), as a
/// `cargo zigbuild` target suffix: `x86_64-unknown-linux-gnu.2.31`.
pub(crate) const GLIBC_BASELINE: &str = "2.31";

fn cargo() -> Command {
    let mut command = calllogger_test_kit::cargo();
    command.current_dir(workspace());
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command`; its standard output.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The newest `GLIBC_x.y` symbol version an ELF file uses, read by binutils' `readelf`.
fn newest_glibc(file: &Path) -> (u32, u32) {
    let listing = run(Command::new("readelf")
        .args(["--version-info", "--wide"])
        .arg(file));
    listing
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .map(|version| {
            let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
            (parts.next().unwrap(), parts.next().unwrap_or(0))
        })
        .max()
        .unwrap()
}

/// A root with only what dpkg and the maintainer scripts need: an empty dpkg database, the
/// user and group files (with `dialout`), and the folders dpkg logs into.
fn scratch_root(root: &Path) {
    for dir in [
        "etc",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/log",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for (file, content) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/shadow", "root:*:20000:0:99999:7:::\n"),
        ("etc/group", "root:x:0:\ndialout:x:20:\n"),
        ("etc/gshadow", "root:*::\ndialout:*::\n"),
        ("var/lib/dpkg/status", ""),
    ] {
        std::fs::write(root.join(file), content).unwrap();
    }
}

fn dpkg(root: &Path) -> Command {
    let mut command = Command::new("dpkg");
    command
        .arg(format!("--root={}", root.display()))
        // The scratch root has no libc6 and no shell to chroot into; the scripts honour
        // $DPKG_ROOT instead.
        .args(["--force-script-chrootless", "--force-depends"])
        // An arm64 package on an amd64 machine.
        .arg("--force-architecture");
    command
}

/// This machine's Debian architecture.
const NATIVE: &str = if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    "amd64"
};

#[test]
fn the_native_deb_installs_into_a_scratch_root_runs_and_purges() {
    install_run_and_purge(NATIVE);
}

/// The Raspberry Pi's package, run under qemu-user (`.ci/setup` registers it with the kernel's
/// binfmt_misc, as Debian's `qemu-user-binfmt` does: the host starts itself again to inspect
/// each plugin library, so `qemu-aarch64 calllogger` alone would not do).
#[test]
#[cfg(target_arch = "x86_64")]
fn the_arm64_deb_installs_into_a_scratch_root_and_runs_under_qemu() {
    assert!(
        Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
        "no binfmt_misc entry for qemu-aarch64: run .ci/setup"
    );
    install_run_and_purge("arm64");
}

/// Builds the package for `arch` (Debian's name), installs it into a scratch root, checks what
/// dpkg and the maintainer scripts did, runs `plugins` and `check` on the installed files, and
/// purges it.
fn install_run_and_purge(arch: &str) {
    let out = tempfile::tempdir().unwrap();
    let built = run(cargo()
        .args([
            "run", "--quiet", "--locked", "-p", "xtask", "--", "deb", "--arch", arch, "--out",
        ])
        .arg(out.path()));
    let deb = PathBuf::from(built.lines().last().unwrap().trim());
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        deb,
        out.path().join(format!("calllogger_{version}_{arch}.deb"))
    );

    let field = |name: &str| run(Command::new("dpkg-deb").arg("--field").arg(&deb).arg(name));
    assert_eq!(field("Package").trim(), "calllogger");
    assert_eq!(field("Version").trim(), version);
    assert_eq!(field("Architecture").trim(), arch);
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/calllogger"),
        (
            "-rw-r--r-- root/root",
            "./usr/lib/calllogger/plugins/libcalllogger_mock_calls.so",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/lib/calllogger/plugins/libcalllogger_beronet.so",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/lib/calllogger/plugins/libcalllogger_siemens_hipath_serial.so",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/lib/systemd/system/calllogger.service",
        ),
        ("-rw-r----- root/root", "./etc/calllogger/config.yml"),
        (
            "-rw-r--r-- root/root",
            "./usr/share/man/man1/calllogger.1.gz",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/bash-completion/completions/calllogger",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/doc/calllogger/copyright",
        ),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(&format!(" {path}"))),
            "{mode} {path} not in the package:\n{contents}"
        );
    }

    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    scratch_root(root);
    run(dpkg(root).arg("--install").arg(&deb));

    // Built against the baseline glibc, and the package says which it needs.
    let files = [
        root.join("usr/bin/calllogger"),
        root.join("usr/lib/calllogger/plugins/libcalllogger_beronet.so"),
    ];
    let newest = files.iter().map(|f| newest_glibc(f)).max().unwrap();
    assert!(
        newest <= (2, 31),
        "needs glibc {newest:?}, newer than Debian 11's 2.31"
    );
    let depends = field("Depends");
    assert!(
        depends.contains(&format!("libc6 (>= {}.{})", newest.0, newest.1)),
        "Depends: {depends}"
    );

    // The postinst: a system user in dialout, the config readable by it only, the unit enabled.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("calllogger:"))
        .unwrap();
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(fields[5], "/var/lib/calllogger", "{user}");
    assert!(
        fields[2].parse::<u32>().unwrap() < 1000,
        "not a system user: {user}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("dialout:") && l.ends_with(":calllogger")),
        "{group}"
    );
    let gid: u32 = fields[3].parse().unwrap();
    let config = root.join("etc/calllogger/config.yml");
    let meta = std::fs::metadata(&config).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
        (0, gid, 0o640)
    );
    let wants = root.join("etc/systemd/system/multi-user.target.wants/calllogger.service");
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new("/usr/lib/systemd/system/calllogger.service")
    );

    // The installed host, on the installed config and plugins.
    let state = tempfile::tempdir().unwrap();
    let host = |config: &Path, plugin_dir: &Path, args: &[&str]| {
        let mut command = Command::new(root.join("usr/bin/calllogger"));
        command
            .arg("--config")
            .arg(config)
            .arg("--plugin-dir")
            .arg(plugin_dir)
            .arg("--state-dir")
            .arg(state.path())
            .args(args)
            .env_remove("CALLLOGGER_CONFIG")
            .env_remove("RUST_LOG")
            // Where qemu-user finds the arm64 glibc (Debian's libc6-arm64-cross), if it runs this.
            .env("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu");
        command
    };
    let installed = root.join("usr/lib/calllogger/plugins");
    let plugins = run(&mut host(&config, &installed, &["plugins"]));
    for class in ["BeroNet", "MockCalls", "SiemensHipathSerial"] {
        assert!(plugins.lines().any(|l| l.starts_with(class)), "{plugins}");
    }
    run(host(&config, &installed, &["check"]).env("PLUGIN", "MockCalls"));

    // A plugin linked as the package's are (zig's linker and unwinder, glibc 2.31): its panic
    // is caught at the plugin boundary and the instance restarted; the host runs on.
    let triple = match arch {
        "arm64" => "aarch64-unknown-linux-gnu",
        _ => "x86_64-unknown-linux-gnu",
    };
    run(cargo()
        .args([
            "zigbuild",
            "--release",
            "--locked",
            "-p",
            "calllogger-test-plugins",
        ])
        .arg(format!("--target={triple}.{GLIBC_BASELINE}")));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    let fixtures = tempfile::tempdir().unwrap();
    std::fs::set_permissions(fixtures.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let library = fixtures.path().join("libcalllogger_test_plugins.so");
    std::fs::copy(
        target
            .join(triple)
            .join("release/libcalllogger_test_plugins.so"),
        &library,
    )
    .unwrap();
    std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o644)).unwrap();
    let flaky = state.path().join("flaky.yml");
    std::fs::write(
        &flaky,
        "settings:\n  plugins: [Flaky]\n  timeout: 0.1\n  decay: 1\n  max_timeout: 0.1\n\
         Flaky:\n  mode: panic\n",
    )
    .unwrap();
    let mut flaky = Host::spawn(host(&flaky, fixtures.path(), &["run"]));
    flaky.wait_for_log("panics on purpose; restarting", 3, Duration::from_secs(60));
    flaky.terminate();

    // Removed and purged: the files and the conffile go, the unit is disabled.
    run(dpkg(root).args(["--purge", "calllogger"]));
    for gone in [&root.join("usr/bin/calllogger"), &config, &wants] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{} left",
            gone.display()
        );
    }
}
