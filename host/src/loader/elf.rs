//! A structural check of an ELF shared library before `dlopen` sees it.
//!
//! `dlopen` maps a truncated library and then touches pages past its end: the process dies of
//! SIGBUS instead of getting an error. Checking that the header, the section header table and
//! every loadable segment lie inside the file turns that into a clean refusal. A library
//! built for another machine (an aarch64 one dropped on an x86_64 box) is refused by name,
//! where `dlopen` would say only "No such file or directory".

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, FileKind};

/// Checks that `data` is a complete ELF shared library for this machine; the error says what
/// is wrong.
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
    let (machine, bits) = (
        header.e_machine(endian),
        if header.is_class_64() { 64 } else { 32 },
    );
    let host_bits = if cfg!(target_pointer_width = "64") {
        64
    } else {
        32
    };
    if let Some(this) = this_machine() {
        if (machine, bits) != (this, host_bits) {
            return Err(format!(
                "built for {}, this host is {}",
                machine_name(machine, bits),
                machine_name(this, host_bits)
            ));
        }
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

/// The ELF machine of this build (`None`: one the check does not know, so it is not made).
fn this_machine() -> Option<u16> {
    match std::env::consts::ARCH {
        "x86_64" => Some(elf::EM_X86_64),
        "aarch64" => Some(elf::EM_AARCH64),
        "arm" => Some(elf::EM_ARM),
        "x86" => Some(elf::EM_386),
        "riscv64" => Some(elf::EM_RISCV),
        _ => None,
    }
}

/// A machine as the refusal names it.
fn machine_name(machine: u16, bits: u8) -> String {
    match (machine, bits) {
        (elf::EM_X86_64, 64) => "x86_64".into(),
        (elf::EM_AARCH64, 64) => "aarch64".into(),
        (elf::EM_ARM, _) => "32-bit ARM".into(),
        (elf::EM_386, _) => "x86 (32-bit)".into(),
        (elf::EM_RISCV, 64) => "riscv64".into(),
        (other, bits) => format!("ELF machine {other} ({bits}-bit)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary is a complete ELF file (a PIE, so of shared-object type).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_complete_library_passes_and_every_truncation_or_wrong_kind_is_refused() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        check(&exe).unwrap();
        for cut in [64, 100, 4096, exe.len() / 2, exe.len() - 1] {
            let err = check(&exe[..cut]).unwrap_err();
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
        // e_machine, little-endian: an aarch64 library on this x86_64 host.
        #[cfg(target_arch = "x86_64")]
        {
            let mut arm = exe.clone();
            arm[18..20].copy_from_slice(&elf::EM_AARCH64.to_le_bytes());
            assert_eq!(
                check(&arm).unwrap_err(),
                "built for aarch64, this host is x86_64"
            );
        }
        let mut relocatable = exe.clone();
        relocatable[16] = elf::ET_REL as u8; // e_type, little-endian on the machines we build for
        assert!(check(&relocatable)
            .unwrap_err()
            .contains("not a shared library"));
        assert_eq!(check(b"").unwrap_err(), "empty file");
        assert!(check(b"\x7fELF").unwrap_err().contains("too short"));
        let text = "a text file someone named .so by mistake\n".repeat(3);
        assert!(check(text.as_bytes()).unwrap_err().contains("not an ELF"));
    }
}
