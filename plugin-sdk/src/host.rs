//! Sending messages through the host.

use std::fmt;

use crate::{HandlerError, backend};

/// Sends `text` into a conversation as the app, exactly like `POST /v1/messages`.
///
/// The host stores the message and emits a `message:created` event for it, which reaches the
/// account's webhooks but never this plugin again. Returns the new message's id.
/// The host limits how many messages one invocation may send ([`SendError::LimitExceeded`]).
pub fn send_message(conversation_id: &str, text: &str) -> Result<String, SendError> {
    backend::send_message(conversation_id, text)
}

/// Why [`send_message`] did not send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The conversation id is not known to wasmhook.
    UnknownConversation,
    /// This invocation already sent its allowed number of messages (the limit is given).
    LimitExceeded(u32),
    /// The message was rejected (for example empty text); the reason is given.
    Invalid(String),
    /// The host failed to store the message; retrying later may work.
    Unavailable(String),
}

impl SendError {
    /// Whether retrying later may succeed (only [`SendError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Unavailable(_))
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownConversation => write!(f, "send-message: unknown conversation"),
            SendError::LimitExceeded(n) => {
                write!(f, "send-message: limit of {n} messages per event reached")
            }
            SendError::Invalid(why) => write!(f, "send-message: invalid message: {why}"),
            SendError::Unavailable(why) => write!(f, "send-message: host unavailable: {why}"),
        }
    }
}

impl std::error::Error for SendError {}

impl From<SendError> for HandlerError {
    fn from(e: SendError) -> Self {
        if e.is_retryable() {
            HandlerError::retryable(e.to_string())
        } else {
            HandlerError::fatal(e.to_string())
        }
    }
}
