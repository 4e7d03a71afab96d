//! `calllogger reload` on Windows, which has no SIGHUP: the running host listens on a named
//! pipe whose name derives from its `state_dir`, and the command (run with the same config)
//! writes `reload` to it.
//!
//! A named pipe's default access lets only administrators, the system and the pipe's creator
//! write to it, so only they can make the host reload. The listening thread sleeps in
//! `ConnectNamedPipe` until a client comes: no timer.

use std::io::Write as _;
use std::os::windows::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::mpsc::Sender;

use windows_sys::Win32::Foundation::{CloseHandle, ERROR_PIPE_CONNECTED, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{ReadFile, PIPE_ACCESS_INBOUND};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, DisconnectNamedPipe, PIPE_READMODE_BYTE,
    PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
};

use crate::signals::{Event, RELOAD_REQUEST};

/// What the command writes.
const RELOAD: &[u8] = b"reload\n";

/// The pipe of the host whose state folder is `state_dir` (which must exist).
fn pipe_name(state_dir: &Path) -> std::io::Result<String> {
    let canonical = std::fs::canonicalize(state_dir)?;
    let key = crate::loader::trust::sha256_hex(canonical.to_string_lossy().as_bytes());
    Ok(format!(r"\\.\pipe\calllogger-{}", &key[..16]))
}

/// Listens for `calllogger reload` and sends [`Event::Reload`] on `tx` for each.
pub fn listen(state_dir: &Path, tx: Sender<Event>) -> std::io::Result<()> {
    let name: Vec<u16> = std::ffi::OsStr::new(&pipe_name(state_dir)?)
        .encode_wide()
        .chain([0])
        .collect();
    // The first instance is made here, so an error (the name taken) is reported at start.
    let first = create(&name)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let mut pipe = first;
            loop {
                if serve(pipe) && tx.send(Event::Reload(RELOAD_REQUEST)).is_err() {
                    return;
                }
                pipe = match create(&name) {
                    Ok(pipe) => pipe,
                    Err(e) => {
                        tracing::error!("`calllogger reload` no longer works: {e}");
                        return;
                    }
                };
            }
        })?;
    Ok(())
}

/// A new instance of the pipe `name` (NUL-terminated UTF-16).
fn create(name: &[u16]) -> std::io::Result<isize> {
    // SAFETY: `name` is NUL-terminated; no security attributes (the default access).
    let pipe = unsafe {
        CreateNamedPipeW(
            name.as_ptr(),
            PIPE_ACCESS_INBOUND,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            PIPE_UNLIMITED_INSTANCES,
            0,
            512,
            0,
            std::ptr::null(),
        )
    };
    if pipe == INVALID_HANDLE_VALUE {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pipe as isize)
}

/// Waits for one client on `pipe`, reads its request and closes the pipe: whether it asked
/// for a reload.
fn serve(pipe: isize) -> bool {
    let handle = pipe as windows_sys::Win32::Foundation::HANDLE;
    // SAFETY: `handle` is a pipe instance this thread made and closes below; no overlapped I/O.
    let connected = unsafe { ConnectNamedPipe(handle, std::ptr::null_mut()) } != 0
        || std::io::Error::last_os_error().raw_os_error() == Some(ERROR_PIPE_CONNECTED as i32);
    let mut request = [0u8; 64];
    let mut read = 0u32;
    // SAFETY: reads at most `request.len()` bytes into the live buffer; `read` is a live u32.
    let ok = connected
        && unsafe {
            ReadFile(
                handle,
                request.as_mut_ptr(),
                request.len() as u32,
                &mut read,
                std::ptr::null_mut(),
            )
        } != 0;
    // SAFETY: the handle is this function's to close, and is not used after.
    unsafe {
        DisconnectNamedPipe(handle);
        CloseHandle(handle);
    }
    ok && &request[..read as usize] == RELOAD
}

/// The command's side: asks the host whose state folder is `state_dir` to reload.
pub fn request_reload(state_dir: &Path) -> anyhow::Result<()> {
    let name = pipe_name(state_dir).map_err(|e| {
        anyhow::anyhow!(
            "no host has run with state_dir {}: {e}",
            state_dir.display()
        )
    })?;
    let mut pipe = std::fs::OpenOptions::new()
        .write(true)
        .open(&name)
        .map_err(|e| {
            anyhow::anyhow!(
                "no running host with state_dir {} answers on {name}: {e}",
                state_dir.display()
            )
        })?;
    pipe.write_all(RELOAD)?;
    Ok(())
}
