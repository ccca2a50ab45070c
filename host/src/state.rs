//! What every request handler and background task shares.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::auth::KeyCache;
use crate::config::Config;
use crate::delivery::netpolicy::NetPolicy;
use crate::metrics::Metrics;
use crate::plugins::PluginRuntime;
use crate::store::Store;

/// Shared server state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Options the server was started with.
    pub config: Arc<Config>,
    /// Verified API keys.
    pub keys: Arc<KeyCache>,
    /// SHA-256 of the admin token.
    pub admin_token_hash: [u8; 32],
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
}

impl AppState {
    /// Tells the dispatcher that new deliveries are due, so it does not wait for its next poll.
    pub fn wake_dispatcher(&self) {
        self.dispatcher_wake.notify_one();
    }
}
