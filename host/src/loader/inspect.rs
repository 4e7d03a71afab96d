//! Inspecting a library without mapping it into the host: a short-lived child process of the
//! host's own binary (the hidden `inspect-library` sub-command) loads the checked private copy,
//! runs the same checks as the host's loader and prints what the library exports as one JSON
//! line. A library that crashes or aborts while it is loaded ends the child, not the host, and
//! the libraries that no configured class needs never take memory in the host.
//!
//! The copy is passed by path on the child's stdin; a memory file is inherited by the child
//! (its close-on-exec flag cleared there), so `/proc/self/fd/N` names it in both processes.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use calllogger_plugin_abi::{ClassInfo, PluginKind};
use serde_json::{json, Value};

use super::Exports;

/// The hidden sub-command's name (see `host/src/cli.rs`).
pub const SUBCOMMAND: &str = "inspect-library";

/// How long a child may take to load a library before it is killed and the library refused.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A child process inspecting one library; [`Inspection::finish`] waits for its answer.
pub(super) struct Inspection {
    killer: Killer,
    started: Instant,
    answer: mpsc::Receiver<std::io::Result<Output>>,
}

/// Starts a child that loads the private copy at `copy` (a memory file's `/proc/self/fd/N`
/// when `inherit` is its descriptor).
pub(super) fn start(copy: &Path, inherit: Option<i32>) -> Result<Inspection, String> {
    let cannot = |e: std::io::Error| format!("cannot start a process to inspect it: {e}");
    let mut command = Command::new(own_binary().map_err(cannot)?);
    command
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    if let Some(fd) = inherit {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe functions may be called: it makes one fcntl(2) call on a
        // descriptor number it owns by value, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(unix))]
    let _ = inherit; // memory files are Linux's: elsewhere the copy is a file
    let mut child = command.spawn().map_err(cannot)?;
    if let Some(mut stdin) = child.stdin.take() {
        // All of stdin, which closes here. A child that died at once is reported by its exit
        // status below.
        let _ = stdin.write_all(&path_to_bytes(copy));
    }
    let killer = Killer::of(&child).map_err(cannot)?;
    let (tx, answer) = mpsc::channel();
    std::thread::Builder::new()
        .name("inspect".into())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        })
        .map_err(cannot)?;
    Ok(Inspection {
        killer,
        started: Instant::now(),
        answer,
    })
}

impl Inspection {
    /// The child's answer: what the library exports, or why it is refused.
    pub(super) fn finish(self) -> Result<Exports, String> {
        let left = TIMEOUT.saturating_sub(self.started.elapsed());
        let output = match self.answer.recv_timeout(left) {
            Ok(output) => output,
            Err(_) => {
                self.killer.kill();
                let _ = self.answer.recv();
                return Err(format!(
                    "did not finish loading within {} s (in a separate process, which was killed); not loaded",
                    TIMEOUT.as_secs()
                ));
            }
        };
        let output = output.map_err(|e| format!("cannot inspect it: {e}"))?;
        answer(&output)
    }
}

/// The host's own executable, for the child to run (on Linux `/proc/self/exe`, which still
/// names it after the file was replaced by an upgrade).
fn own_binary() -> std::io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        let proc_exe = Path::new("/proc/self/exe");
        if proc_exe.exists() {
            return Ok(proc_exe.to_owned());
        }
    }
    std::env::current_exe()
}

/// Reads a child's output: its JSON line, or how it ended.
fn answer(output: &Output) -> Result<Exports, String> {
    if let Some(name) = crash_name(output.status) {
        return Err(format!(
            "crashed while being loaded ({name}, found out in a separate process; the host did not load it)"
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    match serde_json::from_str::<Value>(stdout.trim()).ok() {
        Some(Value::Object(answer)) if answer.contains_key("refused") => {
            Err(answer["refused"].as_str().unwrap_or("refused").to_owned())
        }
        Some(Value::Object(answer)) => exports_from_json(&answer)
            .ok_or_else(|| "cannot be inspected: unreadable answer".into()),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            Err(format!(
                "cannot be loaded: the process inspecting it ended with {}{}",
                output.status,
                last.map_or_else(String::new, |l| format!(": {}", l.trim()))
            ))
        }
    }
}

fn kind_code(kind: PluginKind) -> u8 {
    kind as u8
}

fn kind_from_code(code: u64) -> Option<PluginKind> {
    [
        PluginKind::Generic,
        PluginKind::Serial,
        PluginKind::Lines,
        PluginKind::Polling,
    ]
    .into_iter()
    .find(|k| u64::from(kind_code(*k)) == code)
}

pub(super) fn exports_to_json(exports: &Exports) -> Value {
    let classes: Vec<Value> = exports
        .classes
        .iter()
        .map(|c| {
            json!({
                "name": c.name.as_str(),
                "description": c.description.as_str(),
                "kind": kind_code(c.kind),
            })
        })
        .collect();
    json!({
        "name": exports.name,
        "version": exports.version,
        "sdk_version": exports.sdk_version,
        "abi_version": exports.abi_version,
        "classes": classes,
    })
}

pub(super) fn exports_from_json(answer: &serde_json::Map<String, Value>) -> Option<Exports> {
    let text = |key: &str| answer.get(key)?.as_str().map(str::to_owned);
    let classes = answer
        .get("classes")?
        .as_array()?
        .iter()
        .map(|c| {
            Some(ClassInfo {
                name: c.get("name")?.as_str()?.into(),
                description: c.get("description")?.as_str()?.into(),
                kind: kind_from_code(c.get("kind")?.as_u64()?)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Exports {
        name: text("name")?,
        version: text("version")?,
        sdk_version: text("sdk_version")?,
        abi_version: text("abi_version")?,
        classes,
    })
}

/// The child's side (`calllogger inspect-library`): reads a private copy's path from stdin,
/// loads it with the loader's checks and prints `{"refused": reason}` or what it exports.
pub fn child() -> ExitCode {
    let mut line = Vec::new();
    if std::io::stdin().read_to_end(&mut line).is_err() {
        return ExitCode::FAILURE;
    }
    let Some(copy) = path_from_bytes(line) else {
        return ExitCode::FAILURE;
    };
    let answer = match super::open_copy(&copy, &copy) {
        Ok((exports, _module)) => exports_to_json(&exports),
        Err(reason) => json!({ "refused": reason }),
    };
    println!("{answer}");
    ExitCode::SUCCESS
}

/// Kills an inspecting child that takes too long.
#[cfg(unix)]
struct Killer(nix::unistd::Pid);

#[cfg(unix)]
impl Killer {
    fn of(child: &std::process::Child) -> std::io::Result<Self> {
        Ok(Self(nix::unistd::Pid::from_raw(child.id() as i32)))
    }

    fn kill(&self) {
        // Not reaped until the waiting thread's wait returns: the pid is still ours.
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Kills an inspecting child that takes too long, through its own copy of the process handle
/// (valid whenever the waiting thread lets go of the child's).
#[cfg(windows)]
struct Killer(std::os::windows::io::OwnedHandle);

#[cfg(windows)]
impl Killer {
    fn of(child: &std::process::Child) -> std::io::Result<Self> {
        use std::os::windows::io::AsHandle as _;
        child.as_handle().try_clone_to_owned().map(Self)
    }

    fn kill(&self) {
        use std::os::windows::io::AsRawHandle as _;
        // SAFETY: the handle is this struct's own duplicate of the child's process handle,
        // open until it drops; TerminateProcess of an ended process only fails.
        unsafe {
            windows_sys::Win32::System::Threading::TerminateProcess(self.0.as_raw_handle(), 1);
        }
    }
}

/// How a child died of a crash, if it did: its signal (Unix).
#[cfg(unix)]
fn crash_name(status: std::process::ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt as _;
    let signal = status.signal()?;
    Some(
        nix::sys::signal::Signal::try_from(signal)
            .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned()),
    )
}

/// How a child died of a crash, if it did: its exit code is an NTSTATUS error (`0xC…`, such
/// as 0xC0000005, an access violation), which no program returns on purpose.
#[cfg(windows)]
fn crash_name(status: std::process::ExitStatus) -> Option<String> {
    let code = status.code()? as u32;
    (code >= 0xC000_0000).then(|| format!("exception 0x{code:08X}"))
}

/// A path as bytes for the child's stdin: the OS string's own bytes (Unix), or its UTF-16
/// units, little-endian (Windows).
fn path_to_bytes(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    return std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(windows)]
    return std::os::windows::ffi::OsStrExt::encode_wide(path.as_os_str())
        .flat_map(u16::to_le_bytes)
        .collect();
}

/// The path [`path_to_bytes`] wrote; `None` if the bytes cannot be one.
fn path_from_bytes(bytes: Vec<u8>) -> Option<PathBuf> {
    #[cfg(unix)]
    return Some(PathBuf::from(
        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(bytes),
    ));
    #[cfg(windows)]
    return {
        if !bytes.len().is_multiple_of(2) {
            return None;
        }
        let wide: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        Some(PathBuf::from(
            <std::ffi::OsString as std::os::windows::ffi::OsStringExt>::from_wide(&wide),
        ))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_survive_the_trip_through_json() {
        let exports = Exports {
            name: "p".into(),
            version: "1.2.3".into(),
            sdk_version: "0.3.0".into(),
            abi_version: "0.3.0".into(),
            classes: vec![ClassInfo {
                name: "Echo".into(),
                description: "echoes".into(),
                kind: PluginKind::Lines,
            }],
        };
        let Value::Object(json) = exports_to_json(&exports) else {
            panic!("an object")
        };
        let back = exports_from_json(&json).unwrap();
        assert_eq!(
            (back.name, back.version, back.sdk_version, back.abi_version),
            ("p".into(), "1.2.3".into(), "0.3.0".into(), "0.3.0".into())
        );
        assert_eq!(back.classes.len(), 1);
        assert_eq!(back.classes[0].name.as_str(), "Echo");
        assert_eq!(back.classes[0].kind, PluginKind::Lines);
    }

    #[test]
    fn a_child_killed_by_a_signal_is_a_crash_and_a_refusal_is_its_reason() {
        use std::os::unix::process::ExitStatusExt as _;
        let ended = |status: i32, stdout: &str| Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"a line\nthe last line\n".to_vec(),
        };
        let crashed = answer(&ended(6, "")).unwrap_err();
        assert!(
            crashed.contains("crashed while being loaded (SIGABRT"),
            "{crashed}"
        );
        let refused = answer(&ended(0, "{\"refused\": \"exports no plugin classes\"}\n"));
        assert_eq!(refused.unwrap_err(), "exports no plugin classes");
        let failed = answer(&ended(1 << 8, "")).unwrap_err();
        assert!(failed.ends_with(": the last line"), "{failed}");
    }
}
