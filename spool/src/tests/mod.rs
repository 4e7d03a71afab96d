//! The spool's behaviour through its own parts: real files, real SQLite.

mod cursors;
mod direct;
mod faults;

use std::num::NonZeroU64;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::Connection;

use super::*;
use crate::applier::ROTATE_AT;
use crate::journal::Header;

/// The host's choice: INCOMING ("ringing now", kind 0) records go first.
const INCOMING: EvictFirst = EvictFirst {
    applies: |kind| kind == 0,
    what: "ringing INCOMING ones",
};

fn options(max: u64, consumers: &[&str]) -> Options {
    Options {
        max_records: NonZeroU64::new(max).unwrap(),
        fsync: Fsync::Periodic,
        consumers: consumers.iter().map(|c| c.to_string()).collect(),
        evict_first: INCOMING,
    }
}

/// The three parts of an open spool.
struct Owned {
    writer: Writer,
    queue: Queue,
    applier: Applier,
}

impl Owned {
    fn shared(&self) -> &open::Shared {
        &self.applier.shared
    }

    fn apply(&self) -> usize {
        self.shared().apply().unwrap()
    }

    fn pending(&self) -> u64 {
        self.shared().pending.load(Ordering::Relaxed)
    }

    /// Every record in the queue, in order.
    fn all(&self) -> Vec<Pending> {
        let db = self.shared().db();
        let mut select = db
            .conn
            .prepare("SELECT seq, id, kind, body FROM pending ORDER BY seq")
            .unwrap();
        select
            .query_map([], queue::pending_row)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

fn open_with(dir: &Path, options: Options) -> Owned {
    let (writer, queue, applier) = Spool::open(dir, options).unwrap();
    Owned {
        writer,
        queue,
        applier,
    }
}

/// The spool as the host runs it with a frontend: one consumer.
fn owner(dir: &Path, max: u64) -> Owned {
    open_with(dir, options(max, &["frontend"]))
}

/// Polls `check` until it gives an answer; a generous bound turns a hang into a failure.
fn poll<T>(mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..6000 {
        if let Some(answer) = check() {
            return answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no answer within a minute");
}

fn reader(dir: &Path) -> SpoolReader {
    SpoolReader::open(dir).unwrap()
}

fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("id-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Pushes `n` records numbered `from..`, returning their ids.
fn push_from(spool: &Owned, from: usize, n: usize, kind: i32) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            let id = new_id();
            spool
                .writer
                .append(&id, kind, &format!(r#"{{"id":"{id}","n":{i}}}"#))
                .unwrap();
            id
        })
        .collect()
}

fn push(spool: &Owned, n: usize, kind: i32) -> Vec<String> {
    push_from(spool, 0, n, kind)
}

/// Every pending id, in order.
fn ids(spool: &Owned) -> Vec<String> {
    spool.all().into_iter().map(|p| p.id).collect()
}

fn numbers(spool: &Owned) -> Vec<i64> {
    spool
        .all()
        .iter()
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(&p.body).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

#[test]
fn what_a_crash_left_in_the_journal_is_recovered_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 1000);
    push(&spool, 10, 2);
    spool.apply();
    push_from(&spool, 10, 5, 2); // journaled, not applied: then the host dies
    let counts = reader(dir.path()).counts().unwrap();
    assert_eq!((counts.pending, counts.unapplied), (10, 5));
    drop(spool);
    let spool = owner(dir.path(), 1000);
    assert_eq!(
        spool.queue.counts().unwrap().unapplied,
        5,
        "recovery is left to the applier"
    );
    spool.apply();
    assert_eq!(spool.pending(), 15);
    drop(spool);
    let spool = owner(dir.path(), 1000);
    spool.apply();
    assert_eq!(spool.pending(), 15, "and only once");
    assert_eq!(
        numbers(&spool),
        (0..15).collect::<Vec<_>>(),
        "in push order"
    );
}

#[test]
fn a_long_journal_starts_a_new_generation_once_applied() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 1_000_000);
    let body = "x".repeat(1000);
    for _ in 0..5000 {
        spool.writer.append(&new_id(), 2, &body).unwrap();
        if spool.shared().journal.waiting() > 900 {
            spool.apply();
        }
    }
    spool.apply();
    let len = std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len();
    assert!(
        len < ROTATE_AT + (2 << 20),
        "the journal stays bounded: {len} bytes"
    );
    push(&spool, 3, 2);
    drop(spool);
    let spool = owner(dir.path(), 1_000_000);
    spool.apply();
    assert_eq!(spool.pending(), 5003);
}

#[test]
fn two_hosts_cannot_share_a_state_folder() {
    let dir = tempfile::tempdir().unwrap();
    let _first = owner(dir.path(), 10);
    let second = Spool::open(dir.path(), options(10, &[]));
    assert!(matches!(second, Err(OpenError::Busy(_))));
    SpoolReader::open(dir.path()).expect("readers are welcome");
}

#[test]
fn over_the_cap_ringing_records_go_first_then_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 100);
    push(&spool, 60, 2);
    push(&spool, 30, 0);
    push(&spool, 30, 2);
    spool.apply();
    // 120 > 100: the 20 over the cap (and 1% more) go, ringing records first.
    let kept = spool.all();
    assert_eq!(kept.len(), 99);
    assert_eq!(spool.pending(), 99, "the count follows");
    assert_eq!(kept.iter().filter(|p| p.kind == 0).count(), 9);
    assert!(
        kept[0].body.contains(r#""n":0}"#),
        "the oldest other record stays"
    );
    // Without ringing records left to evict, the oldest go.
    push(&spool, 50, 2);
    spool.apply();
    let kept = spool.all();
    assert_eq!(kept.len(), 99);
    assert!(kept.iter().all(|p| p.kind == 2));
    assert!(!kept[0].body.contains(r#""n":0}"#), "the oldest went");
}

#[test]
fn a_journal_removed_or_cut_short_while_running_loses_nothing() {
    for fault in ["remove", "truncate"] {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join(JOURNAL);
        let spool = owner(dir.path(), 10_000);
        let mut pushed = push(&spool, 20, 2);
        spool.apply();
        pushed.extend(push_from(&spool, 20, 10, 2)); // in memory and in the file, not applied
        match fault {
            "remove" => std::fs::remove_file(&journal).unwrap(),
            _ => std::fs::OpenOptions::new()
                .write(true)
                .open(&journal)
                .unwrap()
                .set_len(0)
                .unwrap(),
        }
        pushed.extend(push_from(&spool, 30, 10, 2));
        spool.apply();
        assert!(journal.exists(), "{fault}: written afresh");
        pushed.extend(push_from(&spool, 40, 10, 2)); // into the new file
        drop(spool); // a crash: these 10 are only in the new journal
        let spool = owner(dir.path(), 10_000);
        spool.apply();
        assert_eq!(ids(&spool), pushed, "{fault}: every record once, in order");
    }
}

#[test]
fn a_journal_replaced_while_running_is_kept_aside_and_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(JOURNAL);
    let spool = owner(dir.path(), 10_000);
    let mut pushed = push(&spool, 5, 2);
    spool.apply();
    let forged = format!(
        "{}2\t0\tforged\t{{\"id\":\"forged\"}}\n",
        std::fs::read_to_string(&journal).unwrap()
    );
    std::fs::write(dir.path().join("forged"), forged).unwrap();
    std::fs::rename(dir.path().join("forged"), &journal).unwrap();
    pushed.extend(push(&spool, 5, 2));
    spool.apply();
    drop(spool);
    let spool = owner(dir.path(), 10_000);
    spool.apply();
    assert_eq!(ids(&spool), pushed, "the forged line is never applied");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("spool.journal.foreign-")
        })
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the other file is kept for a person to look at"
    );
}

#[test]
fn a_journal_shorter_than_what_was_applied_is_not_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(JOURNAL);
    let spool = owner(dir.path(), 10_000);
    let pushed = push(&spool, 10, 2);
    let backup = std::fs::read(&journal).unwrap(); // 10 records, none applied yet
    spool.apply();
    let mut pushed_later = push_from(&spool, 10, 10, 2);
    spool.apply();
    drop(spool);
    std::fs::write(&journal, &backup).unwrap(); // restored from a backup
    let spool = owner(dir.path(), 10_000);
    spool.apply();
    let mut all = pushed;
    all.append(&mut pushed_later);
    assert_eq!(ids(&spool), all, "no record twice");
    // And the host goes on with a new generation that a restart applies once.
    let more = push_from(&spool, 20, 3, 2);
    drop(spool);
    let spool = owner(dir.path(), 10_000);
    spool.apply();
    all.extend(more);
    assert_eq!(ids(&spool), all);
}

#[test]
fn a_crash_while_starting_a_generation_applies_each_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 10_000);
    let mut pushed = push(&spool, 10, 2);
    spool.apply();
    // What `maintain` does, stopped between the rename and the note in the database.
    let journal = &spool.shared().journal;
    let generation = journal.generation() + 1;
    pushed.extend(push_from(&spool, 10, 4, 2)); // the tail the new file carries
    journal.rotate(generation, None).unwrap();
    drop(spool);
    let spool = owner(dir.path(), 10_000);
    spool.apply();
    assert_eq!(ids(&spool), pushed);
}

#[test]
fn a_missing_journal_after_a_clean_stop_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Owned {
        writer,
        queue,
        applier,
    } = owner(dir.path(), 10_000);
    let applier = applier.start().unwrap();
    let pushed: Vec<String> = (0..25)
        .map(|_| {
            let id = new_id();
            writer.append(&id, 2, "{}").unwrap();
            id
        })
        .collect();
    applier.stop().unwrap();
    drop((writer, queue));
    std::fs::remove_file(dir.path().join(JOURNAL)).unwrap();
    let spool = owner(dir.path(), 10_000);
    spool.apply();
    assert_eq!(ids(&spool), pushed);
    let more = push(&spool, 2, 2);
    spool.apply();
    assert_eq!(ids(&spool).len(), pushed.len() + more.len());
}

#[test]
fn a_flood_that_outruns_the_applier_s_checkpoints_keeps_the_wal_at_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 5_000);
    let wal = dir.path().join("spool.sqlite3-wal");
    let pad = "x".repeat(2000);
    let mut wal_max = 0;
    // 80 MB of records, applied as they come (the journal's tail holds 1 MiB), and never a
    // checkpoint of the applier's.
    for round in 0..200 {
        for i in 0..200 {
            let id = new_id();
            let body = format!(r#"{{"id":"{id}","n":{},"pad":"{pad}"}}"#, round * 200 + i);
            spool.writer.append(&id, 2, &body).unwrap();
        }
        spool.apply();
        wal_max = wal_max.max(std::fs::metadata(&wal).unwrap().len());
    }
    assert!(
        spool.pending() <= 5_000,
        "the cap holds: {}",
        spool.pending()
    );
    assert!(
        wal_max <= schema::WAL_LIMIT as u64 + (4 << 20),
        "the WAL grew to {wal_max} bytes"
    );
}

#[test]
fn a_corrupt_database_is_moved_aside_and_rebuilt_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 10_000);
    let mut pushed = push(&spool, 30, 2);
    spool.apply();
    pushed.extend(push_from(&spool, 30, 5, 2)); // not applied when the host dies
    spool.shared().checkpoint().unwrap();
    drop(spool);
    for name in [FILE, "spool.sqlite3-wal", "spool.sqlite3-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    std::fs::write(dir.path().join(FILE), vec![0x5a; 8192]).unwrap();
    let spool = owner(dir.path(), 10_000);
    spool.apply();
    assert_eq!(ids(&spool), pushed, "everything the journal held, once");
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("spool.sqlite3.corrupt-")
        })
        .count();
    assert_eq!(aside, 1, "the corrupt file is kept");
}

#[test]
fn records_readable_in_a_damaged_database_are_kept_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 10_000);
    let pushed = push(&spool, 30, 2);
    spool.apply();
    spool.shared().checkpoint().unwrap();
    drop(spool);
    // Damage the file's header only: SQLite refuses it, the pages are still readable after
    // the header is put back, which is what a person with a backup of page 1 would do… here
    // the salvage reads nothing, so the journal must supply everything.
    let path = dir.path().join(FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..16].copy_from_slice(b"not a database!!");
    std::fs::write(&path, bytes).unwrap();
    let spool = owner(dir.path(), 10_000);
    spool.apply();
    assert_eq!(ids(&spool), pushed);
}

#[test]
fn a_calllogger_0_1_spool_is_taken_over_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    // The 0.1 layout: no user_version, no generation; a journal without a header, of which
    // the first two lines are applied.
    let conn = Connection::open(dir.path().join(FILE)).unwrap();
    conn.execute_batch(
        "CREATE TABLE pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
             call_type INTEGER NOT NULL, pushed_at INTEGER NOT NULL, body TEXT NOT NULL);
         CREATE TABLE dead (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, call_type INTEGER NOT NULL,
             pushed_at INTEGER NOT NULL, body TEXT NOT NULL, status INTEGER NOT NULL,
             response TEXT NOT NULL, failed_at INTEGER NOT NULL);
         CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         INSERT INTO pending (id, call_type, pushed_at, body) VALUES ('a', 2, 0, '{}'), ('b', 2, 0, '{}');",
    )
    .unwrap();
    let journal = "2\t0\ta\t{}\n2\t0\tb\t{}\n2\t0\tc\t{}\n";
    conn.execute(
        "INSERT INTO meta VALUES ('journal_offset', ?1)",
        [journal.find("2\t0\tc").unwrap() as i64],
    )
    .unwrap();
    drop(conn);
    std::fs::write(dir.path().join(JOURNAL), journal).unwrap();
    assert_eq!(reader(dir.path()).counts().unwrap().pending, 2);
    let spool = owner(dir.path(), 10_000);
    spool.apply();
    assert_eq!(ids(&spool), ["a", "b", "c"]);
    assert_eq!(
        Header::read(&fs::RealFilesystem, &dir.path().join(JOURNAL)).unwrap(),
        Header::Generation(1),
        "now in generations"
    );
    drop(spool);
    let spool = owner(dir.path(), 10_000);
    spool.apply();
    assert_eq!(ids(&spool), ["a", "b", "c"], "once");
}

#[test]
fn a_spool_from_a_newer_calllogger_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(owner(dir.path(), 10));
    Connection::open(dir.path().join(FILE))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let error = Spool::open(dir.path(), options(10, &[])).err().unwrap();
    assert!(
        matches!(error, OpenError::NewerLayout { found: 99, .. }),
        "{error}"
    );
    let error = SpoolReader::open(dir.path()).err().unwrap();
    assert!(matches!(error, OpenError::NewerLayout { found: 99, .. }));
}

#[test]
fn the_queue_count_follows_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 10_000);
    push(&spool, 10, 2);
    spool.apply();
    let mut cursor = spool.queue.cursor("frontend", Mode::Consuming).unwrap();
    let queue = cursor.read(10).unwrap();
    cursor.ack(queue[1].seq).unwrap();
    cursor.bury(queue[2].seq, 400, "no").unwrap();
    assert_eq!(spool.pending(), 7);
    assert_eq!(spool.queue.counts().unwrap().dead, 1);
    assert!(
        matches!(
            reader(dir.path()).retry_dead(),
            Err(RetryError::Open(OpenError::Busy(_)))
        ),
        "not while the host runs"
    );
    drop((cursor, spool));
    assert_eq!(reader(dir.path()).retry_dead().unwrap(), 1);
    let spool = owner(dir.path(), 10_000);
    assert_eq!(spool.pending(), 8, "kept across a restart");
    assert_eq!(reader(dir.path()).counts().unwrap().pending, 8);
    assert_eq!(reader(dir.path()).counts().unwrap().dead, 0);
    let cursor = spool.queue.cursor("frontend", Mode::Consuming).unwrap();
    let again = cursor.read(10).unwrap();
    assert_eq!(again.len(), 8);
    assert_eq!(
        again.last().unwrap().id,
        queue[2].id,
        "back at the end, under its id"
    );
    assert_eq!(cursor.backlog(), 8);
}

#[test]
fn a_reader_before_the_owner_made_the_queue_says_so_and_reads_once_it_is_there() {
    let dir = tempfile::tempdir().unwrap();
    // What a reader finds while the owner is still creating the queue: an empty database.
    Connection::open(dir.path().join(FILE)).unwrap();
    match SpoolReader::open(dir.path()) {
        Err(OpenError::NoQueue(path)) => assert_eq!(path, dir.path().join(FILE)),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a reader opened a spool without a queue"),
    }
    let spool = owner(dir.path(), 100);
    push(&spool, 3, 2);
    spool.apply();
    assert_eq!(reader(dir.path()).newest(10).unwrap().len(), 3);
}
