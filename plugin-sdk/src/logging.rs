//! Forwards the `log` output of a plugin's dependencies into the host's log.
//!
//! Each plugin library has its own copy of the `log` crate, so the SDK installs its logger
//! there (once per library). A record goes to the [`Context`] of the instance whose `run` is
//! on the current thread, and is dropped on any other thread.

use std::cell::RefCell;
use std::sync::Once;

use calllogger_plugin_abi::LogLevel;

use crate::Context;

thread_local! {
    /// The context of the instance running on this thread.
    static CURRENT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Runs `f` with `ctx` as this thread's destination for `log` records.
pub(crate) fn with_current<R>(ctx: &Context, f: impl FnOnce() -> R) -> R {
    install();
    struct Restore(Option<Context>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(ctx.clone())));
    f()
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&Forward).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    });
}

fn level(level: log::Level) -> LogLevel {
    match level {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Trace => LogLevel::Trace,
    }
}

/// The library's `log::Log`.
struct Forward;

impl log::Log for Forward {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        CURRENT.with(|c| {
            c.borrow()
                .as_ref()
                .is_some_and(|ctx| ctx.log_enabled(level(metadata.level())))
        })
    }

    fn log(&self, record: &log::Record<'_>) {
        CURRENT.with(|c| {
            if let Some(ctx) = c.borrow().as_ref() {
                ctx.log(
                    level(record.level()),
                    format_args!("{}: {}", record.target(), record.args()),
                );
            }
        });
    }

    fn flush(&self) {}
}
