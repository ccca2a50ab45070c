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
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Trace, &::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at [`Level::Debug`](crate::log::Level::Debug).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Debug, &::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at [`Level::Info`](crate::log::Level::Info).
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Info, &::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at [`Level::Warn`](crate::log::Level::Warn).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Warn, &::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at [`Level::Error`](crate::log::Level::Error).
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Error, &::std::format!($($arg)+)) };
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
}
