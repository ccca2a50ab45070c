//! Durable storage: the one seam between the server and its database.
//!
//! [`Store`] is a façade over an enum of backends (today `sqlite`, the embedded default).
//! Every public method keeps one name and signature whichever backend runs, and dispatches by
//! `match` (the `dispatch!` macro), so `api/`, `delivery/`, the console and the plugin runtime
//! never know which backend they use. Static dispatch, not a `dyn` trait: methods that take a
//! closure (`update_subscription(.., |sub| ..)`) stay generic.
//!
//! What crosses the seam is backend-neutral: the records ([`records`]), the errors
//! ([`StoreError`], no driver's types), the rules that are not storage ([`policy`], [`kv`]) and
//! the sealing of secret fields ([`sealing`]). A backend only stores; adding one is a module
//! with the same methods, a `Backend` variant with its arm in `dispatch!` and in
//! [`Store::with_quotas`], a way to open it, and its fixture in the contract tests
//! (`contract::backends`), which then run every contract test on it too.

pub mod changes;
pub mod records;
mod sqlite;

pub mod kv;
pub mod policy;
pub mod postgres;
pub mod sealing;
pub mod transfer;

#[cfg(test)]
mod contract;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::model::{
    Account, ApiKeyInfo, Attempt, Circuit, Conversation, Delivery, DeliveryStatus, Event, Message,
    Plugin, PluginLogLine, PluginVersion, Subscription,
};
use crate::quotas::{QuotaExceeded, Quotas};
use crate::secrets::{Keyring, SecretsError};

pub use records::*;
pub use sealing::KeyUse;
pub use sqlite::migrations;

/// Errors of the storage layer. No backend's types appear here: each backend maps its driver's
/// errors into these inside its own module.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist (or belongs to another account).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the message says which.
    #[error("{0}")]
    Conflict(String),
    /// The database failed; the message is the driver's.
    #[error("database error: {0}")]
    Database(String),
    /// The database cannot be reached right now (a server-based backend lost its connection
    /// or its pool is exhausted); the same request may succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The caller gave a value the database cannot hold (PostgreSQL's text refuses the NUL
    /// character, which SQLite keeps): the caller's mistake, named in the message.
    #[error("{0}")]
    Invalid(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The group transaction this write belonged to could not commit.
    #[error("commit failed: {0}")]
    Commit(String),
    /// A stored value could not be decoded (corruption or a bug, never the caller's input).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
    /// A secret could not be sealed or opened (wrong or missing key file, altered value).
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The write would take the account past a quota (checked in its own transaction).
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// The backends. Each arm holds a handle that is itself cheap to clone.
#[derive(Clone)]
enum Backend {
    /// The embedded database in the data dir (the default).
    Sqlite(sqlite::SqliteStore),
    /// A PostgreSQL database shared by any number of nodes (`--database-url`).
    Postgres(postgres::PgStore),
}

/// Runs `$call` on the backend bound to `$b`: one arm per [`Backend`] variant. Every
/// backend has every method, so a new backend adds one arm here and nothing per method.
macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

/// Runs `$call` as [`dispatch!`] does; when it succeeds, the configuration nodes cache has
/// changed (see [`changes`]).
macro_rules! dispatch_change {
    ($self:ident, $b:ident => $call:expr) => {{
        let result = dispatch!($self, $b => $call);
        if result.is_ok() {
            $self.changes.bump();
        }
        result
    }};
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// This node's configuration epoch: moved by its own configuration writes and, on a shared
    /// database, by other nodes' (seen through the backend).
    changes: Arc<changes::ConfigChanges>,
}

impl Store {
    /// Opens (creating if needed) the embedded SQLite database in `dir`, applies pending
    /// migrations, then brings every secret to rest under the current key of `keys`: values
    /// stored in clear by an earlier version are sealed, values under an older key are
    /// re-sealed, and a value that does not open is an error naming the key file, before
    /// anything is served.
    pub fn open(dir: &Path, sync: SyncMode, keys: Arc<Keyring>) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Sqlite(sqlite::SqliteStore::open(dir, sync, keys)?),
            changes: Arc::default(),
        })
    }

    /// Connects to the PostgreSQL database at `url` (see [`postgres`]), applies pending
    /// migrations, then brings every secret to rest under the current key of `keys`, as
    /// [`Store::open`] does.
    pub async fn connect(
        url: &str,
        keys: Arc<Keyring>,
        options: postgres::PgOptions,
    ) -> Result<Store, StoreError> {
        let backend = postgres::PgStore::connect(url, keys, Quotas::UNLIMITED, options).await?;
        Ok(Store {
            changes: backend.changes(),
            backend: Backend::Postgres(backend),
        })
    }

    /// Which backend this is: `sqlite` or `postgres` (for `/metrics` and logs).
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The connection pool's state, for a backend with one (PostgreSQL).
    pub fn pool_status(&self) -> Option<postgres::PoolStatus> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(b) => Some(b.pool_status()),
        }
    }

    /// Woken when another node made deliveries due, for a backend shared by several nodes:
    /// the dispatcher waits on it besides its own wake-ups.
    pub fn shared_wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(b) => Some(b.wake()),
        }
    }

    /// This store, refusing writes past `quotas` (a newly opened one has none).
    pub fn with_quotas(self, quotas: Quotas) -> Store {
        let backend = match self.backend {
            Backend::Sqlite(b) => Backend::Sqlite(b.with_quotas(quotas)),
            Backend::Postgres(b) => Backend::Postgres(b.with_quotas(quotas)),
        };
        Store {
            backend,
            changes: self.changes,
        }
    }

    /// This node's configuration epoch (see [`changes`]): what caches of subscriptions and
    /// plugins compare against, and wait on.
    pub fn config_changes(&self) -> &changes::ConfigChanges {
        &self.changes
    }

    /// True when other nodes may share this database (and change its configuration): this
    /// node must then follow their changes (see [`changes`]).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The embedded SQLite database's file in the data dir `dir` (it exists once a server or
    /// an import has used the dir).
    pub fn sqlite_file(dir: &Path) -> std::path::PathBuf {
        sqlite::SqliteStore::file(dir)
    }

    /// Which encryption keys the secrets in the SQLite database in `dir` are sealed with, read
    /// without starting a store (`wasmhook keys prune` runs beside a server, or without one).
    pub fn key_use(dir: &Path) -> Result<KeyUse, StoreError> {
        sqlite::SqliteStore::key_use(dir)
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        dispatch!(self, backend => backend.ping().await)
    }

    /// Commits the writes queued so far and stops the backend. Writes attempted afterwards,
    /// through any clone, fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        dispatch!(self, backend => backend.close().await)
    }

    /// Retention: deletes settled deliveries (succeeded, failed, filtered) last changed before
    /// `cutoff` (Unix ms) with their attempts, then events received before it that no delivery
    /// and no message refers to any more, each table in transactions of at most `batch` rows,
    /// until nothing is left. A pending delivery and its event are never deleted. `None` when
    /// another node of a shared database is running it right now (one node at a time).
    pub async fn purge_older_than(
        &self,
        cutoff: i64,
        batch: usize,
    ) -> Result<Option<Purged>, StoreError> {
        dispatch!(self, backend => backend.purge_older_than(cutoff, batch).await)
    }

    // ---- Moving an installation (`wasmhook export`, `wasmhook import`)

    /// Sends every carried row of every carried table ([`transfer::TABLES`]), secrets opened,
    /// from one consistent snapshot, in the order an import needs them. Streams: `out` is
    /// bounded, and no table is read into memory.
    pub async fn export(
        &self,
        out: tokio::sync::mpsc::Sender<transfer::Row>,
    ) -> Result<(), StoreError> {
        dispatch!(self, backend => backend.export(out).await)
    }

    /// The version of the schema (migrations applied), for a dump's header.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        dispatch!(self, backend => backend.schema_version().await)
    }

    /// Writes every row of `input` with this store's keys sealing the secrets, all in one
    /// transaction committed only when `input` ends with [`transfer::ImportItem::End`]:
    /// anything else (a row refused, an input that stops early, a target that holds data)
    /// writes nothing. `paths(plugin id, version)` names the file the caller wrote a
    /// version's component to, in this node's data dir.
    pub async fn import(
        &self,
        input: tokio::sync::mpsc::Receiver<transfer::ImportItem>,
        paths: transfer::ComponentPaths,
    ) -> Result<(), transfer::ImportError> {
        dispatch!(self, backend => backend.import(input, paths).await)
    }

    // ---- Accounts and API keys

    /// Creates an account together with its first API key.
    pub async fn create_account(
        &self,
        account: Account,
        key: NewApiKey,
    ) -> Result<Account, StoreError> {
        dispatch!(self, backend => backend.create_account(account, key).await)
    }

    /// Every account, oldest first.
    pub async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        dispatch!(self, backend => backend.list_accounts().await)
    }

    /// One account.
    pub async fn get_account(&self, id: String) -> Result<Account, StoreError> {
        dispatch!(self, backend => backend.get_account(id).await)
    }

    /// Issues another key for an existing account.
    pub async fn add_api_key(
        &self,
        account_id: String,
        key: NewApiKey,
        now: i64,
    ) -> Result<ApiKeyInfo, StoreError> {
        dispatch!(self, backend => backend.add_api_key(account_id, key, now).await)
    }

    /// The account's keys, revoked ones included.
    pub async fn list_api_keys(&self, account_id: String) -> Result<Vec<ApiKeyInfo>, StoreError> {
        dispatch!(self, backend => backend.list_api_keys(account_id).await)
    }

    /// Revokes a key; returns its hash so caches can forget it.
    pub async fn revoke_api_key(
        &self,
        account_id: String,
        key_id: String,
        now: i64,
    ) -> Result<[u8; 32], StoreError> {
        dispatch!(self, backend => backend.revoke_api_key(account_id, key_id, now).await)
    }

    /// The account a live (unrevoked) key belongs to.
    pub async fn account_for_key(&self, hash: [u8; 32]) -> Result<Option<String>, StoreError> {
        dispatch!(self, backend => backend.account_for_key(hash).await)
    }

    // ---- Console sessions

    /// The key id and account of a live (unrevoked) API key.
    pub async fn api_key_by_hash(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<(String, String)>, StoreError> {
        dispatch!(self, backend => backend.api_key_by_hash(hash).await)
    }

    /// Stores a session, and forgets sessions that expired.
    pub async fn create_console_session(&self, s: NewConsoleSession) -> Result<(), StoreError> {
        dispatch!(self, backend => backend.create_console_session(s).await)
    }

    /// The live session of a token hash at `now`: not expired, its key not revoked.
    pub async fn console_session(
        &self,
        token_hash: [u8; 32],
        now: i64,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        dispatch!(self, backend => backend.console_session(token_hash, now).await)
    }

    /// Ends a session (signing out); ending one that does not exist is not an error.
    pub async fn delete_console_session(&self, token_hash: [u8; 32]) -> Result<(), StoreError> {
        dispatch!(self, backend => backend.delete_console_session(token_hash).await)
    }

    // ---- Events

    /// Stores events all-or-none in one transaction, with one delivery per matching subscription.
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<Vec<Ingested>, StoreError> {
        dispatch!(self, backend => backend.ingest(events).await)
    }

    /// One event of the account.
    pub async fn get_event(&self, account_id: String, id: String) -> Result<Event, StoreError> {
        dispatch!(self, backend => backend.get_event(account_id, id).await)
    }

    /// The account's events, newest first, optionally of one type (on the type's index: see
    /// [`Store::search_events`]).
    pub async fn list_events(
        &self,
        account_id: String,
        event_type: Option<String>,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Event>, StoreError> {
        dispatch!(self, backend => backend.list_events(account_id, event_type, limit, cursor).await)
    }

    /// What the conversation index knows of a conversation.
    pub async fn conversation(
        &self,
        account_id: String,
        conversation_id: String,
    ) -> Result<Conversation, StoreError> {
        dispatch!(self, backend => backend.conversation(account_id, conversation_id).await)
    }

    // ---- Messages (send-message)

    /// Looks the conversation up, lets `build` shape the message and its `message:created` event
    /// from what is known of it, and stores both in one transaction. An unknown conversation is
    /// [`StoreError::NotFound`].
    pub async fn send_message<F>(
        &self,
        account_id: String,
        conversation_id: String,
        build: F,
    ) -> Result<(Message, Ingested), StoreError>
    where
        F: FnOnce(&Conversation) -> (Message, NewEvent) + Send + 'static,
    {
        dispatch!(self, backend => backend.send_message(account_id, conversation_id, build).await)
    }

    // ---- Deliveries

    /// One delivery with its attempts.
    pub async fn get_delivery(
        &self,
        account_id: String,
        id: String,
    ) -> Result<(Delivery, Vec<Attempt>), StoreError> {
        dispatch!(self, backend => backend.get_delivery(account_id, id).await)
    }

    /// Makes a delivery due now, whatever its status; one in flight is left to its attempt, and
    /// one of an ordered conversation takes its turn behind the delivery in flight, if any.
    pub async fn retry_delivery(
        &self,
        account_id: String,
        id: String,
        now: i64,
    ) -> Result<Delivery, StoreError> {
        dispatch!(self, backend => backend.retry_delivery(account_id, id, now).await)
    }

    /// Requeues a subscription's failed deliveries created since `since`; returns how many.
    pub async fn recover_deliveries(
        &self,
        account_id: String,
        subscription_id: String,
        since: i64,
        now: i64,
    ) -> Result<usize, StoreError> {
        dispatch!(self, backend => backend.recover_deliveries(account_id, subscription_id, since, now).await)
    }

    /// Disables a subscription (if not already) and records `event` in the same transaction;
    /// returns the event recorded, or `None` when it was disabled already.
    pub async fn disable_subscription(
        &self,
        subscription_seq: i64,
        reason: String,
        event: impl FnOnce(&Subscription) -> NewEvent + Send + 'static,
        now: i64,
    ) -> Result<Option<Event>, StoreError> {
        dispatch_change!(self, backend => backend.disable_subscription(subscription_seq, reason, event, now).await)
    }

    /// Pending deliveries in the whole store (for metrics).
    pub async fn queue_depth(&self) -> Result<i64, StoreError> {
        dispatch!(self, backend => backend.queue_depth().await)
    }

    // ---- Delivery listings

    /// Deliveries, newest first; an unknown subscription or event has none.
    pub async fn list_deliveries(
        &self,
        account_id: String,
        filter: DeliveryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Delivery>, StoreError> {
        dispatch!(self, backend => backend.list_deliveries(account_id, filter, limit, cursor).await)
    }

    // ---- Claims and outcomes (the dispatcher)

    /// Claims due deliveries under the scheduling rules (see the module docs).
    ///
    /// Answers once the claim is applied, without waiting for its commit: every later write
    /// sees it, and if the commit fails the claim is simply lost (its outcome will not be
    /// recorded, as with an expired lease, and the delivery is claimed again).
    pub async fn claim_due(&self, r: ClaimRequest) -> Result<Claims, StoreError> {
        dispatch!(self, backend => backend.claim_due(r).await)
    }

    /// Extends a claim's lease to `until`; false when the claim is no longer current.
    pub async fn extend_lease(
        &self,
        delivery_seq: i64,
        token: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, backend => backend.extend_lease(delivery_seq, token, until).await)
    }

    /// Writes an attempt's outcome, if its claim is still current.
    pub async fn record_outcome(&self, o: Outcome, now: i64) -> Result<Settled, StoreError> {
        dispatch!(self, backend => backend.record_outcome(o, now).await)
    }

    /// Queues an attempt's outcome and returns once it is queued: a claim made afterwards sees
    /// it (its slot is free, its conversation's next delivery released). What it recorded is
    /// known once applied, before the disk has it; `committed` says when the disk has it.
    pub async fn queue_outcome(
        &self,
        o: Outcome,
        now: i64,
    ) -> Result<Applied<Settled>, StoreError> {
        dispatch!(self, backend => backend.queue_outcome(o, now).await)
    }

    /// Extends the leases of claims waiting in a dispatcher's memory to `until`; for each, in
    /// order, whether its claim is still current.
    pub async fn extend_leases(
        &self,
        claims: Vec<(i64, i64)>,
        until: i64,
    ) -> Result<Vec<bool>, StoreError> {
        dispatch!(self, backend => backend.extend_leases(claims, until).await)
    }

    /// Gives back claims that were not attempted (the dispatcher is stopping, or their
    /// subscription's circuit breaker opened meanwhile): each is due again at `due_at`, with no
    /// attempt counted. Claims no longer current are left alone.
    pub async fn release_claims(
        &self,
        claims: Vec<(i64, i64)>,
        due_at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, backend => backend.release_claims(claims, due_at).await)
    }

    // ---- Subscriptions

    /// Stores a new subscription.
    pub async fn create_subscription(&self, sub: Subscription) -> Result<Subscription, StoreError> {
        dispatch!(self, backend => backend.create_subscription(sub).await)
    }

    /// One subscription of the account.
    pub async fn get_subscription(
        &self,
        account_id: String,
        id: String,
    ) -> Result<Subscription, StoreError> {
        dispatch!(self, backend => backend.get_subscription(account_id, id).await)
    }

    /// The account's subscriptions, newest first.
    pub async fn list_subscriptions(
        &self,
        account_id: String,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Subscription>, StoreError> {
        dispatch!(self, backend => backend.list_subscriptions(account_id, limit, cursor).await)
    }

    /// Applies `change` to a subscription and saves it, atomically. `change` may refuse with an
    /// error; what it returns is handed back beside the saved subscription.
    pub async fn update_subscription<F, T>(
        &self,
        account_id: String,
        id: String,
        change: F,
    ) -> Result<(Subscription, T), StoreError>
    where
        F: FnOnce(&mut Subscription) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        dispatch_change!(self, backend => backend.update_subscription(account_id, id, change).await)
    }

    /// Deletes a subscription and its deliveries.
    pub async fn delete_subscription(
        &self,
        account_id: String,
        id: String,
    ) -> Result<(), StoreError> {
        dispatch_change!(self, backend => backend.delete_subscription(account_id, id).await)
    }

    /// Moves a listener subscription's expiry (`wasmhook listen`): while its command line is
    /// connected, and when it leaves.
    pub async fn touch_listener(
        &self,
        account_id: String,
        id: String,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, backend => backend.touch_listener(account_id, id, expires_at).await)
    }

    /// Deletes the listener subscriptions (and their deliveries) whose expiry has passed, except
    /// those in `connected`, whose expiry moves to `grace` from now; returns the ids deleted.
    pub async fn delete_expired_listeners(
        &self,
        now: i64,
        connected: Vec<String>,
        grace: i64,
    ) -> Result<Vec<String>, StoreError> {
        let deleted = dispatch!(self, backend => backend.delete_expired_listeners(now, connected, grace).await)?;
        if !deleted.is_empty() {
            self.changes.bump();
        }
        Ok(deleted)
    }

    /// Subscriptions whose circuit breaker is tripped (open or half-open), by id.
    pub async fn tripped_circuits(&self) -> Result<Vec<(String, Circuit)>, StoreError> {
        dispatch!(self, backend => backend.tripped_circuits().await)
    }

    /// The account's Airy webhook, if it ever subscribed.
    pub async fn airy_webhook(
        &self,
        account_id: String,
    ) -> Result<Option<Subscription>, StoreError> {
        dispatch!(self, backend => backend.airy_webhook(account_id).await)
    }

    /// Changes the account's Airy webhook with `change`, creating it from `new` first if it has none.
    pub async fn upsert_airy_webhook<F>(
        &self,
        new: Subscription,
        change: F,
    ) -> Result<Subscription, StoreError>
    where
        F: FnOnce(&mut Subscription) + Send + 'static,
    {
        dispatch_change!(self, backend => backend.upsert_airy_webhook(new, change).await)
    }

    // ---- Plugins, their versions, key-value stores and logs

    /// Stores a new plugin with its first version, unless the account has as many plugins, or
    /// as many stored bytes, as its quotas allow (counted in this transaction).
    pub async fn create_plugin(
        &self,
        plugin: Plugin,
        version: PluginVersion,
    ) -> Result<Plugin, StoreError> {
        dispatch_change!(self, backend => backend.create_plugin(plugin, version).await)
    }

    /// Adds a version, unless it would take the account past its storage quota (counted in
    /// this transaction). It becomes current once compiled ([`Store::plugin_version_ready`]);
    /// one stored ready becomes current at once.
    pub async fn add_plugin_version(
        &self,
        account_id: String,
        id: String,
        version: PluginVersion,
    ) -> Result<Plugin, StoreError> {
        dispatch_change!(self, backend => backend.add_plugin_version(account_id, id, version).await)
    }

    /// The oldest upload still `compiling`, with its plugin's id: the compiler's next job.
    pub async fn next_compiling_version(
        &self,
    ) -> Result<Option<(String, PluginVersion)>, StoreError> {
        dispatch!(self, backend => backend.next_compiling_version().await)
    }

    /// Marks a compiled version `ready` (its artifact made by the engine `engine_hash`) and
    /// makes it current when it is the current one (a first version), newer than it, or the
    /// current one never compiled. Returns the plugin (secret config opened) when it is
    /// current: the caller loads it.
    /// `NotFound` when the plugin was deleted meanwhile.
    pub async fn plugin_version_ready(
        &self,
        id: String,
        version: u32,
        engine_hash: String,
    ) -> Result<Option<Plugin>, StoreError> {
        dispatch_change!(self, backend => backend.plugin_version_ready(id, version, engine_hash).await)
    }

    /// Marks a version `failed` with the reason; the current version, if one runs, stays.
    /// `NotFound` when the plugin was deleted meanwhile.
    pub async fn plugin_version_failed(
        &self,
        id: String,
        version: u32,
        reason: String,
    ) -> Result<(), StoreError> {
        dispatch_change!(self, backend => backend.plugin_version_failed(id, version, reason).await)
    }

    /// The next version number of a plugin.
    pub async fn next_plugin_version(
        &self,
        account_id: String,
        id: String,
    ) -> Result<u32, StoreError> {
        dispatch!(self, backend => backend.next_plugin_version(account_id, id).await)
    }

    /// Changes a plugin's settings with `change`, atomically.
    pub async fn update_plugin<F>(
        &self,
        account_id: String,
        id: String,
        change: F,
    ) -> Result<Plugin, StoreError>
    where
        F: FnOnce(&mut Plugin) + Send + 'static,
    {
        dispatch_change!(self, backend => backend.update_plugin(account_id, id, change).await)
    }

    /// One plugin of the account.
    pub async fn get_plugin(&self, account_id: String, id: String) -> Result<Plugin, StoreError> {
        dispatch!(self, backend => backend.get_plugin(account_id, id).await)
    }

    /// The account's plugins, newest first.
    pub async fn list_plugins(
        &self,
        account_id: String,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Plugin>, StoreError> {
        dispatch!(self, backend => backend.list_plugins(account_id, limit, cursor).await)
    }

    /// Deletes a plugin unless a subscription uses it; returns its versions (to remove their files).
    pub async fn delete_plugin(
        &self,
        account_id: String,
        id: String,
    ) -> Result<Vec<PluginVersion>, StoreError> {
        dispatch_change!(self, backend => backend.delete_plugin(account_id, id).await)
    }

    /// A plugin's versions, newest first.
    pub async fn plugin_versions(
        &self,
        account_id: String,
        id: String,
    ) -> Result<Vec<PluginVersion>, StoreError> {
        dispatch!(self, backend => backend.plugin_versions(account_id, id).await)
    }

    /// Every plugin with its current version, for loading at start-up.
    pub async fn all_current_plugins(&self) -> Result<Vec<(Plugin, PluginVersion)>, StoreError> {
        dispatch!(self, backend => backend.all_current_plugins().await)
    }

    /// The uploaded component of a plugin's version (what a node compiles it from); `None`
    /// once the version failed. `NotFound` without the version.
    pub async fn plugin_component(
        &self,
        id: String,
        version: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self, backend => backend.plugin_component(id, version).await)
    }

    /// Records that a version's compiled artifact was rebuilt for a new engine.
    pub async fn set_plugin_engine_hash(
        &self,
        id: String,
        version: u32,
        hash: String,
    ) -> Result<(), StoreError> {
        dispatch!(self, backend => backend.set_plugin_engine_hash(id, version, hash).await)
    }

    /// Reads a key of a plugin's store.
    pub async fn kv_get(
        &self,
        plugin_id: String,
        key: String,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self, backend => backend.kv_get(plugin_id, key).await)
    }

    /// How many keys a plugin's store holds.
    pub async fn kv_key_count(&self, plugin_id: String) -> Result<u32, StoreError> {
        dispatch!(self, backend => backend.kv_key_count(plugin_id).await)
    }

    /// Writes a key, refusing a new key beyond the plugin's key limit.
    pub async fn kv_set(
        &self,
        plugin_id: String,
        key: String,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> Result<Result<(), KvRefusal>, StoreError> {
        dispatch!(self, backend => backend.kv_set(plugin_id, key, value, limits).await)
    }

    /// Adds `delta` to the counter under `key` (stored as decimal text; a missing key counts as
    /// 0) and returns the new value. The read and the write are one operation of the single
    /// writer, so concurrent increments never lose an update.
    pub async fn kv_increment(
        &self,
        plugin_id: String,
        key: String,
        delta: i64,
        limits: KvLimits,
    ) -> Result<Result<i64, KvRefusal>, StoreError> {
        dispatch!(self, backend => backend.kv_increment(plugin_id, key, delta, limits).await)
    }

    /// Writes `value` under `key` only if the current value is `expected` (`None`: only if the
    /// key is absent); returns whether it wrote. The value's size is checked by the caller, as
    /// for [`Store::kv_set`]. Compare and write are one operation of the
    /// single writer, so of concurrent calls expecting the same value at most one succeeds.
    pub async fn kv_set_if(
        &self,
        plugin_id: String,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> Result<Result<bool, KvRefusal>, StoreError> {
        dispatch!(self, backend => backend.kv_set_if(plugin_id, key, expected, value, limits).await)
    }

    /// Removes a key.
    pub async fn kv_delete(&self, plugin_id: String, key: String) -> Result<(), StoreError> {
        dispatch!(self, backend => backend.kv_delete(plugin_id, key).await)
    }

    /// Appends log lines (per plugin) in one transaction and trims old ones.
    pub async fn append_plugin_logs(
        &self,
        batch: Vec<(String, Vec<PluginLogLine>)>,
    ) -> Result<(), StoreError> {
        dispatch!(self, backend => backend.append_plugin_logs(batch).await)
    }

    /// A plugin's most recent log lines, newest first.
    pub async fn plugin_logs(
        &self,
        account_id: String,
        id: String,
        limit: usize,
    ) -> Result<Vec<PluginLogLine>, StoreError> {
        dispatch!(self, backend => backend.plugin_logs(account_id, id, limit).await)
    }

    /// Whether the account may add a plugin (`new_plugin`) or a version of `size` bytes, as
    /// things stand: checked before compiling an upload, to refuse it cheaply. The write that
    /// stores it checks again, in its own transaction.
    pub async fn plugin_quota_allows(
        &self,
        account_id: String,
        new_plugin: bool,
        size: u64,
    ) -> Result<(), StoreError> {
        dispatch!(self, backend => backend.plugin_quota_allows(account_id, new_plugin, size).await)
    }

    /// Whether a plugin exists in the account.
    pub async fn plugin_exists(&self, account_id: String, id: String) -> Result<bool, StoreError> {
        dispatch!(self, backend => backend.plugin_exists(account_id, id).await)
    }

    // ---- Console summaries

    /// The account's deliveries, most recently changed first, optionally in one status and
    /// changed since a time; `after` is the (updated_at, seq) of the previous page's last row.
    /// Reads the (account, updated_at, status) index.
    pub async fn account_deliveries(
        &self,
        account_id: String,
        status: Option<DeliveryStatus>,
        since: Option<i64>,
        limit: usize,
        after: Option<(i64, i64)>,
    ) -> Result<(Vec<Delivery>, Option<(i64, i64)>), StoreError> {
        dispatch!(self, backend => backend.account_deliveries(account_id, status, since, limit, after).await)
    }

    /// A subscription's deliveries, newest first, optionally in one status.
    pub async fn subscription_deliveries(
        &self,
        account_id: String,
        subscription_id: String,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Delivery>, StoreError> {
        dispatch!(self, backend => backend.subscription_deliveries(account_id, subscription_id, status, limit, cursor).await)
    }

    /// The newest delivery of each of these subscriptions of the account.
    pub async fn latest_deliveries(
        &self,
        account_id: String,
        subscription_ids: Vec<String>,
    ) -> Result<HashMap<String, Delivery>, StoreError> {
        dispatch!(self, backend => backend.latest_deliveries(account_id, subscription_ids).await)
    }

    /// How many of a subscription's deliveries failed (dead letters) created since `since`: what
    /// `recover_deliveries` would requeue.
    pub async fn count_failed_since(
        &self,
        account_id: String,
        subscription_id: String,
        since: i64,
    ) -> Result<i64, StoreError> {
        dispatch!(self, backend => backend.count_failed_since(account_id, subscription_id, since).await)
    }

    /// An event's deliveries, with where each goes.
    pub async fn event_deliveries(
        &self,
        account_id: String,
        event_id: String,
    ) -> Result<Vec<(Delivery, Target)>, StoreError> {
        dispatch!(self, backend => backend.event_deliveries(account_id, event_id).await)
    }

    /// The account's events matching `search`, newest first.
    pub async fn search_events(
        &self,
        account_id: String,
        search: EventSearch,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Event>, StoreError> {
        dispatch!(self, backend => backend.search_events(account_id, search, limit, cursor).await)
    }

    /// The events a plugin emitted while handling `event_id` (the other end of causation).
    pub async fn caused_events(
        &self,
        account_id: String,
        event_id: String,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        dispatch!(self, backend => backend.caused_events(account_id, event_id, limit).await)
    }

    /// The overview of an account at `now`: the last hour's deliveries, plugin errors since
    /// `errors_since`.
    pub async fn overview(
        &self,
        account_id: String,
        now: i64,
        errors_since: i64,
    ) -> Result<Overview, StoreError> {
        dispatch!(self, backend => backend.overview(account_id, now, errors_since).await)
    }

    /// For each plugin of the account: the subscriptions using it and its error lines since
    /// `errors_since`.
    pub async fn plugin_uses(
        &self,
        account_id: String,
        errors_since: i64,
    ) -> Result<HashMap<String, PluginUse>, StoreError> {
        dispatch!(self, backend => backend.plugin_uses(account_id, errors_since).await)
    }
}
