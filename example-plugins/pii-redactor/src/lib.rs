//! PII redactor: a transform plugin that masks personal data in message text before it is
//! delivered.
//!
//! It masks e-mail addresses (as `[email]`), payment card numbers (13–19 digits, optionally
//! grouped with spaces or dashes, that pass the Luhn check; as `[card]`) and phone numbers
//! (7–15 digits, optionally with a leading `+` and spaces, dashes or parentheses; as
//! `[phone]`). Digits inside words (`ID12345678`) and ISO-shaped dates (`2025-01-31`) are left
//! alone. It returns `replace` with the masked payload, or `keep` when nothing was masked. The
//! replaced payload keeps every other field; its keys come out in sorted order.
//!
//! Hand-written scanners rather than the `regex` crate keep the component small and its
//! instantiation cheap; see `scan`.
//!
//! # Configuration
//! | key | default | meaning |
//! |---|---|---|
//! | `kinds` | `email,phone,card` | which kinds of data to mask |
//! | `fields` | `text,body` | comma-separated payload fields to scan: top-level keys, or JSON pointers such as `/message/content` |
//!
//! Fields that are missing or are not strings are skipped; every event type is scanned.

pub mod scan;

use wasmhook_plugin_sdk::config::{self, ConfigError};
use wasmhook_plugin_sdk::{Decision, Event, HandlerError, Plugin, export_plugin};

pub use scan::Redactor;

/// The PII redactor plugin.
pub struct PiiRedactor;

impl Plugin for PiiRedactor {
    fn handle(event: Event) -> Result<Decision, HandlerError> {
        let redactor = match config::get("kinds") {
            None => Redactor::ALL,
            Some(raw) => Redactor::from_kinds(&raw).ok_or_else(|| {
                ConfigError::new("kinds", "expected a list of `email`, `phone`, `card`")
            })?,
        };
        let fields = config::get("fields").unwrap_or_else(|| "text,body".to_string());
        let mut payload = event.payload_json()?;
        let masked = redact_fields(&redactor, &mut payload, &fields);
        if masked == 0 {
            return Ok(Decision::Keep);
        }
        wasmhook_plugin_sdk::debug!("masked {masked} field(s) of event {}", event.id);
        Decision::replace_json(&payload)
    }
}

export_plugin!(PiiRedactor);

/// Masks the string values of `fields` (comma-separated keys or JSON pointers) in `payload`.
/// Returns how many fields changed.
pub fn redact_fields(redactor: &Redactor, payload: &mut serde_json::Value, fields: &str) -> usize {
    let mut changed = 0;
    for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let target = if field.starts_with('/') {
            payload.pointer_mut(field)
        } else {
            payload.get_mut(field)
        };
        if let Some(serde_json::Value::String(text)) = target
            && let Some(masked) = redactor.redact(text)
        {
            *text = masked;
            changed += 1;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wasmhook_plugin_sdk::testing;

    use super::*;

    fn replaced(d: Decision) -> serde_json::Value {
        match d {
            Decision::Replace(p) => serde_json::from_str(&p).unwrap(),
            other => panic!("expected replace, got {other:?}"),
        }
    }

    #[test]
    fn masks_text_and_body_and_keeps_other_fields() {
        let event = Event::new(
            "message:created",
            json!({"id": "m1", "text": "mail me at jo@example.com", "body": "call +49 151 2345 6789",
                   "sender": {"id": "a@b.co", "type": "source_contact"}}),
        );
        let p = replaced(PiiRedactor::handle(event).unwrap());
        assert_eq!(p["text"], "mail me at [email]");
        assert_eq!(p["body"], "call [phone]");
        assert_eq!(
            p["sender"]["id"], "a@b.co",
            "only configured fields are touched"
        );
        assert_eq!(p["id"], "m1");
    }

    #[test]
    fn keeps_events_without_pii() {
        let event = Event::new(
            "message:created",
            json!({"text": "see you on 2025-01-31 at 10:00"}),
        );
        assert_eq!(PiiRedactor::handle(event), Ok(Decision::Keep));
    }

    #[test]
    fn fields_and_kinds_are_configurable() {
        testing::set_config("fields", "/message/content, text");
        testing::set_config("kinds", "card");
        let event = Event::new(
            "message:created",
            json!({"message": {"content": "card 4111 1111 1111 1111"}, "text": "x@y.io"}),
        );
        let p = replaced(PiiRedactor::handle(event).unwrap());
        assert_eq!(p["message"]["content"], "card [card]");
        assert_eq!(p["text"], "x@y.io");
    }

    #[test]
    fn unknown_kinds_are_a_config_error() {
        testing::set_config("kinds", "email,ssn");
        let err =
            PiiRedactor::handle(Event::new("message:created", json!({"text": "a"}))).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message().contains("kinds"));
    }
}
