//! First-contact greeter: sends a greeting the first time a customer writes in a conversation.
//!
//! Subscribe it to `message:created`. On a customer's message (sender type `source_contact`,
//! not caused by a plugin) in a conversation nobody has claimed yet, it claims the conversation
//! in its key-value store under `greeted/<conversation id>`, sends `greeting`, and then records
//! the greeting's message id under the same key. The store outlives plugin instances and
//! versions, so each conversation is greeted once.
//!
//! The claim is a compare-and-swap ([`kv::set_json_if_absent`]): of two instances handling two
//! messages of one conversation at the same time (a subscription with `"ordering": "none"`, or a
//! customer typing fast), exactly one wins the claim and greets; the other sees the key taken
//! and does nothing. Reading the key and then writing it would let both read "not greeted".
//!
//! # Configuration
//! | key | default | meaning |
//! |---|---|---|
//! | `greeting` | `Hi! Thanks for reaching out. Someone will be with you shortly.` | the greeting |
//!
//! # Failure behaviour
//! - Claiming fails (the store is unavailable): nothing was sent; the error is retryable, so the
//!   retry tries again.
//! - Sending fails after the claim: the claim is released (deleted) before the error is
//!   returned, so the retry (for a retryable error) or the customer's next message greets. If
//!   releasing fails too, the claim names the event that made it and has no message id yet, and
//!   a retry of that same event takes it up again and greets (after a non-retryable error there
//!   is no retry, and the conversation stays claimed without a greeting; the log says so).
//! - Recording the message id fails after a successful send: the plugin logs an error and still
//!   succeeds. The claim stands, so nobody greets again.
//! - The instance dies between sending and recording (a trap, the deadline): the retry of that
//!   event finds its own unfinished claim and greets a second time. Delivery is at least once;
//!   this is the one window where it shows.

use serde::{Deserialize, Serialize};
use wasmhook_plugin_sdk::{Decision, Event, HandlerError, Plugin, config, export_plugin, kv};

const DEFAULT_GREETING: &str = "Hi! Thanks for reaching out. Someone will be with you shortly.";

/// The first-contact greeter plugin.
pub struct FirstContactGreeter;

/// What the store keeps per conversation: first the claim, then the greeting's id.
///
/// Records written by earlier versions of the plugin (`message_id` and `at` only) still read:
/// they count as finished greetings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeted {
    /// The event whose handling claimed the conversation (empty in records of older versions).
    #[serde(default)]
    pub event_id: String,
    /// The greeting message's id; `None` while the claim is taken but the greeting is not yet
    /// recorded as sent.
    #[serde(default)]
    pub message_id: Option<String>,
    /// The `occurred_at` of the customer message that triggered the greeting.
    pub at: String,
}

impl Greeted {
    /// The claim made for `event` before sending.
    pub fn claim(event: &Event) -> Greeted {
        Greeted {
            event_id: event.id.clone(),
            message_id: None,
            at: event.occurred_at.clone(),
        }
    }
}

/// The store key recording that `conversation_id` was greeted.
pub fn greeted_key(conversation_id: &str) -> String {
    format!("greeted/{conversation_id}")
}

/// Whether the conversation under `key` is claimed by an earlier attempt at this same event that
/// did not record a greeting: a retry after a failed release may then take the claim up again.
fn own_unfinished_claim(key: &str, event: &Event) -> Result<bool, HandlerError> {
    if event.attempt <= 1 {
        return Ok(false); // a first attempt cannot have claimed before
    }
    Ok(match kv::get_json::<Greeted>(key) {
        Ok(Some(record)) => record.event_id == event.id && record.message_id.is_none(),
        Ok(None) | Err(kv::KvError::Json(_)) => false,
        Err(e) => return Err(e.into()),
    })
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
        let claim = Greeted::claim(&event);
        if !kv::set_json_if_absent(&key, &claim)? && !own_unfinished_claim(&key, &event)? {
            return Ok(Decision::Keep); // greeted already, or being greeted by another instance
        }
        let greeting = config::get("greeting").unwrap_or_else(|| DEFAULT_GREETING.to_string());
        let message_id = match wasmhook_plugin_sdk::send_message(conversation_id, &greeting) {
            Ok(id) => id,
            Err(e) => {
                if let Err(release) = kv::delete(&key) {
                    wasmhook_plugin_sdk::error!(
                        "could not release the claim on conversation {conversation_id} after a failed send: {release}"
                    );
                }
                return Err(e.into());
            }
        };
        let record = Greeted {
            message_id: Some(message_id),
            ..claim
        };
        match kv::set_json(&key, &record) {
            Ok(()) => wasmhook_plugin_sdk::info!("greeted conversation {conversation_id}"),
            Err(e) => wasmhook_plugin_sdk::error!(
                "greeted conversation {conversation_id} but could not record the message id: {e}"
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
        assert_eq!(stored.message_id.as_deref(), Some("msg_test_1"));
        assert_eq!(stored.event_id, "evt_test");
    }

    #[test]
    fn ignores_app_messages() {
        FirstContactGreeter::handle(message("c1", "app")).unwrap();
        assert!(testing::sent_messages().is_empty());
        assert!(testing::kv_contents().is_empty());
    }

    #[test]
    fn failed_send_releases_the_claim_so_a_retry_greets() {
        testing::fail_send_with(SendError::Unavailable("busy".into()));
        assert!(
            FirstContactGreeter::handle(message("c1", "source_contact"))
                .unwrap_err()
                .is_retryable()
        );
        assert!(testing::kv_contents().is_empty(), "claim released");
        testing::reset();
        let mut retry = message("c1", "source_contact");
        retry.attempt = 2;
        FirstContactGreeter::handle(retry).unwrap();
        assert_eq!(testing::sent_messages().len(), 1);
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
    fn logs_when_recording_fails_after_sending_and_keeps_the_claim() {
        // Room for the claim, not for the record with the message id: claiming works, recording not.
        let event = message("c1", "source_contact");
        let claim = serde_json::to_vec(&Greeted::claim(&event)).unwrap();
        testing::set_kv_value_limit(claim.len() as u64);
        assert_eq!(FirstContactGreeter::handle(event), Ok(Decision::Keep));
        assert_eq!(testing::sent_messages().len(), 1);
        assert_eq!(testing::logs().last().unwrap().0, Level::Error);
        // The claim stands: the next message does not greet again.
        FirstContactGreeter::handle(message("c1", "source_contact")).unwrap();
        assert_eq!(testing::sent_messages().len(), 1);
    }

    /// Two events of one conversation handled at the same time: the other instance won the
    /// claim (and has not sent yet), so this one must not greet.
    #[test]
    fn a_conversation_claimed_by_another_instance_is_not_greeted_again() {
        let mut first = message("c1", "source_contact");
        first.id = "evt_first".into();
        kv::set_json(&greeted_key("c1"), &Greeted::claim(&first)).unwrap();
        for attempt in [1, 2] {
            let mut second = message("c1", "source_contact");
            second.id = "evt_second".into();
            second.attempt = attempt;
            assert_eq!(FirstContactGreeter::handle(second), Ok(Decision::Keep));
        }
        assert!(testing::sent_messages().is_empty());
        let stored: Greeted = kv::get_json(&greeted_key("c1")).unwrap().unwrap();
        assert_eq!(stored, Greeted::claim(&first), "the claim is untouched");
    }

    /// A retry of the event that claimed, after its release failed, takes its claim up again.
    #[test]
    fn a_retry_takes_up_its_own_unfinished_claim() {
        let mut event = message("c1", "source_contact");
        kv::set_json(&greeted_key("c1"), &Greeted::claim(&event)).unwrap();
        event.attempt = 2;
        FirstContactGreeter::handle(event).unwrap();
        assert_eq!(testing::sent_messages().len(), 1);
        let stored: Greeted = kv::get_json(&greeted_key("c1")).unwrap().unwrap();
        assert_eq!(stored.message_id.as_deref(), Some("msg_test_1"));
    }

    #[test]
    fn records_of_earlier_versions_count_as_greeted() {
        kv::set(
            &greeted_key("c1"),
            r#"{"message_id":"msg_old","at":"2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let mut retry = message("c1", "source_contact");
        retry.attempt = 3;
        FirstContactGreeter::handle(retry).unwrap();
        assert!(testing::sent_messages().is_empty());
    }
}
