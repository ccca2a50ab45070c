//! The payload of `message:created` events, in the shapes of both chat platforms wasmhook
//! understands: Airy (`id`, `sender`, `source`, `sent_at`, `text`) and Papercups (`body`,
//! `created_at`, `conversation_id`, `customer_id`, `user_id`). Every field is optional, and
//! fields this struct does not name are kept in [`MessageCreated::extra`].

use serde::{Deserialize, Serialize};

/// A `message:created` payload. Read it with [`crate::Event::message_created`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageCreated {
    /// Message id (Airy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Who sent the message (Airy, and messages sent through wasmhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Sender>,
    /// The channel, such as `facebook` (Airy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When the message was sent (Airy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// Message text (Airy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Message text (Papercups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// When the message was created (Papercups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The conversation the message belongs to; what [`crate::send_message`] needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The customer who sent the message (Papercups; absent on agent messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The agent who sent the message (Papercups; absent on customer messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Every other field of the payload, unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Who sent a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The sender's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `source_contact` for customers; other values (such as `app` or `plugin`) for messages
    /// sent by the app, its agents or plugins.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Sender {
    /// The sender type of customers (contacts of the chat platform).
    pub const CONTACT: &'static str = "source_contact";
}

impl MessageCreated {
    /// The event type whose payload this is.
    pub const EVENT_TYPE: &'static str = "message:created";

    /// Whether a customer sent the message, as opposed to the app, an agent or a plugin.
    ///
    /// With a `sender`, that is `sender.type == "source_contact"`. Without one (Papercups), a
    /// message with a `customer_id` and no `user_id` is the customer's.
    pub fn is_from_contact(&self) -> bool {
        match &self.sender {
            Some(sender) => sender.kind.as_deref() == Some(Sender::CONTACT),
            None => self.customer_id.is_some() && self.user_id.is_none(),
        }
    }

    /// The message text: `text` (Airy) or else `body` (Papercups).
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref().or(self.body.as_deref())
    }

    /// When the message was sent: `sent_at` (Airy) or else `created_at` (Papercups), RFC 3339.
    pub fn sent_time(&self) -> Option<&str> {
        self.sent_at.as_deref().or(self.created_at.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: serde_json::Value) -> MessageCreated {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn airy_contact_message() {
        let m = parse(json!({
            "id": "m1", "conversation_id": "c1", "text": "hello", "source": "facebook",
            "sent_at": "2025-01-01T10:00:00Z", "sender": {"id": "u1", "type": "source_contact"}
        }));
        assert!(m.is_from_contact());
        assert_eq!(m.text(), Some("hello"));
        assert_eq!(m.sent_time(), Some("2025-01-01T10:00:00Z"));
    }

    #[test]
    fn app_and_plugin_messages_are_not_from_contacts() {
        for kind in ["app", "app_user", "plugin"] {
            let m = parse(json!({"text": "hi", "sender": {"id": "x", "type": kind}}));
            assert!(!m.is_from_contact(), "{kind}");
        }
    }

    #[test]
    fn papercups_messages_use_customer_and_user_ids() {
        let customer = parse(json!({"body": "hey", "customer_id": "cu1", "conversation_id": "c"}));
        assert!(customer.is_from_contact());
        assert_eq!(customer.text(), Some("hey"));
        let agent = parse(json!({"body": "hey", "customer_id": "cu1", "user_id": 7.to_string()}));
        assert!(!agent.is_from_contact());
    }

    #[test]
    fn unknown_fields_round_trip() {
        let v = json!({"text": "a", "metadata": {"k": [1, 2]}, "sender": {"id": "s"}});
        let m = parse(v.clone());
        assert_eq!(serde_json::to_value(&m).unwrap(), v);
    }
}
