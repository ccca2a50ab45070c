//! Auto-reply: answers customer messages through `send-message`.
//!
//! Subscribe it to `message:created`. For each message sent by a customer (sender type
//! `source_contact`) it sends `reply_text` into the message's conversation. It never answers
//! messages sent by the app, agents or plugins, nor any event a plugin caused, so it cannot
//! talk to itself or to another bot.
//!
//! # Configuration
//! | key | default | meaning |
//! |---|---|---|
//! | `reply_text` | `Thanks for your message! We will get back to you soon.` | the reply |
//! | `keywords` | empty | comma-separated; reply only if the text contains one of them (case-insensitive). Empty: reply to every message |
//! | `office_hours` | unset | `HH:MM-HH:MM` in local time, such as `09:00-17:00`; may wrap midnight (`22:00-06:00`) |
//! | `office_days` | `mon-sun` | days the office hours apply, such as `mon-fri` or `mon,wed,fri`; other days are outside hours |
//! | `timezone_offset` | `+00:00` | local time's offset from UTC, such as `+01:00` or `-05:30` |
//! | `reply_outside_hours_only` | `false` | reply only outside office hours (needs `office_hours`) |
//! | `outside_hours_text` | `reply_text` | the reply to send outside office hours |
//!
//! The time of a message is the event's `occurred_at`, so retries judge office hours the
//! same way as the first attempt.

mod hours;
mod settings;

use wasmhook_plugin_sdk::{Decision, Event, HandlerError, MessageCreated, Plugin, export_plugin};

pub use hours::{LocalTime, OfficeHours};
pub use settings::Settings;

/// The auto-reply plugin.
pub struct AutoReply;

impl Plugin for AutoReply {
    fn handle(event: Event) -> Result<Decision, HandlerError> {
        let Some(message) = event.message_created()? else {
            return Ok(Decision::Keep);
        };
        if event.is_caused_by_plugin() || !message.is_from_contact() {
            return Ok(Decision::Keep);
        }
        let Some(conversation_id) = message.conversation_id.as_deref() else {
            wasmhook_plugin_sdk::warn!(
                "message in event {} has no conversation_id; not replying",
                event.id
            );
            return Ok(Decision::Keep);
        };
        let settings = Settings::from_config()?;
        let now = LocalTime::from_rfc3339(&event.occurred_at, settings.utc_offset_minutes)
            .ok_or_else(|| {
                HandlerError::fatal(format!("unreadable occurred_at {:?}", event.occurred_at))
            })?;
        if let Some(text) = reply_for(&settings, &message, now) {
            let id = wasmhook_plugin_sdk::send_message(conversation_id, text)?;
            wasmhook_plugin_sdk::info!(
                "replied in conversation {conversation_id} with message {id}"
            );
        }
        Ok(Decision::Keep)
    }
}

export_plugin!(AutoReply);

// Per-event allocations are small and die with the instance: see the SDK's `arena`.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: wasmhook_plugin_sdk::arena::EventArena<{ 16 * 1024 }> =
    wasmhook_plugin_sdk::arena::EventArena::new();

/// The reply to send to a customer's `message` received at `now`, if any.
pub fn reply_for<'s>(
    settings: &'s Settings,
    message: &MessageCreated,
    now: LocalTime,
) -> Option<&'s str> {
    if !matches_keywords(&settings.keywords, message.text().unwrap_or("")) {
        return None;
    }
    let inside = settings
        .office_hours
        .as_ref()
        .is_none_or(|hours| hours.contains(now));
    match (inside, settings.reply_outside_hours_only) {
        (true, true) => None,
        (true, false) => Some(&settings.reply_text),
        (false, _) => Some(
            settings
                .outside_hours_text
                .as_deref()
                .unwrap_or(&settings.reply_text),
        ),
    }
}

/// Whether `text` contains one of `keywords` (already lowercase), ignoring case; true when
/// there are no keywords.
pub fn matches_keywords(keywords: &[String], text: &str) -> bool {
    if keywords.is_empty() {
        return true;
    }
    let text = text.to_lowercase();
    keywords.iter().any(|k| text.contains(k.as_str()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wasmhook_plugin_sdk::{Causation, testing};

    use super::*;

    fn customer_message(text: &str) -> Event {
        let mut e = Event::new(
            "message:created",
            json!({"id": "m1", "conversation_id": "c1", "text": text,
                   "sender": {"id": "u1", "type": "source_contact"}}),
        );
        e.occurred_at = "2025-01-06T10:30:00Z".into(); // a Monday
        e
    }

    fn sent_texts() -> Vec<String> {
        testing::sent_messages()
            .into_iter()
            .map(|m| m.text)
            .collect()
    }

    #[test]
    fn replies_to_customers_with_the_configured_text() {
        testing::set_config("reply_text", "We got it");
        assert_eq!(
            AutoReply::handle(customer_message("hello")),
            Ok(Decision::Keep)
        );
        assert_eq!(testing::sent_messages()[0].conversation_id, "c1");
        assert_eq!(sent_texts(), ["We got it"]);
    }

    #[test]
    fn never_answers_app_or_plugin_messages() {
        for kind in ["app", "plugin", "app_user"] {
            let mut e = customer_message("hello");
            e.payload =
                json!({"conversation_id": "c1", "text": "hi", "sender": {"id": "x", "type": kind}})
                    .to_string();
            AutoReply::handle(e).unwrap();
        }
        let mut caused = customer_message("hello");
        caused.causation = Some(Causation {
            plugin_id: "p".into(),
            event_id: "e".into(),
            depth: 1,
        });
        AutoReply::handle(caused).unwrap();
        assert!(testing::sent_messages().is_empty());
    }

    #[test]
    fn ignores_other_event_types() {
        AutoReply::handle(Event::new(
            "conversation:updated",
            json!({"conversation_id": "c1"}),
        ))
        .unwrap();
        assert!(testing::sent_messages().is_empty());
    }

    #[test]
    fn keywords_are_case_insensitive() {
        testing::set_config("keywords", "Price, refund ");
        AutoReply::handle(customer_message("What is the PRICE?")).unwrap();
        AutoReply::handle(customer_message("good morning")).unwrap();
        assert_eq!(sent_texts().len(), 1);
    }

    #[test]
    fn outside_hours_only_replies_outside_office_hours() {
        testing::set_config("office_hours", "09:00-17:00");
        testing::set_config("timezone_offset", "+01:00");
        testing::set_config("reply_outside_hours_only", "true");
        testing::set_config("outside_hours_text", "We are closed");
        AutoReply::handle(customer_message("hi")).unwrap(); // 11:30 local: open
        let mut late = customer_message("hi");
        late.occurred_at = "2025-01-06T16:30:00Z".into(); // 17:30 local: closed
        AutoReply::handle(late).unwrap();
        assert_eq!(sent_texts(), ["We are closed"]);
    }

    #[test]
    fn send_failures_surface_with_their_retryability() {
        testing::fail_send_with(wasmhook_plugin_sdk::SendError::Unavailable("db".into()));
        assert!(
            AutoReply::handle(customer_message("hi"))
                .unwrap_err()
                .is_retryable()
        );
    }

    #[test]
    fn bad_config_is_a_fatal_error() {
        testing::set_config("office_hours", "9 to 5");
        assert!(
            !AutoReply::handle(customer_message("hi"))
                .unwrap_err()
                .is_retryable()
        );
    }
}
