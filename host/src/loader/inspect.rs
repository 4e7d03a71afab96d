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
    pid: nix::unistd::Pid,
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
    let mut child = command.spawn().map_err(cannot)?;
    let mut path = std::os::unix::ffi::OsStrExt::as_bytes(copy.as_os_str()).to_vec();
    path.push(b'\n');
    if let Some(mut stdin) = child.stdin.take() {
        // A child that died at once is reported by its exit status below.
        let _ = stdin.write_all(&path);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, answer) = mpsc::channel();
    std::thread::Builder::new()
        .name("inspect".into())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        })
        .map_err(cannot)?;
    Ok(Inspection {
        pid,
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
                // Not reaped until the waiting thread's wait returns: the pid is still ours.
                let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
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

/// The host's own executable, for the child to run (`/proc/self/exe` still names it after
/// the file was replaced by an upgrade).
fn own_binary() -> std::io::Result<PathBuf> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        Ok(proc_exe.to_owned())
    } else {
        std::env::current_exe()
    }
}

/// Reads a child's output: its JSON line, or how it ended.
fn answer(output: &Output) -> Result<Exports, String> {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(signal) = output.status.signal() {
        let name = nix::sys::signal::Signal::try_from(signal)
            .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned());
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
    while line.last() == Some(&b'\n') {
        line.pop();
    }
    let copy =
        PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(line));
    let answer = match super::open_copy(&copy, &copy) {
        Ok((exports, _module)) => exports_to_json(&exports),
        Err(reason) => json!({ "refused": reason }),
    };
    println!("{answer}");
    ExitCode::SUCCESS
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
