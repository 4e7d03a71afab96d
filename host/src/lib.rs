//! The calllogger host as a library: the binary (`main.rs`) parses the command line and calls
//! one of [`commands`].
//!
//! A record's path, top-down, one module per hop: [`config`](crate::config) names the plugin
//! instances; the loader finds the libraries that export their classes; the supervisor runs each
//! instance on a thread; an instance `push`es a record through its plugin context, which commits
//! it to the spool before `push` returns; the sender delivers the spool to the frontend, oldest
//! first, and removes what was delivered. No module imports one that comes after it on that path.

pub mod cli;
pub mod commands;
pub mod logging;

mod config;
mod crash;
mod host;
mod journal;
mod json;
mod loader;
mod output;
mod plan;
mod plugin_context;
mod reload;
mod sender;
mod service;
mod signals;
mod spool;
mod status;
mod stop;
mod supervisor;
mod telemetry;
mod watch;

pub use telemetry::Telemetry;
