//! Writing to the plugin's log (`GET /v1/plugins/{id}/logs`), each line tagged by the host
//! with the current event id.
//!
//! Use the functions with ready strings, or the [`info!`](crate::info)-style macros with
//! `format!` arguments:
//!
//! ```
//! use wasmhook_plugin_sdk::{log, warn};
//! log::info("started");
//! warn!("{} retries left", 3);
//! ```
//!
//! Anything a plugin prints to stdout or stderr goes to the host's own output instead, if
//! anywhere; use this module for what operators should see.

use crate::backend;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// A failure.
    Error,
}

/// Writes `message` at `level`.
pub fn log(level: Level, message: &str) {
    backend::log(level, message);
}

/// Whether a line at `level` is kept, by the plugin's `log_level`. The macros check it before
/// formatting, so a disabled `debug!` costs a comparison; the host is asked once per event.
pub fn enabled(level: Level) -> bool {
    level >= backend::min_log_level()
}

/// Writes `message` at [`Level::Trace`].
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Writes `message` at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes `message` at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes `message` at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes `message` at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Logs a `format!`-style message at [`Level::Trace`](crate::log::Level::Trace).
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Trace) {
            $crate::log::log($crate::log::Level::Trace, &::std::format!($($arg)+))
        }
    };
}

/// Logs a `format!`-style message at [`Level::Debug`](crate::log::Level::Debug).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::log($crate::log::Level::Debug, &::std::format!($($arg)+))
        }
    };
}

/// Logs a `format!`-style message at [`Level::Info`](crate::log::Level::Info).
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::log($crate::log::Level::Info, &::std::format!($($arg)+))
        }
    };
}

/// Logs a `format!`-style message at [`Level::Warn`](crate::log::Level::Warn).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Warn) {
            $crate::log::log($crate::log::Level::Warn, &::std::format!($($arg)+))
        }
    };
}

/// Logs a `format!`-style message at [`Level::Error`](crate::log::Level::Error).
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Error) {
            $crate::log::log($crate::log::Level::Error, &::std::format!($($arg)+))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn functions_and_macros_reach_the_host() {
        info("one");
        crate::error!("two {}", 2);
        assert_eq!(
            testing::logs(),
            vec![
                (Level::Info, "one".to_string()),
                (Level::Error, "two 2".to_string())
            ]
        );
    }

    #[test]
    fn lines_below_the_level_are_neither_formatted_nor_kept() {
        struct Counted<'a>(&'a std::cell::Cell<u32>);
        impl std::fmt::Display for Counted<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.set(self.0.get() + 1);
                f.write_str("x")
            }
        }
        testing::set_min_log_level(Level::Info);
        let formatted = std::cell::Cell::new(0);
        crate::debug!("{}", Counted(&formatted));
        crate::warn!("{}", Counted(&formatted));
        debug("kept out by the host too");
        assert_eq!(formatted.get(), 1);
        assert_eq!(testing::logs(), vec![(Level::Warn, "x".to_string())]);
        assert!(!enabled(Level::Debug) && enabled(Level::Info));
    }
}
