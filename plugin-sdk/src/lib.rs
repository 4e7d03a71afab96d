//! # calllogger plugin SDK
//!
//! Write a plugin for [calllogger](https://example.invalid/calllogger) — the service that
//! collects call data records from PBXs — as a Rust `cdylib`. The host loads it from its
//! plugins folder, hands each class the config section with its exact name, and runs every
//! instance on its own thread.
//!
//! A plugin is a settings struct, a [`Plugin`] impl whose `run` loops while
//! [`Context::running`], and one [`export_plugins!`] line:
//!
//! ```
//! use calllogger_plugin_sdk::prelude::*;
//!
//! /// Settings, read from the `HelloCalls:` section of the config.
//! #[settings]
//! pub struct Settings {
//!     /// The number to report.
//!     number: String,
//!     /// Seconds between calls.
//!     #[serde(default = "one")]
//!     every: f64,
//! }
//!
//! fn one() -> f64 {
//!     1.0
//! }
//!
//! pub struct HelloCalls {
//!     settings: Settings,
//! }
//!
//! impl Plugin for HelloCalls {
//!     type Settings = Settings;
//!     const DESCRIPTION: &'static str = "Reports one outgoing call a second";
//!
//!     fn new(settings: Settings) -> Result<Self, Error> {
//!         Ok(Self { settings })
//!     }
//!
//!     fn run(&mut self, ctx: &Context) -> Result<(), Error> {
//!         while ctx.running() {
//!             ctx.push(Record::new(CallType::OUTGOING).number(&self.settings.number).ext("101"))?;
//!             ctx.wait(self.settings.every);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_plugins!(HelloCalls);
//! # fn main() {}
//! ```
//!
//! Build it with `crate-type = ["cdylib"]` and the default `panic = "unwind"` (a plugin built
//! with `panic = "abort"` does not compile), drop the library into the plugins folder, add
//! `HelloCalls` to `settings.plugins` and restart the service.
//!
//! Panics and errors in your plugin never take the host down: the SDK catches them at the
//! boundary and the host restarts the instance after its decayed [`Backoff`] (or, for an
//! error marked [`error::fatal`], stops it until its config section or library changes).
//! The `log` output of your dependencies goes into the host's log under the instance.
//!
//! The binary interface lives in `calllogger-plugin-abi`, whose version is the plugin ABI
//! version; this crate re-exports what plugins need from it ([`Record`], [`LogLevel`], …).

#![warn(missing_docs)]

mod backoff;
mod context;
pub mod error;
#[cfg(feature = "lines")]
pub mod lines;
mod logging;
mod plugin;
pub mod polling;
mod secret;
pub mod types;

pub use backoff::{Backoff, Timeout};
pub use calllogger_plugin_abi::{
    Answered, CallType, ErrorKind, LibraryInfo, LogLevel, PushError, PushErrorKind, Record,
    TimeoutSettings, Timestamp,
};
pub use context::Context;
pub use error::{Error, ResultExt};
pub use plugin::{parse_settings, NoSettings, Plugin};
pub use secret::Secret;

/// The FFI-safe standard types [`Record`]'s fields are made of (`ROption`, `RString`, …).
pub use abi_stable::std_types::{ROption, RString, RVec, Tuple2};
/// Marks a plugin's settings type: derives `Deserialize` through the SDK's serde, so the
/// plugin crate needs no serde dependency. `#[serde(...)]` attributes work as usual.
///
/// ```
/// use calllogger_plugin_sdk::settings;
///
/// #[settings]
/// #[serde(default)]
/// struct Settings {
///     sleep: f64,
/// }
/// # impl Default for Settings { fn default() -> Self { Self { sleep: 1.0 } } }
/// let s: Settings = calllogger_plugin_sdk::parse_settings("Demo", "sleep: 2").unwrap();
/// assert_eq!(s.sleep, 2.0);
/// ```
pub use calllogger_plugin_sdk_macros::settings;
/// Date and time handling (`jiff`), re-exported so plugins need no version of their own.
pub use jiff;
/// `serde`, re-exported for [`settings`] and for custom `Deserialize` impls.
pub use serde;

/// Everything a plugin usually needs: `use calllogger_plugin_sdk::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "lines")]
    pub use crate::lines::{LinePlugin, Records};
    pub use crate::{
        export_plugins, settings, Answered, Backoff, CallType, Context, Error, LogLevel,
        NoSettings, Plugin, Record, ResultExt, Secret, Timeout, Timestamp,
    };
}

/// The version of this SDK, recorded in every library built with it.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exports plugin classes from this library: `export_plugins!(MockCalls, lines MyPbx);`.
///
/// Each name is a type implementing [`Plugin`], or, after `lines`, a type implementing
/// `lines::LinePlugin` (feature `lines`; `serial` is accepted for `lines`, as 0.2 code has
/// it), or, after `polling`, a type implementing [`polling::PollingPlugin`]. The type name is
/// the class name. Use it once per
/// library. It generates the library's root module and all FFI glue, records the plugin
/// crate's name, version and description as the library's identity, and refuses to compile
/// under `panic = "abort"`.
#[macro_export]
macro_rules! export_plugins {
    ($($classes:tt)+) => {
        $crate::__export_plugins!(@parse [] $($classes)+);
    };
}

/// The body of [`export_plugins!`]: turns each entry into `(ClassName, PluginType)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugins {
    (@parse [$($done:tt)*] lines $class:ident $(, $($rest:tt)*)?) => {
        $crate::__export_plugins!(@parse [$($done)* ($class, $crate::lines::Lines<$class>)] $($($rest)*)?);
    };
    (@parse [$($done:tt)*] serial $class:ident $(, $($rest:tt)*)?) => {
        $crate::__export_plugins!(@parse [$($done)*] lines $class $(, $($rest)*)?);
    };
    (@parse [$($done:tt)*] polling $class:ident $(, $($rest:tt)*)?) => {
        $crate::__export_plugins!(@parse [$($done)* ($class, $crate::polling::Polling<$class>)] $($($rest)*)?);
    };
    (@parse [$($done:tt)*] $class:ident $(, $($rest:tt)*)?) => {
        $crate::__export_plugins!(@parse [$($done)* ($class, $class)] $($($rest)*)?);
    };
    (@parse [$(($class:ident, $plugin:ty))+]) => {
        #[cfg(panic = "abort")]
        ::core::compile_error!(
            "calllogger plugins must be built with panic = \"unwind\": with \"abort\", \
             a panic in the plugin would kill the whole host"
        );

        /// The library's root module, found by the host by this exact symbol name.
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = {
            extern "C" fn __calllogger_root_module() -> $crate::__private::RootModuleResult {
                $crate::__private::call_root_module_loader(|| {
                    $crate::__private::root_module(
                        __calllogger_library,
                        __calllogger_classes,
                        __calllogger_new_instance,
                    )
                })
            }
            // SAFETY: the constructor returns `PluginModuleRef`, the type named here, and the
            // header asks for a layout check so the host verifies it before use.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::__private::PluginModuleRef>(
                    __calllogger_root_module,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };

        extern "C" fn __calllogger_library() -> $crate::LibraryInfo {
            $crate::__private::library_info(
                ::core::env!("CARGO_PKG_NAME"),
                ::core::env!("CARGO_PKG_VERSION"),
                ::core::env!("CARGO_PKG_DESCRIPTION"),
            )
        }

        extern "C" fn __calllogger_classes() -> $crate::__private::RVec<$crate::__private::ClassInfo> {
            ::std::vec![$($crate::__private::class_info::<$plugin>(::core::stringify!($class))),+].into()
        }

        extern "C" fn __calllogger_new_instance(
            class: $crate::__private::RStr<'_>,
            settings_yaml: $crate::__private::RStr<'_>,
        ) -> $crate::__private::RResult<$crate::__private::InstanceBox, $crate::__private::PluginError> {
            $(
                if class.as_str() == ::core::stringify!($class) {
                    return $crate::__private::construct::<$plugin>(
                        ::core::stringify!($class),
                        settings_yaml.as_str(),
                    );
                }
            )+
            $crate::__private::unknown_class(class.as_str())
        }
    };
}

/// Support for [`export_plugins!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::{class_info, construct, detached_context, library_info, Class};
    pub use abi_stable::library::{
        __call_root_module_loader as call_root_module_loader, CheckTypeLayout, LibHeader,
        RootModuleResult,
    };
    pub use abi_stable::std_types::{RResult, RStr, RVec};
    pub use calllogger_plugin_abi::{
        ClassInfo, HostHandle, InstanceBox, PluginError, PluginModuleRef, StopHookBox,
    };

    use abi_stable::prefix_type::PrefixTypeTrait;
    use calllogger_plugin_abi::{ErrorKind, LibraryInfo, PanicStrategy, PluginModule};

    /// Builds the root module from the macro's functions.
    pub fn root_module(
        library: extern "C" fn() -> LibraryInfo,
        classes: extern "C" fn() -> RVec<ClassInfo>,
        new_instance: extern "C" fn(RStr<'_>, RStr<'_>) -> RResult<InstanceBox, PluginError>,
    ) -> PluginModuleRef {
        PluginModule {
            panic_strategy: if cfg!(panic = "abort") {
                PanicStrategy::Abort
            } else {
                PanicStrategy::Unwind
            },
            library,
            classes,
            new_instance,
        }
        .leak_into_prefix()
    }

    /// The error for a class this library does not export.
    pub fn unknown_class(class: &str) -> RResult<InstanceBox, PluginError> {
        RResult::RErr(PluginError::new(
            ErrorKind::Config,
            format!("this library exports no class `{class}`"),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_symbol_is_abi_stables_root_module_loader() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}

/// The README's "Writing a plugin" example, compiled as a doctest so the guide stays true.
#[cfg(all(doctest, feature = "serial"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
