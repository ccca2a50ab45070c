//! Bringing every secret in the PostgreSQL database to rest under the current key at start,
//! as SQLite's `reseal` does (which fields are secret and how a value is sealed is the shared
//! [`crate::store::sealing`]; this is only the walk over the tables). Nodes starting together
//! take turns (an advisory lock held by the transaction). Every node must use the same key
//! file: a node whose file lacks the key the others seal with stops here, naming its file.

use std::collections::{BTreeMap, BTreeSet};

use super::db;
use crate::secrets::Keyring;
use crate::store::StoreError;
use crate::store::sealing::{
    ResealReport, SUBSCRIPTION_SECRET_FIELDS, reseal_config, reseal_subscription_field,
};

/// The advisory lock resealing nodes take turns on.
const RESEAL_LOCK: i64 = 0x7761_736d_7365_616c; // "wasmseal"

pub(super) async fn reseal_all(
    client: &mut tokio_postgres::Client,
    keys: &Keyring,
) -> Result<ResealReport, StoreError> {
    let mut report = ResealReport::default();
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RESEAL_LOCK])
        .await
        .map_err(db)?;
    let subs = tx
        .query(
            "SELECT seq, id, secret, previous_secret, airy_api_secret FROM subscriptions",
            &[],
        )
        .await
        .map_err(db)?;
    for r in subs {
        let (seq, id): (i64, String) = (r.get(0), r.get(1));
        let values: [Option<String>; 3] = [r.get(2), r.get(3), r.get(4)];
        // The field names are fixed (safe to format into SQL) and are also the column names.
        for (column, value) in SUBSCRIPTION_SECRET_FIELDS.iter().zip(values) {
            let Some(value) = value else { continue };
            if let Some(sealed) = reseal_subscription_field(keys, &mut report, &id, column, &value)?
            {
                tx.execute(
                    &format!("UPDATE subscriptions SET {column} = $2 WHERE seq = $1"),
                    &[&seq, &sealed],
                )
                .await
                .map_err(db)?;
            }
        }
    }
    let plugins = tx
        .query("SELECT id, config, secret_keys FROM plugins", &[])
        .await
        .map_err(db)?;
    for r in plugins {
        let (id, config, secret_keys): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let mut config: BTreeMap<String, String> = serde_json::from_str(&config)
            .map_err(|e| StoreError::Corrupt(format!("config of plugin {id}: {e}")))?;
        let secret_keys: BTreeSet<String> = serde_json::from_str(&secret_keys)
            .map_err(|e| StoreError::Corrupt(format!("secret_keys of plugin {id}: {e}")))?;
        if reseal_config(keys, &mut report, &id, &mut config, &secret_keys)? {
            let config = serde_json::to_string(&config).expect("strings serialize");
            tx.execute(
                "UPDATE plugins SET config = $2 WHERE id = $1",
                &[&id, &config],
            )
            .await
            .map_err(db)?;
        }
    }
    tx.execute(
        "INSERT INTO encryption_state (id, sealing_key_id, started_at) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET sealing_key_id = excluded.sealing_key_id,
            started_at = excluded.started_at",
        &[&keys.current_id(), &crate::clock::now_ms()],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    if report.sealed_clear + report.rewrapped > 0 {
        tracing::info!(
            sealed_clear = report.sealed_clear,
            rewrapped = report.rewrapped,
            key = keys.current_id(),
            "secrets in the database re-encrypted under the current key"
        );
    }
    Ok(report)
}
