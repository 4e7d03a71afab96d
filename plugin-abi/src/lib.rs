//! # calllogger plugin ABI
//!
//! The binary interface between the calllogger host and a plugin library: the root module,
//! the record's FFI layout, the host's handle and the error types that cross the boundary.
//! Plugin authors use `calllogger-plugin-sdk`, which re-exports what they need from here; the
//! host depends on this crate alone.
//!
//! Compatibility: this crate's version IS the plugin ABI version. abi_stable's rule applies: a
//! host accepts a library built against the same minor version while 0.x (0.3.0 host, 0.3.4
//! plugin: fine), and checks the layout of every type reachable from [`PluginModule`] at load
//! time. A release that changes any of these types bumps the minor version. New root-module
//! fields may be appended after the `last_prefix_field` in a patch release: a plugin with more
//! loads in an older host. A method appended to a `sabi_trait` is a breaking change.

// `#[sabi_trait]` expands to impls that rustc 1.95's `non_local_definitions` lint dislikes.
#![allow(non_local_definitions)]
#![warn(missing_docs)]

mod error;
mod record;

pub use error::{ErrorKind, PluginError, PushError, PushErrorKind};
pub use record::{Answered, CallType, Record, Timestamp};

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, RResult, RStr, RString, RVec},
    StableAbi,
};

/// Which SDK base a plugin class is built on.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq)]
pub enum PluginKind {
    /// Any plugin: it runs its own loop.
    Generic = 0,
    /// A plugin on the SDK's serial-port line base (SDK 0.2's name for it).
    Serial = 1,
    /// A plugin on the SDK's line-source base.
    Lines = 2,
    /// A plugin on the SDK's polling base.
    Polling = 3,
}

/// How the plugin library was compiled to handle panics.
///
/// A library built with `panic = "abort"` would take the whole host down on its first panic,
/// so the host refuses it.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq)]
pub enum PanicStrategy {
    /// Panics unwind and the SDK turns them into errors: safe to load.
    Unwind = 0,
    /// Panics abort the process: refused by the host.
    Abort = 1,
}

/// One plugin class a library exports.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct ClassInfo {
    /// The class name: the plugin's Rust type name, and the key of its config section.
    pub name: RString,
    /// One line saying what the class does.
    pub description: RString,
    /// The SDK base it is built on.
    pub kind: PluginKind,
}

/// Who a plugin library is: its crate's name, version and description (set by the SDK's
/// export macro from the plugin crate's Cargo metadata), and the SDK it was built with.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct LibraryInfo {
    /// The plugin crate's `CARGO_PKG_NAME`.
    pub name: RString,
    /// The plugin crate's `CARGO_PKG_VERSION`.
    pub version: RString,
    /// The plugin crate's `CARGO_PKG_DESCRIPTION` (may be empty).
    pub description: RString,
    /// The version of `calllogger-plugin-sdk` the library was built with.
    pub sdk_version: RString,
}

/// The host's timeout settings, handed to every plugin for its backoff.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq)]
pub struct TimeoutSettings {
    /// The first wait, in seconds (`settings.timeout`, default 10).
    pub timeout: f64,
    /// What each failure multiplies the wait by (`settings.decay`, default 1.5).
    pub decay: f64,
    /// The longest wait, in seconds (`settings.max_timeout`, default 300).
    pub max_timeout: f64,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        Self {
            timeout: 10.0,
            decay: 1.5,
            max_timeout: 300.0,
        }
    }
}

/// Severity of a message a plugin logs through the host.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace = 0,
    /// Detail for debugging.
    Debug = 1,
    /// Normal operation.
    Info = 2,
    /// Something is off but the plugin goes on.
    Warn = 3,
    /// Something failed.
    Error = 4,
}

/// What the host offers a running plugin instance. Implemented by the host.
#[sabi_trait]
pub trait HostApi: Clone + Send + Sync + 'static {
    /// Whether the instance should keep running.
    fn running(&self) -> bool;

    /// Blocks for up to `seconds`, returning early when the instance is told to stop.
    /// Returns [`running`](HostApi::running) as it is after the wait.
    fn wait(&self, seconds: f64) -> bool;

    /// Hands a record to the host. `ROk` means it is stored; a host that cannot store it
    /// yet holds the call while the instance runs, and returns [`PushErrorKind::Stopping`]
    /// if the instance is told to stop first.
    fn push(&self, record: Record) -> RResult<(), PushError>;

    /// Logs a message under the instance's name.
    fn log(&self, level: LogLevel, message: RStr<'_>);

    /// Whether a message at `level` would be logged (so callers can skip formatting it).
    fn log_enabled(&self, level: LogLevel) -> bool;

    /// The host's retry timeout settings.
    fn timeouts(&self) -> TimeoutSettings;

    /// Counts one input line rejected at `stage` (`decode`, `parse`, …), for the host's
    /// metrics.
    fn rejected(&self, stage: RStr<'_>);

    /// A folder, created by the host and kept across restarts, for this instance's durable
    /// state.
    #[sabi(last_prefix_field)]
    fn state_dir(&self) -> RString;
}

/// The host's handle, as the plugin holds it.
pub type HostHandle = HostApi_TO<RArc<()>>;

/// Called by the host, from another thread, when an instance must stop (shutdown, reload),
/// so a plugin blocked in I/O can be woken. Implemented by the SDK's glue.
#[sabi_trait]
pub trait StopHook: Send + Sync {
    /// Runs the plugin's stop hook, if it registered one.
    #[sabi(last_prefix_field)]
    fn stop(&self);
}

/// A stop hook behind an owning pointer.
pub type StopHookBox = StopHook_TO<'static, RBox<()>>;

/// A constructed plugin instance, as the host holds it. Implemented by the SDK's glue.
#[sabi_trait]
pub trait InstanceApi: Send {
    /// The instance's stop hook: the host takes it before [`run`](InstanceApi::run) and
    /// calls it when the instance must stop.
    fn stop_hook(&self) -> StopHookBox;

    /// Runs the instance until it is told to stop, fails or panics (reported as `RErr`).
    #[sabi(last_prefix_field)]
    fn run(&mut self, host: HostHandle) -> RResult<(), PluginError>;
}

/// A constructed plugin instance behind an owning pointer.
pub type InstanceBox = InstanceApi_TO<'static, RBox<()>>;

/// The root module every plugin library exports (generated by the SDK's `export_plugins!`).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef, prefix_fields = PluginModulePrefix)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// How the library handles panics; the host refuses [`PanicStrategy::Abort`].
    pub panic_strategy: PanicStrategy,

    /// Who the library is.
    pub library: extern "C" fn() -> LibraryInfo,

    /// The classes the library exports.
    pub classes: extern "C" fn() -> RVec<ClassInfo>,

    /// Builds an instance of `class` from the YAML text of its config section.
    /// An error names the class and the offending key.
    #[sabi(last_prefix_field)]
    pub new_instance: extern "C" fn(
        class: RStr<'_>,
        settings_yaml: RStr<'_>,
    ) -> RResult<InstanceBox, PluginError>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "calllogger_plugin";
    const NAME: &'static str = "calllogger plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The plugin ABI version: this crate's version, the one a library built against it declares.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");
