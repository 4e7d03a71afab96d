//! The polling base, for PBXs that answer requests: `export_plugins!(polling MyPbx)`.
//!
//! A [`PollingPlugin`] only says how to ask the PBX for its records ([`poll`](PollingPlugin::poll));
//! the base does the rest: it polls every `poll_seconds` (a key of the class's section, read by
//! the base; the default is [`PollingPlugin::POLL_SECONDS`]), pushes each record, and remembers
//! the [key](Polled::once) of each one the host stored in a [`Seen`] file under
//! [`Context::state_dir`], so a PBX that lists the same records at every poll gives each only
//! once, across restarts too. A record is marked seen only after its push returned `Ok`; one
//! the host could not store is pushed again by the next poll. A failed poll is logged and
//! retried after the host's decayed [`Backoff`](crate::Backoff); an error marked
//! [`fatal`](crate::error::fatal) or [`config`](crate::error::config) ends the run instead.
//!
//! Stopping: the wait between polls wakes at once. A request in flight is not interrupted:
//! give it a timeout (or shut its connection in a [`Context::on_stop`] hook registered in
//! [`poll`](PollingPlugin::poll)), or the instance outlives the stop by that long.
//!
//! ```
//! use calllogger_plugin_sdk::prelude::*;
//! use calllogger_plugin_sdk::polling::{Polled, PollingPlugin};
//!
//! #[settings]
//! pub struct Settings {
//!     /// Where the PBX's list is.
//!     file: String,
//! }
//!
//! /// Reads a list of `id,number` lines, giving each id once.
//! pub struct ListFile(Settings);
//!
//! impl PollingPlugin for ListFile {
//!     type Settings = Settings;
//!     const DESCRIPTION: &'static str = "Numbers from a list file";
//!
//!     fn new(settings: Settings) -> Result<Self, Error> {
//!         Ok(Self(settings))
//!     }
//!
//!     fn poll(&mut self, _ctx: &Context) -> Result<Vec<Polled>, Error> {
//!         let text = std::fs::read_to_string(&self.0.file).context(&self.0.file)?;
//!         Ok(text
//!             .lines()
//!             .filter_map(|line| line.split_once(','))
//!             .map(|(id, number)| {
//!                 Polled::once(id, Record::new(CallType::INCOMING).number(number))
//!             })
//!             .collect())
//!     }
//! }
//!
//! export_plugins!(polling ListFile);
//! # fn main() {}
//! ```

mod seen;

use serde::de::DeserializeOwned;

use calllogger_plugin_abi::{ErrorKind, PluginError, PluginKind, PushErrorKind};

use crate::error::{kind_of, message};
use crate::plugin::{construction_error, parse_settings_value, split_settings, Class};
use crate::types::Seconds;
use crate::{Context, Error, Record};

pub use seen::{Seen, CAPACITY};

/// A class of the polling base: how to ask the PBX for its records.
pub trait PollingPlugin: Sized + Send + 'static {
    /// The class's settings, read from its section without the base's `poll_seconds`.
    type Settings: DeserializeOwned;

    /// One line saying what the class does (shown by `calllogger plugins`).
    const DESCRIPTION: &'static str;

    /// Seconds between polls when the section has no `poll_seconds`.
    const POLL_SECONDS: f64 = 60.0;

    /// The file under [`Context::state_dir`] that keeps the keys already pushed.
    const SEEN_FILE: &'static str = "seen";

    /// Builds an instance from its settings. Fail here on settings that make no sense.
    fn new(settings: Self::Settings) -> Result<Self, Error>;

    /// What is polled, for the log (`polling <this> every 60 s`).
    fn source(&self) -> String {
        "the PBX".to_owned()
    }

    /// Asks the PBX once and returns its records, in the order to push them; records whose
    /// key was pushed before are skipped by the base. An error fails this poll.
    fn poll(&mut self, ctx: &Context) -> Result<Vec<Polled>, Error>;
}

/// A record from a poll, with the key that tells whether it was pushed before.
#[derive(Debug, Clone)]
pub struct Polled {
    key: Option<String>,
    record: Record,
}

impl Polled {
    /// A record pushed every time it is polled.
    pub fn always(record: Record) -> Self {
        Self { key: None, record }
    }

    /// A record pushed once ever for `key` (the PBX's id for it, or its raw line).
    pub fn once(key: impl Into<String>, record: Record) -> Self {
        Self {
            key: Some(key.into()),
            record,
        }
    }
}

/// A [`PollingPlugin`] on the polling base: what `export_plugins!(polling X)` exports.
pub struct Polling<P> {
    interval: Seconds,
    plugin: P,
}

/// The section keys the base reads itself.
const BASE_KEYS: &[&str] = &["poll_seconds"];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseSettings {
    poll_seconds: Option<Seconds>,
}

/// Why a poll did not complete.
enum Failed {
    /// The instance was told to stop before a record was stored.
    Stopping,
    /// The poll failed: retry later (or stop, for a fatal error).
    Error(Error),
}

impl<E: Into<Error>> From<E> for Failed {
    fn from(e: E) -> Self {
        Self::Error(e.into())
    }
}

impl<P: PollingPlugin> Class for Polling<P> {
    const DESCRIPTION: &'static str = P::DESCRIPTION;
    const KIND: PluginKind = PluginKind::Polling;

    fn build(class: &str, yaml: &str) -> Result<Self, PluginError> {
        let config = |e: String| PluginError::new(ErrorKind::Config, e);
        let (base, own) = split_settings(class, yaml, BASE_KEYS)?;
        let base: BaseSettings = parse_settings_value(class, base).map_err(config)?;
        let interval = match base.poll_seconds {
            Some(seconds) => seconds,
            None => Seconds::new(P::POLL_SECONDS)
                .map_err(|e| config(format!("{class}: the default poll_seconds {e}")))?,
        };
        let settings = parse_settings_value(class, own).map_err(config)?;
        Ok(Self {
            interval,
            plugin: P::new(settings).map_err(|e| construction_error(class, &*e))?,
        })
    }

    fn run_class(&mut self, ctx: &Context) -> Result<(), Error> {
        let file = ctx.state_dir().join(P::SEEN_FILE);
        let mut seen =
            Seen::open(file.clone()).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        ctx.info(format_args!(
            "polling {} every {} ({} records already pushed)",
            self.plugin.source(),
            self.interval,
            seen.len()
        ));
        let mut retry = ctx.backoff();
        while ctx.running() {
            match self.poll_once(ctx, &mut seen) {
                Ok(pushed) => {
                    if pushed > 0 {
                        ctx.debug(format_args!("pushed {pushed} new records"));
                    }
                    retry.reset();
                    ctx.wait(self.interval.as_secs_f64());
                }
                Err(Failed::Stopping) => break,
                Err(Failed::Error(e)) if kind_of(&*e) != ErrorKind::Transient => return Err(e),
                Err(Failed::Error(e)) => {
                    ctx.error(format_args!(
                        "poll failed: {}; next try in {:.1} s",
                        message(&*e),
                        retry.current().as_secs_f64()
                    ));
                    retry.sleep();
                }
            }
        }
        Ok(())
    }
}

impl<P: PollingPlugin> Polling<P> {
    /// One poll: ask, push what is new, remember it. Returns how many were pushed.
    fn poll_once(&mut self, ctx: &Context, seen: &mut Seen) -> Result<usize, Failed> {
        let polled = self.plugin.poll(ctx)?;
        let mut pushed = 0;
        let mut outcome = Ok(());
        for Polled { key, record } in polled {
            if key.as_deref().is_some_and(|k| seen.contains(k)) {
                continue;
            }
            match ctx.push(record) {
                Ok(()) => {
                    if let Some(key) = key {
                        seen.insert(&key);
                    }
                    pushed += 1;
                }
                Err(e) => {
                    outcome = Err(match e.kind {
                        PushErrorKind::Stopping => Failed::Stopping,
                        _ => Failed::Error(e.into()),
                    });
                    break;
                }
            }
        }
        // What was stored is remembered even when a later push failed.
        seen.save().map_err(|e| {
            format!(
                "cannot keep the list of records already pushed ({}): {e}",
                seen.file().display()
            )
        })?;
        outcome.map(|()| pushed)
    }
}
