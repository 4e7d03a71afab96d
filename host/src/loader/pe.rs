//! A structural check of a Windows library (PE) before `LoadLibrary` sees it: the headers and
//! every section's bytes lie inside the file, it is a DLL, and it is built for this machine.
//!
//! The counterpart of `elf.rs`: a truncated or foreign file becomes a refusal that says what
//! is wrong, rather than whatever the system loader makes of it.

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader};
use object::{FileKind, LittleEndian as LE};

/// Checks that `data` is a complete Windows library for this machine; the error says what is
/// wrong.
pub fn check(data: &[u8]) -> Result<(), String> {
    match FileKind::parse(data) {
        Ok(FileKind::Pe64) => check_image::<pe::ImageNtHeaders64>(data),
        Ok(FileKind::Pe32) => check_image::<pe::ImageNtHeaders32>(data),
        _ if data.is_empty() => Err("empty file".into()),
        _ if data.len() < 64 => Err(format!("file too short ({} bytes)", data.len())),
        _ if data.starts_with(b"MZ") => Err(truncated(data, "the PE headers")),
        _ => Err("not a Windows library (PE)".into()),
    }
}

fn truncated(data: &[u8], what: &str) -> String {
    format!(
        "truncated or corrupt ({what} lies outside the {} bytes of the file)",
        data.len()
    )
}

fn check_image<H: ImageNtHeaders>(data: &[u8]) -> Result<(), String> {
    let dos = pe::ImageDosHeader::parse(data).map_err(|_| truncated(data, "the DOS header"))?;
    let mut offset = dos.nt_headers_offset().into();
    let (headers, _) =
        H::parse(data, &mut offset).map_err(|_| truncated(data, "the PE headers"))?;
    let file_header = headers.file_header();
    if file_header.characteristics.get(LE) & pe::IMAGE_FILE_DLL == 0 {
        return Err("a Windows program, but not a library (DLL)".into());
    }
    let machine = file_header.machine.get(LE);
    let this = this_machine();
    if Some(machine) != this.map(|(code, _)| code) {
        return Err(format!(
            "built for {}, this host is {}",
            machine_name(machine),
            this.map_or(std::env::consts::ARCH, |(_, name)| name)
        ));
    }
    if u64::from(headers.optional_header().size_of_headers()) > data.len() as u64 {
        return Err(truncated(data, "the headers"));
    }
    let sections = headers
        .sections(data, offset)
        .map_err(|_| truncated(data, "the section table"))?;
    for section in sections.iter() {
        let (start, size) = section.pe_file_range();
        if u64::from(start) + u64::from(size) > data.len() as u64 {
            return Err(truncated(data, "a section"));
        }
    }
    Ok(())
}

/// The PE machine type of this build, and its name.
fn this_machine() -> Option<(u16, &'static str)> {
    match std::env::consts::ARCH {
        "x86_64" => Some((pe::IMAGE_FILE_MACHINE_AMD64, "x86_64")),
        "aarch64" => Some((pe::IMAGE_FILE_MACHINE_ARM64, "aarch64")),
        "x86" => Some((pe::IMAGE_FILE_MACHINE_I386, "x86")),
        _ => None,
    }
}

fn machine_name(machine: u16) -> String {
    match machine {
        pe::IMAGE_FILE_MACHINE_AMD64 => "x86_64".into(),
        pe::IMAGE_FILE_MACHINE_ARM64 => "aarch64".into(),
        pe::IMAGE_FILE_MACHINE_I386 => "x86 (32-bit)".into(),
        pe::IMAGE_FILE_MACHINE_ARMNT => "32-bit ARM".into(),
        other => format!("machine type 0x{other:04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_library_is_named() {
        assert_eq!(check(b"").unwrap_err(), "empty file");
        assert!(check(b"MZ").unwrap_err().contains("too short"));
        let text = "a text file someone named .dll by mistake\n".repeat(3);
        assert_eq!(
            check(text.as_bytes()).unwrap_err(),
            "not a Windows library (PE)"
        );
        let mut cut = b"MZ".to_vec();
        cut.resize(200, 0);
        assert!(check(&cut).unwrap_err().contains("truncated"));
    }
}
