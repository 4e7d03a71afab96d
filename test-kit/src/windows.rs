//! Running the Windows host under Wine: Debian's `wine` (which `.ci/setup` installs), a Wine
//! prefix of the kit's own under `target/`, and the one DLL Wine 8.0 lacks.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

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

/// The link that Wine opens as the serial port `COMn` (`dosdevices/comN` in the kit's
/// prefix, which is made first); point it at a pty to give Windows programs a serial port.
pub fn com_port(n: u8) -> PathBuf {
    ready_loader();
    prefix().join("dosdevices").join(format!("com{n}"))
}

/// `program` (a Windows `.exe`) under Wine, quiet, in the kit's prefix. The first call in a
/// process makes the prefix and puts the missing DLL beside `program`.
pub fn wine(program: &Path) -> Command {
    shim_beside(program);
    let mut command = Command::new(ready_loader());
    command
        .arg(program)
        .env("WINEPREFIX", prefix())
        .env("WINEDEBUG", "-all");
    command
}

/// The Wine loader, once the kit's prefix is made (by the first Wine program in it) and its
/// session started (on the first call in a process).
fn ready_loader() -> &'static Path {
    static READY: OnceLock<(PathBuf, Session)> = OnceLock::new();
    let (loader, _session) = READY.get_or_init(|| {
        let loader = loader();
        let session = start_session(&loader);
        (loader, session)
    });
    loader
}

/// Keeps the prefix's Wine session (its `wineserver` and service manager) up for as long as
/// this process runs: Wine's `cmd.exe`, reading commands from a pipe that closes when the
/// process ends. Without it, a Wine program started as the last one exits (even `wineboot`)
/// starts a second service manager beside the one shutting down, and each knows only some
/// services; and Wine stops its services a few seconds after the last program exits.
fn start_session(loader: &Path) -> Session {
    let mut session = Command::new(loader)
        .arg("cmd.exe")
        .env("WINEPREFIX", prefix())
        .env("WINEDEBUG", "-all")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting cmd.exe under Wine");
    // Up once it answers (after its prompt).
    let marker = "calllogger-session-up";
    let mut input = session.stdin.take().unwrap();
    writeln!(input, "echo {marker}\r").unwrap();
    let mut output = BufReader::new(session.stdout.take().unwrap());
    let up = (&mut output)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.trim_end().ends_with(marker));
    assert!(up, "Wine's cmd.exe ended before it answered");
    Session {
        _child: session,
        _input: input,
        _output: output,
    }
}

/// The session's `cmd.exe` and its pipes, held open until this process exits.
struct Session {
    _child: Child,
    _input: ChildStdin,
    _output: BufReader<ChildStdout>,
}

/// Builds `tests/fixtures/wine/bcryptprimitives.c` into `bcryptprimitives.dll` beside
/// `program`, unless it is there already.
fn shim_beside(program: &Path) {
    // One build at a time: tests start Windows programs from many threads at once.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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
