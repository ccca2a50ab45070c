//! Delivery bodies: the same event rendered as Standard Webhooks, Papercups or Airy JSON.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::Format;

/// What a body is built from: the event, possibly with a payload replaced by a transform.
pub struct BodyInput<'a> {
    /// Event id.
    pub event_id: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// RFC 3339 time of the event.
    pub occurred_at: &'a str,
    /// JSON object.
    pub payload: &'a RawValue,
}

#[derive(Serialize)]
struct Standard<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: &'a str,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct Papercups<'a> {
    event: &'a str,
    payload: &'a RawValue,
}

/// The message fields an Airy body is made of, as found in a payload (Airy or Papercups names).
#[derive(Deserialize, Default)]
struct MessageFields {
    id: Option<serde_json::Value>,
    conversation_id: Option<serde_json::Value>,
    customer_id: Option<serde_json::Value>,
    sender: Option<serde_json::Value>,
    source: Option<serde_json::Value>,
    sent_at: Option<String>,
    created_at: Option<String>,
    text: Option<serde_json::Value>,
    body: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Airy {
    conversation_id: serde_json::Value,
    id: serde_json::Value,
    sender: serde_json::Value,
    source: serde_json::Value,
    sent_at: String,
    text: serde_json::Value,
}

/// Renders the body of a delivery.
///
/// `airy` renders message events as Airy's flat message object, filling Airy fields from
/// Papercups names where needed (`text` ← `body`, `sent_at` ← `created_at`, a `customer_id`
/// becomes a `source_contact` sender); other event types fall back to the standard envelope.
pub fn render(format: Format, input: &BodyInput<'_>) -> Vec<u8> {
    let json = match format {
        Format::Standard => serde_json::to_vec(&standard(input)),
        Format::Papercups => serde_json::to_vec(&Papercups {
            event: input.event_type,
            payload: input.payload,
        }),
        Format::Airy if input.event_type.starts_with("message:") => {
            serde_json::to_vec(&airy(input))
        }
        Format::Airy => serde_json::to_vec(&standard(input)),
    };
    json.expect("serializing plain data and valid raw JSON")
}

fn standard<'a>(input: &'a BodyInput<'a>) -> Standard<'a> {
    Standard {
        event_type: input.event_type,
        timestamp: input.occurred_at,
        data: input.payload,
    }
}

fn airy(input: &BodyInput<'_>) -> Airy {
    use serde_json::Value;
    let m: MessageFields = serde_json::from_str(input.payload.get()).unwrap_or_default();
    let sender = m.sender.unwrap_or_else(|| match m.customer_id {
        Some(id) => serde_json::json!({ "id": id, "type": "source_contact" }),
        None => Value::Null,
    });
    Airy {
        conversation_id: m.conversation_id.unwrap_or(Value::Null),
        id: m
            .id
            .unwrap_or_else(|| Value::String(input.event_id.to_string())),
        sender,
        source: m.source.unwrap_or(Value::Null),
        sent_at: m
            .sent_at
            .or(m.created_at)
            .unwrap_or_else(|| input.occurred_at.to_string()),
        text: m.text.or(m.body).unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn render_json(format: Format, event_type: &str, payload: &str) -> Value {
        let raw = RawValue::from_string(payload.to_string()).unwrap();
        let input = BodyInput {
            event_id: "evt_1",
            event_type,
            occurred_at: "2020-07-20T14:18:08.584Z",
            payload: &raw,
        };
        serde_json::from_slice(&render(format, &input)).unwrap()
    }

    #[test]
    fn standard_envelope() {
        let v = render_json(Format::Standard, "message:created", r#"{"body":"hi"}"#);
        assert_eq!(
            v,
            json!({"type":"message:created","timestamp":"2020-07-20T14:18:08.584Z","data":{"body":"hi"}})
        );
    }

    #[test]
    fn papercups_envelope_matches_the_seed() {
        let v = render_json(
            Format::Papercups,
            "message:created",
            r#"{"body":"Hello world!","conversation_id":"c"}"#,
        );
        assert_eq!(
            v,
            json!({"event":"message:created","payload":{"body":"Hello world!","conversation_id":"c"}})
        );
    }

    #[test]
    fn airy_body_is_the_flat_message_object() {
        let v = render_json(
            Format::Airy,
            "message:created",
            r#"{"id":"m1","conversation_id":"4242424242","sender":{"id":"s","type":"source_contact"},
                "source":"FACEBOOK","sent_at":"2020-07-20T14:18:08.584Z","text":"Message to be sent","extra":1}"#,
        );
        assert_eq!(
            v,
            json!({"conversation_id":"4242424242","id":"m1","sender":{"id":"s","type":"source_contact"},
                   "source":"FACEBOOK","sent_at":"2020-07-20T14:18:08.584Z","text":"Message to be sent"})
        );
        let from_papercups = render_json(
            Format::Airy,
            "message:created",
            r#"{"body":"hi","created_at":"2020-09-01T23:00:00","conversation_id":"c","customer_id":"u"}"#,
        );
        assert_eq!(from_papercups["text"], "hi");
        assert_eq!(
            from_papercups["sender"],
            json!({"id":"u","type":"source_contact"})
        );
        assert_eq!(from_papercups["sent_at"], "2020-09-01T23:00:00");
        assert_eq!(from_papercups["id"], "evt_1");
    }
}
