//! {{name}}: a wasmhook plugin.
//!
//! It tags every customer message with the plugin's name and a greeting from its configuration
//! (`greeting`, default "hello") and leaves every other event unchanged. Change `handle` to do
//! what your plugin should: reply with `send_message`, keep state with `kv`, drop events.

use wasmhook_plugin_sdk::{Decision, Event, HandlerError, Plugin, config, export_plugin, info};

/// The plugin.
pub struct {{type_name}};

impl Plugin for {{type_name}} {
    fn handle(event: Event) -> Result<Decision, HandlerError> {
        let Some(message) = event.message_created()? else {
            return Ok(Decision::Keep);
        };
        if !message.is_from_contact() || event.is_caused_by_plugin() {
            return Ok(Decision::Keep);
        }
        let mut payload = event.payload_json()?;
        payload["tagged_by"] = "{{name}}".into();
        payload["greeting"] = config::get_or("greeting", "hello".to_string())?.into();
        info!("tagged {} in conversation {:?}", event.id, message.conversation_id);
        Decision::replace_json(&payload)
    }
}

export_plugin!({{type_name}});

// Per-event allocations are small and die with the instance: a bump allocator over a static
// buffer makes them cheaper (it falls back to the system allocator when full).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: wasmhook_plugin_sdk::arena::EventArena<{ 16 * 1024 }> =
    wasmhook_plugin_sdk::arena::EventArena::new();

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wasmhook_plugin_sdk::testing;

    use super::*;

    fn customer_message() -> Event {
        Event::new(
            "message:created",
            json!({"conversation_id": "c1", "text": "hi",
                   "sender": {"id": "u1", "type": "source_contact"}}),
        )
    }

    #[test]
    fn tags_customer_messages_with_the_configured_greeting() {
        testing::set_config("greeting", "welcome");
        let Decision::Replace(payload) = {{type_name}}::handle(customer_message()).unwrap() else {
            panic!("expected a replacement");
        };
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(payload["tagged_by"], "{{name}}");
        assert_eq!(payload["greeting"], "welcome");
        assert_eq!(payload["text"], "hi");
        assert_eq!(testing::logs().len(), 1);
    }

    #[test]
    fn keeps_other_events() {
        let event = Event::new("conversation:created", json!({"conversation_id": "c1"}));
        assert_eq!({{type_name}}::handle(event).unwrap(), Decision::Keep);
    }
}
