//! Wiring only: the server as the plugin runtime sees it. [`PluginServices`] over the shared
//! state (messages through the same path as `POST /v1/messages`, the key-value store, the
//! batched log writer), and the plugin's real key-value store as the read-only base of a dry
//! run ([`StoreKv`]). No rules live here: the store applies the key-value ones, `messages` the
//! sending ones.

use async_trait::async_trait;

use crate::messages::{self, Origin, SendError};
use crate::model::PluginLogLine;
use crate::plugins::dry_run::KvBase;
use crate::plugins::services::{
    KvLimits, KvResult, Outgoing, PluginServices, SendRefusal, Unavailable,
};
use crate::state::Shared;
use crate::store::{Store, StoreError};

fn unavailable(e: StoreError) -> Unavailable {
    Unavailable(e.to_string())
}

#[async_trait]
impl PluginServices for Shared {
    async fn send_message(&self, m: Outgoing) -> Result<String, SendRefusal> {
        let origin = Origin::Plugin(m.causation);
        match messages::send(self, &m.account_id, m.conversation_id, m.text, origin).await {
            Ok(message) => Ok(message.id),
            Err(SendError::UnknownConversation(_)) => Err(SendRefusal::UnknownConversation),
            Err(SendError::Invalid(reason)) => Err(SendRefusal::Invalid(reason)),
            Err(SendError::Store(e)) => Err(unavailable(e).into()),
        }
    }

    async fn kv_get(&self, plugin_id: &str, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        self.store
            .kv_get(plugin_id.to_string(), key.to_string())
            .await
            .map_err(unavailable)
    }

    async fn kv_set(
        &self,
        plugin_id: &str,
        key: &str,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> KvResult<()> {
        self.store
            .kv_set(plugin_id.to_string(), key.to_string(), value, limits)
            .await
            .map_err(unavailable)
    }

    async fn kv_delete(&self, plugin_id: &str, key: &str) -> Result<(), Unavailable> {
        self.store
            .kv_delete(plugin_id.to_string(), key.to_string())
            .await
            .map_err(unavailable)
    }

    async fn kv_increment(
        &self,
        plugin_id: &str,
        key: &str,
        delta: i64,
        limits: KvLimits,
    ) -> KvResult<i64> {
        self.store
            .kv_increment(plugin_id.to_string(), key.to_string(), delta, limits)
            .await
            .map_err(unavailable)
    }

    async fn kv_set_if(
        &self,
        plugin_id: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> KvResult<bool> {
        self.store
            .kv_set_if(
                plugin_id.to_string(),
                key.to_string(),
                expected,
                value,
                limits,
            )
            .await
            .map_err(unavailable)
    }

    fn plugin_logs(&self, account_id: &str, plugin_id: &str, lines: Vec<PluginLogLine>) {
        // Logs are diagnostics, not part of the delivery: written in batches, off the hot path.
        self.plugin_logs.send(account_id, plugin_id, lines);
    }
}

/// One plugin's stored key-value pairs, read only: what a dry run starts from.
pub struct StoreKv {
    /// The store.
    pub store: Store,
    /// Whose pairs.
    pub plugin_id: String,
}

#[async_trait]
impl KvBase for StoreKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        self.store
            .kv_get(self.plugin_id.clone(), key.to_string())
            .await
            .map_err(unavailable)
    }

    async fn key_count(&self) -> Result<u32, Unavailable> {
        self.store
            .kv_key_count(self.plugin_id.clone())
            .await
            .map_err(unavailable)
    }
}
