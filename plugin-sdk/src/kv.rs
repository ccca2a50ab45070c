//! The plugin's private key-value store, kept across events and plugin versions.
//!
//! Keys are non-empty strings of at most 512 bytes; the host limits value size and key count.
//!
//! ```
//! use wasmhook_plugin_sdk::kv;
//! kv::set_json("greeted/c1", &true).unwrap();
//! assert_eq!(kv::get_json::<bool>("greeted/c1").unwrap(), Some(true));
//! kv::delete("greeted/c1").unwrap();
//! assert_eq!(kv::get("greeted/c1").unwrap(), None);
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{HandlerError, backend};

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    backend::kv_get(key)
}

/// Stores `value` under `key`, replacing any previous value.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), KvError> {
    backend::kv_set(key, value.as_ref())
}

/// Removes `key`; removing a missing key is not an error.
pub fn delete(key: &str) -> Result<(), KvError> {
    backend::kv_delete(key)
}

/// The value under `key` deserialized from JSON, if any.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, KvError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KvError::Json(e.to_string())),
    }
}

/// Stores `value` as JSON under `key`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(value).map_err(|e| KvError::Json(e.to_string()))?;
    set(key, bytes)
}

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The value is larger than the plugin's limit (in bytes, given).
    ValueTooLarge(u64),
    /// The key is empty or longer than 512 bytes.
    InvalidKey,
    /// The plugin already stores its maximum number of keys (given).
    TooManyKeys(u32),
    /// The host's store failed; retrying later may work.
    Unavailable(String),
    /// [`get_json`] found a value that is not JSON of the expected shape, or [`set_json`] could
    /// not serialize the value. Raised by this SDK, not by the host.
    Json(String),
}

impl KvError {
    /// Whether retrying later may succeed (only [`KvError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, KvError::Unavailable(_))
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::ValueTooLarge(max) => write!(f, "kv: value larger than {max} bytes"),
            KvError::InvalidKey => write!(f, "kv: key is empty or longer than 512 bytes"),
            KvError::TooManyKeys(max) => write!(f, "kv: already storing the maximum of {max} keys"),
            KvError::Unavailable(why) => write!(f, "kv: store unavailable: {why}"),
            KvError::Json(why) => write!(f, "kv: value is not the expected JSON: {why}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<KvError> for HandlerError {
    fn from(e: KvError) -> Self {
        if e.is_retryable() {
            HandlerError::retryable(e.to_string())
        } else {
            HandlerError::fatal(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn json_round_trip_and_shape_errors() {
        set_json("k", &vec![1, 2, 3]).unwrap();
        assert_eq!(get_json::<Vec<i32>>("k").unwrap(), Some(vec![1, 2, 3]));
        assert!(matches!(get_json::<String>("k"), Err(KvError::Json(_))));
    }

    #[test]
    fn unavailable_store_is_retryable() {
        testing::fail_kv_with(KvError::Unavailable("disk".into()));
        let err: HandlerError = get("k").unwrap_err().into();
        assert!(err.is_retryable());
    }

    #[test]
    fn mock_checks_keys_like_the_host() {
        assert_eq!(set("", b"x"), Err(KvError::InvalidKey));
        assert_eq!(set(&"k".repeat(513), b"x"), Err(KvError::InvalidKey));
    }
}
