//! PII redactor: a transform plugin that masks personal data in message text before it is
//! delivered.
//!
//! It masks e-mail addresses (as `[email]`), payment card numbers (13–19 digits, optionally
//! grouped with spaces or dashes, that pass the Luhn check; as `[card]`) and phone numbers
//! (7–15 digits, optionally with a leading `+` and spaces, dashes or parentheses; as
//! `[phone]`). Digits inside words (`ID12345678`) and ISO-shaped dates (`2025-01-31`) are left
//! alone. It returns `replace` with the masked payload, or `keep` when nothing was masked. The
//! replaced payload is the original text with only the masked strings changed: every other
//! field, the key order and the formatting stay as they were.
//!
//! Hand-written scanners rather than the `regex` crate keep the component small and its
//! instantiation cheap (see `scan`); the payload is not parsed into a tree, only the
//! configured fields are decoded (see `fields`).
//!
//! # Configuration
//! | key | default | meaning |
//! |---|---|---|
//! | `kinds` | `email,phone,card` | which kinds of data to mask |
//! | `fields` | `text,body` | comma-separated payload fields to scan: top-level keys, or JSON pointers such as `/message/content` |
//!
//! Fields that are missing or are not strings are skipped; every event type is scanned.

pub mod fields;
pub mod scan;

use wasmhook_plugin_sdk::config::{self, ConfigError};
use wasmhook_plugin_sdk::{Decision, Event, HandlerError, Plugin, export_plugin};

pub use scan::Redactor;

/// The PII redactor plugin.
pub struct PiiRedactor;

impl Plugin for PiiRedactor {
    fn handle(event: Event) -> Result<Decision, HandlerError> {
        let settings = Settings::current()?;
        match redact_fields(&settings.redactor, &event.payload, settings.fields()) {
            None => Ok(Decision::Keep),
            Some((payload, masked)) => {
                wasmhook_plugin_sdk::debug!("masked {masked} field(s) of event {}", event.id);
                Ok(Decision::Replace(payload))
            }
        }
    }
}

/// The plugin's configuration, read.
struct Settings {
    redactor: Redactor,
    /// `fields` as configured, if it is.
    fields: Option<String>,
}

impl Settings {
    fn read() -> Result<Settings, ConfigError> {
        let redactor = match config::get("kinds") {
            None => Redactor::ALL,
            Some(raw) => Redactor::from_kinds(&raw).ok_or_else(|| {
                ConfigError::new("kinds", "expected a list of `email`, `phone`, `card`")
            })?,
        };
        Ok(Settings {
            redactor,
            fields: config::get("fields"),
        })
    }

    fn fields(&self) -> &str {
        self.fields.as_deref().unwrap_or("text,body")
    }

    /// The settings of this instance: read by its first event. An instance's configuration
    /// never changes (a change starts new instances), so an instance reused for many events
    /// (`"instances": "reuse"`) reads it once; they are kept outside the event arena, which
    /// then starts over after every event.
    #[cfg(target_arch = "wasm32")]
    fn current() -> Result<&'static Settings, ConfigError> {
        static SETTINGS: std::sync::OnceLock<Result<Settings, ConfigError>> =
            std::sync::OnceLock::new();
        SETTINGS
            .get_or_init(|| wasmhook_plugin_sdk::arena::kept(Settings::read))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Natively (unit tests, which change the configuration between calls) the settings are
    /// read every time.
    #[cfg(not(target_arch = "wasm32"))]
    fn current() -> Result<Settings, ConfigError> {
        Settings::read()
    }
}

export_plugin!(PiiRedactor);

// An event's allocations (the event itself, the masked texts, the new payload) are a few KiB
// and die with the instance: a bump allocator serves them for less than dlmalloc.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: wasmhook_plugin_sdk::arena::EventArena<{ 16 * 1024 }> =
    wasmhook_plugin_sdk::arena::EventArena::new();

/// Masks the string values of `fields` (comma-separated keys or JSON pointers) in the JSON
/// text `payload`. Returns the new payload and how many fields changed, or `None` if none did.
pub fn redact_fields(redactor: &Redactor, payload: &str, fields: &str) -> Option<(String, usize)> {
    let parsed = fields::Payload::new(payload);
    let mut edits: Vec<(fields::Span, String)> = Vec::new();
    for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if let Some((span, text)) = parsed.find_string(field)
            && !edits.iter().any(|(s, _)| *s == span)
            && let Some(masked) = redactor.redact(&text)
        {
            edits.push((span, masked));
        }
    }
    if edits.is_empty() {
        return None;
    }
    let changed = edits.len();
    Some((fields::splice(payload, edits), changed))
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
    fn everything_but_the_masked_strings_stays_byte_for_byte() {
        let mut event = Event::new("message:created", json!({}));
        event.payload =
            r#"{"z": 1.50, "text": "to x@y.io", "a": [1, 2], "also": "/text"}"#.to_string();
        testing::set_config("fields", "text, /text");
        match PiiRedactor::handle(event).unwrap() {
            Decision::Replace(p) => assert_eq!(
                p,
                r#"{"z": 1.50, "text": "to [email]", "a": [1, 2], "also": "/text"}"#
            ),
            other => panic!("expected replace, got {other:?}"),
        }
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
