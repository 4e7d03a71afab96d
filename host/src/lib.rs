//! The calllogger host as a library: the binary (`main.rs`) parses the command line and calls
//! one of [`commands`].
//!
//! A record's path, top-down, one module per hop: [`config`](crate::config) names the plugin
//! instances; the loader finds the libraries that export their classes; the supervisor runs each
//! instance on a thread; an instance `push`es a record through its plugin context, which commits
//! it to the spool before `push` returns; the sinks read the spool, each from its own cursor
//! (the frontend, or the stdout echo). No module imports one that comes after it on that path.

pub mod cli;
pub mod commands;
pub mod logging;

mod config;
#[cfg(windows)]
mod control;
mod crash;
mod host;
mod ids;
mod json;
mod loader;
mod plugin_context;
mod runtime;
#[cfg(unix)]
mod service;
#[cfg(windows)]
#[path = "service_windows.rs"]
mod service;
mod settings;
mod signals;
mod sinks;
mod spool_settings;
mod status;
mod stop;
mod telemetry;
mod watch;

pub use telemetry::Telemetry;
