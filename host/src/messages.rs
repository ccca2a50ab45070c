//! The reaction path: sending a message into a conversation, shared by the HTTP API and plugins.
//!
//! A sent message becomes a `message:created` event carrying both the Papercups fields
//! (`body`, `created_at`, `conversation_id`, `customer_id`) and the Airy fields (`id`,
//! `conversation_id`, `sender`, `source`, `sent_at`, `text`), filled in from the conversation
//! index, so every webhook format can render it.

use serde_json::json;
use serde_json::value::RawValue;

use crate::clock::{now_ms, rfc3339};
use crate::error::ApiError;
use crate::model::{Causation, Message, Sender};
use crate::state::Shared;
use crate::store::NewEvent;
use crate::store::StoreError;

/// The sender type of messages sent through the API or by plugins (Airy's name for them);
/// contacts' messages carry `source_contact`.
pub const APP_SENDER_TYPE: &str = "app_user";
/// Longest message text, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest conversation id, in characters.
pub const MAX_CONVERSATION_ID: usize = 256;

/// Who is sending.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A client of the HTTP API, acting for the account.
    Api,
    /// A plugin, while handling an event.
    Plugin(Causation),
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The conversation is not in the index.
    #[error("conversation {0:?} is not known: it appears in no event posted to this account")]
    UnknownConversation(String),
    /// Empty or oversized text, or a bad conversation id.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> ApiError {
        match e {
            SendError::UnknownConversation(id) => {
                ApiError::NotFound(format!("conversation {id:?}"))
            }
            SendError::Invalid(m) => ApiError::invalid(m),
            SendError::Store(s) => s.into(),
        }
    }
}

/// Checks a message before anything is stored: the reason is for the sender.
pub fn validate(conversation_id: &str, text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("text: must not be empty".into());
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!("text: longer than {MAX_TEXT_BYTES} bytes"));
    }
    if conversation_id.is_empty() || conversation_id.chars().count() > MAX_CONVERSATION_ID {
        return Err(format!(
            "conversation_id: 1 to {MAX_CONVERSATION_ID} characters"
        ));
    }
    Ok(())
}

/// Stores a message and its `message:created` event, and wakes delivery.
pub async fn send(
    state: &Shared,
    account_id: &str,
    conversation_id: String,
    text: String,
    origin: Origin,
) -> Result<Message, SendError> {
    validate(&conversation_id, &text).map_err(SendError::Invalid)?;
    let account = account_id.to_string();
    let conv_id = conversation_id.clone();
    let result = state
        .store
        .send_message(account.clone(), conversation_id.clone(), move |conv| {
            let now = now_ms();
            let (sender_id, causation) = match origin {
                Origin::Api => (account.clone(), None),
                Origin::Plugin(c) => (c.plugin_id.clone(), Some(c)),
            };
            let message = Message {
                id: uuid::Uuid::new_v4().to_string(),
                conversation_id: conv_id.clone(),
                text,
                sender: Sender {
                    id: sender_id,
                    sender_type: APP_SENDER_TYPE.into(),
                },
                source: conv.source.clone(),
                sent_at: now,
                event_id: crate::clock::new_id("evt"),
            };
            let t = rfc3339(now);
            let payload = json!({
                "id": message.id,
                "conversation_id": message.conversation_id,
                "customer_id": conv.customer_id,
                "body": message.text,
                "text": message.text,
                "created_at": t,
                "sent_at": t,
                "sender": { "id": message.sender.id, "type": message.sender.sender_type },
                "source": message.source,
            });
            let payload = RawValue::from_string(payload.to_string())
                .expect("serde_json output is valid JSON");
            let event = NewEvent {
                id: message.event_id.clone(),
                account_id: account,
                event_type: "message:created".into(),
                payload,
                occurred_at: t,
                received_at: now,
                idempotency_key: None,
                body_hash: [0; 32],
                causation,
                conversation: None,
            };
            (message, event)
        })
        .await;
    match result {
        Ok((message, ingested)) => {
            state.live.event(account_id, &ingested.event);
            state.metrics.events_ingested.inc();
            if ingested.deliveries > 0 {
                state.wake_dispatcher();
            }
            Ok(message)
        }
        Err(StoreError::NotFound) => Err(SendError::UnknownConversation(conversation_id)),
        Err(e) => Err(e.into()),
    }
}
