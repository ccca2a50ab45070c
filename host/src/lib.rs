//! wasmhook: an event-subscription server for chat and customer-support products.
//!
//! Events posted over HTTP are stored durably and delivered, at least once, to every matching
//! subscriber: signed webhooks with retries, or WebAssembly plugins. [`run`] wires the pieces
//! together; the binary and the tests both call it.

pub mod api;
pub mod auth;
pub mod backpressure;
pub mod breaker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod delivery;
pub mod error;
pub mod events;
pub mod examples;
pub mod http_server;
pub mod key_rotation;
pub mod live;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod plugin_config;
pub mod plugin_services;
pub mod plugins;
pub mod quotas;
pub mod retention;
pub mod schema;
pub mod secrets;
pub mod state;
pub mod store;
pub mod subscriptions;
pub mod throttle;
pub mod transfer;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::netpolicy::NetPolicy;
use crate::plugins::PluginRuntime;
use crate::state::AppState;
use crate::store::Store;

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting, lets
/// requests and deliveries in flight finish, and closes the database.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = open(config).await?;
    let store = state.store.clone();
    let stop_delivery = CancellationToken::new();
    let dispatcher = delivery::dispatcher::spawn(state.clone(), stop_delivery.clone());
    let compiler = state.plugins.start_compiler(
        store.clone(),
        stop_delivery.clone(),
        state.config.test_hold_compiles_until.clone(),
    );
    let following = state
        .plugins
        .start_following(store.clone(), stop_delivery.clone());
    let depth_sampler = backpressure::spawn_sampler(state.clone(), stop_delivery.clone());
    let listener_sweep = tokio::spawn(delivery::listen::sweep(
        state.clone(),
        stop_delivery.clone(),
    ));
    let retention = tokio::spawn(retention::run(state.clone(), stop_delivery.clone()));
    tracing::info!(address = %listener.local_addr()?, "wasmhook listening");
    // Streams never end by themselves: the feed closes them, so the shutdown can finish.
    let live = state.live.clone();
    let shutdown = async move {
        shutdown.await;
        live.close();
    };
    let limits = http_server::Limits::from_config(&state.config);
    let metrics = state.metrics.clone();
    let app = api::app(state);
    http_server::serve(listener, app, limits, metrics, shutdown).await;
    tracing::info!("shutting down: finishing deliveries in flight");
    stop_delivery.cancel();
    let _ = dispatcher.await;
    let _ = compiler.await;
    if let Some(following) = following {
        let _ = following.await;
    }
    let _ = listener_sweep.await;
    let _ = retention.await;
    let _ = depth_sampler.await;
    store.close().await;
    tracing::info!("database closed; bye");
    Ok(())
}

/// Opens the data dir and builds the shared state: database, plugin runtime (with every
/// stored plugin loaded), HTTP client. `run` serves it; benchmarks drive it directly.
pub async fn open(config: Config) -> anyhow::Result<AppState> {
    plugins::heap::configure();
    let data_dir = config.data_dir.clone();
    let sync = config.sync;
    let max_queue_depth = config.max_queue_depth;
    let (keys, generated) = keyring(&config)?;
    let keys = Arc::new(keys);
    let key_path = keys.path().to_path_buf();
    let opened = match config.database_url.as_deref() {
        Some(url) => {
            let options = store::postgres::PgOptions {
                pool_size: config.database_pool_size,
                ..Default::default()
            };
            Store::connect(url, keys, options).await
        }
        None => tokio::task::spawn_blocking(move || Store::open(&data_dir, sync, keys)).await?,
    };
    let store = match opened {
        Ok(store) => store.with_quotas(quotas::Quotas {
            plugins: config.max_plugins_per_account,
            plugin_bytes: config.max_plugin_storage_per_account,
            subscriptions: config.max_subscriptions_per_account,
        }),
        Err(e) => {
            // A key generated for a database that turns out to need another one would only
            // stand in the way of restoring the right file.
            if generated {
                let _ = std::fs::remove_file(&key_path);
            }
            return Err(e).with_context(|| match config.database_url {
                Some(_) => "connecting to the PostgreSQL database (--database-url)".to_string(),
                None => format!("opening the database in {}", config.data_dir.display()),
            });
        }
    };
    let admin_token_hash = match config.admin_token.as_deref() {
        Some(ADMIN_OFF) => {
            let accounts = store.list_accounts().await.context("listing accounts")?;
            anyhow::ensure!(
                !accounts.is_empty(),
                "--admin-token none turns the admin endpoints off, but there is no account yet \
                 to use the server with: start once with an admin token and create one"
            );
            None
        }
        _ => Some(auth::hash(&admin_token(&config)?)),
    };
    let net_policy = Arc::new(NetPolicy::new(config.allow_network.clone()));
    let http = delivery::http::client(net_policy.clone(), config.delivery_timeout);
    let metrics: Arc<metrics::Metrics> = Default::default();
    let live: Arc<live::LiveFeed> = Default::default();
    // Every delivery in flight may hold one plugin instance; the margin covers uploads' checks
    // and test runs (at most `plugins::dry_run::DRY_RUNS` at once).
    let instances = config.delivery_concurrency as u32 + 64;
    let plugins = Arc::new(
        PluginRuntime::new(
            &config.data_dir,
            instances,
            config
                .plugin_memory_budget
                .unwrap_or_else(plugins::budget::default_budget),
            metrics.clone(),
            net_policy.clone(),
        )
        .map_err(|e| anyhow::anyhow!("starting the plugin runtime: {e:#}"))?,
    );
    plugins.set_reuse(plugins::reuse::ReuseSettings {
        max_events: config.reuse_max_events,
        max_age: config.reuse_max_age,
        idle_timeout: config.reuse_idle_timeout,
        max_memory_growth: config.reuse_max_memory_growth,
        max_idle: config.reuse_max_idle,
    });
    let plugin_logs = plugins::logsink::LogSink::start(store.clone(), live.clone());
    let loaded = plugins.load_all(&store).await.context("loading plugins")?;
    tracing::info!(plugins = loaded, "plugins loaded");
    let webhook_checks = throttle::TokenBuckets::new(
        config.webhook_checks_per_minute,
        std::time::Duration::from_secs(60),
    );
    let auth_failures = throttle::TokenBuckets::new(
        config.auth_failures_per_minute,
        std::time::Duration::from_secs(60),
    );
    // On a shared database, other nodes' wake-ups arrive through the store.
    let dispatcher_wake = store.shared_wake().unwrap_or_default();
    Ok(AppState::new(state::Shared {
        store,
        config: Arc::new(config),
        keys: Default::default(),
        admin_token_hash,
        metrics,
        net_policy,
        dispatcher_wake,
        http,
        plugins,
        plugin_logs,
        live,
        webhook_checks,
        auth_failures,
        listeners: Default::default(),
        backpressure: backpressure::Backpressure::new(max_queue_depth),
    }))
}

/// The default key file, in the data dir.
pub const DEFAULT_KEY_FILE: &str = "encryption-keys";

/// The key file of a data dir: `--encryption-key-file`, else `<data-dir>/encryption-keys`.
pub fn key_file_path(data_dir: &Path, key_file: Option<&Path>) -> std::path::PathBuf {
    key_file.map_or_else(|| data_dir.join(DEFAULT_KEY_FILE), Path::to_path_buf)
}

/// The keyring that seals secrets at rest, and whether it was generated just now. A file given
/// with `--encryption-key-file` must exist (never replaced by a new key: the database's
/// secrets would be lost); the default file in the data dir is generated on the first start.
fn keyring(config: &Config) -> anyhow::Result<(secrets::Keyring, bool)> {
    if let Some(path) = &config.encryption_key_file {
        return Ok((secrets::Keyring::load(path)?, false));
    }
    let path = key_file_path(&config.data_dir, None);
    if path.exists() {
        return Ok((secrets::Keyring::load(&path)?, false));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let keys = secrets::Keyring::create(&path)?;
    tracing::info!(path = %path.display(), "generated the encryption key file; back it up apart from the database");
    Ok((keys, true))
}

/// The `--admin-token` value that turns the admin endpoints off.
pub const ADMIN_OFF: &str = "none";

/// The admin token: from the options, else from the data dir, else generated, stored
/// (readable by the owner only) and printed once.
fn admin_token(config: &Config) -> anyhow::Result<String> {
    if let Some(token) = &config.admin_token {
        anyhow::ensure!(
            token.len() >= 16,
            "the admin token must be at least 16 characters"
        );
        return Ok(token.clone());
    }
    let path = config.data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_string());
    }
    let token = format!("wha_{}", auth::random_token(32));
    write_private(&path, &token)
        .with_context(|| format!("storing the admin token in {}", path.display()))?;
    println!(
        "Generated an admin token (stored in {}; shown only this once):\n\n    {token}\n",
        path.display()
    );
    Ok(token)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
