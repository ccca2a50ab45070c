//! The event handed to a plugin, with typed accessors for its JSON payload.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::{HandlerError, MessageCreated};

/// One event, as stored by wasmhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's public id (for example `evt_...`), stable across retries.
    pub id: String,
    /// The event type, such as `message:created`.
    pub event_type: String,
    /// When the event happened, RFC 3339.
    pub occurred_at: String,
    /// When wasmhook accepted the event, RFC 3339.
    pub received_at: String,
    /// The payload: a JSON object, as text. See [`Event::payload_as`] and [`Event::payload_json`].
    pub payload: String,
    /// The account the event belongs to.
    pub account_id: String,
    /// The subscription through which this plugin receives the event.
    pub subscription_id: String,
    /// 1 for the first attempt at this delivery, 2 for the first retry, and so on.
    pub attempt: u32,
    /// Set when a plugin's host call emitted this event; `None` for events posted by clients.
    pub causation: Option<Causation>,
}

/// What caused an event, when a plugin's own host call produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Causation {
    /// The plugin that emitted the event (for example through [`crate::send_message`]).
    pub plugin_id: String,
    /// The event that plugin was handling when it emitted this one.
    pub event_id: String,
    /// Plugin hops between this event and one posted by a client (1 = direct).
    pub depth: u32,
}

impl Event {
    /// An event of type `event_type` carrying `payload`, with placeholder ids and times.
    ///
    /// For tests: the host builds the real ones. Adjust the public fields as needed.
    pub fn new(event_type: impl Into<String>, payload: serde_json::Value) -> Self {
        Event {
            id: "evt_test".to_string(),
            event_type: event_type.into(),
            occurred_at: "2025-01-01T12:00:00Z".to_string(),
            received_at: "2025-01-01T12:00:00Z".to_string(),
            payload: payload.to_string(),
            account_id: "acc_test".to_string(),
            subscription_id: "sub_test".to_string(),
            attempt: 1,
            causation: None,
        }
    }

    /// Whether a plugin emitted this event (it has a [`Causation`]).
    ///
    /// Plugins that react to messages should usually ignore such events, so that two plugins
    /// cannot answer each other forever.
    pub fn is_caused_by_plugin(&self) -> bool {
        self.causation.is_some()
    }

    /// The payload deserialized into `T`.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        serde_json::from_str(&self.payload).map_err(PayloadError)
    }

    /// The payload as a JSON value, for plugins that edit it without knowing its whole shape.
    pub fn payload_json(&self) -> Result<serde_json::Value, PayloadError> {
        self.payload_as()
    }

    /// The payload as a [`MessageCreated`], if this is a `message:created` event.
    ///
    /// `Ok(None)` for other event types; an error if the payload does not have the shape of a
    /// message (a field of the wrong JSON type).
    pub fn message_created(&self) -> Result<Option<MessageCreated>, PayloadError> {
        if self.event_type != MessageCreated::EVENT_TYPE {
            return Ok(None);
        }
        self.payload_as().map(Some)
    }
}

/// The payload is not JSON of the expected shape.
///
/// Converts into a fatal [`HandlerError`]: the same payload will fail the same way on retry.
#[derive(Debug)]
pub struct PayloadError(serde_json::Error);

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected event payload: {}", self.0)
    }
}

impl std::error::Error for PayloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<PayloadError> for HandlerError {
    fn from(e: PayloadError) -> Self {
        HandlerError::fatal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn message_created_is_none_for_other_types() {
        let e = Event::new("conversation:updated", json!({"text": "x"}));
        assert_eq!(e.message_created().unwrap(), None);
    }

    #[test]
    fn malformed_payload_becomes_a_fatal_error() {
        let mut e = Event::new("message:created", json!({}));
        e.payload = "not json".to_string();
        let err: HandlerError = e.payload_json().unwrap_err().into();
        assert!(!err.is_retryable());
        assert!(err.message().starts_with("unexpected event payload"));
    }

    #[test]
    fn payload_as_reads_typed_structs() {
        #[derive(serde::Deserialize)]
        struct P {
            n: u32,
        }
        let e = Event::new("x", json!({"n": 3}));
        assert_eq!(e.payload_as::<P>().unwrap().n, 3);
    }
}
