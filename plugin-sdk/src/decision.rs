//! What a plugin returns: a [`Decision`] about the event, or a [`HandlerError`].

use std::fmt;

use serde::Serialize;

/// What to do with the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Deliver the event unchanged.
    Keep,
    /// Deliver this payload (a JSON object, as text) instead; it is what gets signed and sent.
    Replace(String),
    /// Deliver nothing; the delivery is recorded as `filtered`.
    Drop,
}

impl Decision {
    /// [`Decision::Replace`] with `payload` serialized as JSON.
    ///
    /// The host expects a JSON object; serializing anything else is the plugin's bug and shows
    /// up as a failed delivery. Fails (fatally) only if `payload` cannot be serialized.
    ///
    /// ```
    /// # use wasmhook_plugin_sdk::Decision;
    /// let d = Decision::replace_json(&serde_json::json!({"text": "[redacted]"})).unwrap();
    /// assert_eq!(d, Decision::Replace(r#"{"text":"[redacted]"}"#.to_string()));
    /// ```
    pub fn replace_json<T: Serialize + ?Sized>(payload: &T) -> Result<Self, HandlerError> {
        serde_json::to_string(payload)
            .map(Decision::Replace)
            .map_err(|e| {
                HandlerError::fatal(format!("cannot serialize the replacement payload: {e}"))
            })
    }
}

/// A failure the plugin reports for one event.
///
/// Other errors of this crate convert into it with `?`: failures that may pass on their own
/// (the host's store being unavailable) become retryable, everything else fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    retryable: bool,
}

impl HandlerError {
    /// A failure worth retrying later: the host retries the delivery on its retry schedule.
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that retrying will not fix: the delivery fails at once.
    pub fn fatal(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retryable: false,
        }
    }

    /// The message recorded on the delivery's attempt and in the plugin's log.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the host retries the delivery.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message, by value.
    pub fn into_message(self) -> String {
        self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.retryable { "retryable" } else { "fatal" };
        write!(f, "{} ({kind})", self.message)
    }
}

impl std::error::Error for HandlerError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_retryability() {
        assert!(HandlerError::retryable("x").is_retryable());
        assert!(!HandlerError::fatal("x").is_retryable());
        assert_eq!(HandlerError::fatal("boom").to_string(), "boom (fatal)");
    }

    #[test]
    fn replace_json_fails_fatally_on_unserializable_values() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1); // non-string keys cannot become JSON object keys
        let err = Decision::replace_json(&map).unwrap_err();
        assert!(!err.is_retryable());
    }
}
