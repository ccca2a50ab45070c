//! Bringing every secret in the SQLite database to rest under the current key, and counting
//! which keys its values use. Which fields are secret and how a value is sealed is the store's
//! shared [`crate::store::sealing`]; this is only the walk over SQLite's tables.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension, params};

use super::{KeyUse, StoreError};
use crate::secrets::Keyring;
use crate::store::sealing::{
    ResealReport, SUBSCRIPTION_SECRET_FIELDS, reseal_config, reseal_subscription_field,
};

/// Brings every secret in the database to rest under the current key, in one transaction:
/// clear values (from a version before encryption at rest) are sealed, values under an older
/// key are re-sealed, and every other value is opened once, so that a wrong key file stops the
/// start here with an error naming it instead of failing requests later.
///
/// When anything was rewritten, the database is then compacted (VACUUM) and its WAL truncated:
/// the replaced clear or old-key copies would otherwise stay in free pages and WAL frames,
/// where a copy of the files would still reveal them.
pub(crate) fn reseal_all(
    conn: &mut Connection,
    keys: &Keyring,
) -> Result<ResealReport, StoreError> {
    let mut report = ResealReport::default();
    let tx = conn.transaction()?;
    let subs: Vec<(i64, String, [Option<String>; 3])> = tx
        .prepare("SELECT seq, id, secret, previous_secret, airy_api_secret FROM subscriptions")?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, [r.get(2)?, r.get(3)?, r.get(4)?]))
        })?
        .collect::<Result<_, _>>()?;
    for (seq, id, values) in subs {
        // The field names are fixed (safe to format into SQL) and are also the column names.
        for (column, value) in SUBSCRIPTION_SECRET_FIELDS.iter().zip(values) {
            let Some(value) = value else { continue };
            if let Some(sealed) = reseal_subscription_field(keys, &mut report, &id, column, &value)?
            {
                tx.execute(
                    &format!("UPDATE subscriptions SET {column} = ?2 WHERE seq = ?1"),
                    params![seq, sealed],
                )?;
            }
        }
    }
    let plugins: Vec<(String, String, String)> = tx
        .prepare("SELECT id, config, secret_keys FROM plugins")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (id, config, secret_keys) in plugins {
        let mut config: BTreeMap<String, String> = serde_json::from_str(&config)
            .map_err(|e| StoreError::Corrupt(format!("config of plugin {id}: {e}")))?;
        let secret_keys: BTreeSet<String> = serde_json::from_str(&secret_keys)
            .map_err(|e| StoreError::Corrupt(format!("secret_keys of plugin {id}: {e}")))?;
        if reseal_config(keys, &mut report, &id, &mut config, &secret_keys)? {
            tx.execute(
                "UPDATE plugins SET config = ?2 WHERE id = ?1",
                params![
                    id,
                    serde_json::to_string(&config).expect("strings serialize")
                ],
            )?;
        }
    }
    tx.execute(
        "INSERT INTO encryption_state (id, sealing_key_id, started_at) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET sealing_key_id = excluded.sealing_key_id,
            started_at = excluded.started_at",
        params![keys.current_id(), crate::clock::now_ms()],
    )?;
    tx.commit()?;
    if report.sealed_clear + report.rewrapped > 0 {
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
        tracing::info!(
            sealed_clear = report.sealed_clear,
            rewrapped = report.rewrapped,
            key = keys.current_id(),
            "secrets in the database re-encrypted under the current key; the database was compacted"
        );
    }
    let older: Vec<&str> = keys
        .key_ids()
        .into_iter()
        .filter(|id| *id != keys.current_id())
        .collect();
    if !older.is_empty() {
        tracing::info!(
            key_file = %keys.path().display(),
            unused_keys = ?older,
            "every secret is under the current key; the older keys are no longer used and can be \
             removed from the key file (wasmhook keys prune)"
        );
    }
    Ok(report)
}

/// Counts the key ids of every secret value in `conn`'s database (the values are not opened).
pub(crate) fn key_use(conn: &Connection) -> Result<KeyUse, StoreError> {
    let mut used = KeyUse {
        sealing_key: conn
            .query_row(
                "SELECT sealing_key_id FROM encryption_state WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?,
        ..Default::default()
    };
    let mut stmt =
        conn.prepare("SELECT secret, previous_secret, airy_api_secret FROM subscriptions")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        for i in 0..3 {
            if let Some(v) = r.get::<_, Option<String>>(i)? {
                used.count(v.as_str());
            }
        }
    }
    let mut stmt = conn.prepare("SELECT id, config, secret_keys FROM plugins")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let config: BTreeMap<String, String> = serde_json::from_str(&r.get::<_, String>(1)?)
            .map_err(|e| StoreError::Corrupt(format!("config of plugin {id}: {e}")))?;
        let secret_keys: BTreeSet<String> = serde_json::from_str(&r.get::<_, String>(2)?)
            .map_err(|e| StoreError::Corrupt(format!("secret_keys of plugin {id}: {e}")))?;
        for (_, v) in config.iter().filter(|(k, _)| secret_keys.contains(*k)) {
            used.count(v.as_str());
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Account;
    use crate::secrets::Keyring;
    use crate::store::NewApiKey;
    use crate::store::{Store, SyncMode};
    use crate::subscriptions::{CreateSubscription, build, rotate_secret};

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    /// Every byte the database keeps on disk: the main file and its WAL.
    fn files(dir: &std::path::Path) -> Vec<u8> {
        let mut all = Vec::new();
        for name in ["wasmhook.sqlite3", "wasmhook.sqlite3-wal"] {
            all.extend(std::fs::read(dir.join(name)).unwrap_or_default());
        }
        all
    }

    #[tokio::test]
    async fn secrets_are_sealed_on_disk_and_clear_to_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(Keyring::ephemeral());
        let store = Store::open(dir.path(), SyncMode::Normal, keys.clone()).unwrap();
        let account = Account {
            id: "acc".into(),
            name: "A".into(),
            created_at: 0,
        };
        let key = NewApiKey {
            id: "key".into(),
            hash: [7; 32],
            prefix: "whk_".into(),
        };
        store.create_account(account, key).await.unwrap();
        let req: CreateSubscription = serde_json::from_value(serde_json::json!({
            "url": "https://example.com/hook", "event_types": ["*"],
        }))
        .unwrap();
        let sub = store
            .create_subscription(build("acc", req, &Default::default()).unwrap())
            .await
            .unwrap();
        let first = sub.secret.clone();
        let (sub, _) = store
            .update_subscription("acc".into(), sub.id.clone(), |s| {
                Ok(rotate_secret(s, crate::clock::now_ms()))
            })
            .await
            .unwrap();
        assert_eq!(sub.previous_secret.as_deref(), Some(first.as_str()));
        let read = store
            .get_subscription("acc".into(), sub.id.clone())
            .await
            .unwrap();
        assert_eq!(read.secret, sub.secret);
        assert_eq!(read.previous_secret.as_deref(), Some(first.as_str()));
        let bytes = files(dir.path());
        assert!(
            contains(&bytes, &sub.id),
            "the search can find what is there"
        );
        assert!(!contains(&bytes, &first));
        assert!(!contains(&bytes, &sub.secret));
        store.close().await;
    }

    #[tokio::test]
    async fn clear_values_of_earlier_versions_are_sealed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(Keyring::ephemeral());
        let store = Store::open(dir.path(), SyncMode::Normal, keys.clone()).unwrap();
        store
            .create_account(
                Account {
                    id: "acc".into(),
                    name: "A".into(),
                    created_at: 0,
                },
                NewApiKey {
                    id: "key".into(),
                    hash: [7; 32],
                    prefix: "whk_".into(),
                },
            )
            .await
            .unwrap();
        let req: CreateSubscription = serde_json::from_value(serde_json::json!({
            "url": "https://example.com/hook", "event_types": ["*"],
        }))
        .unwrap();
        let sub = store
            .create_subscription(build("acc", req, &Default::default()).unwrap())
            .await
            .unwrap();
        store.close().await;
        // What an earlier version wrote: the secret in clear.
        let legacy = "whsec_c2VjcmV0LWluLWNsZWFyLWZyb20tYmVmb3Jl";
        {
            let c = Connection::open(dir.path().join("wasmhook.sqlite3")).unwrap();
            c.execute(
                "UPDATE subscriptions SET secret = ?1 WHERE id = ?2",
                params![legacy, sub.id],
            )
            .unwrap();
        }
        assert!(contains(&files(dir.path()), legacy));

        let store = Store::open(dir.path(), SyncMode::Normal, keys.clone()).unwrap();
        let read = store
            .get_subscription("acc".into(), sub.id.clone())
            .await
            .unwrap();
        assert_eq!(read.secret, legacy, "nothing is lost");
        assert!(!contains(&files(dir.path()), legacy));
        store.close().await;
        assert!(!contains(&files(dir.path()), legacy));

        // Another key file: the start fails, naming it, instead of serving.
        let other = Arc::new(Keyring::ephemeral());
        let err = Store::open(dir.path(), SyncMode::Normal, other)
            .err()
            .expect("a wrong key file is refused");
        assert!(matches!(err, StoreError::Secrets(_)), "{err}");
    }
}
