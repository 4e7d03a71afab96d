//! Decayed retry timeouts: each failure lengthens the wait, success resets it.

use std::time::Duration;

use crate::Context;
use crate::TimeoutSettings;

/// A retry wait that grows by `decay` after every use, up to `max_timeout`.
///
/// With the defaults (10 s, 1.5, 300 s) the waits are 10, 15, 22.5, 33.75 … 300, 300 s.
/// [`reset`](Timeout::reset) returns to the base after a success. Get one from
/// [`Context::timeout`]; its [`sleep`](Timeout::sleep) wakes at once when the instance stops.
///
/// ```
/// use calllogger_plugin_sdk::{Timeout, TimeoutSettings};
///
/// let mut t = Timeout::new(TimeoutSettings { timeout: 10.0, decay: 1.5, max_timeout: 30.0 });
/// let waits: Vec<f64> = (0..4).map(|_| t.advance().as_secs_f64()).collect();
/// assert_eq!(waits, [10.0, 15.0, 22.5, 30.0]);
/// t.reset();
/// assert_eq!(t.current().as_secs_f64(), 10.0);
/// ```
#[derive(Clone)]
pub struct Timeout {
    /// The wait after a reset, in seconds.
    pub base_timeout: f64,
    /// The wait the next [`sleep`](Timeout::sleep) takes, in seconds.
    pub timeout: f64,
    /// What each wait multiplies the next one by.
    pub timeout_decay: f64,
    /// The cap on the wait, in seconds.
    pub max_timeout: f64,
    context: Option<Context>,
}

impl Timeout {
    /// A timeout with these settings, not tied to any instance: [`sleep`](Timeout::sleep)
    /// then simply sleeps. Plugins normally use [`Context::timeout`] instead.
    pub fn new(settings: TimeoutSettings) -> Self {
        let base = settings.timeout.max(0.0);
        Self {
            base_timeout: base,
            timeout: base,
            timeout_decay: settings.decay.max(1.0),
            max_timeout: settings.max_timeout.max(base),
            context: None,
        }
    }

    pub(crate) fn with_context(mut self, context: Context) -> Self {
        self.context = Some(context);
        self
    }

    /// The wait the next [`sleep`](Timeout::sleep) will take.
    pub fn current(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }

    /// Returns the current wait and lengthens the next one, without waiting.
    pub fn advance(&mut self) -> Duration {
        let wait = self.current();
        self.timeout = (self.timeout * self.timeout_decay).min(self.max_timeout);
        wait
    }

    /// Waits the current timeout (waking early if the instance is told to stop), then lengthens
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

    /// Back to the base timeout, after a success.
    pub fn reset(&mut self) {
        self.timeout = self.base_timeout;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_by_decay_up_to_the_cap_and_reset_to_the_base() {
        let mut t = Timeout::new(TimeoutSettings::default());
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
}
