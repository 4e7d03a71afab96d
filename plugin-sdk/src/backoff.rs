//! Decayed retry waits: each failure lengthens the wait, success resets it.

use std::time::Duration;

use crate::Context;
use crate::TimeoutSettings;

/// A retry wait that grows by `decay` after every use, up to `max_timeout`, optionally jittered.
///
/// With the defaults (10 s, 1.5, 300 s) the waits are 10, 15, 22.5, 33.75 … 300, 300 s.
/// [`reset`](Backoff::reset) returns to the base after a success. Get one from
/// [`Context::backoff`]; its [`sleep`](Backoff::sleep) wakes at once when the instance stops.
///
/// ```
/// use calllogger_plugin_sdk::{Backoff, TimeoutSettings};
///
/// let mut b = Backoff::new(TimeoutSettings { timeout: 10.0, decay: 1.5, max_timeout: 30.0 });
/// let waits: Vec<f64> = (0..4).map(|_| b.advance().as_secs_f64()).collect();
/// assert_eq!(waits, [10.0, 15.0, 22.5, 30.0]);
/// b.reset();
/// assert_eq!(b.current().as_secs_f64(), 10.0);
/// ```
#[derive(Clone)]
pub struct Backoff {
    base: f64,
    next: f64,
    decay: f64,
    max: f64,
    jitter: f64,
    rng: fastrand::Rng,
    context: Option<Context>,
}

/// The 0.2 name of [`Backoff`], kept so 0.2 plugin code compiles unchanged.
pub type Timeout = Backoff;

impl Backoff {
    /// A backoff with these settings, not tied to any instance: [`sleep`](Backoff::sleep)
    /// then simply sleeps. Plugins normally use [`Context::backoff`] instead. Negative or
    /// non-finite settings are clamped: base ≥ 0, decay ≥ 1, cap ≥ base.
    pub fn new(settings: TimeoutSettings) -> Self {
        let finite = |v: f64, or: f64| if v.is_finite() { v } else { or };
        let base = finite(settings.timeout, 0.0).max(0.0);
        Self {
            base,
            next: base,
            decay: finite(settings.decay, 1.0).max(1.0),
            max: finite(settings.max_timeout, base).max(base),
            jitter: 0.0,
            rng: fastrand::Rng::new(),
            context: None,
        }
    }

    /// Spreads each wait at random over ±`fraction` of it (clamped to 0…1), so that many
    /// clients failing together do not retry together. The cap still holds.
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Seeds the jitter's random numbers, for reproducible waits in tests.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    pub(crate) fn with_context(mut self, context: Context) -> Self {
        self.context = Some(context);
        self
    }

    /// The wait after a reset, in seconds.
    pub fn base(&self) -> Duration {
        Duration::from_secs_f64(self.base)
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        Duration::from_secs_f64(self.max)
    }

    /// The wait the next [`sleep`](Backoff::sleep) will take, before jitter.
    pub fn current(&self) -> Duration {
        Duration::from_secs_f64(self.next)
    }

    /// Returns the current wait (jittered) and lengthens the next one, without waiting.
    pub fn advance(&mut self) -> Duration {
        let mut wait = self.next;
        if self.jitter > 0.0 {
            let spread = self.jitter * (2.0 * self.rng.f64() - 1.0);
            wait = (wait * (1.0 + spread)).min(self.max);
        }
        self.next = (self.next * self.decay).min(self.max);
        Duration::from_secs_f64(wait)
    }

    /// Waits the current wait (waking early if the instance is told to stop), then lengthens
    /// the next one. Returns whether the instance is still running.
    pub fn sleep(&mut self) -> bool {
        let wait = self.advance();
        match &self.context {
            Some(context) => context.wait(wait.as_secs_f64()),
            None => {
                std::thread::sleep(wait);
                true
            }
        }
    }

    /// Back to the base wait, after a success.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_by_decay_up_to_the_cap_and_reset_to_the_base() {
        let mut t = Backoff::new(TimeoutSettings::default());
        let waits: Vec<f64> = (0..12).map(|_| t.advance().as_secs_f64()).collect();
        assert_eq!(&waits[..4], [10.0, 15.0, 22.5, 33.75]);
        assert!(
            waits.windows(2).all(|w| w[1] >= w[0]),
            "never shrinks: {waits:?}"
        );
        assert_eq!(waits[9], 300.0, "10 × 1.5^9 > 300, so capped: {waits:?}");
        assert_eq!(waits[11], 300.0);
        t.reset();
        assert_eq!(t.advance().as_secs_f64(), 10.0);
        assert_eq!(t.current().as_secs_f64(), 15.0);
    }

    #[test]
    fn bad_settings_are_clamped() {
        let b = Backoff::new(TimeoutSettings {
            timeout: -1.0,
            decay: 0.5,
            max_timeout: f64::NAN,
        });
        assert_eq!((b.base(), b.max()), (Duration::ZERO, Duration::ZERO));
        let b = Backoff::new(TimeoutSettings {
            timeout: 5.0,
            decay: 2.0,
            max_timeout: 1.0,
        });
        assert_eq!(
            b.max(),
            Duration::from_secs(5),
            "the cap is at least the base"
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_under_the_cap_and_varies() {
        let settings = TimeoutSettings {
            timeout: 10.0,
            decay: 2.0,
            max_timeout: 40.0,
        };
        let mut b = Backoff::new(settings).with_jitter(0.25).with_seed(7);
        let mut plain = Backoff::new(settings);
        let mut seen = Vec::new();
        for _ in 0..200 {
            let expected = plain.advance().as_secs_f64();
            let wait = b.advance().as_secs_f64();
            assert!(wait >= expected * 0.75 - 1e-9, "{wait} vs {expected}");
            assert!(
                wait <= (expected * 1.25).min(40.0) + 1e-9,
                "{wait} vs {expected}"
            );
            seen.push(wait);
            b.reset();
            plain.reset();
        }
        seen.sort_by(f64::total_cmp);
        assert!(seen[0] < 9.0 && seen[199] > 11.0, "spread: {seen:?}");
        let again: Vec<Duration> = {
            let mut b = Backoff::new(settings).with_jitter(0.25).with_seed(7);
            (0..3).map(|_| b.advance()).collect()
        };
        let mut b = Backoff::new(settings).with_jitter(0.25).with_seed(7);
        assert_eq!(again, (0..3).map(|_| b.advance()).collect::<Vec<_>>());
    }
}
