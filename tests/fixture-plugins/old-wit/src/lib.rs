//! Test fixture: a component built against an earlier version of the plugin WIT, to show that
//! the host still links components built before the WIT grew.
//!
//! `wit/plugin.wit` here is a frozen copy of `wit/plugin.wit` as it was before `kv.increment`,
//! `kv.set-if` and the `increment-error` type were added (commit b77aca4). Do not update it:
//! add a new fixture for a newer baseline instead. Each WIT change must be additive (new
//! functions, new types); changing an existing type, for example adding a case to `kv-error`,
//! makes this component fail to upload.
//!
//! The plugin calls every host function of the old WIT, so every type it shares with the host
//! is checked (`kv-error` and `send-error` on their error paths too), and returns `replace`
//! with what it saw:
//! `{"stored": <kv get after set>, "invalid_key": "<kv error of set with an empty key>",
//! "after_delete": <kv get after delete>, "config": <config "value">,
//! "send": "<send-message error for an unknown conversation>", "event_id": "<id>"}`.
//! Natively it is empty.

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs, clippy::all)]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "plugin" });

    use exports::wasmhook::plugin::handler::Guest;
    use serde_json::json;
    use wasmhook::plugin::types::{Decision, Event, HandlerError, KvError, SendError};
    use wasmhook::plugin::{host, kv};

    fn fatal(e: KvError) -> HandlerError {
        HandlerError {
            message: format!("old-wit: {e:?}"),
            retryable: false,
        }
    }

    struct OldWit;

    impl Guest for OldWit {
        fn handle(event: Event) -> Result<Decision, HandlerError> {
            // At the least severe level kept, so the line is kept whatever the plugin's level.
            host::log(
                host::min_log_level(),
                &format!("old-wit: handling {}", event.id),
            );
            let send = match host::send_message("old-wit-no-such-conversation", "hi") {
                Err(SendError::UnknownConversation) => "unknown-conversation".to_string(),
                other => format!("unexpected: {other:?}"),
            };
            kv::set("old-wit", event.id.as_bytes()).map_err(fatal)?;
            let stored = kv::get("old-wit").map_err(fatal)?;
            let invalid_key = match kv::set("", b"x") {
                Err(KvError::InvalidKey) => "invalid-key".to_string(),
                other => format!("unexpected: {other:?}"),
            };
            kv::delete("old-wit").map_err(fatal)?;
            let after_delete = kv::get("old-wit").map_err(fatal)?;
            let text = |v: Option<Vec<u8>>| v.map(|b| String::from_utf8_lossy(&b).into_owned());
            let payload = json!({
                "stored": text(stored),
                "invalid_key": invalid_key,
                "after_delete": text(after_delete),
                "config": host::config_get("value"),
                "send": send,
                "event_id": event.id,
            });
            Ok(Decision::Replace(payload.to_string()))
        }
    }

    export!(OldWit);
}
