//! A plugin's key-value store on PostgreSQL, shared by every node.
//!
//! The rules (key limit, counters as decimal text) are the shared ones of `store::kv`; what this
//! file adds is atomicity across nodes. A write to an existing key locks that key's row
//! (`FOR UPDATE`), so concurrent increments and compare-and-swaps of one key apply one after
//! the other, each on what the previous committed. A write that would add a key first locks
//! the plugin's row (`FOR NO KEY UPDATE`): adders of the same plugin take turns, so the key
//! count they check cannot be passed by two of them at once, and writers of existing keys are
//! not held up by it.

use deadpool_postgres::GenericClient;

use super::decode::get;
use super::{PgStore, db};
use crate::store::StoreError;
use crate::store::kv::{self, KvLimits, KvRefusal};

/// The value under `key`, its row locked until the transaction ends.
async fn locked_value(
    c: &impl GenericClient,
    plugin_id: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    c.query_opt(
        "SELECT value FROM plugin_kv WHERE plugin_id = $1 AND key = $2 FOR UPDATE",
        &[&plugin_id, &key],
    )
    .await
    .map_err(db)?
    .map(|r| get(&r, 0))
    .transpose()
}

/// Takes the plugin's turn to add keys, then reads the key again: another node may have added
/// it while this one waited. `Ok(None)` when the key is still absent (and there is room for
/// it is left to the caller to check with [`room`]).
async fn lock_for_new_key(
    c: &impl GenericClient,
    plugin_id: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    c.query_opt(
        "SELECT 1 FROM plugins WHERE id = $1 FOR NO KEY UPDATE",
        &[&plugin_id],
    )
    .await
    .map_err(db)?;
    locked_value(c, plugin_id, key).await
}

/// Whether a new key fits, counted under the plugin's lock.
async fn room(
    c: &impl GenericClient,
    plugin_id: &str,
    limits: KvLimits,
) -> Result<Result<(), KvRefusal>, StoreError> {
    Ok(kv::room_for_new_key(count(c, plugin_id).await?, limits))
}

async fn count(c: &impl GenericClient, plugin_id: &str) -> Result<u32, StoreError> {
    let r = c
        .query_one(
            "SELECT COUNT(*) FROM plugin_kv WHERE plugin_id = $1",
            &[&plugin_id],
        )
        .await
        .map_err(db)?;
    Ok(u32::try_from(get::<i64>(&r, 0)?).unwrap_or(u32::MAX))
}

async fn put(
    c: &impl GenericClient,
    plugin_id: &str,
    key: &str,
    value: &[u8],
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO plugin_kv (plugin_id, key, value) VALUES ($1, $2, $3)
         ON CONFLICT (plugin_id, key) DO UPDATE SET value = excluded.value",
        &[&plugin_id, &key, &value],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// What a read-modify-write sees: the key's current value, with the right lock held.
enum Current {
    /// The key exists; its row is locked.
    Present(Vec<u8>),
    /// The key is absent; the plugin's add-a-key turn is held.
    Absent,
}

async fn current(
    c: &impl GenericClient,
    plugin_id: &str,
    key: &str,
) -> Result<Current, StoreError> {
    if let Some(v) = locked_value(c, plugin_id, key).await? {
        return Ok(Current::Present(v));
    }
    Ok(match lock_for_new_key(c, plugin_id, key).await? {
        Some(v) => Current::Present(v),
        None => Current::Absent,
    })
}

impl PgStore {
    /// Reads a key of a plugin's store.
    pub async fn kv_get(
        &self,
        plugin_id: String,
        key: String,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        client
            .query_opt(
                "SELECT value FROM plugin_kv WHERE plugin_id = $1 AND key = $2",
                &[&plugin_id, &key],
            )
            .await
            .map_err(db)?
            .map(|r| get(&r, 0))
            .transpose()
    }

    /// How many keys a plugin's store holds.
    pub async fn kv_key_count(&self, plugin_id: String) -> Result<u32, StoreError> {
        let client = self.client().await?;
        count(&client, &plugin_id).await
    }

    /// Writes a key, refusing a new key beyond the plugin's key limit.
    pub async fn kv_set(
        &self,
        plugin_id: String,
        key: String,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> Result<Result<(), KvRefusal>, StoreError> {
        let mut client = self.client().await?;
        // An existing key is overwritten by one statement, without the plugin's turn.
        let n = client
            .execute(
                "UPDATE plugin_kv SET value = $3 WHERE plugin_id = $1 AND key = $2",
                &[&plugin_id, &key, &value],
            )
            .await
            .map_err(db)?;
        if n == 1 {
            return Ok(Ok(()));
        }
        let tx = client.transaction().await.map_err(db)?;
        if let Current::Absent = current(&tx, &plugin_id, &key).await?
            && let Err(refused) = room(&tx, &plugin_id, limits).await?
        {
            return Ok(Err(refused));
        }
        put(&tx, &plugin_id, &key, &value).await?;
        tx.commit().await.map_err(db)?;
        Ok(Ok(()))
    }

    /// Adds `delta` to the counter under `key` (stored as decimal text; a missing key counts as
    /// 0) and returns the new value. The key's row (or, for a new key, the plugin's add-a-key
    /// turn) is locked from the read to the commit, so concurrent increments on any number of
    /// nodes never lose an update.
    pub async fn kv_increment(
        &self,
        plugin_id: String,
        key: String,
        delta: i64,
        limits: KvLimits,
    ) -> Result<Result<i64, KvRefusal>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let cur = current(&tx, &plugin_id, &key).await?;
        let old = match &cur {
            Current::Present(v) => Some(v.as_slice()),
            Current::Absent => None,
        };
        let (new, text) = match kv::increment(old, delta, limits) {
            Ok(next) => next,
            Err(refused) => return Ok(Err(refused)),
        };
        if let Current::Absent = cur
            && let Err(refused) = room(&tx, &plugin_id, limits).await?
        {
            return Ok(Err(refused));
        }
        put(&tx, &plugin_id, &key, text.as_bytes()).await?;
        tx.commit().await.map_err(db)?;
        Ok(Ok(new))
    }

    /// Writes `value` under `key` only if the current value is `expected` (`None`: only if the
    /// key is absent); returns whether it wrote. The value's size is checked by the caller, as
    /// for [`PgStore::kv_set`]. Compare and write happen under the key's lock (or the plugin's
    /// add-a-key turn), so of concurrent calls expecting the same value at most one succeeds.
    pub async fn kv_set_if(
        &self,
        plugin_id: String,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> Result<Result<bool, KvRefusal>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let cur = current(&tx, &plugin_id, &key).await?;
        match (&cur, &expected) {
            (Current::Present(v), Some(e)) if v == e => {}
            (Current::Absent, None) => {
                if let Err(refused) = room(&tx, &plugin_id, limits).await? {
                    return Ok(Err(refused));
                }
            }
            _ => return Ok(Ok(false)),
        }
        put(&tx, &plugin_id, &key, &value).await?;
        tx.commit().await.map_err(db)?;
        Ok(Ok(true))
    }

    /// Removes a key.
    pub async fn kv_delete(&self, plugin_id: String, key: String) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM plugin_kv WHERE plugin_id = $1 AND key = $2",
                &[&plugin_id, &key],
            )
            .await
            .map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quotas::Quotas;

    const LIMITS: KvLimits = KvLimits {
        value_bytes: 64,
        keys: 3,
    };

    /// Two nodes with a plugin `plg_kv` of account `acc_a`.
    async fn nodes() -> Option<Vec<PgStore>> {
        let nodes = super::super::subscriptions::tests::nodes(Quotas::UNLIMITED, 2).await?;
        let c = nodes[0].client().await.unwrap();
        c.execute(
            "INSERT INTO plugins (id, account_id, name, current_version, created_at, updated_at)
             VALUES ('plg_kv', 'acc_a', 'kv', 1, 0, 0)",
            &[],
        )
        .await
        .unwrap();
        Some(nodes)
    }

    #[tokio::test]
    async fn kv_operations_and_limits() {
        let Some(nodes) = nodes().await else {
            return;
        };
        let s = &nodes[0];
        let p = || "plg_kv".to_string();
        assert_eq!(s.kv_get(p(), "a".into()).await.unwrap(), None);
        assert_eq!(
            s.kv_set(p(), "a".into(), b"1".to_vec(), LIMITS)
                .await
                .unwrap(),
            Ok(())
        );
        assert_eq!(
            nodes[1].kv_get(p(), "a".into()).await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            s.kv_increment(p(), "a".into(), 41, LIMITS).await.unwrap(),
            Ok(42)
        );
        assert_eq!(
            s.kv_increment(p(), "n".into(), -3, LIMITS).await.unwrap(),
            Ok(-3),
            "a missing counter starts at 0"
        );
        s.kv_set(p(), "t".into(), b"text".to_vec(), LIMITS)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.kv_key_count(p()).await.unwrap(), 3);
        // The fourth key is refused whichever way it would be added; existing keys still change.
        assert_eq!(
            s.kv_set(p(), "d".into(), b"x".to_vec(), LIMITS)
                .await
                .unwrap(),
            Err(KvRefusal::TooManyKeys(3))
        );
        assert_eq!(
            s.kv_increment(p(), "d".into(), 1, LIMITS).await.unwrap(),
            Err(KvRefusal::TooManyKeys(3))
        );
        assert_eq!(
            s.kv_set_if(p(), "d".into(), None, b"x".to_vec(), LIMITS)
                .await
                .unwrap(),
            Err(KvRefusal::TooManyKeys(3))
        );
        assert_eq!(
            s.kv_set(p(), "t".into(), b"more".to_vec(), LIMITS)
                .await
                .unwrap(),
            Ok(())
        );
        assert_eq!(
            s.kv_increment(p(), "t".into(), 1, LIMITS).await.unwrap(),
            Err(KvRefusal::NotANumber)
        );
        s.kv_set(p(), "a".into(), i64::MAX.to_string().into_bytes(), LIMITS)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            s.kv_increment(p(), "a".into(), 1, LIMITS).await.unwrap(),
            Err(KvRefusal::Overflow)
        );
        // Compare-and-swap: only on the expected value; `None` only for an absent key.
        assert_eq!(
            s.kv_set_if(
                p(),
                "t".into(),
                Some(b"text".to_vec()),
                b"x".to_vec(),
                LIMITS
            )
            .await
            .unwrap(),
            Ok(false)
        );
        assert_eq!(
            s.kv_set_if(p(), "t".into(), None, b"x".to_vec(), LIMITS)
                .await
                .unwrap(),
            Ok(false)
        );
        assert_eq!(
            s.kv_set_if(
                p(),
                "t".into(),
                Some(b"more".to_vec()),
                b"x".to_vec(),
                LIMITS
            )
            .await
            .unwrap(),
            Ok(true)
        );
        assert_eq!(
            s.kv_get(p(), "t".into()).await.unwrap().as_deref(),
            Some(&b"x"[..])
        );
        s.kv_delete(p(), "t".into()).await.unwrap();
        s.kv_delete(p(), "t".into()).await.unwrap();
        assert_eq!(s.kv_get(p(), "t".into()).await.unwrap(), None);
        assert_eq!(
            s.kv_set_if(p(), "t".into(), None, b"new".to_vec(), LIMITS)
                .await
                .unwrap(),
            Ok(true),
            "a deleted key frees its room"
        );
    }

    /// Increments, compare-and-swaps and new keys from two nodes at once: no update is lost,
    /// one swap wins, and the key limit holds exactly.
    #[tokio::test]
    async fn kv_atomics_hold_across_nodes() {
        let Some(nodes) = nodes().await else {
            return;
        };
        let limits = KvLimits {
            value_bytes: 64,
            keys: 5,
        };
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let node = nodes[i % 2].clone();
                tokio::spawn(async move {
                    node.kv_increment("plg_kv".into(), "hits".into(), 1, limits)
                        .await
                        .unwrap()
                        .unwrap()
                })
            })
            .collect();
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=40).collect::<Vec<_>>(), "each saw its own value");

        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let node = nodes[i % 2].clone();
                tokio::spawn(async move {
                    node.kv_set_if(
                        "plg_kv".into(),
                        "owner".into(),
                        None,
                        format!("n{i}").into_bytes(),
                        limits,
                    )
                    .await
                    .unwrap()
                    .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "one swap from absent wins");

        // Two keys exist; 12 new ones race for the 3 places left.
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let node = nodes[i % 2].clone();
                tokio::spawn(async move {
                    node.kv_set("plg_kv".into(), format!("k{i}"), b"v".to_vec(), limits)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut stored = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => stored += 1,
                Err(refused) => assert_eq!(refused, KvRefusal::TooManyKeys(5)),
            }
        }
        assert_eq!(stored, 3);
        assert_eq!(nodes[1].kv_key_count("plg_kv".into()).await.unwrap(), 5);
    }
}
