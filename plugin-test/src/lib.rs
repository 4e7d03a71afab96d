//! # Testing calllogger plugins without the host
//!
//! [`Runner::start`] builds a plugin class from the YAML text of its config section through
//! the same glue the host calls (so settings errors, panics turned into errors and error
//! kinds come out as in the host) and runs it on a thread, on a [`TestHost`] that keeps what
//! it pushes, logs and rejects. [`Running::stop`] stops it as the host does and reports a
//! plugin that ignores the stop. The [`feed`] module feeds bytes through the SDK's real line
//! bases: a pseudo-terminal for a serial section, TCP peers, a file.
//!
//! ```
//! use calllogger_plugin_sdk::prelude::*;
//! use calllogger_plugin_test::Runner;
//! use std::time::Duration;
//!
//! #[settings]
//! pub struct Settings {
//!     number: String,
//! }
//!
//! pub struct OneCall(Settings);
//!
//! impl Plugin for OneCall {
//!     type Settings = Settings;
//!     const DESCRIPTION: &'static str = "Pushes one call, then waits for the stop";
//!
//!     fn new(settings: Settings) -> Result<Self, Error> {
//!         Ok(Self(settings))
//!     }
//!
//!     fn run(&mut self, ctx: &Context) -> Result<(), Error> {
//!         ctx.push(Record::new(CallType::RECEIVED).number(&self.0.number))?;
//!         while ctx.wait(60.0) {}
//!         Ok(())
//!     }
//! }
//!
//! let mut run = Runner::new().start::<OneCall>("number: '0876156584'").unwrap();
//! let records = run.wait_for_records(1, Duration::from_secs(10));
//! assert_eq!(records[0].get_number(), Some("0876156584"));
//! run.stop().unwrap(); // Err if `run` failed or ignored the stop
//!
//! // A settings error, as the host reports it.
//! let error = Runner::new().start::<OneCall>("numbr: 1").err().unwrap();
//! assert_eq!(error.kind, calllogger_plugin_sdk::ErrorKind::Config);
//! assert!(error.message.contains("OneCall"), "{}", error.message);
//! ```
//!
//! A serial plugin runs as `Runner::new().start::<serial::Serial<MyPbx>>(&pty.settings())`
//! with a [`feed::Pty`]; a plugin on the line sources gets its section keys from
//! [`feed::PbxServer`] (`source: tcp-client`), [`feed::PbxClient`] (`source: tcp-server`) or
//! [`feed::PbxFile`] (`source: file`).

#![warn(missing_docs)]

pub mod feed;
mod host;
mod run;

pub use host::TestHost;
pub use run::{Runner, Running, StopError};
