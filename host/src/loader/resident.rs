//! What of the host's own code stays in memory once it runs.
//!
//! Start-up runs code that a running host never needs again: the command line, the config
//! layers, the plugin scan and its ELF checks, the spool's schema, TLS set-up. The kernel maps
//! a binary's pages around each one touched (64 KiB at a time by default), so after start-up
//! most of the binary is resident, though the delivery path uses a small part of it. After
//! start-up and after each reload, [`release_startup_code`] asks the kernel to reclaim the
//! binary's read-only pages (`MADV_PAGEOUT`), as it would under memory pressure: they are
//! clean copies of the file, so nothing is lost, and a page used again is read back from the
//! file. On a small box this is most of the host's idle RSS (see the README's benchmarks).
//!
//! Only pages that this process alone maps are reclaimed (the kernel leaves shared ones,
//! such as the C library's, alone), and only the host binary's: the plugins' private copies
//! are memory files, which reclaim could only move to swap.

/// Hands the host binary's read-only pages back to the kernel; returns how many bytes were
/// resident before and after (from `/proc/self/statm`), or `None` where this does not apply
/// (a kernel older than 5.4, no `/proc`).
pub fn release_startup_code() -> Option<(u64, u64)> {
    use nix::sys::mman::{madvise, MmapAdvise};

    let before = resident_bytes()?;
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    for (start, len) in read_only_ranges(&maps, &exe.to_string_lossy()) {
        let Some(addr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: `addr..addr + len` is a whole mapping of this process as `/proc/self/maps`
        // lists it, of the host binary itself, which is never unmapped while the process
        // runs. MADV_PAGEOUT is a hint that never changes the memory's contents: a clean
        // file page is dropped and read back from the file on the next access; a page that
        // was written (relocations) stays, or goes to swap and comes back from there.
        if let Err(e) = unsafe { madvise(addr, len, MmapAdvise::MADV_PAGEOUT) } {
            // Older than Linux 5.4: nothing to do.
            tracing::debug!("cannot release the start-up code's pages: {e}");
            return None;
        }
    }
    Some((before, resident_bytes()?))
}

/// The process's resident bytes.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()?;
    Some(pages * page as u64)
}

/// The `(start, length)` of every mapping of the file `path` in `maps` (the text of
/// `/proc/PID/maps`) that is not writable.
fn read_only_ranges(maps: &str, path: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let file = fields.nth(3)?.trim_start();
            if file != path || perms.contains('w') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some((start, end.checked_sub(start)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_files_read_only_mappings_are_taken() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 1234   /usr/bin/calllogger (deleted)
55d0c0100000-55d0c0500000 r-xp 00100000 fd:01 1234   /usr/bin/calllogger (deleted)
55d0c0500000-55d0c0520000 rw-p 00500000 fd:01 1234   /usr/bin/calllogger (deleted)
7f0000000000-7f0000200000 r-xp 00000000 fd:01 99     /usr/lib/libc.so.6
7f0000300000-7f0000301000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]";
        assert_eq!(
            read_only_ranges(maps, "/usr/bin/calllogger (deleted)"),
            [(0x55d0c0000000, 0x100000), (0x55d0c0100000, 0x400000)]
        );
        assert!(read_only_ranges(maps, "/usr/bin/calllogger").is_empty());
    }
}
