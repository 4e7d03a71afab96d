//! `cargo xtask hot-code [--check]`: records which of the release host's functions run once
//! start-up is done, into `host/hot-code.txt`, which the host's build script hands to the
//! linker to lay those functions out together (see `host/build.rs`).
//!
//! Recording puts a uprobe (the kernel's breakpoint on a file's code, through tracefs) on
//! every function of the release host's text, and counts their hits while two hosts work the
//! way the benchmark's do: MockCalls to stdout, and a HiPath pty at 100 lines/s to a loopback
//! frontend. Counting starts when the host logs that start-up's code was released, so
//! start-up's functions stay out. It needs root and tracefs, and takes minutes: the kernel
//! waits a grace period as it switches each probe on and off.
//!
//! Only functions in a section of their own (`.text.NAME`) are probed and ordered: code in a
//! plain `.text` (ring's assembly) is not. A recording replaces the list.
//!
//! `--check` builds the release host and fails unless at least 90 % of the listed functions
//! exist in it (the list goes stale when the toolchain or a dependency changes their symbol
//! names) and they lie together at the start of its text. CI runs it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use calllogger_test_kit::frontend::Frontend;
use calllogger_test_kit::Host;

use super::{delivering_to, hipath_samples, rates, serial_install, Bench};

/// The list, as `host/build.rs` reads it.
const LIST: &str = "host/hot-code.txt";

/// The share of the listed functions a build must have for `--check`.
const FOUND_AT_LEAST: f64 = 0.9;

/// How long each recorded host works.
const RUN: Duration = Duration::from_secs(15);

/// What the host logs once start-up's code is released (`host/src/host.rs`).
const RELEASED: &str = "start-up code released";

/// The tracefs group of the probes.
const GROUP: &str = "calllogger_hot";

/// The kernel's "operation not supported" (`ENOTSUPP`, not `ENOTSUP`), for a probe it cannot
/// place.
const ENOTSUPP: i32 = 524;

/// Records the list, or checks it with `--check`.
pub fn run(args: &[String]) -> Result<()> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => bail!("usage: cargo xtask hot-code [--check]"),
    };
    let (artifacts, functions) = build()?;
    let list = std::fs::read_to_string(crate::root().join(LIST)).unwrap_or_default();
    let listed: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    if check {
        return check_layout(&listed, &functions);
    }
    let hot = record(&artifacts, &functions)?;
    let mut file = std::fs::File::create(crate::root().join(LIST))?;
    for name in &hot {
        writeln!(file, "{name}")?;
    }
    let bytes: u64 = functions
        .iter()
        .filter(|f| hot.contains(&f.name))
        .map(|f| f.size)
        .sum();
    println!(
        "{LIST}: {} of {} functions ran after start-up, {:.0} KiB; rebuild the release host to lay them out",
        hot.len(),
        functions.len(),
        bytes as f64 / 1024.0
    );
    Ok(())
}

/// A function of the release host's text, from the linker's map.
#[derive(Debug, PartialEq)]
struct Function {
    name: String,
    address: u64,
    size: u64,
}

/// Builds the release host and the shipped plugins with a link map, in one cargo invocation
/// as every shipped build does (`dist/install-root.sh`: their features unify, and the
/// symbol names depend on them); returns the artifacts' folder and the host's functions in
/// address order.
fn build() -> Result<(PathBuf, Vec<Function>)> {
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::root().join("target"), PathBuf::from)
        .join("release");
    // One path, kept: a build that links nothing anew leaves the map of the binary it has.
    let map = release.join("calllogger.map");
    let mut build = crate::cargo();
    build
        .args(["build", "--release", "-p", "calllogger"])
        .env("CALLLOGGER_LINK_MAP", &map);
    for (package, _) in crate::SHIPPED_PLUGINS {
        build.args(["-p", package]);
    }
    ensure!(
        build.status().context("running cargo build")?.success(),
        "cargo build failed"
    );
    let text = std::fs::read_to_string(&map).with_context(|| {
        format!(
            "no link map at {}: this build is not linked by LLD (see host/build.rs)",
            map.display()
        )
    })?;
    let functions = text_functions(&text);
    ensure!(
        !functions.is_empty(),
        "the link map lists no .text functions"
    );
    Ok((release, functions))
}

/// The functions in the `.text` output section of an LLD map (`-Map`, `--no-demangle`): each
/// input section `obj:(.text.NAME)` with its address and size, named by the first symbol
/// listed in it.
fn text_functions(map: &str) -> Vec<Function> {
    let mut functions = Vec::new();
    let mut in_text = false;
    let mut section: Option<(u64, u64)> = None;
    for line in map.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [address, _, size, _, name] = fields.as_slice() else {
            continue;
        };
        let (Ok(address), Ok(size)) = (
            u64::from_str_radix(address, 16),
            u64::from_str_radix(size, 16),
        ) else {
            continue;
        };
        // The columns VMA LMA Size Align, then the output section, an input section eight
        // columns further in, or a symbol sixteen.
        match line.rfind(name).unwrap_or(0).saturating_sub(MAP_NAMES) / 8 {
            0 => in_text = *name == ".text",
            1 if in_text => section = name.contains(":(.text.").then_some((address, size)),
            2 if in_text => {
                if let Some((start, size)) = section.take().filter(|(start, _)| *start == address) {
                    functions.push(Function {
                        name: (*name).to_owned(),
                        address: start,
                        size,
                    });
                }
            }
            _ => {}
        }
    }
    functions.retain(|f| f.size > 0);
    functions
}

/// The column of an LLD map's output section names (after VMA, LMA, Size and Align).
const MAP_NAMES: usize = 16 + 1 + 16 + 1 + 8 + 1 + 5 + 1;

/// Fails unless most listed functions are in this build and all of those are laid out first.
fn check_layout(listed: &[&str], functions: &[Function]) -> Result<()> {
    ensure!(
        !listed.is_empty(),
        "{LIST} is empty: run `cargo xtask hot-code` as root"
    );
    let start = functions.iter().map(|f| f.address).min().unwrap_or(0);
    let found: Vec<&Function> = functions
        .iter()
        .filter(|f| listed.contains(&f.name.as_str()))
        .collect();
    let bytes: u64 = found.iter().map(|f| f.size).sum();
    let end = found
        .iter()
        .map(|f| f.address + f.size)
        .max()
        .unwrap_or(start);
    println!(
        "{LIST}: {} of {} listed functions in this build, {:.0} KiB, laid out in the text's first {:.0} KiB",
        found.len(),
        listed.len(),
        bytes as f64 / 1024.0,
        (end - start) as f64 / 1024.0
    );
    ensure!(
        found.len() as f64 >= listed.len() as f64 * FOUND_AT_LEAST,
        "the list is stale (this build names its functions otherwise): run `cargo xtask hot-code` as root and commit {LIST}"
    );
    // Alignment padding between them, at most a cache line each.
    ensure!(
        end - start <= bytes + 64 * found.len() as u64,
        "the listed functions are not laid out together: the linker did not take {LIST} (see host/build.rs)"
    );
    Ok(())
}

/// Runs the two hosts with a probe on every function; returns the names of those that ran
/// after start-up, in address order.
fn record(artifacts: &Path, functions: &[Function]) -> Result<Vec<String>> {
    let bench = Bench::from_artifacts(artifacts);
    let probes = Probes::add(&bench.host, functions)?;
    // On once for both hosts, off once at the end: switching a probe off waits for the
    // kernel's grace period, per probe. Each host counts from the release of its start-up
    // code to the end of its work.
    let refused = probes.enable(true)?;
    let mut hot = BTreeSet::new();
    // MockCalls to stdout, as the idle benchmark's host.
    let install = bench.mock_calls("{sleep: 0.01}", "");
    let mut mock = started(&install)?;
    let before = probes.hits()?;
    std::thread::sleep(RUN);
    ran_since(&before, &probes.hits()?, &mut hot);
    mock.terminate();
    // A HiPath pty to a loopback frontend, as the rates benchmark's host.
    let (mut master, path) = rates::pty()?;
    let frontend = Frontend::ids_only();
    let install = serial_install(&bench, &path, &delivering_to(&frontend));
    let mut serial = started(&install)?;
    let before = probes.hits()?;
    rates::feed(&mut master, &hipath_samples()?, Some(100.0), RUN)?;
    std::thread::sleep(Duration::from_secs(1)); // the last records' delivery
    ran_since(&before, &probes.hits()?, &mut hot);
    serial.terminate();
    ensure!(
        frontend.delivered_count() > 0,
        "the HiPath host delivered nothing"
    );
    if refused > 0 {
        println!("{refused} functions could not be probed: left unrecorded");
    }
    Ok(functions
        .iter()
        .enumerate()
        .filter(|(i, _)| hot.contains(i))
        .map(|(_, f)| f.name.clone())
        .collect())
}

/// Adds to `hot` the probes whose hits grew from `before` to `after`.
fn ran_since(
    before: &BTreeMap<usize, u64>,
    after: &BTreeMap<usize, u64>,
    hot: &mut BTreeSet<usize>,
) {
    for (probe, hits) in after {
        if *hits > before.get(probe).copied().unwrap_or(0) {
            hot.insert(*probe);
        }
    }
}

/// Starts `install`'s host and waits until start-up's code is released.
fn started(install: &calllogger_test_kit::Install) -> Result<Host> {
    let mut command = install.command(&["run"]);
    command.env("RUST_LOG", "warn,calllogger::host=debug");
    let mut host = Host::spawn_discarding_records(command);
    host.wait_for_log(RELEASED, 1, Duration::from_secs(30));
    Ok(host)
}

/// One uprobe per function of a binary, in tracefs's group [`GROUP`]; removed on drop.
struct Probes {
    tracefs: PathBuf,
    count: usize,
}

impl Probes {
    fn add(binary: &Path, functions: &[Function]) -> Result<Self> {
        let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .into_iter()
            .map(PathBuf::from)
            .find(|dir| dir.join("uprobe_events").exists())
            .context("no tracefs with uprobe_events: recording needs root and tracefs")?;
        let segments = load_segments(&std::fs::read(binary)?)?;
        // What an interrupted recording left behind.
        let _ = std::fs::write(tracefs.join(format!("events/{GROUP}/enable")), "0");
        let _ = std::fs::write(tracefs.join("uprobe_events"), format!("-:{GROUP}/\n"));
        let mut events = std::fs::OpenOptions::new()
            .append(true)
            .open(tracefs.join("uprobe_events"))
            .context("opening uprobe_events (recording needs root)")?;
        let probes = Self {
            tracefs,
            count: functions.len(),
        };
        for (i, function) in functions.iter().enumerate() {
            let offset = file_offset(&segments, function.address)
                .with_context(|| format!("{} is outside the binary's segments", function.name))?;
            events
                .write_all(format!("p:{GROUP}/f{i} {}:{offset:#x}\n", binary.display()).as_bytes())
                .with_context(|| format!("adding a probe on {}", function.name))?;
        }
        Ok(probes)
    }

    /// Switches every probe on or off; returns how many the kernel cannot place (an
    /// instruction it cannot step over, ENOTSUPP): their functions go unrecorded.
    fn enable(&self, on: bool) -> Result<usize> {
        let mut refused = 0;
        for i in 0..self.count {
            let file = self.tracefs.join(format!("events/{GROUP}/f{i}/enable"));
            if let Err(e) = std::fs::write(&file, if on { "1" } else { "0" }) {
                ensure!(
                    e.raw_os_error() == Some(ENOTSUPP),
                    "switching {}: {e}",
                    file.display()
                );
                refused += 1;
            }
        }
        Ok(refused)
    }

    /// Hits by function index (`uprobe_profile`: file, event, hits per line).
    fn hits(&self) -> Result<BTreeMap<usize, u64>> {
        let profile = std::fs::read_to_string(self.tracefs.join("uprobe_profile"))?;
        Ok(profile
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace().skip(1);
                let event = fields.next()?.rsplit('/').next()?;
                let index = event.strip_prefix('f')?.parse().ok()?;
                Some((index, fields.next()?.parse().ok()?))
            })
            .collect())
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        let _ = self.enable(false);
        if let Ok(mut events) = std::fs::OpenOptions::new()
            .append(true)
            .open(self.tracefs.join("uprobe_events"))
        {
            // The whole group at once (one by one takes minutes).
            let _ = events.write_all(format!("-:{GROUP}/\n").as_bytes());
        }
    }
}

/// An ELF64 little-endian binary's `PT_LOAD` segments as (address, file offset, file size).
fn load_segments(elf: &[u8]) -> Result<Vec<(u64, u64, u64)>> {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    ensure!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "not a 64-bit little-endian ELF file"
    );
    let (Some(table), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        bail!("truncated ELF header");
    };
    let mut segments = Vec::new();
    for i in 0..usize::from(count) {
        let at = table as usize + i * usize::from(size);
        let is_load = elf.get(at..at + 4) == Some(&1u32.to_le_bytes()[..]);
        if let (true, Some(offset), Some(address), Some(file_size)) =
            (is_load, u64_at(at + 8), u64_at(at + 16), u64_at(at + 32))
        {
            segments.push((address, offset, file_size));
        }
    }
    Ok(segments)
}

/// Where in the file the code at `address` is.
fn file_offset(segments: &[(u64, u64, u64)], address: u64) -> Option<u64> {
    segments
        .iter()
        .find(|(start, _, size)| (*start..start + size).contains(&address))
        .map(|(start, offset, _)| address - start + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_map_s_text_functions_are_read_with_their_sections() {
        let line = |level: usize, address: u64, size: u64, name: &str| {
            format!(
                "{address:>16x} {address:>16x} {size:>8x} {:>5} {}{name}\n",
                1,
                " ".repeat(level * 8)
            )
        };
        let map = [
            "             VMA              LMA     Size Align Out     In      Symbol\n".into(),
            line(0, 0x2a8, 0x1c, ".interp"),
            line(1, 0x2a8, 0x1c, "<internal>:(.interp)"),
            line(0, 0x182c80, 0x3727be, ".text"),
            line(
                1,
                0x182c80,
                0xc,
                "/t/libsqlite.rlib(sqlite3.o):(.text.sqlite3_mutex_leave)",
            ),
            line(2, 0x182c80, 0xc, "sqlite3_mutex_leave"),
            line(1, 0x182c90, 0x54, "/t/host.o:(.text._ZN4main17h1E)"),
            line(2, 0x182c90, 0x54, "_ZN4main17h1E"),
            line(1, 0x182ce4, 0x10, "/t/ring.o:(.text)"),
            line(2, 0x182ce4, 0, "ring_core_0_17_asm"),
            line(0, 0x4f5000, 0x100, ".rodata"),
            line(1, 0x4f5000, 0x8, "/t/host.o:(.rodata.x)"),
            line(2, 0x4f5000, 0x8, "x"),
        ]
        .concat();
        let map = map.as_str();
        assert_eq!(
            text_functions(map),
            [
                Function {
                    name: "sqlite3_mutex_leave".into(),
                    address: 0x182c80,
                    size: 0xc
                },
                Function {
                    name: "_ZN4main17h1E".into(),
                    address: 0x182c90,
                    size: 0x54
                },
            ]
        );
    }

    #[test]
    fn the_check_fails_on_a_stale_list_and_on_a_scattered_layout() {
        let function = |name: &str, address, size| Function {
            name: name.into(),
            address,
            size,
        };
        let together = [
            function("a", 0x1000, 0x40),
            function("b", 0x1040, 0x20),
            function("c", 0x1060, 0x1000),
        ];
        assert!(check_layout(&["a", "b"], &together).is_ok());
        assert!(check_layout(&["a", "b", "gone"], &together).is_err());
        let scattered = [
            function("a", 0x1000, 0x40),
            function("c", 0x1040, 0x1000),
            function("b", 0x2040, 0x20),
        ];
        assert!(check_layout(&["a", "b"], &scattered).is_err());
    }

    #[test]
    fn addresses_become_file_offsets_by_their_segment() {
        let segments = [(0, 0, 0x182000), (0x183d80, 0x182d80, 0x372730)];
        assert_eq!(file_offset(&segments, 0x191cb0), Some(0x190cb0));
        assert_eq!(file_offset(&segments, 0x100), Some(0x100));
        assert_eq!(file_offset(&segments, 0x182fff), None);
    }
}
