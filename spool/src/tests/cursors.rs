//! Named cursors: consumers, followers, dead letters per sink, and the layout they came with.

use std::collections::HashSet;
use std::time::Duration;

use super::*;

/// The seqs of `records`.
fn seqs(records: &[Pending]) -> Vec<i64> {
    records.iter().map(|p| p.seq).collect()
}

#[test]
fn a_record_leaves_only_once_every_consumer_has_acked_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_with(dir.path(), options(1000, &["a", "b"]));
    let pushed = push(&spool, 5, 2);
    spool.apply();
    let mut a = spool.queue.cursor("a", Mode::Consuming).unwrap();
    let mut b = spool.queue.cursor("b", Mode::Consuming).unwrap();
    let read = a.read(10).unwrap();
    assert_eq!(
        read.iter().map(|p| &p.id).collect::<Vec<_>>(),
        pushed.iter().collect::<Vec<_>>()
    );
    a.ack(read[4].seq).unwrap();
    assert_eq!(spool.pending(), 5, "b has not acked any");
    assert!(a.read(10).unwrap().is_empty(), "a is past them all");
    assert_eq!(a.backlog(), 0);
    assert_eq!(b.backlog(), 5);
    b.ack(read[2].seq).unwrap();
    assert_eq!(spool.pending(), 2, "the three both acked are gone");
    assert_eq!(seqs(&b.read(10).unwrap()), seqs(&read[3..]));
    b.ack(read[4].seq).unwrap();
    assert_eq!(spool.pending(), 0);
    b.ack(read[1].seq).unwrap();
    assert!(
        b.read(10).unwrap().is_empty(),
        "an older ack does not move a cursor back"
    );
    drop((a, b));
    assert_eq!(reader(dir.path()).counts().unwrap().pending, 0);
}

#[test]
fn an_ack_is_saved_with_the_next_record_by_the_applier_or_when_the_cursor_ends() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 1000);
    let saved = || reader(dir.path()).counts().unwrap().pending;
    push(&spool, 3, 2);
    spool.apply();
    let mut cursor = spool.queue.cursor("frontend", Mode::Consuming).unwrap();
    let read = cursor.read(10).unwrap();
    cursor.ack(read[2].seq).unwrap();
    let counts = spool.queue.counts().unwrap();
    assert_eq!(
        (counts.pending, counts.oldest_pending),
        (0, None),
        "gone at once"
    );
    assert!(cursor.read(10).unwrap().is_empty());
    assert_eq!(saved(), 3, "not written yet");
    assert_eq!(spool.all().len(), 3);

    let next = push(&spool, 1, 2);
    spool.apply();
    assert_eq!(saved(), 1, "written with the next record's transaction");
    assert_eq!(ids(&spool), next, "the acked records are deleted with it");
    let read = cursor.read(10).unwrap();
    cursor.ack(read[0].seq).unwrap();
    assert_eq!(saved(), 1);
    drop(cursor);
    assert_eq!(saved(), 0, "written when the cursor ends");
    assert!(spool.all().is_empty());

    let mut cursor = spool.queue.cursor("frontend", Mode::Consuming).unwrap();
    push(&spool, 20, 2);
    spool.apply();
    let batch = cursor.read(20).unwrap();
    cursor.ack(batch[19].seq).unwrap();
    assert_eq!(saved(), 0, "a batch's ack is written at once");
    drop(cursor);

    let Owned {
        writer,
        queue,
        applier,
    } = spool;
    writer.append(&new_id(), 2, "{}").unwrap();
    queue.shared.apply().unwrap();
    assert_eq!(saved(), 1);
    let applier = applier.start().unwrap();
    let mut cursor = queue.cursor("frontend", Mode::Consuming).unwrap();
    let read = cursor.read(10).unwrap();
    cursor.ack(read[0].seq).unwrap();
    poll(|| (saved() == 0).then_some(()));
    assert_eq!(
        queue
            .shared
            .db()
            .conn
            .query_row(
                "SELECT acked FROM cursors WHERE sink = 'frontend'",
                [],
                |r| r.get::<_, i64>(0)
            )
            .unwrap(),
        read[0].seq,
        "written by the applier within a second, while the cursor lives on"
    );
    assert_ne!(
        checkpointed_ack(dir.path()),
        Some(read[0].seq),
        "a save of acks alone is not yet checkpointed into the database file"
    );
    drop(cursor);
    applier.stop().unwrap();
    assert_eq!(
        checkpointed_ack(dir.path()),
        Some(read[0].seq),
        "checkpointed at the stop"
    );
}

#[test]
fn records_the_applier_moves_into_the_table_are_checkpointed_within_about_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 1000);
    let applier = spool.applier.start().unwrap();
    spool.writer.append(&new_id(), 2, "{}").unwrap();
    poll(|| (checkpointed_pending(dir.path()) == 1).then_some(()));
    applier.stop().unwrap();
}

#[test]
fn a_line_appended_while_the_applier_sleeps_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    // No consumer waits to take the line itself: only the applier moves it.
    let spool = open_with(dir.path(), options(1000, &[]));
    let applier = spool.applier.start().unwrap();
    // Once a record is checkpointed the applier has nothing due: only the append can wake it.
    for n in 1..=3 {
        poll(|| spool.writer.shared.journal.sleeping().then_some(()));
        spool.writer.append(&new_id(), 2, "{}").unwrap();
        poll(|| (checkpointed_pending(dir.path()) == n).then_some(()));
    }
    applier.stop().unwrap();
}

/// What the database file itself holds, without its WAL: what the checkpoints copied.
fn in_the_file<T: rusqlite::types::FromSql>(dir: &Path, sql: &str) -> Option<T> {
    let uri = format!("file:{}?immutable=1", dir.join(crate::FILE).display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(uri, flags).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).ok()
}

/// The frontend's ack in the database file.
fn checkpointed_ack(dir: &Path) -> Option<i64> {
    in_the_file(dir, "SELECT acked FROM cursors WHERE sink = 'frontend'")
}

/// The records in the database file's table.
fn checkpointed_pending(dir: &Path) -> i64 {
    in_the_file(dir, "SELECT count(*) FROM pending").unwrap_or(0)
}

#[test]
fn a_following_cursor_starts_at_the_newest_record_and_holds_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 1000);
    push(&spool, 3, 2);
    spool.apply();
    let tap = spool.queue.cursor("stdout", Mode::Following).unwrap();
    assert!(
        tap.read(10).unwrap().is_empty(),
        "it starts at the newest record"
    );
    assert_eq!(tap.backlog(), 0);
    let fresh = push_from(&spool, 3, 2, 2);
    spool.apply();
    let seen = tap.read(10).unwrap();
    assert_eq!(seen.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), fresh);
    assert_eq!(tap.backlog(), 2);
    let mut frontend = spool.queue.cursor("frontend", Mode::Consuming).unwrap();
    frontend.ack(seen[1].seq).unwrap();
    assert_eq!(spool.pending(), 0, "the follower holds nothing back");
}

#[test]
fn without_consumers_records_stay_until_evicted_whatever_followers_ack() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_with(dir.path(), options(10, &[]));
    let mut tap = spool.queue.cursor("stdout", Mode::Following).unwrap();
    push(&spool, 4, 2);
    spool.apply();
    let seen = tap.read(10).unwrap();
    assert_eq!(seen.len(), 4);
    tap.ack(seen[3].seq).unwrap();
    assert_eq!(spool.pending(), 4);
    push(&spool, 10, 2);
    spool.apply();
    assert!(
        spool.pending() <= 10,
        "the cap still holds: {}",
        spool.pending()
    );
}

#[test]
fn positions_are_durable_across_a_restart_and_a_new_consumer_starts_at_the_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_with(dir.path(), options(1000, &["a"]));
    push(&spool, 4, 2);
    spool.apply();
    let mut a = spool.queue.cursor("a", Mode::Consuming).unwrap();
    let mut tap = spool.queue.cursor("tap", Mode::Following).unwrap();
    let read = a.read(10).unwrap();
    a.ack(read[0].seq).unwrap();
    assert!(tap.read(1).unwrap().is_empty());
    push(&spool, 2, 2);
    spool.apply();
    let tapped = tap.read(10).unwrap();
    tap.ack(tapped[0].seq).unwrap();
    drop((a, tap, spool));

    let spool = open_with(dir.path(), options(1000, &["a", "b"]));
    let a = spool.queue.cursor("a", Mode::Consuming).unwrap();
    let b = spool.queue.cursor("b", Mode::Consuming).unwrap();
    let tap = spool.queue.cursor("tap", Mode::Following).unwrap();
    assert_eq!(seqs(&a.read(10).unwrap()), seqs(&spool.all()[..]));
    assert_eq!(
        a.read(10).unwrap().len(),
        5,
        "a resumes after what it acked"
    );
    assert_eq!(
        b.read(10).unwrap().len(),
        5,
        "b starts with every record still there"
    );
    assert_eq!(
        seqs(&tap.read(10).unwrap()),
        vec![tapped[1].seq],
        "the tap resumes too"
    );
    drop((a, b, tap, spool));

    // A consumer no longer configured holds nothing: what the rest acked goes at start-up.
    let spool = open_with(dir.path(), options(1000, &["a"]));
    let mut a = spool.queue.cursor("a", Mode::Consuming).unwrap();
    let last = a.read(10).unwrap().last().unwrap().seq;
    a.ack(last).unwrap();
    assert_eq!(spool.pending(), 0);
}

#[test]
fn dead_letters_are_per_sink_and_retry_dead_shows_a_record_to_every_sink_again() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_with(dir.path(), options(1000, &["a", "b"]));
    let pushed = push(&spool, 2, 2);
    spool.apply();
    let mut a = spool.queue.cursor("a", Mode::Consuming).unwrap();
    let mut b = spool.queue.cursor("b", Mode::Consuming).unwrap();
    let read = a.read(10).unwrap();
    a.bury(read[0].seq, 400, "no").unwrap();
    assert_eq!(spool.queue.counts().unwrap().dead, 1);
    assert_eq!(spool.pending(), 2, "b still wants it");
    assert_eq!(
        seqs(&a.read(10).unwrap()),
        vec![read[1].seq],
        "a is past it"
    );
    b.bury(read[0].seq, 422, "nor I").unwrap();
    assert_eq!(spool.queue.counts().unwrap().dead, 2, "one per sink");
    assert_eq!(spool.pending(), 1, "both are done with it");
    a.ack(read[1].seq).unwrap();
    b.ack(read[1].seq).unwrap();
    drop((a, b, spool));

    assert_eq!(
        reader(dir.path()).retry_dead().unwrap(),
        1,
        "the record once"
    );
    let spool = open_with(dir.path(), options(1000, &["a", "b"]));
    for sink in ["a", "b"] {
        let again = spool
            .queue
            .cursor(sink, Mode::Consuming)
            .unwrap()
            .read(10)
            .unwrap();
        assert_eq!(again.len(), 1, "{sink}");
        assert_eq!(again[0].id, pushed[0], "{sink}: under its id");
        assert!(again[0].seq > read[1].seq, "{sink}: after the cursors");
    }
    assert_eq!(spool.queue.counts().unwrap().dead, 0);
}

#[test]
fn a_cursor_must_match_the_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 10);
    assert!(matches!(
        spool.queue.cursor("other", Mode::Consuming),
        Err(CursorError::NotAConsumer(s)) if s == "other"
    ));
    assert!(matches!(
        spool.queue.cursor("frontend", Mode::Following),
        Err(CursorError::IsAConsumer(s)) if s == "frontend"
    ));
}

#[test]
fn a_wait_ends_on_a_record_after_the_cursor_or_a_wake() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 100);
    let mut cursor = spool.queue.cursor("frontend", Mode::Consuming).unwrap();
    // A wake before the wait is not lost (a stop signalled just before it).
    spool.queue.wake();
    cursor.wait(Some(Duration::from_secs(3600)));
    push(&spool, 1, 2);
    spool.apply();
    cursor.wait(Some(Duration::from_secs(3600)));
    let waiter = std::thread::spawn(move || {
        let last = cursor.read(1).unwrap()[0].seq;
        cursor.ack(last).unwrap();
        cursor.wait(Some(Duration::from_secs(3600)));
        cursor.read(1).unwrap()
    });
    let more = push_from(&spool, 1, 1, 2);
    spool.apply();
    assert_eq!(waiter.join().unwrap()[0].id, more[0]);
}

#[test]
fn a_waiting_cursor_moves_a_record_appended_meanwhile_into_the_queue_itself() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 100);
    let cursor = spool.queue.cursor("frontend", Mode::Consuming).unwrap();
    // No applier runs: only the cursor can move the record.
    let waiter = std::thread::spawn(move || {
        cursor.wait(Some(Duration::from_secs(60)));
        cursor.read(10).unwrap()
    });
    poll(|| (spool.shared().db().waiting == 1).then_some(()));
    let pushed = push(&spool, 1, 2);
    let read = waiter.join().unwrap();
    assert_eq!(read.iter().map(|p| &p.id).collect::<Vec<_>>(), [&pushed[0]]);
    assert_eq!(spool.apply(), 0, "the journal is applied through it");
    assert!(spool.shared().checkpoint_wanted.load(Ordering::SeqCst));
    drop(spool);
    let spool = owner(dir.path(), 100);
    spool.apply();
    assert_eq!(ids(&spool), pushed, "once, after a restart too");
}

#[test]
fn every_record_reaches_a_waiting_consumer_once_whoever_applies_it() {
    const PER_PUSHER: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let spool = open_with(dir.path(), options(100_000, &["frontend"]));
    let Owned {
        writer,
        queue,
        applier,
    } = spool;
    let applier = applier.start().unwrap();
    let mut cursor = queue.cursor("frontend", Mode::Consuming).unwrap();
    let consumer = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.len() < 2 * PER_PUSHER {
            cursor.wait(Some(Duration::from_secs(60)));
            let batch = cursor.read(7).unwrap();
            if let Some(last) = batch.last() {
                cursor.ack(last.seq).unwrap();
            }
            seen.extend(batch.into_iter().map(|p| p.id));
        }
        seen
    });
    // One pusher a trickle (the consumer mostly waits: it applies), one in bursts (the
    // consumer is busy: the applier applies).
    let pushers: Vec<_> = (0..2)
        .map(|n| {
            let writer = writer.clone();
            std::thread::spawn(move || {
                (0..PER_PUSHER)
                    .map(|i| {
                        let id = format!("{n}-{i}");
                        writer
                            .append(&id, 2, &format!(r#"{{"id":"{id}"}}"#))
                            .unwrap();
                        if n == 0 && i % 10 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let pushed: HashSet<String> = pushers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    let seen = consumer.join().unwrap();
    let delivered: HashSet<&String> = seen.iter().collect();
    let lost = pushed.iter().filter(|id| !delivered.contains(id)).count();
    assert_eq!(
        (seen.len(), delivered.len(), lost),
        (pushed.len(), pushed.len(), 0),
        "delivered, distinct, lost"
    );
    applier.stop().unwrap();
    drop((writer, queue));
    let spool = owner(dir.path(), 100_000);
    assert_eq!(spool.apply(), 0, "nothing is applied twice after a restart");
    assert!(ids(&spool).is_empty());
}

#[test]
fn a_lagging_cursor_counts_its_backlog_across_evicted_records() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_with(dir.path(), options(1000, &["a", "b"]));
    push(&spool, 3, 2);
    push(&spool, 2, 0);
    push(&spool, 3, 2);
    spool.apply();
    let mut a = spool.queue.cursor("a", Mode::Consuming).unwrap();
    let mut b = spool.queue.cursor("b", Mode::Consuming).unwrap();
    let read = a.read(10).unwrap();
    b.ack(read[1].seq).unwrap();
    a.ack(read[0].seq).unwrap();
    assert_eq!(a.backlog(), 7, "a is at the front");
    assert_eq!(b.backlog(), 6);
    spool
        .shared()
        .db()
        .conn
        .execute("DELETE FROM pending WHERE kind = 0", [])
        .unwrap();
    assert_eq!(b.backlog(), 4, "counted, not guessed from seqs");
}

#[test]
fn a_follower_far_behind_counts_its_backlog_only_up_to_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_with(dir.path(), options(100_000, &[]));
    push(&spool, 1, 2);
    spool.apply();
    // Behind the queue's front: a record before it is still there.
    let tap = spool.queue.cursor("stdout", Mode::Following).unwrap();
    push(&spool, COUNTED as usize + 5, 2);
    spool.apply();
    assert_eq!(
        tap.backlog(),
        COUNTED,
        "bounded: not a scan of the whole queue"
    );
    assert_eq!(tap.read(3).unwrap().len(), 3);
}

#[test]
fn a_layout_1_spool_is_taken_over_with_its_records_pending_for_every_consumer() {
    let dir = tempfile::tempdir().unwrap();
    // What this spool wrote before cursors (layout 1), after a clean stop.
    let conn = Connection::open(dir.path().join(FILE)).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
             call_type INTEGER NOT NULL, pushed_at INTEGER NOT NULL, body TEXT NOT NULL);
         CREATE TABLE dead (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, call_type INTEGER NOT NULL,
             pushed_at INTEGER NOT NULL, body TEXT NOT NULL, status INTEGER NOT NULL,
             response TEXT NOT NULL, failed_at INTEGER NOT NULL);
         CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE INDEX pending_incoming ON pending (seq) WHERE call_type = 0;
         INSERT INTO meta VALUES ('journal_offset', 0), ('generation', 0), ('clean', 1), ('pending', 3);
         INSERT INTO pending (id, call_type, pushed_at, body)
             VALUES ('a', 0, 10, '{}'), ('b', 2, 11, '{}'), ('c', 2, 12, '{}');
         INSERT INTO dead VALUES (9, 'x', 2, 9, '{}', 400, 'no', 13);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let before = reader(dir.path());
    assert_eq!(
        before.counts().unwrap().pending,
        3,
        "readable before the upgrade"
    );
    assert_eq!(before.newest(1).unwrap()[0].id, "c");
    assert!(
        matches!(
            before.retry_dead(),
            Err(RetryError::OlderLayout { found: 1, .. })
        ),
        "only the host upgrades"
    );
    drop(before);

    let spool = open_with(dir.path(), options(1000, &["frontend", "archive"]));
    for sink in ["frontend", "archive"] {
        let records = spool
            .queue
            .cursor(sink, Mode::Consuming)
            .unwrap()
            .read(10)
            .unwrap();
        let ids: Vec<_> = records.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "{sink} gets every pending record");
        assert_eq!(records[0].kind, 0);
    }
    assert_eq!(spool.pending(), 3);
    assert_eq!(spool.queue.counts().unwrap().dead, 1);
    let first: Vec<i64> = {
        let db = spool.shared().db();
        let mut s = db
            .conn
            .prepare("SELECT evict_first FROM pending ORDER BY seq")
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        first,
        [1, 0, 0],
        "the caller's choice is marked on the old records"
    );
    push(&spool, 1, 2);
    spool.apply();
    drop(spool);
    let upgraded = reader(dir.path());
    assert_eq!(upgraded.counts().unwrap().pending, 4);
    assert_eq!(
        upgraded.retry_dead().unwrap(),
        1,
        "the old dead letter comes back"
    );
    let conn = Connection::open(dir.path().join(FILE)).unwrap();
    assert_eq!(schema::layout(&conn).unwrap(), schema::LAYOUT);
}

#[test]
fn a_cursor_reads_and_acks_without_planning_its_statements_again() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 100);
    let mut cursor = spool.queue.cursor("frontend", Mode::Consuming).unwrap();
    for n in 1..=5 {
        push(&spool, 1, 2);
        spool.apply();
        let read = cursor.read(n).unwrap();
        cursor.ack(read.last().unwrap().seq).unwrap();
        assert_eq!(cursor.backlog(), 0);
    }
    let db = spool.shared().db();
    let read = db.conn.prepare_cached(crate::sql::READ).unwrap();
    // A new binding of `LIMIT ?2` made SQLite plan the statement again, every time.
    assert_eq!(read.get_status(rusqlite::StatementStatus::RePrepare), 0);
}
