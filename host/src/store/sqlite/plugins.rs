//! Plugins, their versions, their key-value stores and their logs. The values of a plugin's
//! secret config keys are sealed when written and opened when read (see `super::sealing`).

use rusqlite::{Connection, OptionalExtension, params};

use super::{OptionalRow, Page, SqliteStore, StoreError};
use crate::model::{InstanceMode, LogLevel, Plugin, PluginLogLine, PluginVersion, VersionStatus};
use crate::quotas::{Quota, Quotas};
use crate::secrets::Keyring;
use crate::store::kv::{self, KvLimits, KvRefusal};
use crate::store::policy::{self, KEEP_LOG_LINES};
use crate::store::sealing::{open_config, seal_config};

const COLUMNS: &str = "rowid, id, account_id, name, config, allowed_hosts, limits, current_version, created_at, updated_at, log_level, secret_keys, instances";
/// A plugin as read: its row, with its newest version's number, status and failure.
const SELECT_PLUGIN: &str =
    "SELECT p.rowid, p.id, p.account_id, p.name, p.config, p.allowed_hosts, p.limits,
    p.current_version, p.created_at, p.updated_at, p.log_level, p.secret_keys, p.instances,
    v.version, v.status, v.failure
    FROM plugins p JOIN plugin_versions v ON v.plugin_id = p.id
        AND v.version = (SELECT MAX(version) FROM plugin_versions WHERE plugin_id = p.id)";
const VERSION_COLUMNS: &str =
    "version, sha256, size_bytes, wasm_path, cwasm_path, engine_hash, created_at, status, failure";
/// Deletes a plugin's log lines older than its newest [`KEEP_LOG_LINES`]: each plugin keeps
/// its own, however busy the others are. Walks the (plugin_id, seq) index from the newest.
const TRIM_PLUGIN_LOGS: &str = "DELETE FROM plugin_logs WHERE plugin_id = ?1 AND seq <= (
    SELECT seq FROM plugin_logs WHERE plugin_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)";

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_string(), rusqlite::types::Type::Text)
}

/// The row as stored: the values of its secret config keys still sealed (see [`open`]).
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Plugin)> {
    let config: String = r.get(4)?;
    let hosts: String = r.get(5)?;
    let limits: String = r.get(6)?;
    let log_level: String = r.get(10)?;
    let secret_keys: String = r.get(11)?;
    let instances: String = r.get(12)?;
    let status: String = r.get(14)?;
    Ok((
        r.get(0)?,
        Plugin {
            id: r.get(1)?,
            account_id: r.get(2)?,
            name: r.get(3)?,
            config: serde_json::from_str(&config).map_err(|_| corrupt("config"))?,
            secret_keys: serde_json::from_str(&secret_keys).map_err(|_| corrupt("secret_keys"))?,
            allowed_hosts: serde_json::from_str(&hosts).map_err(|_| corrupt("allowed_hosts"))?,
            limits: serde_json::from_str(&limits).map_err(|_| corrupt("limits"))?,
            version: r.get(7)?,
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
            log_level: LogLevel::parse(&log_level).ok_or_else(|| corrupt("log_level"))?,
            instances: InstanceMode::parse(&instances).ok_or_else(|| corrupt("instances"))?,
            latest_version: r.get(13)?,
            status: VersionStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
            failure: r.get(15)?,
        },
    ))
}

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PluginVersion> {
    let status: String = r.get(7)?;
    Ok(PluginVersion {
        version: r.get(0)?,
        sha256: r.get(1)?,
        size_bytes: r.get(2)?,
        wasm_path: r.get(3)?,
        cwasm_path: r.get(4)?,
        engine_hash: r.get(5)?,
        created_at: r.get(6)?,
        status: VersionStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        failure: r.get(8)?,
    })
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("plain data serializes")
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
fn get_open(
    c: &Connection,
    keys: &Keyring,
    account_id: &str,
    id: &str,
) -> Result<Plugin, StoreError> {
    open(keys, get_in(c, account_id, id)?)
}

/// A plugin as stored (secret config values sealed): to check it exists, or before [`open`].
fn get_in(c: &Connection, account_id: &str, id: &str) -> Result<Plugin, StoreError> {
    c.prepare_cached(&format!(
        "{SELECT_PLUGIN} WHERE p.id = ?1 AND p.account_id = ?2"
    ))?
    .query_row(params![id, account_id], row)
    .found()
    .map(|(_, p)| p)
}

fn insert_version(c: &Connection, plugin_id: &str, v: &PluginVersion) -> Result<(), StoreError> {
    c.prepare_cached(&format!(
        "INSERT INTO plugin_versions (plugin_id, {VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![plugin_id, v.version, v.sha256, v.size_bytes, v.wasm_path, v.cwasm_path, v.engine_hash, v.created_at,
        v.status.as_str(), v.failure])?;
    Ok(())
}

/// The value under `key`, read inside a write so that what follows acts on it atomically.
fn kv_value(tx: &Connection, plugin_id: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT value FROM plugin_kv WHERE plugin_id = ?1 AND key = ?2")?
        .query_row(params![plugin_id, key], |r| r.get(0))
        .optional()?)
}

/// Refuses a new key when the plugin already has its maximum number of keys.
fn kv_room_for_new_key(
    tx: &Connection,
    plugin_id: &str,
    limits: KvLimits,
) -> Result<Result<(), KvRefusal>, StoreError> {
    Ok(kv::room_for_new_key(kv_count(tx, plugin_id)?, limits))
}

fn kv_count(c: &Connection, plugin_id: &str) -> Result<u32, StoreError> {
    Ok(
        c.prepare_cached("SELECT COUNT(*) FROM plugin_kv WHERE plugin_id = ?1")?
            .query_row([plugin_id], |r| r.get(0))?,
    )
}

fn kv_put(tx: &Connection, plugin_id: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO plugin_kv (plugin_id, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (plugin_id, key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![plugin_id, key, value])?;
    Ok(())
}

/// One page of account ?1's plugins below rowid ?2, newest first, at most ?3.
pub(super) fn list_sql() -> String {
    format!(
        "{SELECT_PLUGIN} WHERE p.account_id = ?1 AND p.rowid < ?2 ORDER BY p.rowid DESC LIMIT ?3"
    )
}

/// Plugin ?1's newest ?2 log lines.
pub(super) const LOGS: &str = "SELECT at, level, event_id, message FROM plugin_logs WHERE plugin_id = ?1 ORDER BY seq DESC LIMIT ?2";
/// Bytes of plugin components the account stores, every version counted but failed ones
/// (their component is not kept).
fn stored_bytes(c: &Connection, account_id: &str) -> Result<u64, StoreError> {
    Ok(c.prepare_cached(
        "SELECT COALESCE(SUM(v.size_bytes), 0) FROM plugin_versions v
             JOIN plugins p ON p.id = v.plugin_id WHERE p.account_id = ?1 AND v.status != 'failed'",
    )?
    .query_row([account_id], |r| r.get(0))?)
}

/// Refuses a version of `size` bytes that would take the account past its storage quota.
fn check_storage(
    tx: &Connection,
    quotas: Quotas,
    account_id: &str,
    size: u64,
) -> Result<(), StoreError> {
    Ok(quotas.check(Quota::PluginBytes, stored_bytes(tx, account_id)?, size)?)
}

impl SqliteStore {
    /// Stores a new plugin with its first version, unless the account has as many plugins, or
    /// as many stored bytes, as its quotas allow (counted in this transaction).
    pub async fn create_plugin(
        &self,
        plugin: Plugin,
        version: PluginVersion,
    ) -> Result<Plugin, StoreError> {
        let keys = self.keys.clone();
        let quotas = self.quotas;
        self.write(move |tx| {
            let plugins: u64 = tx
                .prepare_cached("SELECT COUNT(*) FROM plugins WHERE account_id = ?1")?
                .query_row([&plugin.account_id], |r| r.get(0))?;
            quotas.check(Quota::Plugins, plugins, 1)?;
            check_storage(tx, quotas, &plugin.account_id, version.size_bytes)?;
            tx.prepare_cached(&format!(
                "INSERT INTO plugins ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                &COLUMNS["rowid, ".len()..]
            ))?
            .execute(params![
                plugin.id,
                plugin.account_id,
                plugin.name,
                stored_config(&keys, &plugin),
                json(&plugin.allowed_hosts),
                json(&plugin.limits),
                plugin.version,
                plugin.created_at,
                plugin.updated_at,
                plugin.log_level.as_str(),
                json(&plugin.secret_keys),
                plugin.instances.as_str(),
            ])?;
            insert_version(tx, &plugin.id, &version)?;
            get_open(tx, &keys, &plugin.account_id, &plugin.id)
        })
        .await
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
        let keys = self.keys.clone();
        let quotas = self.quotas;
        self.write(move |tx| {
            get_in(tx, &account_id, &id)?;
            check_storage(tx, quotas, &account_id, version.size_bytes)?;
            insert_version(tx, &id, &version)?;
            if version.status == VersionStatus::Ready {
                tx.execute(
                    "UPDATE plugins SET current_version = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, version.version, version.created_at],
                )?;
            }
            get_open(tx, &keys, &account_id, &id)
        })
        .await
    }

    /// The oldest upload still `compiling`, with its plugin's id: the compiler's next job.
    pub async fn next_compiling_version(
        &self,
    ) -> Result<Option<(String, PluginVersion)>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS}, plugin_id FROM plugin_versions
                     WHERE status = 'compiling' ORDER BY created_at LIMIT 1"
            ))?
            .query_row([], |r| Ok((r.get(9)?, version_row(r)?)))
            .optional()?)
        })
        .await
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
        let keys = self.keys.clone();
        self.write(move |tx| {
            let updated = tx.execute(
                "UPDATE plugin_versions SET status = 'ready', failure = NULL, engine_hash = ?3
                 WHERE plugin_id = ?1 AND version = ?2",
                params![id, version, engine_hash],
            )?;
            if updated == 0 {
                return Err(StoreError::NotFound);
            }
            let activated = tx.execute(
                "UPDATE plugins SET current_version = ?2, updated_at = ?3 WHERE id = ?1 AND (
                     current_version <= ?2 OR (SELECT status FROM plugin_versions
                         WHERE plugin_id = ?1 AND version = plugins.current_version) != 'ready')",
                params![id, version, crate::clock::now_ms()],
            )?;
            if activated == 0 {
                return Ok(None);
            }
            let account_id: String =
                tx.query_row("SELECT account_id FROM plugins WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })?;
            get_open(tx, &keys, &account_id, &id).map(Some)
        })
        .await
    }

    /// Marks a version `failed` with the reason; the current version, if one runs, stays.
    /// `NotFound` when the plugin was deleted meanwhile.
    pub async fn plugin_version_failed(
        &self,
        id: String,
        version: u32,
        reason: String,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            let updated = tx.execute(
                "UPDATE plugin_versions SET status = 'failed', failure = ?3
                 WHERE plugin_id = ?1 AND version = ?2",
                params![id, version, reason],
            )?;
            if updated == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    /// The next version number of a plugin.
    pub async fn next_plugin_version(
        &self,
        account_id: String,
        id: String,
    ) -> Result<u32, StoreError> {
        self.read(move |c| {
            get_in(c, &account_id, &id)?;
            Ok(c.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM plugin_versions WHERE plugin_id = ?1",
                [&id],
                |r| r.get(0),
            )?)
        })
        .await
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
        let keys = self.keys.clone();
        self.write(move |tx| {
            let mut p = get_open(tx, &keys, &account_id, &id)?;
            change(&mut p);
            tx.execute(
                "UPDATE plugins SET name = ?2, config = ?3, allowed_hosts = ?4, limits = ?5, updated_at = ?6, log_level = ?7,
                    secret_keys = ?8, instances = ?9
                 WHERE id = ?1",
                params![p.id, p.name, stored_config(&keys, &p), json(&p.allowed_hosts), json(&p.limits), p.updated_at,
                    p.log_level.as_str(), json(&p.secret_keys), p.instances.as_str()],
            )?;
            Ok(p)
        })
        .await
    }

    /// One plugin of the account.
    pub async fn get_plugin(&self, account_id: String, id: String) -> Result<Plugin, StoreError> {
        let keys = self.keys.clone();
        self.read(move |c| get_open(c, &keys, &account_id, &id))
            .await
    }

    /// The account's plugins, newest first.
    pub async fn list_plugins(
        &self,
        account_id: String,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Plugin>, StoreError> {
        let keys = self.keys.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&list_sql())?;
            let rows = stmt
                .query_map(
                    params![account_id, cursor.unwrap_or(i64::MAX), limit as i64 + 1],
                    row,
                )?
                .map(|r| {
                    let (seq, p) = r?;
                    Ok((seq, open(&keys, p)?))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Page::from_rows(rows, limit))
        })
        .await
    }

    /// Deletes a plugin unless a subscription uses it; returns its versions (to remove their files).
    pub async fn delete_plugin(
        &self,
        account_id: String,
        id: String,
    ) -> Result<Vec<PluginVersion>, StoreError> {
        self.write(move |tx| {
            get_in(tx, &account_id, &id)?;
            let users: Vec<String> = tx
                .prepare_cached(
                    "SELECT id FROM subscriptions WHERE account_id = ?1 AND (plugin_id = ?2 OR transform_plugin_id = ?2)",
                )?
                .query_map(params![account_id, id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if !users.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "the plugin is used by subscription(s) {}; delete them or detach the plugin first",
                    users.join(", ")
                )));
            }
            let versions = tx
                .prepare_cached(&format!("SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE plugin_id = ?1"))?
                .query_map([&id], version_row)?
                .collect::<Result<Vec<_>, _>>()?;
            tx.execute("DELETE FROM plugins WHERE id = ?1", [&id])?;
            Ok(versions)
        })
        .await
    }

    /// A plugin's versions, newest first.
    pub async fn plugin_versions(
        &self,
        account_id: String,
        id: String,
    ) -> Result<Vec<PluginVersion>, StoreError> {
        self.read(move |c| {
            get_in(c, &account_id, &id)?;
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE plugin_id = ?1 ORDER BY version DESC"
                ))?
                .query_map([&id], version_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Every plugin with its current version, for loading at start-up.
    pub async fn all_current_plugins(&self) -> Result<Vec<(Plugin, PluginVersion)>, StoreError> {
        let keys = self.keys.clone();
        self.read(move |c| {
            let mut stmt = c.prepare(&format!("{SELECT_PLUGIN} ORDER BY p.rowid"))?;
            let plugins = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
            let mut out = Vec::with_capacity(plugins.len());
            for (_, p) in plugins {
                let p = open(&keys, p)?;
                let v = c
                    .prepare_cached(&format!(
                        "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE plugin_id = ?1 AND version = ?2"
                    ))?
                    .query_row(params![p.id, p.version], version_row)
                    .found()?;
                out.push((p, v));
            }
            Ok(out)
        })
        .await
    }

    /// The uploaded component of a plugin's version: the file the upload wrote (this backend
    /// keeps components in the data dir); `None` once the version failed or its file is gone.
    /// `NotFound` without the version.
    pub async fn plugin_component(
        &self,
        id: String,
        version: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (path, status): (String, String) = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT wasm_path, status FROM plugin_versions WHERE plugin_id = ?1 AND version = ?2",
                )?
                .query_row(params![id, version], |r| Ok((r.get(0)?, r.get(1)?)))
                .found()
            })
            .await?;
        if path.is_empty() || status == VersionStatus::Failed.as_str() {
            return Ok(None);
        }
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Database(format!("{path}: {e}"))),
        }
    }

    /// Records that a version's compiled artifact was rebuilt for a new engine.
    pub async fn set_plugin_engine_hash(
        &self,
        id: String,
        version: u32,
        hash: String,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE plugin_versions SET engine_hash = ?3 WHERE plugin_id = ?1 AND version = ?2",
                params![id, version, hash],
            )?;
            Ok(())
        })
        .await
    }

    /// Reads a key of a plugin's store.
    pub async fn kv_get(
        &self,
        plugin_id: String,
        key: String,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT value FROM plugin_kv WHERE plugin_id = ?1 AND key = ?2")?
                    .query_row(params![plugin_id, key], |r| r.get(0))
                    .optional()?,
            )
        })
        .await
    }

    /// How many keys a plugin's store holds.
    pub async fn kv_key_count(&self, plugin_id: String) -> Result<u32, StoreError> {
        self.read(move |c| kv_count(c, &plugin_id)).await
    }

    /// Writes a key, refusing a new key beyond the plugin's key limit.
    pub async fn kv_set(
        &self,
        plugin_id: String,
        key: String,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> Result<Result<(), KvRefusal>, StoreError> {
        self.write(move |tx| {
            let exists: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM plugin_kv WHERE plugin_id = ?1 AND key = ?2")?
                .query_row(params![plugin_id, key], |r| r.get(0))
                .optional()?;
            if exists.is_none()
                && let Err(refused) = kv_room_for_new_key(tx, &plugin_id, limits)?
            {
                return Ok(Err(refused));
            }
            kv_put(tx, &plugin_id, &key, &value)?;
            Ok(Ok(()))
        })
        .await
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
        self.write(move |tx| {
            let current = kv_value(tx, &plugin_id, &key)?;
            let (new, text) = match kv::increment(current.as_deref(), delta, limits) {
                Ok(next) => next,
                Err(refused) => return Ok(Err(refused)),
            };
            if current.is_none()
                && let Err(refused) = kv_room_for_new_key(tx, &plugin_id, limits)?
            {
                return Ok(Err(refused));
            }
            kv_put(tx, &plugin_id, &key, text.as_bytes())?;
            Ok(Ok(new))
        })
        .await
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
        self.write(move |tx| {
            let current = kv_value(tx, &plugin_id, &key)?;
            if current != expected {
                return Ok(Ok(false));
            }
            if current.is_none()
                && let Err(refused) = kv_room_for_new_key(tx, &plugin_id, limits)?
            {
                return Ok(Err(refused));
            }
            kv_put(tx, &plugin_id, &key, &value)?;
            Ok(Ok(true))
        })
        .await
    }

    /// Removes a key.
    pub async fn kv_delete(&self, plugin_id: String, key: String) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM plugin_kv WHERE plugin_id = ?1 AND key = ?2")?
                .execute(params![plugin_id, key])?;
            Ok(())
        })
        .await
    }

    /// Appends log lines (per plugin) in one transaction and trims old ones.
    pub async fn append_plugin_logs(
        &self,
        batch: Vec<(String, Vec<PluginLogLine>)>,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO plugin_logs (plugin_id, event_id, level, message, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut trim = tx.prepare_cached(TRIM_PLUGIN_LOGS)?;
            for (plugin_id, lines) in &batch {
                for l in lines {
                    insert.execute(params![plugin_id, l.event_id, l.level, l.message, l.at])?;
                }
            }
            for plugin_id in policy::logs_to_trim(&batch) {
                trim.execute(params![plugin_id, KEEP_LOG_LINES])?;
            }
            Ok(())
        })
        .await
    }

    /// A plugin's most recent log lines, newest first.
    pub async fn plugin_logs(
        &self,
        account_id: String,
        id: String,
        limit: usize,
    ) -> Result<Vec<PluginLogLine>, StoreError> {
        self.read(move |c| {
            get_in(c, &account_id, &id)?;
            let rows = c
                .prepare_cached(LOGS)?
                .query_map(params![id, limit as i64], |r| {
                    Ok(PluginLogLine {
                        at: r.get(0)?,
                        level: r.get(1)?,
                        event_id: r.get(2)?,
                        message: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
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
        let quotas = self.quotas;
        self.read(move |c| {
            if new_plugin {
                let plugins: u64 = c
                    .prepare_cached("SELECT COUNT(*) FROM plugins WHERE account_id = ?1")?
                    .query_row([&account_id], |r| r.get(0))?;
                quotas.check(Quota::Plugins, plugins, 1)?;
            }
            check_storage(c, quotas, &account_id, size)
        })
        .await
    }

    /// Whether a plugin exists in the account.
    pub async fn plugin_exists(&self, account_id: String, id: String) -> Result<bool, StoreError> {
        match self.read(move |c| get_in(c, &account_id, &id)).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Account;
    use crate::store::{Store, SyncMode};

    async fn store_with(quotas: Quotas) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            SyncMode::Normal,
            crate::secrets::Keyring::ephemeral().into(),
        )
        .unwrap()
        .with_quotas(quotas);
        let account = Account {
            id: "acc_a".into(),
            name: "A".into(),
            created_at: 0,
        };
        store
            .create_account(account, crate::auth::new_api_key().1)
            .await
            .unwrap();
        (dir, store)
    }

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

    #[tokio::test]
    async fn concurrent_creations_stop_exactly_at_the_quotas() {
        let (_dir, store) = store_with(Quotas {
            plugins: 3,
            plugin_bytes: 1000,
            subscriptions: 0,
        })
        .await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .create_plugin(plugin(&format!("plg_{i}")), version(1, 100))
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
        // Versions count against the storage quota: 300 stored, 700 more fit.
        let add =
            |n, size| store.add_plugin_version("acc_a".into(), "plg_0".into(), version(n, size));
        add(2, 700).await.unwrap();
        match add(3, 1).await {
            Err(StoreError::Quota(q)) => {
                assert_eq!(
                    (q.quota, q.limit, q.usage),
                    (Quota::PluginBytes, 1000, 1000)
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.plugin_quota_allows("acc_a".into(), false, 1).await,
            Err(StoreError::Quota(_))
        ));
    }

    #[tokio::test]
    async fn a_version_becomes_current_once_ready_and_never_when_it_failed() {
        let (_dir, store) = store_with(Quotas {
            plugins: 10,
            plugin_bytes: 250,
            subscriptions: 0,
        })
        .await;
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
        let ready = store
            .plugin_version_ready("plg_a".into(), 1, "h".into())
            .await
            .unwrap();
        assert_eq!(
            ready.map(|p| (p.version, p.status)),
            Some((1, VersionStatus::Ready))
        );
        assert!(store.next_compiling_version().await.unwrap().is_none());

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

        // 3 and 4 compile out of order: 4 becomes current, 3 (older) does not replace it.
        for n in [3, 4] {
            store
                .add_plugin_version("acc_a".into(), "plg_a".into(), compiling(n, 1))
                .await
                .unwrap();
        }
        let four = store
            .plugin_version_ready("plg_a".into(), 4, "h".into())
            .await
            .unwrap();
        assert_eq!(four.map(|p| p.version), Some(4));
        let three = store
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
        assert!(matches!(
            store
                .plugin_version_ready("plg_gone".into(), 1, "h".into())
                .await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn each_plugin_keeps_its_own_newest_lines() {
        let (_dir, store) = store_with(Quotas::UNLIMITED).await;
        for id in ["plg_busy", "plg_quiet"] {
            store
                .create_plugin(plugin(id), version(1, 1))
                .await
                .unwrap();
        }
        let line = |i: i64| PluginLogLine {
            at: i,
            level: "info".into(),
            event_id: None,
            message: format!("line {i}"),
        };
        store
            .append_plugin_logs(vec![("plg_quiet".into(), (0..10).map(line).collect())])
            .await
            .unwrap();
        // The busy plugin writes far more than both keep, in several batches.
        for batch in 0..5 {
            let lines = (batch * 1000..(batch + 1) * 1000).map(line).collect();
            store
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
        assert_eq!(busy.last().unwrap().message, "line 4000");
        let quiet = store
            .plugin_logs("acc_a".into(), "plg_quiet".into(), 5000)
            .await
            .unwrap();
        assert_eq!(quiet.len(), 10, "the quiet plugin's lines are its own");
    }
}
