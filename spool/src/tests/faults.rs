//! Disks that fail, through the [`Filesystem`](crate::fs::Filesystem) seam: nothing accepted
//! is lost, nothing refused is kept, and the trouble shows while it lasts.

use crate::fs::fault::FaultFilesystem;

use super::*;

fn open_on(fs: &FaultFilesystem, dir: &Path, fsync: Fsync) -> Owned {
    let options = Options {
        fsync,
        ..options(10_000, &["frontend"])
    };
    let (writer, queue, applier) = Spool::open_on(Arc::new(fs.clone()), dir, options).unwrap();
    Owned {
        writer,
        queue,
        applier,
    }
}

/// Every line of the journal file is whole, and how many there are after the header.
fn journal_lines(dir: &Path) -> usize {
    let bytes = std::fs::read(dir.join(JOURNAL)).unwrap();
    assert!(bytes.ends_with(b"\n"), "no torn line is left");
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count()
        - 1
}

#[test]
fn a_full_disk_refuses_the_append_cuts_it_back_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFilesystem::default();
    let spool = open_on(&fs, dir.path(), Fsync::Periodic);
    let mut accepted = push(&spool, 3, 2);
    // Room for part of the next line only: a torn write.
    fs.faults.fill_disk_after(10);
    let error = spool
        .writer
        .append("refused", 2, r#"{"id":"refused"}"#)
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot write to the spool journal")
            && error.to_string().contains("No space left on device"),
        "{error}"
    );
    let trouble = spool.queue.trouble();
    assert!(
        trouble.len() == 1 && trouble[0].contains("pushes are held until it can"),
        "{trouble:?}"
    );
    assert_eq!(journal_lines(dir.path()), 3, "the torn part is cut back");
    assert!(
        spool.writer.append("refused", 2, "{}").is_err(),
        "still full"
    );
    fs.faults.heal();
    accepted.extend(push_from(&spool, 3, 2, 2));
    assert!(
        spool.queue.trouble().is_empty(),
        "the trouble ends with the next append"
    );
    assert_eq!(journal_lines(dir.path()), 5);
    drop(spool); // a crash: nothing was applied yet
    let spool = open_on(&fs, dir.path(), Fsync::Periodic);
    spool.apply();
    assert_eq!(
        ids(&spool),
        accepted,
        "every accepted record once, none refused"
    );
}

#[test]
fn a_failing_flush_refuses_the_append_and_a_later_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFilesystem::default();
    let spool = open_on(&fs, dir.path(), Fsync::Always);
    let mut accepted = push(&spool, 2, 2);
    spool.apply();
    fs.faults.fail_sync(true);
    let error = spool.writer.append("unflushed", 2, "{}").unwrap_err();
    assert!(error.to_string().contains("Input/output error"), "{error}");
    assert_eq!(
        journal_lines(dir.path()),
        2,
        "the unflushed line is cut back"
    );
    fs.faults.fail_sync(false);
    accepted.extend(push_from(&spool, 2, 1, 2));
    spool.apply();
    assert_eq!(ids(&spool), accepted);
    drop(spool);
    let spool = open_on(&fs, dir.path(), Fsync::Always);
    spool.apply();
    assert_eq!(ids(&spool), accepted, "and nothing twice after a restart");
}

#[test]
fn a_journal_that_cannot_be_written_afresh_is_retried_and_then_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFilesystem::default();
    let spool = open_on(&fs, dir.path(), Fsync::Periodic);
    let mut accepted = push(&spool, 3, 2);
    spool.apply();
    std::fs::remove_file(dir.path().join(JOURNAL)).unwrap();
    accepted.extend(push_from(&spool, 3, 2, 2)); // into the removed file, and in memory
    fs.faults.fill_disk_after(0);
    let error = spool.shared().apply().unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot create the spool journal"),
        "{error}"
    );
    assert!(!dir.path().join(JOURNAL).exists());
    assert!(
        !dir.path().join("spool.journal.new").exists(),
        "nothing half-made is left"
    );
    fs.faults.heal();
    spool.apply();
    assert!(dir.path().join(JOURNAL).exists(), "written afresh");
    accepted.extend(push_from(&spool, 5, 2, 2));
    drop(spool); // a crash: the last two are only in the new journal
    let spool = open_on(&fs, dir.path(), Fsync::Periodic);
    spool.apply();
    assert_eq!(ids(&spool), accepted, "every record once, in order");
}

/// The spool on `fs` with its applier running.
fn started(fs: &FaultFilesystem, dir: &Path) -> (Writer, Queue, crate::ApplierThread) {
    let Owned {
        writer,
        queue,
        applier,
    } = open_on(fs, dir, Fsync::Periodic);
    (writer, queue, applier.start().unwrap())
}

/// Removes the journal and leaves room on the disk for the line of one record `a`, not for
/// the journal written afresh once the spool sees the file is gone.
fn remove_the_journal_leaving_room_for_one_line(fs: &FaultFilesystem, dir: &Path) {
    std::fs::remove_file(dir.join(JOURNAL)).unwrap();
    let line = format!("2\t{}\ta\t{{}}\n", schema::unix_now());
    fs.faults.fill_disk_after(line.len() as u64);
}

#[test]
fn the_applier_reports_its_trouble_while_the_journal_cannot_be_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFilesystem::default();
    let (writer, queue, applier) = started(&fs, dir.path());
    remove_the_journal_leaving_room_for_one_line(&fs, dir.path());
    writer.append("a", 2, "{}").unwrap();
    let trouble = poll(|| Some(queue.trouble()).filter(|t| !t.is_empty()));
    assert!(
        trouble.len() == 1
            && trouble[0].starts_with("cannot create the spool journal")
            && trouble[0].contains("records wait in the journal"),
        "{trouble:?}"
    );
    fs.faults.heal();
    poll(|| queue.trouble().is_empty().then_some(()));
    assert!(
        dir.path().join(JOURNAL).exists(),
        "written afresh once there is room"
    );
    writer.append("after", 2, "{}").unwrap();
    applier.stop().unwrap();
    drop((writer, queue));
    let spool = open_on(&fs, dir.path(), Fsync::Periodic);
    spool.apply();
    assert_eq!(ids(&spool), ["a", "after"]);
}

#[test]
fn a_waiting_cursor_leaves_a_failed_apply_to_the_applier_which_reports_and_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFilesystem::default();
    let (writer, queue, applier) = started(&fs, dir.path());
    let mut cursor = queue.cursor("frontend", Mode::Consuming).unwrap();
    let delivered = std::thread::spawn(move || {
        let mut ids = Vec::new();
        while ids.len() < 2 {
            cursor.wait(None);
            for record in cursor.read(10).unwrap() {
                cursor.ack(record.seq).unwrap();
                ids.push(record.id);
            }
        }
        ids
    });
    let shared = queue.shared.clone();
    poll(|| (shared.db().waiting == 1).then_some(()));
    remove_the_journal_leaving_room_for_one_line(&fs, dir.path());
    // The waiting cursor applies it, then cannot write the journal afresh.
    writer.append("a", 2, "{}").unwrap();
    let trouble = poll(|| Some(queue.trouble()).filter(|t| !t.is_empty()));
    assert!(
        trouble.len() == 1 && trouble[0].starts_with("cannot create the spool journal"),
        "the applier reports it: {trouble:?}"
    );
    fs.faults.heal();
    poll(|| queue.trouble().is_empty().then_some(()));
    writer.append("after", 2, "{}").unwrap();
    assert_eq!(delivered.join().unwrap(), ["a", "after"]);
    applier.stop().unwrap();
    drop((writer, queue, shared));
    let spool = open_on(&fs, dir.path(), Fsync::Periodic);
    assert_eq!(spool.apply(), 0, "nothing applied twice");
    assert!(ids(&spool).is_empty());
}
