//! Direct delivery: a sole consumer's cursor takes a trickle from the journal, and what its
//! sink acks at once never enters the table; everything else does, in order.

use std::time::{Duration, Instant};

use super::*;

/// The spool's files as they are on disk now, in a new folder: what a host killed at this
/// moment leaves behind.
fn crash_copy(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for file in [FILE, "spool.sqlite3-wal", JOURNAL] {
        if dir.join(file).exists() {
            std::fs::copy(dir.join(file), copy.path().join(file)).unwrap();
        }
    }
    copy
}

/// The cursor of the spool's one consumer, the host's frontend sink.
fn consumer(spool: &Owned) -> Cursor {
    spool.queue.cursor("frontend", Mode::Consuming).unwrap()
}

/// Waits for the next record and reads it.
fn next(cursor: &Cursor) -> Vec<Pending> {
    cursor.wait(Some(Duration::from_secs(60)));
    cursor.read(10).unwrap()
}

#[test]
fn a_record_acked_at_once_never_enters_the_table_and_a_crash_sends_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 100);
    let mut cursor = consumer(&spool);
    let pushed = push(&spool, 1, 2);
    cursor.wait(Some(Duration::from_secs(60)));
    assert_eq!(cursor.backlog(), 1);
    let read = cursor.read(10).unwrap();
    assert_eq!((read[0].id.as_str(), read[0].seq), (pushed[0].as_str(), 1));
    let counts = spool.queue.counts().unwrap();
    assert_eq!(
        (counts.pending, counts.unapplied),
        (0, 1),
        "in the journal only"
    );
    assert!(spool.all().is_empty());

    cursor.ack(read[0].seq).unwrap();
    let counts = spool.queue.counts().unwrap();
    assert_eq!((counts.pending, counts.unapplied), (0, 0));
    assert!(spool.all().is_empty(), "it never entered the table");
    assert_eq!(
        reader(dir.path()).counts().unwrap().unapplied,
        1,
        "the journal offset is saved with the acks"
    );
    let crashed = crash_copy(dir.path());
    drop(cursor);
    assert_eq!(reader(dir.path()).counts().unwrap().unapplied, 0);

    let crashed = owner(crashed.path(), 100);
    crashed.apply();
    let again = consumer(&crashed);
    assert_eq!(
        again.read(10).unwrap()[0].id,
        pushed[0],
        "a host killed before the save sends it again: at least once"
    );

    drop(spool);
    let spool = owner(dir.path(), 100);
    spool.apply();
    let cursor = consumer(&spool);
    assert!(cursor.read(10).unwrap().is_empty(), "saved: not again");
    let more = push(&spool, 1, 2);
    let read = next(&cursor);
    assert_eq!((read[0].id.as_str(), read[0].seq), (more[0].as_str(), 2));
}

#[test]
fn a_record_not_acked_at_once_enters_the_table_under_the_seq_its_sink_saw() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 100);
    let mut cursor = consumer(&spool);

    // A retry reads it again: from the table.
    let first = push(&spool, 1, 2);
    let read = next(&cursor);
    assert!(spool.all().is_empty());
    assert_eq!(
        cursor.read(10).unwrap(),
        read,
        "the same record, the same seq"
    );
    assert_eq!(ids(&spool), first);
    cursor.ack(read[0].seq).unwrap();
    assert_eq!(spool.pending(), 0);

    // A refusal: a dead letter is a row.
    push(&spool, 1, 2);
    let read = next(&cursor);
    cursor.bury(read[0].seq, 400, "no").unwrap();
    assert_eq!(spool.queue.counts().unwrap().dead, 1);

    // Two taken at once, the sink takes one: the other stays direct until a line follows
    // it, which puts it in the table first.
    let two = push_from(&spool, 2, 2, 2);
    cursor.wait(Some(Duration::from_secs(60)));
    let one = cursor.read(1).unwrap();
    assert_eq!(one[0].id, two[0]);
    cursor.ack(one[0].seq).unwrap();
    assert_eq!(cursor.backlog(), 1);
    let third = push_from(&spool, 4, 1, 2);
    spool.apply();
    let rest = spool.all();
    assert_eq!(
        rest.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        [two[1].clone(), third[0].clone()]
    );
    assert_eq!(rest[0].seq, one[0].seq + 1, "under the seq it was given");
    assert_eq!(cursor.read(10).unwrap(), rest);
}

#[test]
fn records_taken_directly_reach_the_table_before_a_stop_or_a_new_journal() {
    let dir = tempfile::tempdir().unwrap();
    let Owned {
        writer,
        queue,
        applier,
    } = owner(dir.path(), 100);
    let applier = applier.start().unwrap();
    let cursor = queue.cursor("frontend", Mode::Consuming).unwrap();
    let id = new_id();
    writer.append(&id, 2, "{}").unwrap();
    let read = next(&cursor);
    assert_eq!(read[0].id, id);
    applier.stop().unwrap();
    let counts = reader(dir.path()).counts().unwrap();
    assert_eq!((counts.pending, counts.unapplied), (1, 0), "in the table");
    drop((cursor, queue, writer));

    // The journal file removed while a record is taken directly: it goes to the table
    // before the new file, which holds only the tail, replaces it.
    let spool = owner(dir.path(), 100);
    spool.apply();
    let mut cursor = consumer(&spool);
    cursor.ack(cursor.read(10).unwrap()[0].seq).unwrap();
    let pushed = push(&spool, 1, 2);
    next(&cursor);
    std::fs::remove_file(dir.path().join(JOURNAL)).unwrap();
    spool.apply();
    assert_eq!(ids(&spool), pushed);
    let copy = crash_copy(dir.path());
    let crashed = owner(copy.path(), 100);
    crashed.apply();
    assert_eq!(ids(&crashed), pushed, "kept across a crash");

    // Removed between two records: the next is applied, not taken, and the file written
    // afresh at once.
    cursor.ack(cursor.read(10).unwrap()[0].seq).unwrap();
    std::fs::remove_file(dir.path().join(JOURNAL)).unwrap();
    let more = push(&spool, 1, 2);
    assert_eq!(next(&cursor)[0].id, more[0]);
    assert!(dir.path().join(JOURNAL).exists());
    assert_eq!(ids(&spool), more, "in the table");
}

#[test]
fn a_dead_letter_put_back_after_direct_deliveries_comes_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 100);
    let mut cursor = consumer(&spool);
    let refused = push(&spool, 1, 2);
    let read = next(&cursor);
    cursor.bury(read[0].seq, 400, "no").unwrap();
    push(&spool, 2, 2);
    for _ in 0..2 {
        let read = next(&cursor);
        cursor.ack(read[0].seq).unwrap();
    }
    drop((cursor, spool));
    assert_eq!(reader(dir.path()).retry_dead().unwrap(), 1);
    let spool = owner(dir.path(), 100);
    let cursor = consumer(&spool);
    let read = cursor.read(10).unwrap();
    assert_eq!(
        read.len(),
        1,
        "its new seq is after the ones delivered directly"
    );
    assert_eq!(read[0].id, refused[0]);
}

#[test]
fn a_record_that_cannot_enter_the_table_waits_in_the_journal_under_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let spool = owner(dir.path(), 100);
    let mut cursor = consumer(&spool);
    push(&spool, 1, 2);
    let read = next(&cursor);
    let sql = |sql: &str| spool.shared().db().conn.execute_batch(sql).unwrap();
    sql("CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.pending
          BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
    assert!(
        cursor.read(10).unwrap().is_empty(),
        "a retry finds it in neither"
    );
    assert_eq!(
        spool.queue.counts().unwrap().unapplied,
        1,
        "back in the tail"
    );
    let waited = Instant::now();
    cursor.wait(Some(Duration::from_millis(200)));
    assert!(
        waited.elapsed() >= Duration::from_millis(200),
        "the cursor waits for it to be applied: it does not spin"
    );
    sql("DROP TRIGGER refuse");
    spool.apply();
    assert_eq!(
        cursor.read(10).unwrap(),
        read,
        "then read under the same seq"
    );

    // A dead letter that cannot be written: the bury fails, and the record is offered again.
    cursor.ack(read[0].seq).unwrap();
    push(&spool, 1, 2);
    let refused = next(&cursor);
    sql("CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.pending
          BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
    assert!(cursor.bury(refused[0].seq, 400, "no").is_err());
    sql("DROP TRIGGER refuse");
    spool.apply();
    assert_eq!(cursor.read(10).unwrap(), refused);
    cursor.bury(refused[0].seq, 400, "no").unwrap();
    assert_eq!(spool.queue.counts().unwrap().dead, 1);
}
