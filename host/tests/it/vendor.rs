//! A plugin built the way a vendor builds one: outside this workspace, with its own lock file,
//! target folder and release profile, following the README's "Writing a plugin" guide.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::HOST;
use calllogger_test_kit::{build_out_of_tree, workspace, Install};

fn fixture() -> PathBuf {
    workspace().join("tests/fixtures/vendor-plugin")
}

/// The fenced blocks of one language in the README's "Writing a plugin" section, with the
/// list indentation taken off.
fn guide_blocks(language: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let start = readme
        .find("## Writing a plugin")
        .expect("the guide's heading");
    let end = start + readme[start..].find("### Compatibility").unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme[start..end].lines() {
        let line = line.strip_prefix("   ").unwrap_or(line);
        match (&mut current, line.trim()) {
            (None, fence) if fence == format!("```{language}") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_vendor_fixture_is_the_guide_word_for_word() {
    let code = std::fs::read_to_string(fixture().join("src/lib.rs")).unwrap();
    assert_eq!(
        guide_blocks("rust")[0],
        code,
        "src/lib.rs differs from the guide"
    );
    // Its Cargo.toml is `cargo new`'s package table, then the guide's block, the SDK taken by
    // path (as from the registry by version).
    let manifest = std::fs::read_to_string(fixture().join("Cargo.toml")).unwrap();
    let from_guide = &manifest[manifest.find("[lib]").unwrap()..];
    let expected = guide_blocks("toml")[0].replace(
        "calllogger-plugin-sdk = { version = \"0.3\", features",
        "calllogger-plugin-sdk = { version = \"0.3\", path = \"../../../plugin-sdk\", features",
    );
    assert_eq!(from_guide, expected, "Cargo.toml differs from the guide");
    assert!(
        fixture().join("Cargo.lock").exists(),
        "a vendor commits a lock file"
    );
}

/// The guide's calls from the PBX stand-ins: `n` lines `number,ext` with numbers unique to
/// `line`, a heartbeat first and a line the plugin rejects in the middle.
fn calls(line: u32, n: u32) -> (Vec<u8>, Vec<String>) {
    let numbers: Vec<String> = (0..n).map(|i| format!("08761{line}{i:05}")).collect();
    let mut bytes = b"HEARTBEAT\r\n".to_vec();
    for (i, number) in numbers.iter().enumerate() {
        bytes.extend_from_slice(format!("{number},1{:02}\r\n", i % 100).as_bytes());
        if i == numbers.len() / 2 {
            bytes.extend_from_slice(b"no comma here\r\n");
        }
    }
    (bytes, numbers)
}

#[test]
fn a_vendor_plugin_built_out_of_tree_in_release_mode_loads_and_runs() {
    let built = build_out_of_tree(&fixture(), "my_pbx");

    // Step 3's config, the PBX being a loopback stand-in and the serial port a pty.
    let pbx = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut serial, slave) = serialport::TTYPort::pair().expect("a pseudo-terminal");
    let tty = serialport::SerialPort::name(&slave).unwrap();
    drop(slave);
    let config = guide_blocks("yaml")[0]
        .replace(
            "pbx.example.local:2300",
            &pbx.local_addr().unwrap().to_string(),
        )
        .replace("/dev/ttyUSB0", &tty);
    assert!(
        config.contains("127.0.0.1:") && config.contains(&tty),
        "{config}"
    );
    let install = Install::new(HOST, &[], &config);
    let mut host = install.start();
    host.wait_for_log(
        "no plugin library exports class `MyPbx`",
        1,
        Duration::from_secs(20),
    );
    // Step 4's install: hidden temporary name, rename, into a running host.
    let temporary = install.plugins().join(".libmy_pbx.so.partial");
    std::fs::copy(&built, &temporary).unwrap();
    install.chmod(&temporary, 0o644);
    std::fs::rename(&temporary, install.plugins().join("libmy_pbx.so")).unwrap();

    let (tcp_bytes, tcp_numbers) = calls(2, 500);
    let (serial_bytes, serial_numbers) = calls(3, 50);
    let (mut connection, _) = pbx.accept().unwrap();
    connection.write_all(&tcp_bytes).unwrap();
    host.wait_for_log("reading", 2, Duration::from_secs(20)); // the connection and the port
    serial.write_all(&serial_bytes).unwrap();
    let total = tcp_numbers.len() + serial_numbers.len();
    let mut records = host.records_until(Duration::from_secs(30), {
        let mut n = 0;
        move |_| {
            n += 1;
            n == total
        }
    });
    let log = host.terminate();
    records.extend(
        host.remaining_records()
            .into_iter()
            .map(|r| (Instant::now(), r)),
    );
    for (line, numbers) in [(2, &tcp_numbers), (3, &serial_numbers)] {
        let got: Vec<&str> = records
            .iter()
            .filter(|(_, r)| r["line"] == line)
            .map(|(_, r)| r["number"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(got, *numbers, "line {line}: each call once, in order");
    }
    assert_eq!(records.len(), total, "no other records");
    assert!(
        log.matches("line rejected by parse: expected `number,ext`")
            .count()
            == 2,
        "{log}"
    );
    assert!(
        !log.contains("HEARTBEAT"),
        "a heartbeat is skipped quietly: {log}"
    );

    let (ok, table, _) = install.run_cli(&["plugins"]);
    assert!(ok);
    for class in ["MyPbx ", "MyPbxSerial "] {
        let row = table.lines().find(|l| l.starts_with(class)).unwrap_or("");
        assert!(
            row.contains("libmy_pbx.so")
                && row.contains("my-pbx 0.1.0")
                && row.contains("0.3.0")
                && row.contains("Reads call records from My PBX (lines)"),
            "{table}"
        );
    }
}

/// A plugin built with an SDK patch release (0.3.1) over the same ABI crate loads and runs in
/// this host, whose SDK is 0.3.0.
#[test]
fn a_plugin_built_with_a_newer_sdk_patch_release_loads() {
    assert_eq!(calllogger_plugin_sdk::SDK_VERSION, "0.3.0");
    let built = build_out_of_tree(
        &workspace().join("tests/fixtures/sdk-patch-plugin"),
        "sdk_patch_plugin",
    );
    let install = Install::new(HOST, &[], "settings: {plugins: [Patched]}\n");
    std::fs::copy(&built, install.plugins().join("libpatched.so")).unwrap();
    install.chmod(&install.plugins().join("libpatched.so"), 0o644);
    let (ok, table, err) = install.run_cli(&["plugins"]);
    assert!(ok, "{err}");
    let row = table
        .lines()
        .find(|l| l.starts_with("Patched"))
        .unwrap_or("");
    assert!(
        row.contains("sdk-patch-plugin 0.1.0") && row.contains("0.3.1"),
        "{table}"
    );
    let mut host = install.start();
    host.records_until(Duration::from_secs(20), |r| r["number"] == "patched");
    let log = host.terminate();
    assert!(
        log.contains("started instance=Patched library=sdk-patch-plugin 0.1.0"),
        "{log}"
    );
}
