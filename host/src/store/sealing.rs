//! Which stored fields are secret, and bringing them to rest sealed.
//!
//! Secret fields: a subscription's signing secret, its previous secret (kept while a rotation
//! runs), its Airy `api_secret`, and the values of a plugin's config keys listed in its
//! `secret_keys`. Records are sealed here just before they are written and opened just after
//! they are read; the crypto itself is [`crate::secrets`], which knows no database.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::model::Subscription;
use crate::secrets::{Keyring, Place, Reseal};

const SUBSCRIPTIONS: &str = "subscriptions";
const PLUGINS: &str = "plugins";

fn sub_place<'a>(id: &'a str, field: &'a str) -> Place<'a> {
    Place {
        table: SUBSCRIPTIONS,
        row: id,
        field,
    }
}

fn config_field(key: &str) -> String {
    format!("config.{key}")
}

/// A subscription's secret fields as they are written: sealed.
pub(crate) struct SealedSubscription {
    pub secret: String,
    pub previous_secret: Option<String>,
    pub airy_api_secret: Option<String>,
}

pub(crate) fn seal_subscription(keys: &Keyring, s: &Subscription) -> SealedSubscription {
    let seal = |v: &str, field| keys.seal(v, sub_place(&s.id, field));
    SealedSubscription {
        secret: seal(&s.secret, "secret"),
        previous_secret: s
            .previous_secret
            .as_deref()
            .map(|v| seal(v, "previous_secret")),
        airy_api_secret: s
            .airy_api_secret
            .as_deref()
            .map(|v| seal(v, "airy_api_secret")),
    }
}

/// Opens the secret fields of a subscription as read from the database.
pub(crate) fn open_subscription(
    keys: &Keyring,
    mut s: Subscription,
) -> Result<Subscription, StoreError> {
    s.secret = keys.open(&s.secret, sub_place(&s.id, "secret"))?;
    if let Some(v) = &s.previous_secret {
        s.previous_secret = Some(keys.open(v, sub_place(&s.id, "previous_secret"))?);
    }
    if let Some(v) = &s.airy_api_secret {
        s.airy_api_secret = Some(keys.open(v, sub_place(&s.id, "airy_api_secret"))?);
    }
    Ok(s)
}

/// A plugin's config as written: the values of secret keys sealed, the others as they are.
pub(crate) fn seal_config(
    keys: &Keyring,
    plugin_id: &str,
    config: &BTreeMap<String, String>,
    secret_keys: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    config
        .iter()
        .map(|(k, v)| {
            let v = if secret_keys.contains(k) {
                let field = config_field(k);
                keys.seal(
                    v,
                    Place {
                        table: PLUGINS,
                        row: plugin_id,
                        field: &field,
                    },
                )
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// Opens the values of a plugin's secret config keys as read from the database.
pub(crate) fn open_config(
    keys: &Keyring,
    plugin_id: &str,
    config: &mut BTreeMap<String, String>,
    secret_keys: &BTreeSet<String>,
) -> Result<(), StoreError> {
    for (k, v) in config.iter_mut() {
        if secret_keys.contains(k) {
            let field = config_field(k);
            *v = keys.open(
                v,
                Place {
                    table: PLUGINS,
                    row: plugin_id,
                    field: &field,
                },
            )?;
        }
    }
    Ok(())
}

/// What the start-up pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ResealReport {
    /// Values found in clear (written by a version without encryption at rest), now sealed.
    pub sealed_clear: usize,
    /// Values found under an older key, now under the current one.
    pub rewrapped: usize,
    /// Values already under the current key (each one opened, to check the key file).
    pub current: usize,
}

fn tally(report: &mut ResealReport, outcome: Reseal) -> Option<String> {
    match outcome {
        Reseal::Current => {
            report.current += 1;
            None
        }
        Reseal::WasClear(v) => {
            report.sealed_clear += 1;
            Some(v)
        }
        Reseal::Rewrapped(v) => {
            report.rewrapped += 1;
            Some(v)
        }
    }
}

/// The column of each secret field of a subscription (fixed names: safe to format into SQL).
const SUBSCRIPTION_SECRET_COLUMNS: [&str; 3] = ["secret", "previous_secret", "airy_api_secret"];

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
        for (column, value) in SUBSCRIPTION_SECRET_COLUMNS.iter().zip(values) {
            let Some(value) = value else { continue };
            let outcome = keys.reseal(&value, sub_place(&id, column))?;
            if let Some(sealed) = tally(&mut report, outcome) {
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
        let mut changed = false;
        for (k, v) in config.iter_mut().filter(|(k, _)| secret_keys.contains(*k)) {
            let field = config_field(k);
            let place = Place {
                table: PLUGINS,
                row: &id,
                field: &field,
            };
            if let Some(sealed) = tally(&mut report, keys.reseal(v, place)?) {
                *v = sealed;
                changed = true;
            }
        }
        if changed {
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

/// Which keys the sealed values in a database use, and how many values are still in clear.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyUse {
    /// Key id → number of values sealed under it.
    pub sealed: BTreeMap<String, usize>,
    /// Values in clear (from a version before encryption at rest, until the next start).
    pub clear: usize,
    /// The key the last server started seals new values with (it may use none yet).
    pub sealing_key: Option<String>,
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
    let mut count = |value: &str| match crate::secrets::sealed_key_id(value) {
        Some(id) => *used.sealed.entry(id.to_string()).or_default() += 1,
        None => used.clear += 1,
    };
    let mut stmt =
        conn.prepare("SELECT secret, previous_secret, airy_api_secret FROM subscriptions")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        for i in 0..3 {
            if let Some(v) = r.get::<_, Option<String>>(i)? {
                count(v.as_str());
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
            count(v.as_str());
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
    use crate::store::accounts::NewApiKey;
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
