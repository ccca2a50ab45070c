//! Durable storage in PostgreSQL (`--database-url`): the only module that imports
//! `tokio_postgres`. Several wasmhook nodes share one database and so one queue.
//!
//! Each submodule adds methods to [`PgStore`], mirroring the SQLite submodules of `store`:
//! this file owns the connection pool, the schema migrations and the error mapping; `events`
//! ingest (group commit), `claims` the queue's claim and settle rules, `deliveries` the
//! operations on single deliveries. Queries are plain SQL strings bound at run time (no
//! compile-time checking), so building needs no database.
//!
//! **Connections.** Every connection is opened with `statement_timeout` and
//! `idle_in_transaction_session_timeout` in its start-up options, so a stuck query or a
//! transaction left open by a bug holds neither locks nor vacuum back for long. No connection
//! is held across an HTTP call: claims and outcomes are short transactions.
//!
//! **Pool size.** Each node opens at most `pool_size` connections plus one that only listens
//! for wake-ups (LISTEN). The rule: `nodes × (pool_size + 1)` must stay below the server's
//! `max_connections` minus its reserved ones (100 − 3 by default), so with the default of 16
//! five nodes fit a default PostgreSQL. More does not go faster: transactions are short and the
//! database has as many useful concurrent writers as cores.

mod changes;
mod claims;
mod deliveries;
mod events;
mod migrations;
mod reseal;
mod retention;

// Ported by the rest of the store's operations (accounts, sessions, subscriptions, plugins,
// key-value, summaries, listings, messages).
mod accounts;
mod decode;
mod delivery_lists;
mod kv;
mod messages;
mod plugins;
mod sessions;
mod subscriptions;
mod summaries;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Notify;

use super::StoreError;
use super::changes::ConfigChanges;
use crate::quotas::Quotas;
use crate::secrets::Keyring;

/// How the pool and its connections are set up.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// At most this many connections to the database (see the module docs for the rule).
    pub pool_size: usize,
    /// The longest a single statement may run before the database cancels it.
    pub statement_timeout: Duration,
    /// The longest a transaction may sit idle before the database ends its session.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            pool_size: DEFAULT_POOL_SIZE,
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(60),
        }
    }
}

/// A message at least this large closes its connection afterwards ([`PgStore::release`]).
const LARGE_MESSAGE: usize = 1 << 20;

/// The default of `--database-pool-size`.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Handle to the PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pub(in crate::store) pool: Pool,
    /// Seals and opens the secret fields; the key material never touches the database.
    pub(in crate::store) keys: Arc<Keyring>,
    /// Checked by every write that adds a plugin, a plugin version or a subscription.
    pub(in crate::store) quotas: Quotas,
    /// Woken when another node (or this one) made deliveries due.
    pub(in crate::store) wake: Arc<Notify>,
    /// Ingest requests, to the group committer (see `events`).
    pub(in crate::store) ingest: tokio::sync::mpsc::Sender<events::IngestRequest>,
    /// Moved when another node (or this one) changed configuration (see `changes`).
    pub(in crate::store) changes: Arc<ConfigChanges>,
}

/// The connection settings every connection of the pool and the listener use.
fn connection_config(url: &str, options: &PgOptions) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Database(format!("--database-url: {e}")))?;
    // Sent in the start-up packet: in force from the first statement of every connection, with
    // no extra round trip (any options already in the URL are kept).
    let ours = format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        options.statement_timeout.as_millis(),
        options.idle_in_transaction_timeout.as_millis()
    );
    let all = match config.get_options() {
        Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(all);
    if config.get_application_name().is_none() {
        config.application_name("wasmhook");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    // A database that vanished (host down, network cut) shows up as a failed statement
    // instead of a connection that waits forever.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    Ok(config)
}

/// TLS for `sslmode=prefer` (the default) and `require`: rustls with the web PKI roots.
pub(in crate::store) fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        })
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

impl PgStore {
    /// Connects to the database at `url`, applies pending migrations and starts listening for
    /// other nodes' wake-ups. Fails when the database cannot be reached, or its schema is
    /// newer than this binary knows.
    pub async fn connect(
        url: &str,
        keys: Arc<Keyring>,
        quotas: Quotas,
        options: PgOptions,
    ) -> Result<PgStore, StoreError> {
        let config = connection_config(url, &options)?;
        let manager = Manager::from_config(
            config.clone(),
            tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            // A request waits this long for a connection before it fails (503 upstream).
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Database(format!("connection pool: {e}")))?;
        let store = PgStore {
            ingest: events::start(pool.clone()),
            pool,
            keys,
            quotas,
            wake: Arc::new(Notify::new()),
            changes: Arc::default(),
        };
        {
            let mut client = store.client().await?;
            migrations::apply(&mut client).await?;
            reseal::reseal_all(&mut client, &store.keys).await?;
        }
        tokio::spawn(listen(
            config,
            Arc::downgrade(&store.wake),
            Arc::downgrade(&store.changes),
        ));
        tokio::spawn(changes::poll(
            store.pool.clone(),
            Arc::downgrade(&store.changes),
        ));
        Ok(store)
    }

    /// This store, refusing writes past `quotas` (a newly connected one has none).
    pub fn with_quotas(mut self, quotas: Quotas) -> PgStore {
        self.quotas = quotas;
        self
    }

    /// Applies pending migrations to the database at `url` and returns how many were applied
    /// (`wasmhook migrate`).
    pub async fn migrate(url: &str) -> Result<usize, StoreError> {
        let config = connection_config(url, &PgOptions::default())?;
        let (mut client, connection) = config.connect(tls()).await.map_err(db)?;
        let driver = tokio::spawn(connection);
        let applied = migrations::apply(&mut client).await;
        drop(client);
        let _ = driver.await;
        applied
    }

    /// A connection from the pool.
    pub(in crate::store) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Returns `client` to the pool, or closes it when it just carried a message of
    /// `message_bytes` (a plugin component) of [`LARGE_MESSAGE`] or more: a connection keeps
    /// its send and receive buffers at the largest size they ever grew to, so each pooled
    /// connection that once moved an 18 MB component would hold tens of MB for the rest of
    /// the process. A new connection costs a few milliseconds; uploads are rare.
    pub(in crate::store) fn release(client: deadpool_postgres::Object, message_bytes: usize) {
        if message_bytes >= LARGE_MESSAGE {
            drop(deadpool_postgres::Object::take(client));
        }
    }

    /// True when a connection answers a trivial query.
    pub async fn ping(&self) -> bool {
        match self.client().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// The pool's state, for `/metrics`.
    pub fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }

    /// Woken when deliveries became due on any node: the dispatcher waits on it (besides
    /// its own wake-ups and its poll).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Closes the pool: connections in use are closed as they are returned.
    pub async fn close(&self) {
        self.pool.close();
    }
}

/// Listens for other nodes' wake-ups and configuration changes on a connection of its own and
/// wakes this node's dispatcher or moves its configuration epoch; reconnects (after a second)
/// whenever the connection drops, and does both after each reconnect, since notifications sent
/// meanwhile are lost. Correctness never depends on it: the dispatcher polls at least every
/// second, the epoch is polled (see `changes`). Ends with the store.
async fn listen(
    config: tokio_postgres::Config,
    wake: std::sync::Weak<Notify>,
    changes: std::sync::Weak<ConfigChanges>,
) {
    use futures_util::StreamExt;
    loop {
        if wake.strong_count() == 0 {
            return;
        }
        match config.connect(tls()).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listen = format!(
                    "LISTEN {}; LISTEN {}",
                    events::WAKE_CHANNEL,
                    changes::CONFIG_CHANNEL
                );
                let subscribe = client.batch_execute(&listen);
                // The connection must be driven for the LISTEN to complete.
                let listening = tokio::select! {
                    r = subscribe => r.is_ok(),
                    _ = messages.next() => false,
                };
                if listening {
                    if let Some(w) = wake.upgrade() {
                        w.notify_one();
                    }
                    if let Some(c) = changes.upgrade() {
                        c.bump();
                    }
                    loop {
                        let next = tokio::time::timeout(Duration::from_secs(5), messages.next());
                        match next.await {
                            Ok(Some(Ok(tokio_postgres::AsyncMessage::Notification(n))))
                                if n.channel() == changes::CONFIG_CHANNEL =>
                            {
                                match changes.upgrade() {
                                    Some(c) => c.bump(),
                                    None => return,
                                }
                            }
                            Ok(Some(Ok(tokio_postgres::AsyncMessage::Notification(_)))) => {
                                match wake.upgrade() {
                                    Some(w) => w.notify_one(),
                                    None => return,
                                }
                            }
                            Ok(Some(Ok(_))) => {}
                            Ok(Some(Err(e))) => {
                                tracing::warn!(error = %e, "database wake-up listener lost its connection");
                                break;
                            }
                            Ok(None) => break,
                            // Quiet: check whether the store is still there.
                            Err(_) if wake.strong_count() == 0 => return,
                            Err(_) => {}
                        }
                    }
                }
                drop(client);
            }
            Err(e) => tracing::debug!(error = %e, "database wake-up listener cannot connect"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The connection pool's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections allowed.
    pub max_size: usize,
    /// Connections open.
    pub size: usize,
    /// Connections open and idle.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

/// Maps a database error: a unique violation to [`StoreError::Conflict`] (with the
/// constraint's name), a lost or refused
/// connection or a cancelled statement to [`StoreError::Unavailable`], the rest to
/// [`StoreError::Database`].
pub(in crate::store) fn db(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let Some(code) = e.code() else {
        // No SQLSTATE: either the connection failed or closed (the database is away), or the
        // statement could not be sent or read (a bug: a parameter of the wrong type).
        let message = e.to_string();
        let source = std::error::Error::source(&e).map(|s| format!(": {s}"));
        let message = format!("{message}{}", source.unwrap_or_default());
        let lost = e.is_closed()
            || [
                "error connecting",
                "error communicating",
                "timeout",
                "error performing TLS",
            ]
            .iter()
            .any(|m| message.starts_with(m));
        return if lost {
            StoreError::Unavailable(message)
        } else {
            StoreError::Database(message)
        };
    };
    if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE {
        // The only way a request's text reaches this: a NUL character, which PostgreSQL's
        // text cannot hold. The statement failed as a whole, so nothing was written.
        return StoreError::Invalid("text may not contain the NUL character (U+0000)".into());
    }
    if *code == SqlState::UNTRANSLATABLE_CHARACTER {
        // The JSON escape `\u0000` in an event's payload: valid JSON, but the conversation
        // index casts payloads to `jsonb`, which cannot hold it (SQLite stores it). The
        // statement failed as a whole, so nothing was written.
        return StoreError::Invalid(
            "JSON may not contain the escaped NUL character \\u0000".into(),
        );
    }
    if *code == SqlState::UNIQUE_VIOLATION {
        let constraint = e
            .as_db_error()
            .and_then(|d| d.constraint())
            .unwrap_or("a unique rule");
        return StoreError::Conflict(format!("already exists ({constraint})"));
    }
    let message = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string());
    if code.code().starts_with("08") // connection exception
        || code.code().starts_with("57") // operator intervention: shutdown, cancelled
        || code.code().starts_with("53")
    // insufficient resources: too many connections, disk full
    {
        return StoreError::Unavailable(message);
    }
    StoreError::Database(format!("{} ({})", message, code.code()))
}

pub(in crate::store) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db(e),
        deadpool_postgres::PoolError::Closed => StoreError::Closed,
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fresh, empty database per test on the test cluster (`scripts/pg-test-cluster`).

    use super::*;

    /// The test cluster's URL, when the tests run with one.
    pub(crate) fn url() -> Option<String> {
        std::env::var("WASMHOOK_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
    }

    /// Creates a database of its own on the test cluster and returns its URL.
    pub(crate) async fn fresh_database(base: &str) -> String {
        let config: tokio_postgres::Config = base.parse().expect("WASMHOOK_TEST_DATABASE_URL");
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("the test cluster answers");
        let driver = tokio::spawn(connection);
        let name = format!("wasmhook_test_{:016x}", rand::random::<u64>());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        drop(client);
        let _ = driver.await;
        let mut url = url::Url::parse(base).expect("a URL");
        url.set_path(&name);
        url.to_string()
    }

    /// Two nodes (stores with pools of their own) on one fresh database, or `None` when no
    /// test cluster is set.
    pub(crate) async fn two_nodes() -> Option<(PgStore, PgStore)> {
        let base = url()?;
        let url = fresh_database(&base).await;
        // Every node has the same key file.
        let keys = Arc::new(Keyring::ephemeral());
        let connect =
            || PgStore::connect(&url, keys.clone(), Quotas::UNLIMITED, PgOptions::default());
        let a = connect().await.expect("node a");
        let b = connect().await.expect("node b");
        Some((a, b))
    }

    /// A store on a fresh database, or `None` (with a note) when no test cluster is set.
    pub(crate) async fn store() -> Option<PgStore> {
        let Some(base) = url() else {
            eprintln!("WASMHOOK_TEST_DATABASE_URL is not set: skipping the PostgreSQL test");
            return None;
        };
        let url = fresh_database(&base).await;
        Some(
            PgStore::connect(
                &url,
                Arc::new(Keyring::ephemeral()),
                Quotas::UNLIMITED,
                PgOptions::default(),
            )
            .await
            .expect("connect and migrate"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_migrates_and_sets_the_timeouts() {
        let Some(store) = testing::store().await else {
            return;
        };
        assert!(store.ping().await);
        let c = store.client().await.unwrap();
        let timeout: String = c
            .query_one("SHOW statement_timeout", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(timeout, "30s");
        let idle: String = c
            .query_one("SHOW idle_in_transaction_session_timeout", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(idle, "1min");
        // The queue table's own vacuum settings and the partial index on due deliveries.
        let reloptions: Vec<String> = c
            .query_one(
                "SELECT reloptions FROM pg_class WHERE relname = 'deliveries'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(reloptions.contains(&"autovacuum_vacuum_scale_factor=0.02".to_string()));
        let due: String = c
            .query_one(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'deliveries_due'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(due.contains("WHERE (status = 'pending'::text)"), "{due}");
        drop(c);
        // Applying again is a no-op.
        let mut c = store.client().await.unwrap();
        assert_eq!(migrations::apply(&mut c).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_unique_violation_is_a_conflict() {
        let Some(store) = testing::store().await else {
            return;
        };
        let c = store.client().await.unwrap();
        let insert = "INSERT INTO accounts (id, name, created_at) VALUES ('acc', 'a', 0)";
        c.execute(insert, &[]).await.unwrap();
        let e = c.execute(insert, &[]).await.unwrap_err();
        assert!(matches!(db(e), StoreError::Conflict(_)));
        let e = c
            .execute("SELECT * FROM no_such_table", &[])
            .await
            .unwrap_err();
        assert!(matches!(db(e), StoreError::Database(_)));
    }

    #[tokio::test]
    async fn a_nul_in_text_or_in_a_json_payload_is_the_callers_mistake() {
        let Some(store) = testing::store().await else {
            return;
        };
        let c = store.client().await.unwrap();
        let e = c.execute("SELECT $1::text", &[&"a\0b"]).await.unwrap_err();
        assert!(matches!(db(e), StoreError::Invalid(_)));
        // What the conversation index does with an event's payload.
        let e = c
            .execute("SELECT ($1::text)::jsonb", &[&r#"{"a": "\u0000"}"#])
            .await
            .unwrap_err();
        let e = db(e);
        assert!(
            matches!(e, StoreError::Invalid(ref m) if m.contains("\\u0000")),
            "{e:?}"
        );
    }
}
