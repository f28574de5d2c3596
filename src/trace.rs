//! Trace logging for the hot path, kept out of its way.
//!
//! `log::trace!` formats its message in a block inline at the call site, and
//! the compiler lays that block out between the hot instructions around it:
//! the turn's code then spans more cache lines than it executes. After the
//! loop sleeps, each of those lines is a miss, so at one connection (a sleep
//! per message) code density is user time. [`hot_trace!`] tests the level
//! inline, the same test `log` makes, and formats in a `#[cold]` function,
//! which the compiler places away from the hot path.

/// `log::trace!`, formatted out of line (see the [module](self) docs).
macro_rules! hot_trace {
    ($($arg:tt)+) => {
        if log::Level::Trace <= log::STATIC_MAX_LEVEL && log::Level::Trace <= log::max_level() {
            $crate::trace::emit(module_path!(), format_args!($($arg)+));
        }
    };
}

/// Log one trace record for `target` (the calling module).
#[cold]
#[inline(never)]
pub(crate) fn emit(target: &str, args: std::fmt::Arguments<'_>) {
    log::log!(target: target, log::Level::Trace, "{}", args);
}
