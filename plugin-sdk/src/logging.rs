//! Forwards the `log` and `tracing` output of a plugin's dependencies into the host's log.
//!
//! Each plugin library has its own copy of the `log` and `tracing` crates, so the SDK installs
//! its logger and its tracing subscriber there (once per library). A record or event goes to
//! the [`Context`] of the instance whose `run` is on the current thread, and is dropped on any
//! other thread. Spans are not kept: an event is its target, its message and its fields.

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
        // Fails only if the plugin set its own subscriber first: then that one stays.
        let _ = tracing_core::dispatcher::set_global_default(tracing_core::Dispatch::new(
            ForwardTracing,
        ));
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

fn tracing_level(level: &tracing_core::Level) -> LogLevel {
    match *level {
        tracing_core::Level::ERROR => LogLevel::Error,
        tracing_core::Level::WARN => LogLevel::Warn,
        tracing_core::Level::INFO => LogLevel::Info,
        tracing_core::Level::DEBUG => LogLevel::Debug,
        _ => LogLevel::Trace,
    }
}

/// The library's `tracing` subscriber: events only, to this thread's instance.
struct ForwardTracing;

impl tracing_core::Subscriber for ForwardTracing {
    fn register_callsite(
        &self,
        _: &'static tracing_core::Metadata<'static>,
    ) -> tracing_core::subscriber::Interest {
        // Whether an event is wanted depends on the thread (its instance): ask every time.
        tracing_core::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &tracing_core::Metadata<'_>) -> bool {
        metadata.is_event()
            && CURRENT.with(|c| {
                c.borrow()
                    .as_ref()
                    .is_some_and(|ctx| ctx.log_enabled(tracing_level(metadata.level())))
            })
    }

    fn new_span(&self, _: &tracing_core::span::Attributes<'_>) -> tracing_core::span::Id {
        tracing_core::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing_core::span::Id, _: &tracing_core::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing_core::span::Id, _: &tracing_core::span::Id) {}

    fn event(&self, event: &tracing_core::Event<'_>) {
        CURRENT.with(|c| {
            if let Some(ctx) = c.borrow().as_ref() {
                let mut fields = Fields::default();
                event.record(&mut fields);
                ctx.log(
                    tracing_level(event.metadata().level()),
                    format_args!(
                        "{}: {}{}",
                        event.metadata().target(),
                        fields.message,
                        fields.rest
                    ),
                );
            }
        });
    }

    fn enter(&self, _: &tracing_core::span::Id) {}

    fn exit(&self, _: &tracing_core::span::Id) {}
}

/// An event's `message`, and its other fields as ` name=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl tracing_core::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing_core::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.rest.push_str(&format!(" {}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &tracing_core::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message.push_str(&format!("{value:?}"));
        } else {
            self.rest.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}
