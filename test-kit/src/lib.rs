//! What the host's integration tests and the benchmark (`cargo xtask bench`) run the real host
//! with: the plugin cdylibs built once per process ([`Install::library`]), a scratch
//! installation with chosen libraries and modes ([`Install`]), the host process with its
//! records and log ([`Host`]), its spool read back ([`Install::spool`]), a scripted HTTP
//! frontend on loopback ([`frontend::Frontend`]), a small HTTP client for the status listener
//! ([`http`]), small file systems for fault tests ([`mounts::Tmpfs`]), TLS for loopback servers
//! ([`tls::loopback_tls`]), and the Windows host
//! and libraries run under Wine ([`Install::windows`]).
//!
//! Everything here panics with what went wrong instead of returning errors: it is for tests.

pub mod frontend;
pub mod http;
pub mod mounts;
pub mod tls;
pub mod windows;

mod fixtures;
mod host;
mod install;
mod spool;

use std::path::Path;
use std::time::{Duration, Instant};

pub use fixtures::{
    build_out_of_tree, build_out_of_tree_for, cargo, windows_host, Platform, Profile,
};
pub use host::{started_libraries, Host};
pub use install::Install;
pub use spool::Spool;

/// The plugin crates the kit builds, by library file stem.
pub const MOCK_CALLS: &str = "calllogger_mock_calls";
/// The fixture classes (`Echo`, `Flaky`, `Blocker`, …) of `tests/fixtures/plugins/test-plugins`.
pub const TEST_PLUGINS: &str = "calllogger_test_plugins";
/// The same classes as [`TEST_PLUGINS`], built as `calllogger-test-plugins-v2` 0.2.0.
pub const TEST_PLUGINS_V2: &str = "calllogger_test_plugins_v2";
/// A library whose types do not match the host's plugin interface.
pub const INCOMPATIBLE: &str = "calllogger_incompatible_plugin";
/// The incompatible fixture's source, declaring the previous plugin interface (0.2.0).
pub const OLD_SDK: &str = "calllogger_old_sdk_plugin";
/// A library built with `panic = "abort"`.
pub const ABORT: &str = "calllogger_abort_plugin";
/// The shipped Siemens HiPath plugin.
pub const HIPATH: &str = "calllogger_siemens_hipath_serial";
/// The shipped BeroNet plugin.
pub const BERONET: &str = "calllogger_beronet";

/// The workspace's top folder.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the kit lives in the workspace")
}

/// Calls `check` every 20 ms until it gives a value, and returns that; `None` once `timeout`
/// has passed (the caller panics saying what it waited for and what it saw).
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
