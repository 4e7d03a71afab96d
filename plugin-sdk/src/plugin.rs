//! The trait a plugin implements, and the glue that turns it into FFI-safe calls.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Once};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RBox, RResult},
};
use calllogger_plugin_abi::{
    ClassInfo, ErrorKind, HostHandle, InstanceApi, InstanceApi_TO, InstanceBox, LibraryInfo,
    PluginError, PluginKind, StopHook, StopHookBox, StopHook_TO,
};
use serde::de::DeserializeOwned;

use crate::context::StopSlot;
use crate::error::{to_plugin_error, Error};
use crate::Context;

/// A plugin class: a settings struct, a constructor and a run loop.
///
/// The class name is the Rust type name; the host hands the instance the config section with
/// that exact name, deserialized into [`Settings`](Plugin::Settings). Keys the settings struct
/// does not know are an error that names the class and the key.
///
/// `run` loops while [`Context::running`] and returns when it drops. Returning an error (or
/// panicking) makes the host log it, wait its decayed timeout, and start a fresh instance;
/// an error marked [`fatal`](crate::error::fatal) stops the instance instead.
pub trait Plugin: Sized + Send + 'static {
    /// The class's settings, read from its config section.
    type Settings: DeserializeOwned;

    /// One line saying what the class does (shown by `calllogger plugins`).
    const DESCRIPTION: &'static str;

    /// Builds an instance from its settings. Fail here on settings that make no sense.
    fn new(settings: Self::Settings) -> Result<Self, Error>;

    /// The instance's main loop: push records while `ctx.running()`.
    fn run(&mut self, ctx: &Context) -> Result<(), Error>;
}

/// The settings of a class that has none: its section must be empty or absent.
#[derive(serde::Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

/// What the export glue needs of a class: implemented for every [`Plugin`], and by the line
/// and polling bases for their plugins.
#[doc(hidden)]
pub trait Class: Sized + Send + 'static {
    /// One line saying what the class does.
    const DESCRIPTION: &'static str;
    /// Plain or line-based.
    const KIND: PluginKind;
    /// Reads the settings from the section's YAML text and builds an instance.
    fn build(class: &str, settings_yaml: &str) -> Result<Self, PluginError>;
    /// Runs the instance.
    fn run_class(&mut self, ctx: &Context) -> Result<(), Error>;
}

impl<P: Plugin> Class for P {
    const DESCRIPTION: &'static str = P::DESCRIPTION;
    const KIND: PluginKind = PluginKind::Generic;

    fn build(class: &str, settings_yaml: &str) -> Result<Self, PluginError> {
        let settings = parse_settings::<P::Settings>(class, settings_yaml)
            .map_err(|e| PluginError::new(ErrorKind::Config, e))?;
        P::new(settings).map_err(|e| construction_error(class, &*e))
    }

    fn run_class(&mut self, ctx: &Context) -> Result<(), Error> {
        self.run(ctx)
    }
}

/// Deserializes a class's settings from the YAML text of its section.
///
/// An empty or `null` section reads as an empty mapping. Errors name the class and the key
/// (`MockCalls: settings key `sleep`: invalid type: …`); unknown keys are errors too.
pub fn parse_settings<S: DeserializeOwned>(class: &str, yaml: &str) -> Result<S, String> {
    let value: yaml_serde::Value = yaml_serde::from_str(yaml)
        .map_err(|e| format!("{class}: settings are not valid YAML: {e}"))?;
    parse_settings_value(class, value)
}

/// [`parse_settings`] on an already parsed YAML value.
pub(crate) fn parse_settings_value<S: DeserializeOwned>(
    class: &str,
    value: yaml_serde::Value,
) -> Result<S, String> {
    let value = match value {
        yaml_serde::Value::Null => yaml_serde::Value::Mapping(Default::default()),
        other => other,
    };
    let mut track = serde_path_to_error::Track::new();
    let mut unknown = Vec::new();
    let parsed = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(value, &mut track),
        // serde_ignored writes `?` for a step through an `Option`: not a key the user wrote.
        |path| {
            unknown.push(
                path.to_string()
                    .split('.')
                    .filter(|s| *s != "?")
                    .collect::<Vec<_>>()
                    .join("."),
            )
        },
    );
    match parsed {
        Err(e) => {
            let path = track.path().to_string();
            Err(if path == "." || path.is_empty() {
                format!("{class}: settings: {e}")
            } else {
                format!("{class}: settings key `{path}`: {e}")
            })
        }
        Ok(_) if !unknown.is_empty() => Err(format!(
            "{class}: unknown settings key{} {}",
            if unknown.len() > 1 { "s" } else { "" },
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(settings) => Ok(settings),
    }
}

/// Splits a section's YAML text into the mapping of `keys` (read by a base) and the rest (the
/// plugin's own settings).
pub(crate) fn split_settings(
    class: &str,
    yaml: &str,
    keys: &[&str],
) -> Result<(yaml_serde::Value, yaml_serde::Value), PluginError> {
    let config = |e: String| PluginError::new(ErrorKind::Config, e);
    let value: yaml_serde::Value = yaml_serde::from_str(yaml)
        .map_err(|e| config(format!("{class}: settings are not valid YAML: {e}")))?;
    let mut own = match value {
        yaml_serde::Value::Mapping(mapping) => mapping,
        yaml_serde::Value::Null => Default::default(),
        _ => return Err(config(format!("{class}: settings must be a mapping"))),
    };
    let mut base = yaml_serde::Mapping::new();
    for key in keys {
        if let Some(value) = own.remove(key) {
            base.insert((*key).into(), value);
        }
    }
    Ok((
        yaml_serde::Value::Mapping(base),
        yaml_serde::Value::Mapping(own),
    ))
}

/// A constructor's error as the host sees it: named after the class, a settings error
/// unless it is marked otherwise.
pub(crate) fn construction_error(
    class: &str,
    error: &(dyn std::error::Error + 'static),
) -> PluginError {
    let error = to_plugin_error(error, ErrorKind::Config);
    PluginError::new(error.kind, format!("{class}: {}", error.message))
}

thread_local! {
    /// Whether this thread is inside [`catch_panic`], where panics become errors.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// Where the last caught panic on this thread happened.
    static LAST_PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Wraps the library's panic hook (each plugin library has its own std, so this touches no
/// one else): a panic that [`catch_panic`] will turn into an error only has its location
/// recorded, since the host logs it, and symbolizing a backtrace would cost tens of MB of
/// RSS. Any other panic goes to the previous hook as usual.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.get() {
                let location = info.location().map(|l| l.to_string());
                LAST_PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
            } else {
                previous(info);
            }
        }))
    });
}

/// Runs `f`, turning a panic into an error message with the panic's text and location.
fn catch_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    install_panic_hook();
    let outer = CATCHING.replace(true);
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.set(outer);
    result.map_err(|payload| {
        let location = LAST_PANIC_LOCATION.with(|slot| slot.borrow_mut().take());
        let message = panic_message(payload.as_ref());
        match location {
            Some(at) => format!("{what} panicked at {at}: {message}"),
            None => format!("{what} panicked: {message}"),
        }
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// Runs a plugin's stop hook on the host's thread; a panic in it is only logged there.
pub(crate) fn run_stop_hook(hook: &(dyn Fn() + Send + Sync)) {
    if let Err(panicked) = catch_panic("stop hook", hook) {
        eprintln!("calllogger plugin: {panicked}");
    }
}

/// The host's end of an instance's [`StopSlot`].
struct Hook(Arc<StopSlot>);

impl StopHook for Hook {
    fn stop(&self) {
        self.0.fire();
    }
}

/// A plugin instance behind the FFI trait. After a panic the plugin's state is suspect, so
/// it is dropped and further runs fail; the host builds a fresh instance instead.
struct Instance<P: Class> {
    class: &'static str,
    plugin: Option<P>,
    stop: Arc<StopSlot>,
}

impl<P: Class> InstanceApi for Instance<P> {
    fn stop_hook(&self) -> StopHookBox {
        StopHook_TO::from_value(Hook(self.stop.clone()), TD_Opaque)
    }

    fn run(&mut self, host: HostHandle) -> RResult<(), PluginError> {
        let Some(plugin) = self.plugin.as_mut() else {
            return RResult::RErr(PluginError::new(
                ErrorKind::Transient,
                format!("{}: instance is poisoned by an earlier panic", self.class),
            ));
        };
        let context = Context::with_stop(host, self.stop.clone());
        let ran = crate::logging::with_current(&context, || {
            catch_panic("run", || plugin.run_class(&context))
        });
        match ran {
            Ok(Ok(())) => RResult::ROk(()),
            Ok(Err(e)) => RResult::RErr(to_plugin_error(&*e, ErrorKind::Transient)),
            Err(panicked) => {
                let plugin = self.plugin.take();
                let _ = catch_panic("drop", || drop(plugin));
                RResult::RErr(PluginError::new(ErrorKind::Transient, panicked))
            }
        }
    }
}

impl<P: Class> Drop for Instance<P> {
    fn drop(&mut self) {
        // A panic must not cross the FFI boundary, not even from the plugin's own Drop.
        let plugin = self.plugin.take();
        let _ = catch_panic("drop", || drop(plugin));
    }
}

/// A context on `host` outside any instance, and the hook that runs what the plugin
/// registers with [`Context::on_stop`]: what a test host hands a plugin's `run`.
#[doc(hidden)]
pub fn detached_context(host: HostHandle) -> (Context, StopHookBox) {
    let slot = Arc::<StopSlot>::default();
    let hook = StopHook_TO::from_value(Hook(slot.clone()), TD_Opaque);
    (Context::with_stop(host, slot), hook)
}

/// The FFI description of class `P` named `name`.
#[doc(hidden)]
pub fn class_info<P: Class>(name: &str) -> ClassInfo {
    ClassInfo {
        name: name.into(),
        description: P::DESCRIPTION.into(),
        kind: P::KIND,
    }
}

/// Parses the settings and constructs class `P`, catching panics.
#[doc(hidden)]
pub fn construct<P: Class>(
    class: &'static str,
    settings_yaml: &str,
) -> RResult<InstanceBox, PluginError> {
    let built = catch_panic("constructor", || P::build(class, settings_yaml));
    match built {
        Ok(Ok(plugin)) => {
            let instance = Instance {
                class,
                plugin: Some(plugin),
                stop: Arc::default(),
            };
            RResult::ROk(InstanceApi_TO::from_ptr(RBox::new(instance), TD_Opaque))
        }
        Ok(Err(error)) => RResult::RErr(error),
        Err(panicked) => RResult::RErr(PluginError::new(
            ErrorKind::Transient,
            format!("{class}: {panicked}"),
        )),
    }
}

/// The library's identity, from the plugin crate's Cargo metadata (the export macro passes it).
#[doc(hidden)]
pub fn library_info(name: &str, version: &str, description: &str) -> LibraryInfo {
    LibraryInfo {
        name: name.into(),
        version: version.into(),
        description: description.into(),
        sdk_version: crate::SDK_VERSION.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)] // the fields are read by the deserializer only
    struct Settings {
        port: String,
        #[serde(default)]
        rate: u32,
        nested: Option<Nested>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Nested {
        depth: u8,
    }

    fn err(yaml: &str) -> String {
        parse_settings::<Settings>("Serial", yaml).unwrap_err()
    }

    #[test]
    fn errors_name_the_class_and_the_key() {
        assert_eq!(err("rate: 1"), "Serial: settings: missing field `port`");
        assert!(err("port: a\nrate: fast").starts_with("Serial: settings key `rate`: invalid type"));
        assert!(err("port: a\nnested: {depth: 300}")
            .starts_with("Serial: settings key `nested.depth`:"));
        assert_eq!(
            err("port: a\nrtae: 9600"),
            "Serial: unknown settings key `rtae`"
        );
        assert_eq!(
            err("port: a\nx: 1\nnested: {depth: 1, y: 2}"),
            "Serial: unknown settings keys `x`, `nested.y`"
        );
        assert!(err("port: [").starts_with("Serial: settings are not valid YAML"));
    }

    #[test]
    fn an_empty_section_is_an_empty_mapping() {
        assert_eq!(err(""), "Serial: settings: missing field `port`");
        parse_settings::<NoSettings>("None", "").unwrap();
        parse_settings::<NoSettings>("None", "~").unwrap();
        assert!(parse_settings::<NoSettings>("None", "a: 1").is_err());
    }

    #[test]
    fn constructor_errors_are_config_errors_unless_marked() {
        let plain: Error = "rate must be positive".into();
        assert_eq!(
            construction_error("Serial", &*plain),
            PluginError::new(ErrorKind::Config, "Serial: rate must be positive")
        );
        let fatal = crate::error::fatal("no licence");
        assert_eq!(construction_error("Serial", &*fatal).kind, ErrorKind::Fatal);
    }
}
