//! Plugins, their versions and their logs, on PostgreSQL (the key-value store is in `kv`). The
//! values of a plugin's secret config keys are sealed when written and opened when read.
//!
//! Quotas are counted under the account's row lock (see `subscriptions::lock_account`) and
//! changes that read before they write lock the plugin's row, so that nodes sharing the
//! database act one after the other.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::decode::{get, int_req, json, json_col, parsed, u32_req};
use super::subscriptions::lock_account;
use super::{PgStore, db};
use crate::model::{InstanceMode, LogLevel, Plugin, PluginLogLine, PluginVersion, VersionStatus};
use crate::quotas::{Quota, Quotas};
use crate::secrets::Keyring;
use crate::store::policy::{KEEP_LOG_LINES, logs_to_trim};
use crate::store::sealing::{open_config, seal_config};
use crate::store::{Page, StoreError};

/// A plugin as read: its row, with its newest version's number, status and failure.
const SELECT_PLUGIN: &str = "SELECT p.seq, p.id, p.account_id, p.name, p.config, p.allowed_hosts,
    p.limits, p.current_version, p.created_at, p.updated_at, p.log_level, p.secret_keys, p.instances,
    v.version, v.status, v.failure
    FROM plugins p JOIN plugin_versions v ON v.plugin_id = p.id
        AND v.version = (SELECT MAX(version) FROM plugin_versions WHERE plugin_id = p.id)";
const VERSION_COLUMNS: &str =
    "version, sha256, size_bytes, wasm_path, cwasm_path, engine_hash, created_at, status, failure";

/// The row as stored: the values of its secret config keys still sealed (see [`open`]).
fn row(r: &Row) -> Result<(i64, Plugin), StoreError> {
    Ok((
        int_req(r, 0, "seq")?,
        Plugin {
            id: get(r, 1)?,
            account_id: get(r, 2)?,
            name: get(r, 3)?,
            config: json_col(r, 4, "config")?,
            allowed_hosts: json_col(r, 5, "allowed_hosts")?,
            limits: json_col(r, 6, "limits")?,
            version: u32_req(r, 7, "current_version")?,
            created_at: int_req(r, 8, "created_at")?,
            updated_at: int_req(r, 9, "updated_at")?,
            log_level: parsed(r, 10, LogLevel::parse, "log_level")?,
            secret_keys: json_col(r, 11, "secret_keys")?,
            instances: parsed(r, 12, InstanceMode::parse, "instances")?,
            latest_version: u32_req(r, 13, "version")?,
            status: parsed(r, 14, VersionStatus::parse, "status")?,
            failure: get(r, 15)?,
        },
    ))
}

fn version_row(r: &Row) -> Result<PluginVersion, StoreError> {
    version_row_at(r, 0)
}

/// Opens a plugin as read by [`row`]: its secret config values in clear.
fn open(keys: &Keyring, mut p: Plugin) -> Result<Plugin, StoreError> {
    open_config(keys, &p.id, &mut p.config, &p.secret_keys)?;
    Ok(p)
}

/// The config column as written: secret values sealed.
fn stored_config(keys: &Keyring, p: &Plugin) -> String {
    json(&seal_config(keys, &p.id, &p.config, &p.secret_keys))
}

/// A plugin with its secret config values opened.
async fn get_open(
    c: &impl GenericClient,
    keys: &Keyring,
    account_id: &str,
    id: &str,
) -> Result<Plugin, StoreError> {
    open(keys, get_in(c, account_id, id).await?)
}

/// A plugin as stored (secret config values sealed): to check it exists, or before [`open`].
async fn get_in(c: &impl GenericClient, account_id: &str, id: &str) -> Result<Plugin, StoreError> {
    let r = c
        .query_opt(
            &format!("{SELECT_PLUGIN} WHERE p.id = $1 AND p.account_id = $2"),
            &[&id, &account_id],
        )
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
    row(&r).map(|(_, p)| p)
}

/// Locks a plugin's row until the transaction ends; `NotFound` unless it is the account's.
async fn lock_plugin(c: &impl GenericClient, account_id: &str, id: &str) -> Result<(), StoreError> {
    c.query_opt(
        "SELECT 1 FROM plugins WHERE id = $1 AND account_id = $2 FOR NO KEY UPDATE",
        &[&id, &account_id],
    )
    .await
    .map_err(db)?
    .map(|_| ())
    .ok_or(StoreError::NotFound)
}

/// The uploaded component's bytes, read from the file the upload wrote (`wasm_path`) so
/// that every node can compile the version from the database; `None` for a version stored
/// without a file. Read before the transaction starts, so no lock waits on the disk.
async fn component(v: &PluginVersion) -> Result<Option<Vec<u8>>, StoreError> {
    if v.wasm_path.is_empty() {
        return Ok(None);
    }
    tokio::fs::read(&v.wasm_path).await.map(Some).map_err(|e| {
        StoreError::Database(format!(
            "reading the uploaded component {}: {e}",
            v.wasm_path
        ))
    })
}

async fn insert_version(
    c: &impl GenericClient,
    plugin_id: &str,
    v: &PluginVersion,
    wasm: Option<&[u8]>,
) -> Result<(), StoreError> {
    let size = i64::try_from(v.size_bytes).map_err(|_| super::decode::corrupt("size_bytes"))?;
    c.execute(
        &format!(
            "INSERT INTO plugin_versions (plugin_id, {VERSION_COLUMNS}, wasm)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ),
        &[
            &plugin_id,
            &i64::from(v.version),
            &v.sha256,
            &size,
            &v.wasm_path,
            &v.cwasm_path,
            &v.engine_hash,
            &v.created_at,
            &v.status.as_str(),
            &v.failure,
            &wasm,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

async fn count_plugins(c: &impl GenericClient, account_id: &str) -> Result<u64, StoreError> {
    let r = c
        .query_one(
            "SELECT COUNT(*) FROM plugins WHERE account_id = $1",
            &[&account_id],
        )
        .await
        .map_err(db)?;
    Ok(get::<i64>(&r, 0)? as u64)
}

/// Bytes of plugin components the account stores, every version counted but failed ones
/// (their component is not kept).
async fn stored_bytes(c: &impl GenericClient, account_id: &str) -> Result<u64, StoreError> {
    let r = c
        .query_one(
            "SELECT COALESCE(SUM(v.size_bytes), 0)::BIGINT FROM plugin_versions v
             JOIN plugins p ON p.id = v.plugin_id WHERE p.account_id = $1 AND v.status != 'failed'",
            &[&account_id],
        )
        .await
        .map_err(db)?;
    Ok(get::<i64>(&r, 0)? as u64)
}

/// Refuses a version of `size` bytes that would take the account past its storage quota.
async fn check_storage(
    c: &impl GenericClient,
    quotas: Quotas,
    account_id: &str,
    size: u64,
) -> Result<(), StoreError> {
    Ok(quotas.check(Quota::PluginBytes, stored_bytes(c, account_id).await?, size)?)
}

impl PgStore {
    /// Stores a new plugin with its first version, unless the account has as many plugins, or
    /// as many stored bytes, as its quotas allow (counted under the account's lock).
    pub async fn create_plugin(
        &self,
        plugin: Plugin,
        version: PluginVersion,
    ) -> Result<Plugin, StoreError> {
        let wasm = component(&version).await?;
        let mut client = self.client().await?;
        let stored = self
            .create_plugin_in(&mut client, plugin, &version, wasm.as_deref())
            .await;
        PgStore::release(client, wasm.map_or(0, |w| w.len()));
        stored
    }

    async fn create_plugin_in(
        &self,
        client: &mut deadpool_postgres::Object,
        plugin: Plugin,
        version: &PluginVersion,
        wasm: Option<&[u8]>,
    ) -> Result<Plugin, StoreError> {
        let tx = client.transaction().await.map_err(db)?;
        lock_account(&tx, &plugin.account_id).await?;
        self.quotas.check(
            Quota::Plugins,
            count_plugins(&tx, &plugin.account_id).await?,
            1,
        )?;
        check_storage(&tx, self.quotas, &plugin.account_id, version.size_bytes).await?;
        tx.execute(
            "INSERT INTO plugins (id, account_id, name, config, allowed_hosts, limits,
                current_version, created_at, updated_at, log_level, secret_keys, instances)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &plugin.id,
                &plugin.account_id,
                &plugin.name,
                &stored_config(&self.keys, &plugin),
                &json(&plugin.allowed_hosts),
                &json(&plugin.limits),
                &i64::from(plugin.version),
                &plugin.created_at,
                &plugin.updated_at,
                &plugin.log_level.as_str(),
                &json(&plugin.secret_keys),
                &plugin.instances.as_str(),
            ],
        )
        .await
        .map_err(db)?;
        insert_version(&tx, &plugin.id, version, wasm).await?;
        let stored = get_open(&tx, &self.keys, &plugin.account_id, &plugin.id).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    /// Adds a version, unless it would take the account past its storage quota (counted under
    /// the account's lock). It becomes current once compiled ([`PgStore::plugin_version_ready`]);
    /// one stored ready becomes current at once.
    pub async fn add_plugin_version(
        &self,
        account_id: String,
        id: String,
        version: PluginVersion,
    ) -> Result<Plugin, StoreError> {
        let wasm = component(&version).await?;
        let mut client = self.client().await?;
        let stored = self
            .add_plugin_version_in(&mut client, account_id, id, &version, wasm.as_deref())
            .await;
        PgStore::release(client, wasm.map_or(0, |w| w.len()));
        stored
    }

    async fn add_plugin_version_in(
        &self,
        client: &mut deadpool_postgres::Object,
        account_id: String,
        id: String,
        version: &PluginVersion,
        wasm: Option<&[u8]>,
    ) -> Result<Plugin, StoreError> {
        let tx = client.transaction().await.map_err(db)?;
        lock_account(&tx, &account_id).await?;
        lock_plugin(&tx, &account_id, &id).await?;
        check_storage(&tx, self.quotas, &account_id, version.size_bytes).await?;
        insert_version(&tx, &id, version, wasm).await?;
        if version.status == VersionStatus::Ready {
            tx.execute(
                "UPDATE plugins SET current_version = $2, updated_at = $3 WHERE id = $1",
                &[&id, &i64::from(version.version), &version.created_at],
            )
            .await
            .map_err(db)?;
        }
        let stored = get_open(&tx, &self.keys, &account_id, &id).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    /// The oldest upload still `compiling`, with its plugin's id: the compiler's next job.
    pub async fn next_compiling_version(
        &self,
    ) -> Result<Option<(String, PluginVersion)>, StoreError> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!(
                    "SELECT {VERSION_COLUMNS}, plugin_id FROM plugin_versions
                     WHERE status = 'compiling' ORDER BY created_at LIMIT 1"
                ),
                &[],
            )
            .await
            .map_err(db)?
            .map(|r| Ok((get(&r, 9)?, version_row(&r)?)))
            .transpose()
    }

    /// Marks a compiled version `ready` (its artifact made by the engine `engine_hash`) and
    /// makes it current when it is the current one (a first version), newer than it, or the
    /// current one never compiled. Returns the plugin (secret config opened) when it is
    /// current: the caller loads it. `NotFound` when the plugin was deleted meanwhile.
    /// The plugin's row is locked first: versions finishing on two nodes at once are decided
    /// one after the other.
    pub async fn plugin_version_ready(
        &self,
        id: String,
        version: u32,
        engine_hash: String,
    ) -> Result<Option<Plugin>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let plugin = tx
            .query_opt(
                "SELECT account_id FROM plugins WHERE id = $1 FOR NO KEY UPDATE",
                &[&id],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        let account_id: String = get(&plugin, 0)?;
        let version = i64::from(version);
        let updated = tx
            .execute(
                "UPDATE plugin_versions SET status = 'ready', failure = NULL, engine_hash = $3
                 WHERE plugin_id = $1 AND version = $2",
                &[&id, &version, &engine_hash],
            )
            .await
            .map_err(db)?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        let activated = tx
            .execute(
                "UPDATE plugins SET current_version = $2, updated_at = $3 WHERE id = $1 AND (
                     current_version <= $2 OR (SELECT status FROM plugin_versions
                         WHERE plugin_id = $1 AND version = plugins.current_version) != 'ready')",
                &[&id, &version, &crate::clock::now_ms()],
            )
            .await
            .map_err(db)?;
        let current = if activated == 0 {
            None
        } else {
            Some(get_open(&tx, &self.keys, &account_id, &id).await?)
        };
        tx.commit().await.map_err(db)?;
        Ok(current)
    }

    /// Marks a version `failed` with the reason; the current version, if one runs, stays.
    /// `NotFound` when the plugin was deleted meanwhile.
    pub async fn plugin_version_failed(
        &self,
        id: String,
        version: u32,
        reason: String,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let updated = client
            .execute(
                // A failed version's component is not kept (as SQLite's compiler removes its file).
                "UPDATE plugin_versions SET status = 'failed', failure = $3, wasm = NULL
                 WHERE plugin_id = $1 AND version = $2",
                &[&id, &i64::from(version), &reason],
            )
            .await
            .map_err(db)?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The next version number of a plugin.
    pub async fn next_plugin_version(
        &self,
        account_id: String,
        id: String,
    ) -> Result<u32, StoreError> {
        let client = self.client().await?;
        get_in(&client, &account_id, &id).await?;
        let r = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT + 1 FROM plugin_versions WHERE plugin_id = $1",
                &[&id],
            )
            .await
            .map_err(db)?;
        u32_req(&r, 0, "version")
    }

    /// Changes a plugin's settings with `change`, atomically: the row is locked from the read
    /// to the commit.
    pub async fn update_plugin<F>(
        &self,
        account_id: String,
        id: String,
        change: F,
    ) -> Result<Plugin, StoreError>
    where
        F: FnOnce(&mut Plugin) + Send + 'static,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        lock_plugin(&tx, &account_id, &id).await?;
        let mut p = get_open(&tx, &self.keys, &account_id, &id).await?;
        change(&mut p);
        tx.execute(
            "UPDATE plugins SET name = $2, config = $3, allowed_hosts = $4, limits = $5, updated_at = $6,
                log_level = $7, secret_keys = $8, instances = $9
             WHERE id = $1",
            &[
                &p.id,
                &p.name,
                &stored_config(&self.keys, &p),
                &json(&p.allowed_hosts),
                &json(&p.limits),
                &p.updated_at,
                &p.log_level.as_str(),
                &json(&p.secret_keys),
                &p.instances.as_str(),
            ],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(p)
    }

    /// One plugin of the account.
    pub async fn get_plugin(&self, account_id: String, id: String) -> Result<Plugin, StoreError> {
        let client = self.client().await?;
        get_open(&client, &self.keys, &account_id, &id).await
    }

    /// The account's plugins, newest first.
    pub async fn list_plugins(
        &self,
        account_id: String,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Plugin>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "{SELECT_PLUGIN} WHERE p.account_id = $1 AND p.seq < $2 ORDER BY p.seq DESC LIMIT $3"
                ),
                &[&account_id, &cursor.unwrap_or(i64::MAX), &(limit as i64 + 1)],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                let (seq, p) = row(r)?;
                Ok((seq, open(&self.keys, p)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page::from_rows(rows, limit))
    }

    /// Deletes a plugin unless a subscription uses it; returns its versions (to remove their
    /// files). The plugin's row is locked before the check, and a subscription that names it
    /// (created meanwhile on another node) is looked for under that lock.
    pub async fn delete_plugin(
        &self,
        account_id: String,
        id: String,
    ) -> Result<Vec<PluginVersion>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.query_opt(
            "SELECT 1 FROM plugins WHERE id = $1 AND account_id = $2 FOR UPDATE",
            &[&id, &account_id],
        )
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        let users = tx
            .query(
                "SELECT id FROM subscriptions WHERE account_id = $1
                   AND (plugin_id = $2 OR transform_plugin_id = $2) ORDER BY seq",
                &[&account_id, &id],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| get(r, 0))
            .collect::<Result<Vec<String>, _>>()?;
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "the plugin is used by subscription(s) {}; delete them or detach the plugin first",
                users.join(", ")
            )));
        }
        let versions = tx
            .query(
                &format!("SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE plugin_id = $1 ORDER BY version"),
                &[&id],
            )
            .await
            .map_err(db)?
            .iter()
            .map(version_row)
            .collect::<Result<Vec<_>, _>>()?;
        tx.execute("DELETE FROM plugins WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(versions)
    }

    /// A plugin's versions, newest first.
    pub async fn plugin_versions(
        &self,
        account_id: String,
        id: String,
    ) -> Result<Vec<PluginVersion>, StoreError> {
        let client = self.client().await?;
        get_in(&client, &account_id, &id).await?;
        client
            .query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE plugin_id = $1 ORDER BY version DESC"
                ),
                &[&id],
            )
            .await
            .map_err(db)?
            .iter()
            .map(version_row)
            .collect()
    }

    /// Every plugin with its current version, for loading at start-up.
    pub async fn all_current_plugins(&self) -> Result<Vec<(Plugin, PluginVersion)>, StoreError> {
        let client = self.client().await?;
        // One query: each plugin's row beside its current version's (the newest version's
        // status comes from SELECT_PLUGIN's join).
        let rows = client
            .query(
                &format!(
                    "SELECT q.*, c.version, c.sha256, c.size_bytes, c.wasm_path, c.cwasm_path,
                        c.engine_hash, c.created_at, c.status, c.failure
                     FROM ({SELECT_PLUGIN}) q
                     LEFT JOIN plugin_versions c ON c.plugin_id = q.id AND c.version = q.current_version
                     ORDER BY q.seq"
                ),
                &[],
            )
            .await
            .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let (_, p) = row(r)?;
            let p = open(&self.keys, p)?;
            // Columns 16.. are the current version's; absent, the plugin points at nothing.
            let v: Option<i64> = super::decode::int(r, 16)?;
            if v.is_none() {
                return Err(StoreError::NotFound);
            }
            out.push((p, version_row_at(r, 16)?));
        }
        Ok(out)
    }

    /// The uploaded component of a plugin's version, as stored in the database (every node
    /// compiles from these bytes, never from another node's files); `None` once the version
    /// failed, or for one stored without a component. `NotFound` without the version.
    pub async fn plugin_component(
        &self,
        id: String,
        version: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let r = client
            .query_opt(
                "SELECT wasm FROM plugin_versions WHERE plugin_id = $1 AND version = $2",
                &[&id, &i64::from(version)],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        let wasm: Option<Vec<u8>> = get(&r, 0)?;
        drop(r);
        PgStore::release(client, wasm.as_ref().map_or(0, Vec::len));
        Ok(wasm)
    }

    /// Records that a version's compiled artifact was rebuilt for a new engine.
    pub async fn set_plugin_engine_hash(
        &self,
        id: String,
        version: u32,
        hash: String,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE plugin_versions SET engine_hash = $3 WHERE plugin_id = $1 AND version = $2",
                &[&id, &i64::from(version), &hash],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Appends log lines (per plugin) in one transaction and trims each written plugin's log
    /// to its newest lines (see [`KEEP_LOG_LINES`]).
    pub async fn append_plugin_logs(
        &self,
        batch: Vec<(String, Vec<PluginLogLine>)>,
    ) -> Result<(), StoreError> {
        let mut plugin_ids = Vec::new();
        let mut event_ids = Vec::new();
        let mut levels = Vec::new();
        let mut messages = Vec::new();
        let mut ats = Vec::new();
        for (plugin_id, lines) in &batch {
            for l in lines {
                plugin_ids.push(plugin_id.as_str());
                event_ids.push(l.event_id.as_deref().map(text));
                levels.push(text(&l.level));
                messages.push(text(&l.message));
                ats.push(l.at);
            }
        }
        if plugin_ids.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // One multi-row insert; WITH ORDINALITY keeps the batch's order in `seq`.
        tx.execute(
            "INSERT INTO plugin_logs (plugin_id, event_id, level, message, at)
             SELECT p, e, l, m, a FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[])
                 WITH ORDINALITY AS t(p, e, l, m, a, n) ORDER BY n",
            &[&plugin_ids, &event_ids, &levels, &messages, &ats],
        )
        .await
        .map_err(db)?;
        for plugin_id in logs_to_trim(&batch) {
            tx.execute(
                "DELETE FROM plugin_logs WHERE plugin_id = $1 AND seq <= (
                     SELECT seq FROM plugin_logs WHERE plugin_id = $1 ORDER BY seq DESC
                     LIMIT 1 OFFSET $2)",
                &[&plugin_id, &KEEP_LOG_LINES],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// A plugin's most recent log lines, newest first.
    pub async fn plugin_logs(
        &self,
        account_id: String,
        id: String,
        limit: usize,
    ) -> Result<Vec<PluginLogLine>, StoreError> {
        let client = self.client().await?;
        get_in(&client, &account_id, &id).await?;
        client
            .query(
                "SELECT at, level, event_id, message FROM plugin_logs WHERE plugin_id = $1
                 ORDER BY seq DESC LIMIT $2",
                &[&id, &(limit as i64)],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                Ok(PluginLogLine {
                    at: int_req(r, 0, "at")?,
                    level: get(r, 1)?,
                    event_id: get(r, 2)?,
                    message: get(r, 3)?,
                })
            })
            .collect()
    }

    /// Whether the account may add a plugin (`new_plugin`) or a version of `size` bytes, as
    /// things stand: checked before compiling an upload, to refuse it cheaply. The write that
    /// stores it checks again, under the account's lock.
    pub async fn plugin_quota_allows(
        &self,
        account_id: String,
        new_plugin: bool,
        size: u64,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        if new_plugin {
            self.quotas.check(
                Quota::Plugins,
                count_plugins(&client, &account_id).await?,
                1,
            )?;
        }
        check_storage(&client, self.quotas, &account_id, size).await
    }

    /// Whether a plugin exists in the account.
    pub async fn plugin_exists(&self, account_id: String, id: String) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let r = client
            .query_opt(
                "SELECT 1 FROM plugins WHERE id = $1 AND account_id = $2",
                &[&id, &account_id],
            )
            .await
            .map_err(db)?;
        Ok(r.is_some())
    }
}

/// A log line's text as PostgreSQL can hold it: a plugin may write anything, and one NUL
/// character (which PostgreSQL's text refuses) must not cost the whole batch its lines.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

/// A version read from columns `at..` of a row (in [`VERSION_COLUMNS`]'s order).
fn version_row_at(r: &Row, at: usize) -> Result<PluginVersion, StoreError> {
    Ok(PluginVersion {
        version: u32_req(r, at, "version")?,
        sha256: get(r, at + 1)?,
        size_bytes: u64::try_from(int_req(r, at + 2, "size_bytes")?)
            .map_err(|_| super::decode::corrupt("size_bytes"))?,
        wasm_path: get(r, at + 3)?,
        cwasm_path: get(r, at + 4)?,
        engine_hash: get(r, at + 5)?,
        created_at: int_req(r, at + 6, "created_at")?,
        status: parsed(r, at + 7, VersionStatus::parse, "status")?,
        failure: get(r, at + 8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(id: &str) -> Plugin {
        Plugin {
            id: id.into(),
            account_id: "acc_a".into(),
            name: id.into(),
            config: Default::default(),
            secret_keys: Default::default(),
            allowed_hosts: vec![],
            limits: Default::default(),
            log_level: LogLevel::Info,
            instances: Default::default(),
            version: 1,
            latest_version: 1,
            status: VersionStatus::Ready,
            failure: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn version(n: u32, size: u64) -> PluginVersion {
        PluginVersion {
            version: n,
            sha256: String::new(),
            size_bytes: size,
            wasm_path: String::new(),
            cwasm_path: String::new(),
            engine_hash: String::new(),
            created_at: 0,
            status: VersionStatus::Ready,
            failure: None,
        }
    }

    async fn nodes(quotas: Quotas) -> Option<Vec<PgStore>> {
        super::super::subscriptions::tests::nodes(quotas, 2).await
    }

    #[tokio::test]
    async fn concurrent_creations_on_two_nodes_stop_exactly_at_the_quotas() {
        let Some(nodes) = nodes(Quotas {
            plugins: 3,
            plugin_bytes: 1000,
            subscriptions: 0,
        })
        .await
        else {
            return;
        };
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let node = nodes[i % 2].clone();
                tokio::spawn(async move {
                    node.create_plugin(plugin(&format!("plg_{i}")), version(1, 100))
                        .await
                })
            })
            .collect();
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => {}
                Err(StoreError::Quota(q)) => {
                    assert_eq!((q.quota, q.limit, q.usage), (Quota::Plugins, 3, 3));
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(refused, 5);
        let mine: Vec<String> = {
            let c = nodes[0].client().await.unwrap();
            c.query("SELECT id FROM plugins ORDER BY seq", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        // Versions count against the storage quota: 300 stored, 700 more fit, through
        // either node.
        nodes[1]
            .add_plugin_version("acc_a".into(), mine[0].clone(), version(2, 700))
            .await
            .unwrap();
        match nodes[0]
            .add_plugin_version("acc_a".into(), mine[1].clone(), version(2, 1))
            .await
        {
            Err(StoreError::Quota(q)) => assert_eq!(
                (q.quota, q.limit, q.usage),
                (Quota::PluginBytes, 1000, 1000)
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            nodes[0].plugin_quota_allows("acc_a".into(), false, 1).await,
            Err(StoreError::Quota(_))
        ));
        assert!(matches!(
            nodes[0].plugin_quota_allows("acc_a".into(), true, 0).await,
            Err(StoreError::Quota(_))
        ));
    }

    #[tokio::test]
    async fn a_version_becomes_current_once_ready_and_never_when_it_failed() {
        let Some(nodes) = nodes(Quotas {
            plugins: 10,
            plugin_bytes: 250,
            subscriptions: 0,
        })
        .await
        else {
            return;
        };
        let store = &nodes[0];
        let compiling = |n, size| PluginVersion {
            status: VersionStatus::Compiling,
            ..version(n, size)
        };
        let p = store
            .create_plugin(plugin("plg_a"), compiling(1, 100))
            .await
            .unwrap();
        assert_eq!(
            (p.version, p.latest_version, p.status),
            (1, 1, VersionStatus::Compiling)
        );
        let next = store.next_compiling_version().await.unwrap().unwrap();
        assert_eq!((next.0.as_str(), next.1.version), ("plg_a", 1));
        let ready = nodes[1]
            .plugin_version_ready("plg_a".into(), 1, "h".into())
            .await
            .unwrap();
        assert_eq!(
            ready.map(|p| (p.version, p.status)),
            Some((1, VersionStatus::Ready))
        );
        assert!(store.next_compiling_version().await.unwrap().is_none());
        assert_eq!(
            store
                .next_plugin_version("acc_a".into(), "plg_a".into())
                .await
                .unwrap(),
            2
        );

        // Version 2 fails: version 1 stays current, and 2's bytes no longer count.
        let p = store
            .add_plugin_version("acc_a".into(), "plg_a".into(), compiling(2, 100))
            .await
            .unwrap();
        assert_eq!(
            (p.version, p.latest_version, p.status),
            (1, 2, VersionStatus::Compiling)
        );
        store
            .plugin_version_failed("plg_a".into(), 2, "no handler".into())
            .await
            .unwrap();
        let p = store
            .get_plugin("acc_a".into(), "plg_a".into())
            .await
            .unwrap();
        assert_eq!(
            (p.version, p.status, p.failure.as_deref()),
            (1, VersionStatus::Failed, Some("no handler"))
        );
        store
            .plugin_quota_allows("acc_a".into(), false, 150)
            .await
            .unwrap();

        // 3 and 4 compile out of order, on two nodes: 4 becomes current, 3 (older) does not
        // replace it.
        for n in [3, 4] {
            store
                .add_plugin_version("acc_a".into(), "plg_a".into(), compiling(n, 1))
                .await
                .unwrap();
        }
        let four = nodes[1]
            .plugin_version_ready("plg_a".into(), 4, "h".into())
            .await
            .unwrap();
        assert_eq!(four.map(|p| p.version), Some(4));
        let three = nodes[0]
            .plugin_version_ready("plg_a".into(), 3, "h".into())
            .await
            .unwrap();
        assert!(three.is_none());
        let versions = store
            .plugin_versions("acc_a".into(), "plg_a".into())
            .await
            .unwrap();
        let statuses: Vec<_> = versions.iter().map(|v| (v.version, v.status)).collect();
        assert_eq!(
            statuses,
            [
                (4, VersionStatus::Ready),
                (3, VersionStatus::Ready),
                (2, VersionStatus::Failed),
                (1, VersionStatus::Ready)
            ]
        );
        store
            .set_plugin_engine_hash("plg_a".into(), 4, "h2".into())
            .await
            .unwrap();
        let all = nodes[1].all_current_plugins().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (
                all[0].0.version,
                all[0].1.version,
                all[0].1.engine_hash.as_str()
            ),
            (4, 4, "h2")
        );
        assert!(matches!(
            store
                .plugin_version_ready("plg_gone".into(), 1, "h".into())
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store
                .plugin_version_failed("plg_a".into(), 9, "x".into())
                .await,
            Err(StoreError::NotFound)
        ));
    }

    /// Secret config values are sealed at rest and clear when read; changes through two nodes
    /// all apply; pages are newest first; a plugin in use is not deleted.
    #[tokio::test]
    async fn settings_sealed_changed_in_turn_paged_and_deleted() {
        let Some(nodes) = nodes(Quotas::UNLIMITED).await else {
            return;
        };
        let mut p = plugin("plg_s");
        p.config.insert("token".into(), "t0p-secret".into());
        p.config.insert("mode".into(), "fast".into());
        p.secret_keys.insert("token".into());
        nodes[0].create_plugin(p, version(1, 10)).await.unwrap();
        let c = nodes[0].client().await.unwrap();
        let raw: String = c
            .query_one("SELECT config FROM plugins WHERE id = 'plg_s'", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!raw.contains("t0p-secret"), "sealed at rest: {raw}");
        assert!(raw.contains("fast"));
        let read = nodes[1]
            .get_plugin("acc_a".into(), "plg_s".into())
            .await
            .unwrap();
        assert_eq!(read.config["token"], "t0p-secret");

        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let node = nodes[i % 2].clone();
                tokio::spawn(async move {
                    node.update_plugin("acc_a".into(), "plg_s".into(), |p| p.name.push('+'))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let read = nodes[0]
            .get_plugin("acc_a".into(), "plg_s".into())
            .await
            .unwrap();
        assert_eq!(read.name, "plg_s++++++++++");
        assert_eq!(read.config["token"], "t0p-secret");
        assert!(matches!(
            nodes[0]
                .update_plugin("acc_b".into(), "plg_s".into(), |_| {})
                .await,
            Err(StoreError::NotFound)
        ));

        for i in 0..4 {
            nodes[i % 2]
                .create_plugin(plugin(&format!("plg_{i}")), version(1, 1))
                .await
                .unwrap();
        }
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let page = nodes[1]
                .list_plugins("acc_a".into(), 2, cursor)
                .await
                .unwrap();
            seen.extend(page.items.iter().map(|p| p.id.clone()));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["plg_3", "plg_2", "plg_1", "plg_0", "plg_s"]);
        assert!(
            nodes[0]
                .plugin_exists("acc_a".into(), "plg_s".into())
                .await
                .unwrap()
        );
        assert!(
            !nodes[0]
                .plugin_exists("acc_b".into(), "plg_s".into())
                .await
                .unwrap()
        );

        let req = serde_json::from_value(serde_json::json!({
            "plugin_id": "plg_s", "event_types": ["*"],
        }))
        .unwrap();
        let sub = crate::subscriptions::build("acc_a", req, &Default::default()).unwrap();
        let sub = nodes[0].create_subscription(sub).await.unwrap();
        match nodes[1].delete_plugin("acc_a".into(), "plg_s".into()).await {
            Err(StoreError::Conflict(m)) => assert!(m.contains(&sub.id), "{m}"),
            other => panic!("{other:?}"),
        }
        nodes[0]
            .delete_subscription("acc_a".into(), sub.id)
            .await
            .unwrap();
        let versions = nodes[1]
            .delete_plugin("acc_a".into(), "plg_s".into())
            .await
            .unwrap();
        assert_eq!(versions.len(), 1);
        assert!(
            !nodes[0]
                .plugin_exists("acc_a".into(), "plg_s".into())
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn each_plugin_keeps_its_own_newest_lines() {
        let Some(nodes) = nodes(Quotas::UNLIMITED).await else {
            return;
        };
        let store = &nodes[0];
        for id in ["plg_busy", "plg_quiet"] {
            store
                .create_plugin(plugin(id), version(1, 1))
                .await
                .unwrap();
        }
        let line = |i: i64| PluginLogLine {
            at: i,
            level: "info".into(),
            event_id: (i % 2 == 0).then(|| format!("evt_{i}")),
            message: format!("line {i}"),
        };
        let mut quiet: Vec<_> = (0..10).map(line).collect();
        quiet[0].message = "nul\0here".into();
        store
            .append_plugin_logs(vec![("plg_quiet".into(), quiet)])
            .await
            .unwrap();
        // The busy plugin writes far more than both keep, in several batches, through two nodes.
        for batch in 0..5 {
            let lines = (batch * 1000..(batch + 1) * 1000).map(line).collect();
            nodes[batch as usize % 2]
                .append_plugin_logs(vec![("plg_busy".into(), lines)])
                .await
                .unwrap();
        }
        let busy = store
            .plugin_logs("acc_a".into(), "plg_busy".into(), 5000)
            .await
            .unwrap();
        assert_eq!(busy.len(), KEEP_LOG_LINES as usize);
        assert_eq!(busy[0].message, "line 4999");
        assert_eq!(busy[1].event_id.as_deref(), Some("evt_4998"));
        assert_eq!(busy.last().unwrap().message, "line 4000");
        let quiet = store
            .plugin_logs("acc_a".into(), "plg_quiet".into(), 5000)
            .await
            .unwrap();
        assert_eq!(quiet.len(), 10, "the quiet plugin's lines are its own");
        assert_eq!(quiet[0].message, "line 9");
        assert_eq!(
            quiet[9].message, "nul\u{FFFD}here",
            "a NUL is replaced, not refused"
        );
        assert!(matches!(
            store
                .plugin_logs("acc_b".into(), "plg_quiet".into(), 5)
                .await,
            Err(StoreError::NotFound)
        ));
    }
}

#[cfg(test)]
mod component_tests {
    use super::*;

    /// The component's bytes live in the database: another node, which never had the
    /// uploading node's file, reads them after that file is gone.
    #[tokio::test]
    async fn another_node_reads_the_component_from_the_database() {
        let Some(nodes) = super::super::subscriptions::tests::nodes(Quotas::UNLIMITED, 2).await
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.wasm");
        std::fs::write(&path, b"\0asm-bytes").unwrap();
        let plugin = Plugin {
            id: "plg_c".into(),
            account_id: "acc_a".into(),
            name: "c".into(),
            config: Default::default(),
            secret_keys: Default::default(),
            allowed_hosts: vec![],
            limits: Default::default(),
            log_level: LogLevel::Info,
            instances: Default::default(),
            version: 1,
            latest_version: 1,
            status: VersionStatus::Compiling,
            failure: None,
            created_at: 0,
            updated_at: 0,
        };
        let version = PluginVersion {
            version: 1,
            sha256: String::new(),
            size_bytes: 10,
            wasm_path: path.display().to_string(),
            cwasm_path: String::new(),
            engine_hash: String::new(),
            created_at: 0,
            status: VersionStatus::Compiling,
            failure: None,
        };
        nodes[0].create_plugin(plugin, version).await.unwrap();
        drop(dir);
        assert_eq!(
            nodes[1]
                .plugin_component("plg_c".into(), 1)
                .await
                .unwrap()
                .as_deref(),
            Some(&b"\0asm-bytes"[..])
        );
    }
}
