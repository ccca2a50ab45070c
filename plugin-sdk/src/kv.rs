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
//!
//! # State that must not race
//! Instances handling different events run at the same time (unless the subscription delivers
//! a conversation's events one at a time), so a [`get`] followed by a [`set`] can interleave with
//! another instance doing the same. [`increment`] and [`set_if`] read and write in one atomic
//! step instead:
//!
//! ```
//! use wasmhook_plugin_sdk::kv;
//! // A counter: concurrent increments are never lost.
//! assert_eq!(kv::increment("messages/c1", 1).unwrap(), 1);
//! assert_eq!(kv::increment("messages/c1", 2).unwrap(), 3);
//! // A claim: of several instances, exactly one gets `true` and does the work.
//! assert!(kv::set_if("claimed/c1", None, b"evt_1").unwrap());
//! assert!(!kv::set_if("claimed/c1", None, b"evt_2").unwrap());
//! // A compare-and-swap: replaces the value only if it is still the one read.
//! assert!(kv::set_if("claimed/c1", Some(b"evt_1"), b"done").unwrap());
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

/// Adds `delta` (which may be negative) to the integer under `key` and returns the new value,
/// atomically: concurrent increments are never lost.
///
/// The integer is stored as its decimal text (`b"42"`), so [`get_json::<i64>`](get_json) reads
/// it and a value written with [`set_json`] of an integer can be incremented. A missing key
/// counts as 0. Fails with [`KvError::NotANumber`] when the stored value is not such text and
/// with [`KvError::Overflow`] when the result does not fit in an `i64`; nothing is written then.
pub fn increment(key: &str, delta: i64) -> Result<i64, KvError> {
    backend::kv_increment(key, delta)
}

/// Stores `value` under `key` only if the current value is `expected` (`None`: only if `key` is
/// absent), atomically; returns whether it stored (compare-and-swap).
///
/// Of several instances calling `set_if(key, None, ...)` at the same time, exactly one gets
/// `true`. A differing current value is `Ok(false)`, not an error. The limits are those of
/// [`set`].
pub fn set_if(
    key: &str,
    expected: Option<&[u8]>,
    value: impl AsRef<[u8]>,
) -> Result<bool, KvError> {
    backend::kv_set_if(key, expected, value.as_ref())
}

/// Stores `value` as JSON under `key` only if `key` is absent; returns whether it stored.
/// [`set_if`] with `None`, for claiming work with a JSON record.
pub fn set_json_if_absent<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<bool, KvError> {
    let bytes = serde_json::to_vec(value).map_err(|e| KvError::Json(e.to_string()))?;
    set_if(key, None, bytes)
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
    /// [`increment`] found a value that is not the decimal text of an `i64`.
    NotANumber,
    /// [`increment`]'s result does not fit in an `i64`.
    Overflow,
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
            KvError::NotANumber => write!(f, "kv: the value to increment is not an integer"),
            KvError::Overflow => write!(f, "kv: the increment overflows a 64-bit integer"),
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
        assert_eq!(increment("", 1), Err(KvError::InvalidKey));
        assert_eq!(set_if("", None, b"x"), Err(KvError::InvalidKey));
    }

    #[test]
    fn increment_counts_in_decimal_text_and_never_wraps() {
        assert_eq!(increment("n", 5), Ok(5));
        assert_eq!(increment("n", -7), Ok(-2));
        assert_eq!(get("n").unwrap().as_deref(), Some(&b"-2"[..]));
        set_json("n", &40).unwrap();
        assert_eq!(increment("n", 2), Ok(42));
        assert_eq!(get_json::<i64>("n"), Ok(Some(42)));
        set("big", i64::MAX.to_string()).unwrap();
        assert_eq!(increment("big", 1), Err(KvError::Overflow));
        assert_eq!(increment("big", -1), Ok(i64::MAX - 1));
        set("text", "forty").unwrap();
        assert_eq!(increment("text", 1), Err(KvError::NotANumber));
        assert_eq!(get("text").unwrap().as_deref(), Some(&b"forty"[..]));
        assert!(!HandlerError::from(KvError::NotANumber).is_retryable());
    }

    #[test]
    fn set_if_swaps_only_the_expected_value() {
        assert_eq!(
            set_if("k", Some(b"a"), b"b"),
            Ok(false),
            "absent is not `a`"
        );
        assert_eq!(get("k"), Ok(None));
        assert_eq!(set_if("k", None, b"a"), Ok(true));
        assert_eq!(set_if("k", None, b"b"), Ok(false), "present");
        assert_eq!(set_if("k", Some(b"x"), b"b"), Ok(false), "differs");
        assert_eq!(set_if("k", Some(b"a"), b"b"), Ok(true));
        assert_eq!(get("k").unwrap().as_deref(), Some(&b"b"[..]));
        assert_eq!(set_json_if_absent("j", &["evt_1"]), Ok(true));
        assert_eq!(set_json_if_absent("j", &["evt_2"]), Ok(false));
        assert_eq!(get_json::<Vec<String>>("j"), Ok(Some(vec!["evt_1".into()])));
        testing::set_kv_value_limit(1);
        assert_eq!(
            set_if("k", Some(b"b"), b"cc"),
            Err(KvError::ValueTooLarge(1))
        );
    }
}
