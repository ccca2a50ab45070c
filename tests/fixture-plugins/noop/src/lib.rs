//! Test fixture: keeps every event, calls nothing. The cheapest possible plugin, for
//! measuring the host's own per-event cost.

use wasmhook_plugin_sdk::{Decision, Event, HandlerError, Plugin, export_plugin};

/// The no-op plugin.
pub struct Noop;

impl Plugin for Noop {
    fn handle(_event: Event) -> Result<Decision, HandlerError> {
        Ok(Decision::Keep)
    }
}

export_plugin!(Noop);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything() {
        let event = Event::new("message:created", serde_json::json!({"text": "x"}));
        assert_eq!(Noop::handle(event), Ok(Decision::Keep));
    }
}
