//! An in-memory host for native unit tests of plugins (not compiled for wasm32).
//!
//! On native targets every host call of this crate ([`crate::send_message`], [`crate::kv`],
//! [`crate::config`], [`crate::log`]) goes to a host kept in a thread-local. The test harness
//! runs each test on its own thread, so each test starts with an empty host: no config, an
//! empty store, nothing sent or logged. Set it up, call `MyPlugin::handle`, then inspect it:
//!
//! ```
//! use wasmhook_plugin_sdk::{send_message, testing};
//! testing::set_config("greeting", "hi");
//! send_message("c1", "hello").unwrap();
//! assert_eq!(testing::sent_messages(), vec![testing::SentMessage {
//!     conversation_id: "c1".into(),
//!     text: "hello".into(),
//! }]);
//! ```
//!
//! The mock enforces what it can cheaply imitate: kv key length, the empty-text rejection of
//! `send-message`, and, when set, a send limit ([`set_send_limit`]) and a value size limit
//! ([`set_kv_value_limit`]). Its `kv::increment` and `kv::set_if` behave as the host's (decimal
//! text, no wrapping, compare-and-swap); a test host serves one thread, so to test a plugin
//! against a race, put the state the other instance would have left into the store first.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use crate::SendError;
use crate::kv::KvError;
use crate::log::Level;

/// A message a plugin sent through [`crate::send_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The conversation it was sent to.
    pub conversation_id: String,
    /// Its text.
    pub text: String,
}

#[derive(Default)]
struct MockHost {
    config: HashMap<String, String>,
    kv: BTreeMap<String, Vec<u8>>,
    kv_failure: Option<KvError>,
    kv_value_limit: Option<u64>,
    sent: Vec<SentMessage>,
    send_failure: Option<SendError>,
    send_limit: Option<u32>,
    logs: Vec<(Level, String)>,
    /// `None`: every line is kept.
    min_log_level: Option<Level>,
}

thread_local! {
    static HOST: RefCell<MockHost> = RefCell::new(MockHost::default());
}

fn with<R>(f: impl FnOnce(&mut MockHost) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

/// Empties this thread's host, as at the start of a test.
pub fn reset() {
    with(|h| *h = MockHost::default());
}

/// Sets configuration `key` to `value`.
pub fn set_config(key: &str, value: &str) {
    with(|h| h.config.insert(key.to_string(), value.to_string()));
}

/// Removes configuration `key`.
pub fn unset_config(key: &str) {
    with(|h| h.config.remove(key));
}

/// The messages sent so far, oldest first.
pub fn sent_messages() -> Vec<SentMessage> {
    with(|h| h.sent.clone())
}

/// The log lines written so far, oldest first.
pub fn logs() -> Vec<(Level, String)> {
    with(|h| h.logs.clone())
}

/// Keeps only log lines at `level` or above, as the host does for a plugin whose `log_level`
/// is set.
pub fn set_min_log_level(level: Level) {
    with(|h| h.min_log_level = Some(level));
}

/// The whole key-value store.
pub fn kv_contents() -> BTreeMap<String, Vec<u8>> {
    with(|h| h.kv.clone())
}

/// Makes every later [`crate::send_message`] fail with `error` (until [`reset`]).
pub fn fail_send_with(error: SendError) {
    with(|h| h.send_failure = Some(error));
}

/// Makes [`crate::send_message`] fail with [`SendError::LimitExceeded`] after `limit` messages.
pub fn set_send_limit(limit: u32) {
    with(|h| h.send_limit = Some(limit));
}

/// Makes [`crate::kv::set`], [`crate::kv::set_if`] and [`crate::kv::increment`] fail with
/// [`KvError::ValueTooLarge`] for values over `bytes`.
pub fn set_kv_value_limit(bytes: u64) {
    with(|h| h.kv_value_limit = Some(bytes));
}

/// Makes every later [`crate::kv`] call fail with `error` (until [`reset`]).
pub fn fail_kv_with(error: KvError) {
    with(|h| h.kv_failure = Some(error));
}

/// The host calls as the rest of the crate sees them; mirrors `bindings::imports`.
pub(crate) mod imports {
    use super::*;

    pub(crate) fn send_message(conversation_id: &str, text: &str) -> Result<String, SendError> {
        with(|h| {
            if let Some(e) = &h.send_failure {
                return Err(e.clone());
            }
            if text.trim().is_empty() {
                return Err(SendError::Invalid("text is empty".into()));
            }
            if let Some(limit) = h.send_limit
                && h.sent.len() >= limit as usize
            {
                return Err(SendError::LimitExceeded(limit));
            }
            h.sent.push(SentMessage {
                conversation_id: conversation_id.to_string(),
                text: text.to_string(),
            });
            Ok(format!("msg_test_{}", h.sent.len()))
        })
    }

    pub(crate) fn log(level: Level, message: &str) {
        with(|h| {
            if h.min_log_level.is_none_or(|min| level >= min) {
                h.logs.push((level, message.to_string()));
            }
        });
    }

    pub(crate) fn min_log_level() -> Level {
        with(|h| h.min_log_level.unwrap_or(Level::Trace))
    }

    pub(crate) fn config_get(key: &str) -> Option<String> {
        with(|h| h.config.get(key).cloned())
    }

    fn check(h: &MockHost, key: &str) -> Result<(), KvError> {
        if let Some(e) = &h.kv_failure {
            return Err(e.clone());
        }
        if key.is_empty() || key.len() > 512 {
            return Err(KvError::InvalidKey);
        }
        Ok(())
    }

    pub(crate) fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        with(|h| {
            check(h, key)?;
            Ok(h.kv.get(key).cloned())
        })
    }

    fn check_value_size(h: &MockHost, value: &[u8]) -> Result<(), KvError> {
        match h.kv_value_limit {
            Some(limit) if value.len() as u64 > limit => Err(KvError::ValueTooLarge(limit)),
            _ => Ok(()),
        }
    }

    pub(crate) fn kv_set(key: &str, value: &[u8]) -> Result<(), KvError> {
        with(|h| {
            check(h, key)?;
            check_value_size(h, value)?;
            h.kv.insert(key.to_string(), value.to_vec());
            Ok(())
        })
    }

    pub(crate) fn kv_delete(key: &str) -> Result<(), KvError> {
        with(|h| {
            check(h, key)?;
            h.kv.remove(key);
            Ok(())
        })
    }

    pub(crate) fn kv_increment(key: &str, delta: i64) -> Result<i64, KvError> {
        with(|h| {
            check(h, key)?;
            let old = match h.kv.get(key) {
                None => 0,
                Some(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or(KvError::NotANumber)?,
            };
            let new = old.checked_add(delta).ok_or(KvError::Overflow)?;
            let text = new.to_string();
            check_value_size(h, text.as_bytes())?;
            h.kv.insert(key.to_string(), text.into_bytes());
            Ok(new)
        })
    }

    pub(crate) fn kv_set_if(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        with(|h| {
            check(h, key)?;
            check_value_size(h, value)?;
            if h.kv.get(key).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            h.kv.insert(key.to_string(), value.to_vec());
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send_message;

    #[test]
    fn send_limit_and_failures_are_imitated() {
        set_send_limit(1);
        assert!(send_message("c", "a").is_ok());
        assert_eq!(send_message("c", "b"), Err(SendError::LimitExceeded(1)));
        assert!(matches!(send_message("c", " "), Err(SendError::Invalid(_))));
        reset();
        fail_send_with(SendError::UnknownConversation);
        assert_eq!(send_message("c", "a"), Err(SendError::UnknownConversation));
        assert!(sent_messages().is_empty());
    }
}
