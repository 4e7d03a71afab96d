use super::*;

fn owner(dir: &Path, max: u64) -> Spool {
    Spool::open(dir, Fsync::Periodic, max, Role::Owner).unwrap()
}

fn reader(dir: &Path) -> Spool {
    Spool::open(dir, Fsync::Periodic, 1000, Role::Reader).unwrap()
}

/// Pushes `n` records numbered `from..`, returning their ids.
fn push_from(spool: &Spool, from: usize, n: usize, call_type: i32) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            let id = crate::json::new_id();
            spool
                .append(&id, call_type, &format!(r#"{{"id":"{id}","n":{i}}}"#))
                .unwrap();
            id
        })
        .collect()
}

fn push(spool: &Spool, n: usize, call_type: i32) -> Vec<String> {
    push_from(spool, 0, n, call_type)
}

/// Every pending id, in order.
fn ids(spool: &Spool) -> Vec<String> {
    spool
        .oldest(1_000_000)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect()
}

fn numbers(spool: &Spool) -> Vec<i64> {
    spool
        .oldest(1_000_000)
        .unwrap()
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
    spool.apply().unwrap();
    push_from(&spool, 10, 5, 2); // journaled, not applied: then the host dies
    let counts = reader(dir.path()).counts().unwrap();
    assert_eq!((counts.pending, counts.unapplied), (10, 5));
    drop(spool);
    let spool = owner(dir.path(), 1000);
    assert_eq!(
        spool.counts().unwrap().unapplied,
        5,
        "recovery is left to the applier"
    );
    spool.apply().unwrap();
    assert_eq!(spool.pending(), 15);
    drop(spool);
    let spool = owner(dir.path(), 1000);
    spool.apply().unwrap();
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
        spool.append(&crate::json::new_id(), 2, &body).unwrap();
        if spool.journal().unwrap().waiting() > 900 {
            spool.apply().unwrap();
        }
    }
    spool.apply().unwrap();
    let len = std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len();
    assert!(
        len < ROTATE_AT + (2 << 20),
        "the journal stays bounded: {len} bytes"
    );
    push(&spool, 3, 2);
    drop(spool);
    let spool = owner(dir.path(), 1_000_000);
    spool.apply().unwrap();
    assert_eq!(spool.pending(), 5003);
}

#[test]
fn two_hosts_cannot_share_a_state_folder() {
    let dir = tempfile::tempdir().unwrap();
    let _first = owner(dir.path(), 10);
    let second = Spool::open(dir.path(), Fsync::Periodic, 10, Role::Owner);
    assert!(matches!(second, Err(SpoolError::Busy(_))));
    Spool::open(dir.path(), Fsync::Periodic, 10, Role::Reader).expect("readers are welcome");
}

#[test]
fn over_the_cap_ringing_records_go_first_then_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 100);
    push(&spool, 60, 2);
    push(&spool, 30, 0);
    push(&spool, 30, 2);
    spool.apply().unwrap();
    // 120 > 100: the 20 over the cap (and 1% more) go, ringing records first.
    let kept = spool.oldest(1000).unwrap();
    assert_eq!(kept.len(), 99);
    assert_eq!(spool.pending(), 99, "the count follows");
    assert_eq!(kept.iter().filter(|p| p.call_type == 0).count(), 9);
    assert!(
        kept[0].body.contains(r#""n":0}"#),
        "the oldest other record stays"
    );
    // Without ringing records left to evict, the oldest go.
    push(&spool, 50, 2);
    spool.apply().unwrap();
    let kept = spool.oldest(1000).unwrap();
    assert_eq!(kept.len(), 99);
    assert!(kept.iter().all(|p| p.call_type == 2));
    assert!(!kept[0].body.contains(r#""n":0}"#), "the oldest went");
}

#[test]
fn a_journal_removed_or_cut_short_while_running_loses_nothing() {
    for fault in ["remove", "truncate"] {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join(JOURNAL);
        let spool = owner(dir.path(), 10_000);
        let mut pushed = push(&spool, 20, 2);
        spool.apply().unwrap();
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
        spool.apply().unwrap();
        assert!(journal.exists(), "{fault}: written afresh");
        pushed.extend(push_from(&spool, 40, 10, 2)); // into the new file
        drop(spool); // a crash: these 10 are only in the new journal
        let spool = owner(dir.path(), 10_000);
        spool.apply().unwrap();
        assert_eq!(ids(&spool), pushed, "{fault}: every record once, in order");
    }
}

#[test]
fn a_journal_replaced_while_running_is_kept_aside_and_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(JOURNAL);
    let spool = owner(dir.path(), 10_000);
    let mut pushed = push(&spool, 5, 2);
    spool.apply().unwrap();
    let forged = format!(
        "{}2\t0\tforged\t{{\"id\":\"forged\"}}\n",
        std::fs::read_to_string(&journal).unwrap()
    );
    std::fs::write(dir.path().join("forged"), forged).unwrap();
    std::fs::rename(dir.path().join("forged"), &journal).unwrap();
    pushed.extend(push(&spool, 5, 2));
    spool.apply().unwrap();
    drop(spool);
    let spool = owner(dir.path(), 10_000);
    spool.apply().unwrap();
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
    spool.apply().unwrap();
    let mut pushed_later = push_from(&spool, 10, 10, 2);
    spool.apply().unwrap();
    drop(spool);
    std::fs::write(&journal, &backup).unwrap(); // restored from a backup
    let spool = owner(dir.path(), 10_000);
    spool.apply().unwrap();
    let mut all = pushed;
    all.append(&mut pushed_later);
    assert_eq!(ids(&spool), all, "no record twice");
    // And the host goes on with a new generation that a restart applies once.
    let more = push_from(&spool, 20, 3, 2);
    drop(spool);
    let spool = owner(dir.path(), 10_000);
    spool.apply().unwrap();
    all.extend(more);
    assert_eq!(ids(&spool), all);
}

#[test]
fn a_crash_while_starting_a_generation_applies_each_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 10_000);
    let mut pushed = push(&spool, 10, 2);
    spool.apply().unwrap();
    // What `maintain` does, stopped between the rename and the note in the database.
    let journal = spool.journal().unwrap();
    let generation = journal.generation() + 1;
    pushed.extend(push_from(&spool, 10, 4, 2)); // the tail the new file carries
    journal.rotate(generation, None).unwrap();
    drop(spool);
    let spool = owner(dir.path(), 10_000);
    spool.apply().unwrap();
    assert_eq!(ids(&spool), pushed);
}

#[test]
fn a_missing_journal_after_a_clean_stop_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(owner(dir.path(), 10_000));
    let stop = Arc::new(Stop::default());
    let applier = spool.start_applier(stop.clone()).unwrap();
    let pushed = push(&spool, 25, 2);
    stop.stop();
    spool.wake_applier();
    applier.join().unwrap();
    drop(spool);
    std::fs::remove_file(dir.path().join(JOURNAL)).unwrap();
    let spool = owner(dir.path(), 10_000);
    spool.apply().unwrap();
    assert_eq!(ids(&spool), pushed);
    let more = push(&spool, 2, 2);
    spool.apply().unwrap();
    assert_eq!(ids(&spool).len(), pushed.len() + more.len());
}

#[test]
fn a_corrupt_database_is_moved_aside_and_rebuilt_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 10_000);
    let mut pushed = push(&spool, 30, 2);
    spool.apply().unwrap();
    pushed.extend(push_from(&spool, 30, 5, 2)); // not applied when the host dies
    spool.checkpoint().unwrap();
    drop(spool);
    for name in [FILE, "spool.sqlite3-wal", "spool.sqlite3-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    std::fs::write(dir.path().join(FILE), vec![0x5a; 8192]).unwrap();
    let spool = owner(dir.path(), 10_000);
    spool.apply().unwrap();
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
    spool.apply().unwrap();
    spool.checkpoint().unwrap();
    drop(spool);
    // Damage the file's header only: SQLite refuses it, the pages are still readable after
    // the header is put back, which is what a person with a backup of page 1 would do… here
    // the salvage reads nothing, so the journal must supply everything.
    let path = dir.path().join(FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..16].copy_from_slice(b"not a database!!");
    std::fs::write(&path, bytes).unwrap();
    let spool = owner(dir.path(), 10_000);
    spool.apply().unwrap();
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
    spool.apply().unwrap();
    assert_eq!(ids(&spool), ["a", "b", "c"]);
    assert_eq!(
        Header::read(&dir.path().join(JOURNAL)).unwrap(),
        Header::Generation(1),
        "now in generations"
    );
    drop(spool);
    let spool = owner(dir.path(), 10_000);
    spool.apply().unwrap();
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
    let error = Spool::open(dir.path(), Fsync::Periodic, 10, Role::Owner)
        .err()
        .unwrap();
    assert!(
        matches!(error, SpoolError::NewerLayout { found: 99, .. }),
        "{error}"
    );
}

#[test]
fn the_queue_count_follows_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 10_000);
    push(&spool, 10, 2);
    spool.apply().unwrap();
    let queue = spool.oldest(10).unwrap();
    spool.remove(&[queue[0].seq, queue[1].seq]).unwrap();
    spool.bury(queue[2].seq, 400, "no").unwrap();
    assert_eq!(spool.pending(), 7);
    assert_eq!(spool.retry_dead().unwrap(), 1);
    assert_eq!(spool.pending(), 8);
    drop(spool);
    let spool = owner(dir.path(), 10_000);
    assert_eq!(spool.pending(), 8, "kept across a restart");
    assert_eq!(reader(dir.path()).counts().unwrap().pending, 8);
}
