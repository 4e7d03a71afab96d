//! A stop signal one thread sets and others poll or wait on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A one-way flag: running until [`stop`](Stop::stop), with waits that wake at once on stop.
#[derive(Default)]
pub struct Stop {
    stopped: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    /// Whether the flag is still up.
    pub fn running(&self) -> bool {
        !self.stopped.load(Ordering::Acquire)
    }

    /// Drops the flag and wakes every waiter.
    pub fn stop(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    /// Waits up to `timeout` or until stopped; returns whether still running.
    pub fn wait(&self, timeout: Duration) -> bool {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .wake
            .wait_timeout_while(guard, timeout, |_| self.running())
            .unwrap_or_else(|e| e.into_inner());
        self.running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn stop_wakes_a_long_wait_at_once() {
        let stop = Arc::new(Stop::default());
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let running = stop.wait(Duration::from_secs(600));
                (running, start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        stop.stop();
        let (running, waited) = waiter.join().unwrap();
        assert!(!running);
        assert!(waited < Duration::from_secs(60), "woke after {waited:?}");
        assert!(
            !stop.wait(Duration::from_secs(600)),
            "a stopped flag does not wait"
        );
    }
}
