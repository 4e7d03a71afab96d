//! [`Runner`] and [`Running`]: a plugin class on a thread, through the export glue.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use calllogger_plugin_abi::PluginError;
use calllogger_plugin_sdk::__private::{construct, Class};
use calllogger_plugin_sdk::TimeoutSettings;

use crate::TestHost;

/// Why [`Running::stop`] or [`Running::join`] did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// `run` did not return in time. The host would leave the thread behind and name the
    /// instance in its log (`settings.shutdown_timeout`).
    #[error(
        "{class} did not stop within {waited:?}: check ctx.running() between reads, or wake a \
         blocking read from ctx.on_stop (the host leaves such an instance behind)"
    )]
    LeftBehind {
        /// The class name.
        class: String,
        /// How long it was given.
        waited: Duration,
    },
    /// `run` returned an error (or panicked), as the host would see it: its kind and message.
    #[error("{class} failed: {error}")]
    Failed {
        /// The class name.
        class: String,
        /// The error that crossed the boundary.
        error: PluginError,
    },
}

/// How to start a plugin: its timeouts, state folder, and how long it gets to stop.
///
/// ```
/// # use calllogger_plugin_test::Runner;
/// # use std::time::Duration;
/// let runner = Runner::new()
///     .timeouts(calllogger_plugin_sdk::TimeoutSettings { timeout: 0.1, decay: 2.0, max_timeout: 1.0 })
///     .stop_timeout(Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
pub struct Runner {
    timeouts: TimeoutSettings,
    state_dir: Option<PathBuf>,
    stop_timeout: Duration,
    class: Option<&'static str>,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    /// The host's defaults: `timeout: 10`, `decay: 1.5`, `max_timeout: 300`, a fresh state
    /// folder, and 10 s to stop (`shutdown_timeout`).
    pub fn new() -> Self {
        Self {
            timeouts: TimeoutSettings::default(),
            state_dir: None,
            stop_timeout: Duration::from_secs(10),
            class: None,
        }
    }

    /// The retry waits the plugin's backoff and the line bases use.
    pub fn timeouts(self, timeouts: TimeoutSettings) -> Self {
        Self { timeouts, ..self }
    }

    /// Keeps the instance's state in `dir` (start a second run on it to test a restart).
    pub fn state_dir(self, dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: Some(dir.into()),
            ..self
        }
    }

    /// How long [`Running::stop`] waits for `run` to return.
    pub fn stop_timeout(self, timeout: Duration) -> Self {
        Self {
            stop_timeout: timeout,
            ..self
        }
    }

    /// The class name (by default the type's name, as `export_plugins!` names it).
    pub fn class_name(self, class: &'static str) -> Self {
        Self {
            class: Some(class),
            ..self
        }
    }

    /// Builds class `C` from `settings_yaml` (its config section's text) through the same
    /// glue as the host's: settings errors, a constructor's error or panic come back as the
    /// host gets them (with their [`ErrorKind`](calllogger_plugin_sdk::ErrorKind)). Then
    /// runs it on a thread.
    ///
    /// `C` is the exported type: `MyPbx` for a [`Plugin`](calllogger_plugin_sdk::Plugin),
    /// `serial::Serial<MyPbx>` for a `SerialPlugin` (what `export_plugins!(serial MyPbx)`
    /// exports). Unlike the host, nothing restarts an instance whose `run` fails.
    pub fn start<C: Class>(self, settings_yaml: &str) -> Result<Running, PluginError> {
        let class = self.class.unwrap_or_else(class_name::<C>);
        let mut instance = construct::<C>(class, settings_yaml).into_result()?;
        let host = match self.state_dir {
            Some(dir) => TestHost::with_state_dir(dir),
            None => TestHost::new(),
        }
        .set_timeouts(self.timeouts);
        // As the host does: the stop hook is taken before `run`.
        host.add_stop_hook(instance.stop_hook());
        let handle = host.handle();
        let (done, finished) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("plugin {class}"))
            .spawn(move || {
                let result = instance.run(handle).into_result();
                drop(instance);
                let _ = done.send(result);
            })
            .expect("a thread for the plugin");
        Ok(Running {
            host,
            class,
            stop_timeout: self.stop_timeout,
            finished,
            outcome: None,
        })
    }
}

/// The class name `export_plugins!` gives `C`: its type name, or for a base's wrapper
/// (`Serial<MyPbx>`) the wrapped type's.
fn class_name<C>() -> &'static str {
    let full = std::any::type_name::<C>();
    let inner = full
        .rsplit('<')
        .next()
        .unwrap_or(full)
        .split(['>', ','])
        .next()
        .unwrap_or(full);
    inner.rsplit("::").next().unwrap_or(inner).trim()
}

/// A plugin instance running on its own thread, on its own [`TestHost`] (which it derefs
/// to: `records`, `logs`, `rejected`, `wait_for_records`, `refuse_pushes`, …).
///
/// Dropping it stops the instance (waiting up to the stop timeout).
pub struct Running {
    host: TestHost,
    class: &'static str,
    stop_timeout: Duration,
    finished: mpsc::Receiver<Result<(), PluginError>>,
    outcome: Option<Result<(), PluginError>>,
}

impl Deref for Running {
    type Target = TestHost;

    fn deref(&self) -> &TestHost {
        &self.host
    }
}

impl Running {
    /// The host the instance runs on.
    pub fn host(&self) -> &TestHost {
        &self.host
    }

    /// Stops the instance as the host does (the `running` flag drops, waits wake, the stop
    /// hook runs), then waits up to the stop timeout for `run` to return. `Ok` if it
    /// returned `Ok`; calling it again gives the same answer.
    pub fn stop(&mut self) -> Result<(), StopError> {
        self.host.stop();
        self.join(self.stop_timeout)
    }

    /// Waits up to `timeout` for `run` to return by itself (after an error, say), without
    /// stopping it.
    pub fn join(&mut self, timeout: Duration) -> Result<(), StopError> {
        if self.outcome.is_none() {
            match self.finished.recv_timeout(timeout) {
                Ok(result) => self.outcome = Some(result),
                Err(_) => {
                    return Err(StopError::LeftBehind {
                        class: self.class.to_owned(),
                        waited: timeout,
                    })
                }
            }
        }
        match &self.outcome {
            Some(Err(error)) => Err(StopError::Failed {
                class: self.class.to_owned(),
                error: error.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::class_name;

    struct Plain;
    struct Wrapper<T>(T);

    #[test]
    fn class_names_are_the_exported_types() {
        assert_eq!(class_name::<Plain>(), "Plain");
        assert_eq!(class_name::<Wrapper<Plain>>(), "Plain");
    }
}
