//! Router: a transform plugin that keeps or drops events by configurable rules.
//!
//! Rules are checked in order and the first that matches decides; when none matches, the
//! `default` action applies. A dropped event is recorded as `filtered` and not delivered.
//!
//! # Configuration
//! | key | default | meaning |
//! |---|---|---|
//! | `rules` | `[]` | a JSON array of rules (below) |
//! | `default` | `keep` | `keep` or `drop`: the action when no rule matches |
//!
//! A rule is a JSON object; every condition it names must hold for it to match:
//! - `type`: the event type, `*` matching any run of characters (`message:*`, `*:created`);
//! - `field`: a JSON pointer into the payload (`/source`, `/sender/type`), tested by one of
//!   - `equals`: any JSON value, compared exactly (`"facebook"`, `3`, `null`);
//!   - `one_of`: an array of JSON values;
//!   - `contains`: a substring of a string field (case-sensitive);
//!   - `exists`: `true` or `false`.
//!
//!   With `field` and no test, the rule matches when the field exists.
//! - `action`: `keep` or `drop` (required).
//!
//! ```json
//! [{"type": "message:*", "field": "/source", "equals": "facebook", "action": "drop"},
//!  {"type": "conversation:*", "action": "keep"}]
//! ```
//!
//! Unknown rule keys, a test without `field`, or more than one test in a rule are
//! configuration errors: the delivery fails (not retried) and the error names the rule.

mod rules;

use wasmhook_plugin_sdk::config::{self, ConfigError};
use wasmhook_plugin_sdk::{Decision, Event, HandlerError, Plugin, export_plugin};

pub use rules::{Action, Rule, Rules};

/// The router plugin.
pub struct Router;

impl Plugin for Router {
    fn handle(event: Event) -> Result<Decision, HandlerError> {
        let rules = match config::get("rules") {
            None => Rules::default(),
            Some(raw) => Rules::parse(&raw).map_err(|e| ConfigError::new("rules", e))?,
        };
        let default = config::get_or("default", Action::Keep)?;
        let payload = event.payload_json()?;
        let action = match rules.first_match(&event.event_type, &payload) {
            Some((index, action)) => {
                wasmhook_plugin_sdk::debug!("event {} matched rule {index}: {action}", event.id);
                action
            }
            None => default,
        };
        Ok(match action {
            Action::Keep => Decision::Keep,
            Action::Drop => Decision::Drop,
        })
    }
}

export_plugin!(Router);

// Per-event allocations are small and die with the instance: see the SDK's `arena`.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: wasmhook_plugin_sdk::arena::EventArena<{ 16 * 1024 }> =
    wasmhook_plugin_sdk::arena::EventArena::new();

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wasmhook_plugin_sdk::testing;

    use super::*;

    #[test]
    fn drops_by_rule_and_keeps_by_default() {
        testing::set_config(
            "rules",
            r#"[{"type":"message:*","field":"/source","equals":"facebook","action":"drop"}]"#,
        );
        let fb = Event::new("message:created", json!({"source": "facebook"}));
        let web = Event::new("message:created", json!({"source": "chatplugin"}));
        assert_eq!(Router::handle(fb), Ok(Decision::Drop));
        assert_eq!(Router::handle(web), Ok(Decision::Keep));
    }

    #[test]
    fn default_drop_makes_an_allow_list() {
        testing::set_config("rules", r#"[{"type":"conversation:*","action":"keep"}]"#);
        testing::set_config("default", "drop");
        assert_eq!(
            Router::handle(Event::new("conversation:updated", json!({}))),
            Ok(Decision::Keep)
        );
        assert_eq!(
            Router::handle(Event::new("message:created", json!({}))),
            Ok(Decision::Drop)
        );
    }

    #[test]
    fn no_rules_keeps_everything() {
        assert_eq!(
            Router::handle(Event::new("message:created", json!({}))),
            Ok(Decision::Keep)
        );
    }

    #[test]
    fn malformed_rules_are_fatal_config_errors() {
        testing::set_config("rules", r#"[{"type":"x","action":"delete"}]"#);
        let err = Router::handle(Event::new("x", json!({}))).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message().contains("rules"), "{}", err.message());
        testing::set_config("rules", "[]");
        testing::set_config("default", "maybe");
        assert!(Router::handle(Event::new("x", json!({}))).is_err());
    }
}
