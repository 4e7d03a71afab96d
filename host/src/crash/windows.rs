//! The crash handler on Windows: the process's unhandled-exception filter, which runs on the
//! faulting thread before Windows ends the process.

use std::fs::File;
use std::os::windows::io::IntoRawHandle;
use std::sync::atomic::{AtomicPtr, Ordering};

use windows_sys::Win32::Foundation::{
    EXCEPTION_ACCESS_VIOLATION, EXCEPTION_ILLEGAL_INSTRUCTION, EXCEPTION_INT_DIVIDE_BY_ZERO,
    EXCEPTION_IN_PAGE_ERROR, EXCEPTION_PRIV_INSTRUCTION, EXCEPTION_STACK_OVERFLOW, NTSTATUS,
};
use windows_sys::Win32::Storage::FileSystem::WriteFile;
use windows_sys::Win32::System::Diagnostics::Debug::{
    SetUnhandledExceptionFilter, EXCEPTION_POINTERS,
};

use super::CrashMarkerError;

/// What EXCEPTION_CONTINUE_SEARCH tells Windows: go on to the default handling (the end).
const CONTINUE_SEARCH: i32 = 0;

/// The exceptions native code dies of, and their names as the marker spells them.
const FATAL: [(NTSTATUS, &str); 6] = [
    (EXCEPTION_ACCESS_VIOLATION, "EXCEPTION_ACCESS_VIOLATION"),
    (EXCEPTION_IN_PAGE_ERROR, "EXCEPTION_IN_PAGE_ERROR"),
    (
        EXCEPTION_ILLEGAL_INSTRUCTION,
        "EXCEPTION_ILLEGAL_INSTRUCTION",
    ),
    (EXCEPTION_PRIV_INSTRUCTION, "EXCEPTION_PRIV_INSTRUCTION"),
    (EXCEPTION_INT_DIVIDE_BY_ZERO, "EXCEPTION_INT_DIVIDE_BY_ZERO"),
    (EXCEPTION_STACK_OVERFLOW, "EXCEPTION_STACK_OVERFLOW"),
];

/// The marker file's handle (opened once, never closed), or null before [`install`].
static MARKER: AtomicPtr<core::ffi::c_void> = AtomicPtr::new(std::ptr::null_mut());

/// Keeps `marker` open for good and installs the filter that writes to it.
pub(super) fn install(marker: File) -> Result<(), CrashMarkerError> {
    MARKER.store(marker.into_raw_handle(), Ordering::SeqCst);
    // SAFETY: the filter only calls WriteFile on a handle kept open for good, and reads a
    // thread-local and a static set before it is installed. The previous filter (none unless
    // a library set one) is not chained: the host's is the last word.
    unsafe { SetUnhandledExceptionFilter(Some(on_exception)) };
    Ok(())
}

/// Writes `bytes` to the marker in as many writes as it takes; gives up on an error.
fn write_all(handle: *mut core::ffi::c_void, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let mut written = 0u32;
        let len = bytes.len().min(u32::MAX as usize) as u32;
        // SAFETY: WriteFile reads `len` bytes from a live slice into a handle that stays
        // open; `written` is a live u32; no overlapped I/O.
        let ok = unsafe {
            WriteFile(
                handle,
                bytes.as_ptr(),
                len,
                &mut written,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 || written == 0 {
            return;
        }
        bytes = &bytes[written as usize..];
    }
}

/// The filter: writes `EXCEPTION_NAME\t<the running instance's line>\n` to the marker, then
/// lets Windows end the process.
unsafe extern "system" fn on_exception(info: *const EXCEPTION_POINTERS) -> i32 {
    let handle = MARKER.load(Ordering::SeqCst);
    // SAFETY: Windows passes the exception's live pointers to the filter.
    let code = unsafe { info.as_ref().and_then(|i| i.ExceptionRecord.as_ref()) }
        .map(|record| record.ExceptionCode);
    let name = code.and_then(|code| FATAL.iter().find(|(c, _)| *c == code));
    if let (Some((_, name)), false) = (name, handle.is_null()) {
        write_all(handle, name.as_bytes());
        write_all(handle, b"\t");
        super::with_running_line(|line| write_all(handle, line));
        write_all(handle, b"\n");
    }
    CONTINUE_SEARCH
}
