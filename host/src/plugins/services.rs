//! What the plugin runtime needs from the rest of the server, and nothing more: the host calls
//! that leave the sandbox (`send-message`, the key-value store) and a place for an
//! invocation's log lines. The server implements it over its store (`crate::plugin_services`);
//! a dry run implements it with captures ([`super::dry_run`]); so the runtime runs, is
//! tested and is benchmarked without a server.
//!
//! Everything a plugin may read about itself (its configuration, limits, log level, allowed
//! hosts) travels with the loaded plugin, not through here. The limits are checked by the
//! runtime before a call reaches a service; a service only applies the ones that need its data
//! (the key limit, which counts stored keys).

use async_trait::async_trait;

use crate::model::{Causation, PluginLogLine};
pub use crate::store::{KvLimits, KvRefusal};

/// A service that could not answer (the database is unavailable, the server is stopping).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Why `send-message` sent nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendRefusal {
    /// The conversation appears in no event of the account.
    #[error("unknown conversation")]
    UnknownConversation,
    /// Empty or oversized text, or a bad conversation id.
    #[error("{0}")]
    Invalid(String),
    /// Sending failed.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// A key-value write's result: done (with a value), refused by a rule, or not answered.
pub type KvResult<T> = Result<Result<T, KvRefusal>, Unavailable>;

/// A message a plugin asks to send, with who sends it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The plugin's account.
    pub account_id: String,
    /// The conversation to post into.
    pub conversation_id: String,
    /// The text.
    pub text: String,
    /// The plugin and the event it is handling (depth already counts this hop).
    pub causation: Causation,
}

/// One outgoing `wasi:http` request a plugin made, whatever became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The URL asked for.
    pub url: String,
    /// The response status, when a response came.
    pub status: Option<u16>,
    /// Why there was no response: refused by `allowed_hosts` or the network policy, or failed.
    pub error: Option<String>,
}

/// The host calls that leave the sandbox. Key-value calls name the plugin whose store they act
/// on; the key is already checked (non-empty, at most 512 bytes) and so is a value's size.
#[async_trait]
pub trait PluginServices: Send + Sync {
    /// Sends a message the way `POST /v1/messages` does; returns the new message's id.
    async fn send_message(&self, message: Outgoing) -> Result<String, SendRefusal>;

    /// Reads a key.
    async fn kv_get(&self, plugin_id: &str, key: &str) -> Result<Option<Vec<u8>>, Unavailable>;

    /// Writes a key; a new key beyond `limits.keys` is refused.
    async fn kv_set(
        &self,
        plugin_id: &str,
        key: &str,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> KvResult<()>;

    /// Removes a key (absent is fine).
    async fn kv_delete(&self, plugin_id: &str, key: &str) -> Result<(), Unavailable>;

    /// Adds `delta` to the counter under `key` atomically; returns the new value.
    async fn kv_increment(
        &self,
        plugin_id: &str,
        key: &str,
        delta: i64,
        limits: KvLimits,
    ) -> KvResult<i64>;

    /// Writes `value` only if the stored value is `expected` (`None`: only if absent),
    /// atomically; returns whether it wrote.
    async fn kv_set_if(
        &self,
        plugin_id: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> KvResult<bool>;

    /// Takes an invocation's log lines (at most one call per invocation, after it ended).
    fn plugin_logs(&self, account_id: &str, plugin_id: &str, lines: Vec<PluginLogLine>);

    /// Takes the outgoing HTTP requests an invocation made, after it ended; only called when
    /// it made some. The server keeps none (refusals are in the log already).
    fn http_requests(&self, requests: Vec<HttpRequest>) {
        _ = requests;
    }
}

/// The services of an instance kept idle between events (reuse mode): it runs nothing then, so
/// nothing answers. An idle instance must not hold the server's services, which hold the
/// runtime that holds the instance: each event gives its instance the services it runs with.
pub(crate) struct BetweenEvents;

fn between_events() -> Unavailable {
    Unavailable("no event is being handled".into())
}

#[async_trait]
impl PluginServices for BetweenEvents {
    async fn send_message(&self, _: Outgoing) -> Result<String, SendRefusal> {
        Err(between_events().into())
    }
    async fn kv_get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        Err(between_events())
    }
    async fn kv_set(&self, _: &str, _: &str, _: Vec<u8>, _: KvLimits) -> KvResult<()> {
        Err(between_events())
    }
    async fn kv_delete(&self, _: &str, _: &str) -> Result<(), Unavailable> {
        Err(between_events())
    }
    async fn kv_increment(&self, _: &str, _: &str, _: i64, _: KvLimits) -> KvResult<i64> {
        Err(between_events())
    }
    async fn kv_set_if(
        &self,
        _: &str,
        _: &str,
        _: Option<Vec<u8>>,
        _: Vec<u8>,
        _: KvLimits,
    ) -> KvResult<bool> {
        Err(between_events())
    }
    fn plugin_logs(&self, _: &str, _: &str, _: Vec<PluginLogLine>) {}
}
