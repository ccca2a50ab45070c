//! The plugin's configuration: string values set by the operator with `PATCH /v1/plugins/{id}`.
//!
//! ```
//! use wasmhook_plugin_sdk::{config, testing};
//! testing::set_config("max_replies", "3");
//! let max: u32 = config::get_or("max_replies", 1).unwrap();
//! let greeting = config::get_or("greeting", "Hello!".to_string()).unwrap();
//! assert_eq!((max, greeting.as_str()), (3, "Hello!"));
//! ```

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;

use crate::{HandlerError, backend};

/// The raw value of `key`, if it is set.
pub fn get(key: &str) -> Option<String> {
    backend::config_get(key)
}

/// The value of `key` parsed with [`FromStr`] (surrounding whitespace ignored), or `default`
/// when the key is not set.
///
/// A value that does not parse is an error rather than a silent default: a misconfigured
/// plugin should fail loudly.
pub fn get_or<T>(key: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match get(key) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::new(key, e.to_string())),
    }
}

/// The value of `key` parsed as JSON into `T`, or `None` when the key is not set.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, ConfigError> {
    match get(key) {
        None => Ok(None),
        Some(raw) => serde_json::from_str(&raw)
            .map(Some)
            .map_err(|e| ConfigError::new(key, e.to_string())),
    }
}

/// A configuration value is malformed.
///
/// Converts into a fatal [`HandlerError`]: retrying will not fix the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: String,
    reason: String,
}

impl ConfigError {
    /// An error about the value of `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The configuration key whose value is malformed.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value for config key `{}`: {}",
            self.key, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for HandlerError {
    fn from(e: ConfigError) -> Self {
        HandlerError::fatal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn get_or_parses_or_defaults() {
        testing::set_config("n", " 42 ");
        assert_eq!(get_or("n", 0u32), Ok(42));
        assert_eq!(get_or("missing", 7u32), Ok(7));
    }

    #[test]
    fn malformed_values_are_errors_naming_the_key() {
        testing::set_config("n", "many");
        let err = get_or("n", 0u32).unwrap_err();
        assert_eq!(err.key(), "n");
        assert!(!HandlerError::from(err).is_retryable());
    }

    #[test]
    fn get_json_reads_structured_values() {
        testing::set_config("rules", r#"[1, 2]"#);
        assert_eq!(get_json::<Vec<u8>>("rules"), Ok(Some(vec![1, 2])));
        assert_eq!(get_json::<Vec<u8>>("none"), Ok(None));
    }
}
