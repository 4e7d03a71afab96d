//! Record ids: UUIDv7 (RFC 9562), made in userspace without a system call per id.
//!
//! The 48-bit millisecond timestamp leads, so ids sort by the time they were assigned; the 74
//! bits after it come from a per-thread generator seeded once from the OS (`fastrand`'s
//! thread-local one). Within one millisecond a thread's next id adds a random step to its last
//! one (RFC 9562 §6.2, method 2), so the ids one thread makes are strictly increasing even when
//! the clock stands still or steps back.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// The bits after the timestamp that are neither version nor variant.
const RANDOM_BITS: u32 = 74;
const RANDOM_MASK: u128 = (1 << RANDOM_BITS) - 1;

thread_local! {
    /// The last id this thread made: (milliseconds, random part).
    static LAST: Cell<(u64, u128)> = const { Cell::new((0, 0)) };
}

/// A fresh unique record id, hyphenated.
pub fn new_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    LAST.with(|last| {
        let next = next_after(last.get(), now, fastrand::u128(..), fastrand::u32(..));
        last.set(next);
        uuid::Uuid::from_u128(layout(next)).hyphenated().to_string()
    })
}

/// The (milliseconds, random part) after `last` at clock `now`: a fresh random part in a new
/// millisecond, else `last`'s plus `1 + step` (carrying into the next millisecond when the 74
/// bits run over).
fn next_after(last: (u64, u128), now: u64, fresh: u128, step: u32) -> (u64, u128) {
    let (last_ms, last_random) = last;
    if now > last_ms {
        // Leave the top bit clear: room to count up within the millisecond.
        return (now, fresh & (RANDOM_MASK >> 1));
    }
    let random = last_random + 1 + u128::from(step);
    if random > RANDOM_MASK {
        (last_ms + 1, random & (RANDOM_MASK >> 1))
    } else {
        (last_ms, random)
    }
}

/// The UUIDv7 bits: `unix_ts_ms(48) | ver(4) = 7 | rand_a(12) | var(2) = 0b10 | rand_b(62)`.
fn layout((ms, random): (u64, u128)) -> u128 {
    let ms = u128::from(ms) & ((1 << 48) - 1);
    (ms << 80) | (0x7 << 76) | ((random >> 62) << 64) | (0b10 << 62) | (random & ((1 << 62) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_with_the_time_they_were_made() {
        let before = SystemTime::now();
        let id = uuid::Uuid::parse_str(&new_id()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        let at = UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        let early = before.duration_since(at).unwrap_or_default();
        assert!(early.as_millis() <= 1, "id time {at:?} vs {before:?}");
    }

    #[test]
    fn one_threads_ids_increase_and_no_two_threads_share_one() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..50_000).map(|_| new_id()).collect::<Vec<_>>()))
            .collect();
        let mut all = Vec::new();
        for thread in threads {
            let ids = thread.join().unwrap();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "one thread's ids increase"
            );
            all.extend(ids);
        }
        let made = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), made, "every id unique");
    }

    #[test]
    fn a_clock_that_stands_still_or_steps_back_still_gives_increasing_ids() {
        let mut last = next_after((0, 0), 1_000, u128::MAX, 0);
        for now in [1_000, 1_000, 999, 500, 1_000] {
            let next = next_after(last, now, u128::MAX, 7);
            assert!(layout(next) > layout(last), "{next:?} after {last:?}");
            last = next;
        }
        // The random part running over carries into the next millisecond.
        let full = next_after((5, RANDOM_MASK), 5, 0, 0);
        assert_eq!(full.0, 6);
        assert!(layout(full) > layout((5, RANDOM_MASK)));
    }
}
