//! What every request handler and background task shares.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::auth::KeyCache;
use crate::config::Config;
use crate::delivery::netpolicy::NetPolicy;
use crate::live::LiveFeed;
use crate::metrics::Metrics;
use crate::plugins::logsink::LogSink;
use crate::plugins::{PluginRuntime, PluginServices};
use crate::store::Store;
use crate::throttle::TokenBuckets;

/// Shared server state: one pointer, so a clone (per request, per invocation) is one atomic
/// increment rather than one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the parts.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }

    /// The server as the plugin runtime sees it (`crate::plugin_services`): one pointer, so an
    /// invocation costs one atomic increment.
    pub fn plugin_services(&self) -> Arc<dyn PluginServices> {
        self.0.clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of the server state.
pub struct Shared {
    /// The database.
    pub store: Store,
    /// Options the server was started with.
    pub config: Arc<Config>,
    /// Verified API keys.
    pub keys: Arc<KeyCache>,
    /// SHA-256 of the admin token; `None` when the admin endpoints are off (`--admin-token none`).
    pub admin_token_hash: Option<[u8; 32]>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Which addresses deliveries may reach.
    pub net_policy: Arc<NetPolicy>,
    /// Woken when deliveries become due now.
    pub dispatcher_wake: Arc<Notify>,
    /// The one HTTP client for deliveries and handshakes.
    pub http: reqwest::Client,
    /// The WebAssembly plugin runtime.
    pub plugins: Arc<PluginRuntime>,
    /// Where plugins' log lines are written, in batches.
    pub plugin_logs: LogSink,
    /// What happens as it happens, for `/v1/stream`; published to after each commit.
    pub live: Arc<LiveFeed>,
    /// Webhook checks left per account.
    pub webhook_checks: TokenBuckets,
    /// Failed authentications left per client address.
    pub auth_failures: TokenBuckets,
    /// Command lines connected by `wasmhook listen`, and the attempts waiting for them.
    pub listeners: Arc<crate::delivery::listen::Listeners>,
    /// Refuses new events while too many deliveries are pending.
    pub backpressure: crate::backpressure::Backpressure,
}

impl Shared {
    /// Tells the dispatcher that new deliveries are due, so it does not wait for its next poll.
    pub fn wake_dispatcher(&self) {
        self.dispatcher_wake.notify_one();
    }
}
