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
//!     host: String,
//!     #[serde(default)]
//!     line: u32,
//! }
//!
//! pub struct MyPbx {
//!     settings: Settings,
//! }
//!
//! impl Plugin for MyPbx {
//!     type Settings = Settings;
//!     const DESCRIPTION: &'static str = "Reads call records from My PBX";
//!
//!     fn new(settings: Settings) -> Result<Self, Error> {
//!         Ok(Self { settings })
//!     }
//!
//!     fn run(&mut self, ctx: &Context) -> Result<(), Error> {
//!         while ctx.running() {
//!             ctx.push(Record::new(CallType::RECEIVED).number("0876156584").line(self.settings.line))?;
//!             ctx.wait(1.0);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! // In a test: the section as YAML, built and run as the host would.
//! let mut run = Runner::new().start::<MyPbx>("host: pbx.example.local\nline: 2").unwrap();
//! let records = run.wait_for_records(1, Duration::from_secs(10));
//! assert_eq!(records[0].get_line(), Some(2));
//! run.stop().unwrap(); // an error if `run` failed, panicked or ignored the stop
//!
//! // Settings errors come back as the host reports them.
//! let error = Runner::new().start::<MyPbx>("host: pbx\nlin: 2").err().unwrap();
//! assert!(error.message.contains("MyPbx: unknown settings key `lin`"), "{error}");
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

#[cfg(test)]
mod tests {
    /// The README's "Testing your plugin" example is the example above, line for line.
    #[test]
    fn the_readmes_example_is_the_compiled_one() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("### Testing your plugin")
            .nth(1)
            .expect("README has a Testing your plugin section");
        let example = section
            .split("```rust,ignore\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the section has a rust example");
        let docs: Vec<&str> = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! ").or(l.strip_prefix("//!")))
            .collect();
        for line in example.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                docs.contains(&line),
                "README line not in the crate docs: {line}"
            );
        }
    }
}
