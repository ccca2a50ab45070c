//! First-contact greeter: sends a greeting the first time a customer writes in a conversation.
//!
//! Subscribe it to `message:created`. On a customer's message (sender type `source_contact`,
//! not caused by a plugin) in a conversation it has not greeted yet, it sends `greeting` and
//! records the conversation in its key-value store under `greeted/<conversation id>`. The
//! store outlives plugin instances and versions, so each conversation is greeted once.
//!
//! # Configuration
//! | key | default | meaning |
//! |---|---|---|
//! | `greeting` | `Hi! Thanks for reaching out. Someone will be with you shortly.` | the greeting |
//!
//! # Failure behaviour
//! The greeting is sent before the conversation is recorded. If sending fails in a way worth
//! retrying, the error is retryable and nothing was recorded, so the retry greets. If
//! recording fails after a successful send, the plugin logs an error and still succeeds: a
//! retry would greet twice, while the worst case now is a second greeting on the customer's
//! next message.

use serde::{Deserialize, Serialize};
use wasmhook_plugin_sdk::{Decision, Event, HandlerError, Plugin, config, export_plugin, kv};

const DEFAULT_GREETING: &str = "Hi! Thanks for reaching out. Someone will be with you shortly.";

/// The first-contact greeter plugin.
pub struct FirstContactGreeter;

/// What the store keeps per greeted conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeted {
    /// The greeting message's id.
    pub message_id: String,
    /// The `occurred_at` of the customer message that triggered the greeting.
    pub at: String,
}

/// The store key recording that `conversation_id` was greeted.
pub fn greeted_key(conversation_id: &str) -> String {
    format!("greeted/{conversation_id}")
}

impl Plugin for FirstContactGreeter {
    fn handle(event: Event) -> Result<Decision, HandlerError> {
        let Some(message) = event.message_created()? else {
            return Ok(Decision::Keep);
        };
        if event.is_caused_by_plugin() || !message.is_from_contact() {
            return Ok(Decision::Keep);
        }
        let Some(conversation_id) = message.conversation_id.as_deref() else {
            return Ok(Decision::Keep);
        };
        let key = greeted_key(conversation_id);
        if kv::get(&key)?.is_some() {
            return Ok(Decision::Keep);
        }
        let greeting = config::get("greeting").unwrap_or_else(|| DEFAULT_GREETING.to_string());
        let message_id = wasmhook_plugin_sdk::send_message(conversation_id, &greeting)?;
        let record = Greeted {
            message_id,
            at: event.occurred_at.clone(),
        };
        match kv::set_json(&key, &record) {
            Ok(()) => wasmhook_plugin_sdk::info!("greeted conversation {conversation_id}"),
            Err(e) => wasmhook_plugin_sdk::error!(
                "greeted conversation {conversation_id} but could not record it: {e}"
            ),
        }
        Ok(Decision::Keep)
    }
}

export_plugin!(FirstContactGreeter);

// Per-event allocations are small and die with the instance: see the SDK's `arena`.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: wasmhook_plugin_sdk::arena::EventArena<{ 16 * 1024 }> =
    wasmhook_plugin_sdk::arena::EventArena::new();

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wasmhook_plugin_sdk::kv::KvError;
    use wasmhook_plugin_sdk::log::Level;
    use wasmhook_plugin_sdk::{SendError, testing};

    use super::*;

    fn message(conversation: &str, sender_type: &str) -> Event {
        Event::new(
            "message:created",
            json!({"conversation_id": conversation, "text": "hi", "sender": {"id": "u", "type": sender_type}}),
        )
    }

    #[test]
    fn greets_each_conversation_once() {
        testing::set_config("greeting", "Welcome!");
        for conversation in ["c1", "c1", "c2", "c1"] {
            FirstContactGreeter::handle(message(conversation, "source_contact")).unwrap();
        }
        let sent: Vec<_> = testing::sent_messages()
            .into_iter()
            .map(|m| (m.conversation_id, m.text))
            .collect();
        assert_eq!(
            sent,
            [
                ("c1".into(), "Welcome!".into()),
                ("c2".into(), "Welcome!".into())
            ]
        );
        let stored: Greeted = kv::get_json(&greeted_key("c1")).unwrap().unwrap();
        assert_eq!(stored.message_id, "msg_test_1");
    }

    #[test]
    fn ignores_app_messages() {
        FirstContactGreeter::handle(message("c1", "app")).unwrap();
        assert!(testing::sent_messages().is_empty());
        assert!(testing::kv_contents().is_empty());
    }

    #[test]
    fn failed_send_records_nothing_so_a_retry_greets() {
        testing::fail_send_with(SendError::Unavailable("busy".into()));
        assert!(
            FirstContactGreeter::handle(message("c1", "source_contact"))
                .unwrap_err()
                .is_retryable()
        );
        assert!(testing::kv_contents().is_empty());
    }

    #[test]
    fn unreadable_store_is_retryable_and_sends_nothing() {
        testing::fail_kv_with(KvError::Unavailable("locked".into()));
        assert!(
            FirstContactGreeter::handle(message("c1", "source_contact"))
                .unwrap_err()
                .is_retryable()
        );
        assert!(testing::sent_messages().is_empty());
    }

    #[test]
    fn logs_when_recording_fails_after_sending() {
        testing::set_kv_value_limit(4); // too small for the record: reading works, writing does not
        assert_eq!(
            FirstContactGreeter::handle(message("c1", "source_contact")),
            Ok(Decision::Keep)
        );
        assert_eq!(testing::sent_messages().len(), 1);
        assert_eq!(testing::logs().last().unwrap().0, Level::Error);
    }
}
