//! The binary interface between the host and a plugin library.
//!
//! Plugin authors never touch this module: [`export_plugins!`](crate::export_plugins) generates
//! the root module and all glue. The host uses it to load libraries and drive instances.
//!
//! Compatibility rules (abi_stable's): a host accepts a library built against an SDK with the
//! same minor version while it is 0.x (0.2.0 host, 0.2.7 plugin: fine), and checks the layout of
//! every type reachable from [`PluginModule`] at load time. New root-module fields may be
//! appended after the `last_prefix_field`: a plugin with more loads in an older host. A method
//! appended to [`HostApi`] is a breaking change, though (a 0.1.0 plugin in a host with two more
//! methods: `too many fields (expected: 9; found: 7)`): bump the minor version for it.

// `#[sabi_trait]` expands to impls that rustc 1.95's `non_local_definitions` lint dislikes.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, RResult, RStr, RString, RVec},
    StableAbi,
};

use crate::Record;

/// Whether a plugin class is a plain one or built on the SDK's serial-port base.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq)]
pub enum PluginKind {
    /// Any plugin: it runs its own loop.
    Generic = 0,
    /// A plugin that reads lines from a serial port through the SDK's serial base.
    Serial = 1,
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
    /// Plain or serial.
    pub kind: PluginKind,
}

/// The host's timeout settings, handed to every plugin for its [`Timeout`](crate::Timeout).
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

    /// Hands a record to the host.
    fn push(&self, record: Record);

    /// Logs a message under the instance's name.
    fn log(&self, level: LogLevel, message: RStr<'_>);

    /// The host's retry timeout settings.
    #[sabi(last_prefix_field)]
    fn timeouts(&self) -> TimeoutSettings;

    /// Counts one input line rejected at `stage` (`decode`, `parse`, …), for the host's
    /// metrics. Since SDK 0.2.
    fn rejected(&self, stage: RStr<'_>);

    /// A folder, created by the host and kept across restarts, for this instance's durable
    /// state. Since SDK 0.2.
    fn state_dir(&self) -> RString;
}

/// The host's handle, as the plugin holds it.
pub type HostHandle = HostApi_TO<RArc<()>>;

/// A constructed plugin instance, as the host holds it. Implemented by the SDK's glue.
#[sabi_trait]
pub trait InstanceApi: Send {
    /// Runs the instance until it is told to stop, fails or panics (reported as `RErr`).
    #[sabi(last_prefix_field)]
    fn run(&mut self, host: HostHandle) -> RResult<(), RString>;
}

/// A constructed plugin instance behind an owning pointer.
pub type InstanceBox = InstanceApi_TO<'static, RBox<()>>;

/// The root module every plugin library exports (generated by
/// [`export_plugins!`](crate::export_plugins)).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef, prefix_fields = PluginModulePrefix)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// How the library handles panics; the host refuses [`PanicStrategy::Abort`].
    pub panic_strategy: PanicStrategy,

    /// The classes the library exports.
    pub classes: extern "C" fn() -> RVec<ClassInfo>,

    /// Builds an instance of `class` from the YAML text of its config section.
    /// An error names the class and the offending key.
    #[sabi(last_prefix_field)]
    pub new_instance:
        extern "C" fn(class: RStr<'_>, settings_yaml: RStr<'_>) -> RResult<InstanceBox, RString>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "calllogger_plugin";
    const NAME: &'static str = "calllogger plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The SDK version this crate is: the interface version a plugin built with it declares.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
