//! The known chat event types, each with an example payload (the shapes the README's event
//! table describes): what the console offers in its pickers and the command line sends with
//! `--example` (`wasmhook send`, `wasmhook plugin run`). Kept in one place so both show the same.

use serde_json::{Value, json};

/// The known event types, in the order pickers list them.
pub const KNOWN_TYPES: &[&str] = &[
    "message:created",
    "conversation:created",
    "conversation:updated",
];

/// An example payload of `event_type` (an empty object for a type it does not know). The
/// message carries an e-mail address and a phone number, so a redacting transform shows.
pub fn payload(event_type: &str) -> Value {
    match event_type {
        "message:created" => json!({
            "id": "example-message-1",
            "conversation_id": "example-conversation-1",
            "customer_id": "example-customer-1",
            "body": "Hello! Please write to jane.doe@example.com or call +1 415 555 0100.",
            "text": "Hello! Please write to jane.doe@example.com or call +1 415 555 0100.",
            "sender": {"id": "example-customer-1", "type": "source_contact"},
            "source": "chat_widget",
            "created_at": "2026-01-01T12:00:00Z"
        }),
        "conversation:created" => json!({
            "conversation_id": "example-conversation-1",
            "customer_id": "example-customer-1",
            "source": "chat_widget"
        }),
        "conversation:updated" => json!({
            "conversation_id": "example-conversation-1",
            "status": "closed",
            "assignee_id": "example-agent-1"
        }),
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_known_type_has_an_object_payload() {
        for t in super::KNOWN_TYPES {
            let p = super::payload(t);
            assert!(p.is_object() && !p.as_object().unwrap().is_empty(), "{t}");
            assert!(crate::events::valid_event_type(t));
        }
    }
}
