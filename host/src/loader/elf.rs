//! A structural check of an ELF shared library before `dlopen` sees it.
//!
//! `dlopen` maps a truncated library and then touches pages past its end: the process dies of
//! SIGBUS instead of getting an error. Checking that the header, the section header table and
//! every loadable segment lie inside the file turns that into a clean refusal.

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, FileKind};

/// Checks that `data` is a complete ELF shared library; the error says what is wrong.
pub fn check(data: &[u8]) -> Result<(), String> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => check_header::<elf::FileHeader64<Endianness>>(data),
        Ok(FileKind::Elf32) => check_header::<elf::FileHeader32<Endianness>>(data),
        _ if data.is_empty() => Err("empty file".into()),
        _ if data.len() < 64 => Err(format!("file too short ({} bytes)", data.len())),
        _ => Err("not an ELF shared library".into()),
    }
}

fn check_header<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<(), String> {
    let truncated = |what: &str| {
        format!(
            "truncated or corrupt ({what} lies outside the {} bytes of the file)",
            data.len()
        )
    };
    let header = H::parse(data).map_err(|_| truncated("the ELF header"))?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    if header.e_type(endian) != elf::ET_DYN {
        return Err("an ELF file, but not a shared library".into());
    }
    header
        .section_headers(endian, data)
        .map_err(|_| truncated("the section header table"))?;
    let segments = header
        .program_headers(endian, data)
        .map_err(|_| truncated("the program header table"))?;
    for segment in segments.iter().filter(|s| s.p_type(endian) == elf::PT_LOAD) {
        let (offset, size) = segment.file_range(endian);
        if offset
            .checked_add(size)
            .is_none_or(|end| end > data.len() as u64)
        {
            return Err(truncated("a loadable segment"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary itself is an ELF executable (not a shared library) on Linux.
    #[cfg(target_os = "linux")]
    #[test]
    fn refuses_executables_empty_text_and_truncations() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let err = check(&exe).unwrap_err();
        assert!(
            err.contains("not a shared library") || err.contains("truncated"),
            "{err}"
        );
        assert_eq!(check(b"").unwrap_err(), "empty file");
        assert!(
            check(b"#!/bin/sh\necho hello, I am a script and not a library at all\n")
                .unwrap_err()
                .contains("not an ELF")
        );
        assert!(check(&exe[..100]).unwrap_err().contains("truncated"));
    }
}
