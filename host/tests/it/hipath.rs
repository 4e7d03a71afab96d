//! The real HiPath plugin in the real host, reading a real pseudo-terminal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::HOST;
use calllogger_test_kit::*;
use serialport::{SerialPort, TTYPort};

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/hipath")
        .join(file)
}

/// The sample lines as raw bytes, and the expected.tsv rows (header keys → cells).
fn samples() -> (
    Vec<Vec<u8>>,
    Vec<std::collections::BTreeMap<String, String>>,
) {
    let raw = std::fs::read(data("samples.txt")).unwrap();
    let lines: Vec<Vec<u8>> = raw.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    let lines = lines[..lines.len() - usize::from(raw.ends_with(b"\n"))].to_vec();
    let tsv = std::fs::read_to_string(data("expected.tsv")).unwrap();
    let mut rows = tsv.lines();
    let header: Vec<&str> = rows.next().unwrap().split('\t').collect();
    let expected = rows
        .map(|row| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(row.split('\t').map(str::to_owned))
                .collect()
        })
        .collect::<Vec<_>>();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one expected row per sample line"
    );
    (lines, expected)
}

/// A pty whose slave the host opens through `link`, a symlink the test can repoint.
pub(crate) fn pty_at(link: &Path) -> TTYPort {
    let (master, slave) = TTYPort::pair().expect("a pseudo-terminal");
    // Hosts spawned from now on must not inherit the master: closing it here is the unplug.
    let flags = nix::fcntl::FdFlag::FD_CLOEXEC;
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the fd belongs to `master`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(master.as_raw_fd()) };
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(flags)).unwrap();
    let target = slave.name().unwrap();
    drop(slave);
    let temporary = link.with_extension("new");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(&target, &temporary).unwrap();
    std::fs::rename(&temporary, link).unwrap();
    master
}

/// A scratch folder with a pty behind the symlink `ttyHIPATH` in it.
fn scratch_pty() -> (tempfile::TempDir, PathBuf, TTYPort) {
    let scratch = tempfile::tempdir().unwrap();
    let link = scratch.path().join("ttyHIPATH");
    let master = pty_at(&link);
    (scratch, link, master)
}

fn install(link: &Path) -> Install {
    Install::new(HOST, &[HIPATH], &serial_config(&link.display().to_string()))
}

/// The HiPath plugin reading the serial port `port`.
fn serial_config(port: &str) -> String {
    format!(
        "settings: {{plugins: [SiemensHipathSerial], timeout: 0.2, decay: 2, max_timeout: 5}}\n\
         SiemensHipathSerial: {{port: '{port}', timezone: Europe/Dublin}}\n"
    )
}

#[test]
fn every_sample_line_comes_out_in_order_and_rejects_are_counted() {
    let (_scratch, link, master) = scratch_pty();
    every_sample_from_a_serial_port(
        |libraries, config| Install::new(HOST, libraries, config),
        &link.display().to_string(),
        master,
    );
}

/// Every sample line written to the pty behind `master` comes out of the HiPath plugin
/// reading it as `port`, in order, and the rejected lines are counted; the installation is
/// `install(libraries, config)`'s.
pub(crate) fn every_sample_from_a_serial_port(
    install: impl FnOnce(&[&str], &str) -> Install,
    port: &str,
    mut master: TTYPort,
) {
    let install = install(&[HIPATH], &serial_config(port));
    let mut host = install.start();
    host.wait_for_log("reading", 1, Duration::from_secs(20));
    let (lines, expected) = samples();
    for line in &lines {
        master.write_all(line).unwrap();
        master.write_all(b"\r\n").unwrap();
    }
    master.flush().unwrap();
    let accepted: Vec<_> = expected.iter().filter(|e| e["status"] == "ok").collect();
    let rejected = expected.len() - accepted.len();
    let records = host.records_until(Duration::from_secs(30), {
        let mut n = 0;
        move |_| {
            n += 1;
            n == accepted.len()
        }
    });
    for ((_, record), want) in records
        .iter()
        .zip(expected.iter().filter(|e| e["status"] == "ok"))
    {
        let sample = &want["sample"];
        assert_eq!(
            record["call_type"].to_string(),
            want["call_type"],
            "sample {sample}: {record}"
        );
        for field in ["number", "ext"] {
            let got = record[field].as_str().unwrap_or("");
            assert_eq!(got, want[field], "sample {sample} {field}: {record}");
        }
        assert_eq!(
            record["line"].to_string(),
            want["line"],
            "sample {sample} line: {record}"
        );
        let date = record["date"].as_str().unwrap();
        assert!(
            date.starts_with(&want["date"]),
            "sample {sample} date {date} vs {}",
            want["date"]
        );
    }
    host.terminate();
    assert!(
        host.remaining_records().is_empty(),
        "rejected lines are never emitted"
    );
    let log = host.log();
    let summary = log
        .lines()
        .find(|l| l.contains("lines read"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        summary.contains(&format!(
            "{} lines read, {} records",
            lines.len(),
            records.len()
        )),
        "{summary}"
    );
    let skipped: usize = summary
        .split("skipped: ")
        .nth(1)
        .unwrap()
        .split(", ")
        .map(|part| {
            part.split_whitespace()
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(skipped, rejected, "{summary}");
}

#[test]
fn unplug_and_replug_reconnects_with_growing_waits_and_reads_on() {
    let (_scratch, link, mut master) = scratch_pty();
    let install = install(&link);
    let mut host = install.start();
    host.wait_for_log("reading", 1, Duration::from_secs(20));
    let (lines, expected) = samples();
    let first = expected.iter().position(|e| e["status"] == "ok").unwrap();
    master.write_all(&lines[first]).unwrap();
    master.write_all(b"\r\n").unwrap();
    let (_, record) = host
        .next_record(Duration::from_secs(20))
        .expect("a record before the unplug");
    assert_eq!(
        record["number"].as_str().unwrap_or(""),
        expected[first]["number"]
    );

    drop(master); // the cable is pulled: the device goes away
    std::fs::remove_file(&link).unwrap();
    host.wait_for_log("cannot open", 3, Duration::from_secs(20));

    let mut master = pty_at(&link); // plugged in again, maybe as another device node
    let second = expected.iter().rposition(|e| e["status"] == "ok").unwrap();
    host.wait_for_log("reading", 2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(100));
    master.write_all(&lines[second]).unwrap();
    master.write_all(b"\r\n").unwrap();
    let (_, record) = host
        .next_record(Duration::from_secs(20))
        .expect("a record after the replug");
    assert_eq!(
        record["number"].as_str().unwrap_or(""),
        expected[second]["number"]
    );
    let log = host.log();
    assert!(log.contains("lost "), "the unplug is logged: {log}");
    let waits: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            l.split("reopening in ")
                .nth(1)
                .or_else(|| l.split("retrying in ").nth(1))
        })
        .filter_map(|rest| rest.split_whitespace().next())
        .take(3)
        .collect();
    assert_eq!(
        waits,
        ["0.2", "0.4", "0.8"],
        "reconnect waits grow from the base: {log}"
    );
    host.terminate();
}

/// Whether `record` is the call of expected.tsv row `want`.
fn is_call(record: &serde_json::Value, want: &std::collections::BTreeMap<String, String>) -> bool {
    let text = |field: &str| record[field].as_str().unwrap_or("").to_owned();
    let shown = |field: &str| record[field].to_string();
    shown("call_type") == want["call_type"]
        && text("number") == want["number"]
        && text("ext") == want["ext"]
        && shown("line") == want["line"]
        && text("date").starts_with(&want["date"])
}

#[test]
fn over_tcp_every_sample_line_gives_one_record_across_a_reconnect() {
    samples_over_tcp_across_a_reconnect(|libraries, config| Install::new(HOST, libraries, config));
}

/// Every sample line, sent over two TCP connections from a loopback PBX stand-in that the
/// plugin connects to (`source: tcp-client`), gives one record, in order, none repeated; the
/// installation is `install(libraries, config)`'s.
pub(crate) fn samples_over_tcp_across_a_reconnect(install: impl FnOnce(&[&str], &str) -> Install) {
    let pbx = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let install = install(&[HIPATH], &tcp_client_config(&pbx));
    let mut host = install.start();
    let (lines, _) = samples();
    // Half the samples on a first connection, which the PBX then closes; the rest on the
    // connection the plugin makes again.
    let (first, second) = lines.split_at(lines.len() / 2);
    for half in [first, second] {
        let (mut pbx_side, _) = pbx.accept().unwrap();
        for line in half {
            pbx_side.write_all(line).unwrap();
            pbx_side.write_all(b"\r\n").unwrap();
        }
        pbx_side.shutdown(std::net::Shutdown::Write).unwrap();
        // The plugin closes its end once it has read to our end: nothing is in flight.
        std::io::Read::read_to_end(&mut pbx_side, &mut Vec::new()).unwrap();
    }
    let log = every_accepted_sample_once_in_order(&mut host);
    assert!(log.contains("closed by the other end"), "{log}");
}

#[test]
fn without_time_zone_files_on_the_system_the_bundled_ones_give_the_same_records() {
    let pbx = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let install = Install::new(HOST, &[HIPATH], &tcp_client_config(&pbx));
    // The host in a mount namespace of its own with /usr/share/zoneinfo empty: a base image
    // without tzdata.
    let command = install.command(&["run"]);
    let mut bare = std::process::Command::new("unshare");
    bare.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /usr/share/zoneinfo && exec \"$@\"")
        .arg("sh")
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => bare.env(name, value),
            None => bare.env_remove(name),
        };
    }
    let mut host = Host::spawn(bare);
    pbx.set_nonblocking(true).unwrap();
    let (mut pbx_side, _) = poll(Duration::from_secs(30), || pbx.accept().ok())
        .unwrap_or_else(|| panic!("the plugin never connected; log:\n{}", host.log()));
    pbx_side.set_nonblocking(false).unwrap();
    for line in samples().0 {
        pbx_side.write_all(&line).unwrap();
        pbx_side.write_all(b"\r\n").unwrap();
    }
    every_accepted_sample_once_in_order(&mut host);
}

#[test]
fn from_a_file_every_sample_line_gives_one_record_across_a_rotation() {
    samples_from_a_file_across_a_rotation(|libraries, config| {
        Install::new(HOST, libraries, config)
    });
}

/// Every sample line, appended to a file the plugin follows (`source: file`) that is rotated
/// while it reads (renamed, then a new file made, as logrotate's `create` does), gives one
/// record, in order, none repeated; the installation is `install(libraries, config)`'s.
pub(crate) fn samples_from_a_file_across_a_rotation(
    install: impl FnOnce(&[&str], &str) -> Install,
) {
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("cdr.txt");
    let install = install(
        &[HIPATH],
        &format!(
            "settings: {{plugins: [SiemensHipathSerial]}}\n\
             SiemensHipathSerial: {{source: file, path: '{}', timezone: Europe/Dublin}}\n",
            file.display()
        ),
    );
    let append = |lines: &[Vec<u8>]| {
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap();
        for line in lines {
            out.write_all(line).unwrap();
            out.write_all(b"\r\n").unwrap();
        }
    };
    let (lines, _) = samples();
    let (first, second) = lines.split_at(lines.len() / 2);
    append(first);
    let mut host = install.start();
    host.wait_for_log("reading", 1, Duration::from_secs(30));
    std::fs::rename(&file, folder.path().join("cdr.txt.1")).unwrap();
    append(second);
    every_accepted_sample_once_in_order(&mut host);
}

/// The HiPath plugin connecting to the PBX stand-in `pbx` (`source: tcp-client`).
fn tcp_client_config(pbx: &std::net::TcpListener) -> String {
    format!(
        "settings: {{plugins: [SiemensHipathSerial], timeout: 0.2, decay: 2, max_timeout: 5}}\n\
         SiemensHipathSerial: {{source: tcp-client, connect: \"{}\", timezone: Europe/Dublin}}\n",
        pbx.local_addr().unwrap()
    )
}

/// Reads records until one per accepted sample has come, stops the host, and checks that
/// they are the accepted samples, in order, none repeated; returns the host's log.
fn every_accepted_sample_once_in_order(host: &mut Host) -> String {
    let (_, expected) = samples();
    let want: Vec<_> = expected.iter().filter(|e| e["status"] == "ok").collect();
    let mut got: Vec<_> = host
        .records_until(Duration::from_secs(30), {
            let (mut n, all) = (0, want.len());
            move |_| {
                n += 1;
                n == all
            }
        })
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    let log = host.terminate();
    got.extend(host.remaining_records());
    assert_eq!(
        got.len(),
        want.len(),
        "one record per accepted line, none repeated: {log}"
    );
    for (i, (record, row)) in got.iter().zip(&want).enumerate() {
        assert!(
            is_call(record, row),
            "record {i} is not sample {}: {record}",
            row["sample"]
        );
    }
    log
}
