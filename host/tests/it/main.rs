//! The host's integration tests, in one binary (one link, one build of the plugin libraries,
//! one pool of test threads): each module starts the real `calllogger` binary on real plugin
//! libraries through the shared test kit (`test-kit/`).

mod container;
mod contract;
mod delivery;
mod echo;
mod hipath;
mod lifecycle;
mod loading;
mod package;
mod reload;
mod security;
mod service;
mod settings;
mod spool_faults;
mod vendor;
mod windows;

/// The host binary under test.
const HOST: &str = env!("CARGO_BIN_EXE_calllogger");
