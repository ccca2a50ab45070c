//! Subscriptions and their (account, event type) matching index, on PostgreSQL. The secret
//! fields are sealed when written and opened when read, as in the SQLite store.
//!
//! Writes that read before they write (`update_subscription`, `upsert_airy_webhook`) lock the
//! row with `SELECT ... FOR UPDATE`, and creations lock the account row, so that concurrent
//! writers on any node act one after the other on what the previous one committed.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::decode::{corrupt, get, int, int_req, json, json_col, opt_u32, parsed};
use super::{PgStore, db};
use crate::clock::now_ms;
use crate::model::{Circuit, DeliveryOrdering, Format, Subscription, SubscriptionStatus};
use crate::quotas::{Quota, Quotas};
use crate::secrets::Keyring;
use crate::store::sealing::{open_subscription, seal_subscription};
use crate::store::{Page, StoreError};

/// The advisory lock of the sweep that deletes expired `wasmhook listen` subscriptions (any
/// constant unique to wasmhook's jobs; see `retention` for another).
const LISTENER_SWEEP_LOCK: i64 = 0x7768_5f6c_7374_6e31; // "wh_lstn1"

const COLUMNS: &str = "seq, id, account_id, url, plugin_id, transform_plugin_id, description, event_types,
    headers, format, status, status_reason, secret, previous_secret, previous_secret_expires_at, verify,
    rate_limit_per_second, airy_api_secret, failing_since, created_at, updated_at, max_in_flight,
    ordering, breaker_failures, breaker_until, listen_expires_at";

/// The row as stored: its secret fields still sealed (see [`open_subscription`]).
fn row(r: &Row) -> Result<Subscription, StoreError> {
    let failures = int(r, 23)?.unwrap_or(0);
    Ok(Subscription {
        seq: int_req(r, 0, "seq")?,
        id: get(r, 1)?,
        account_id: get(r, 2)?,
        url: get(r, 3)?,
        plugin_id: get(r, 4)?,
        transform_plugin_id: get(r, 5)?,
        description: get(r, 6)?,
        event_types: json_col(r, 7, "event_types")?,
        headers: json_col(r, 8, "headers")?,
        format: parsed(r, 9, Format::parse, "format")?,
        status: parsed(r, 10, SubscriptionStatus::parse, "status")?,
        status_reason: get(r, 11)?,
        secret: get(r, 12)?,
        previous_secret: get(r, 13)?,
        previous_secret_expires_at: int(r, 14)?,
        verify: get(r, 15)?,
        rate_limit_per_second: opt_u32(r, 16, "rate_limit_per_second")?,
        airy_api_secret: get(r, 17)?,
        failing_since: int(r, 18)?,
        created_at: int_req(r, 19, "created_at")?,
        updated_at: int_req(r, 20, "updated_at")?,
        max_in_flight: opt_u32(r, 21, "max_in_flight")?,
        ordering: parsed(r, 22, DeliveryOrdering::parse, "ordering")?,
        circuit: Circuit::at(
            u32::try_from(failures).map_err(|_| corrupt("breaker_failures"))?,
            int(r, 24)?,
            now_ms(),
        ),
        listen_expires_at: int(r, 25)?,
    })
}

fn opened(keys: &Keyring, r: &Row) -> Result<Subscription, StoreError> {
    open_subscription(keys, row(r)?)
}

/// Locks the account's row until the transaction ends (FOR NO KEY UPDATE: rows that merely
/// reference the account, such as new events, are not held up). Creations of counted things
/// take it first, so concurrent ones count each other. `NotFound` without the account.
pub(super) async fn lock_account(
    c: &impl GenericClient,
    account_id: &str,
) -> Result<(), StoreError> {
    c.query_opt(
        "SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE",
        &[&account_id],
    )
    .await
    .map_err(db)?
    .map(|_| ())
    .ok_or(StoreError::NotFound)
}

/// Inserts a subscription, unless the account already has as many as `quotas` allow (counted
/// under the account's lock, so concurrent creations cannot both pass).
async fn insert(
    tx: &impl GenericClient,
    keys: &Keyring,
    s: &mut Subscription,
    quotas: Quotas,
) -> Result<(), StoreError> {
    lock_account(tx, &s.account_id).await?;
    let count: i64 = get(
        &tx.query_one(
            "SELECT COUNT(*) FROM subscriptions WHERE account_id = $1",
            &[&s.account_id],
        )
        .await
        .map_err(db)?,
        0,
    )?;
    quotas.check(Quota::Subscriptions, count as u64, 1)?;
    let sealed = seal_subscription(keys, s);
    let r = tx
        .query_one(
            "INSERT INTO subscriptions (id, account_id, url, plugin_id, transform_plugin_id, description,
                event_types, headers, format, status, status_reason, secret, previous_secret,
                previous_secret_expires_at, verify, rate_limit_per_second, airy_api_secret, failing_since,
                created_at, updated_at, max_in_flight, ordering, listen_expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                $20, $21, $22, $23)
             RETURNING seq",
            &[
                &s.id,
                &s.account_id,
                &s.url,
                &s.plugin_id,
                &s.transform_plugin_id,
                &s.description,
                &json(&s.event_types),
                &json(&s.headers),
                &s.format.as_str(),
                &s.status.as_str(),
                &s.status_reason,
                &sealed.secret,
                &sealed.previous_secret,
                &s.previous_secret_expires_at,
                &s.verify,
                &s.rate_limit_per_second.map(i64::from),
                &sealed.airy_api_secret,
                &s.failing_since,
                &s.created_at,
                &s.updated_at,
                &s.max_in_flight.map(i64::from),
                &s.ordering.as_str(),
                &s.listen_expires_at,
            ],
        )
        .await
        .map_err(db)?;
    s.seq = int_req(&r, 0, "seq")?;
    index_event_types(tx, s).await
}

async fn save(tx: &impl GenericClient, keys: &Keyring, s: &Subscription) -> Result<(), StoreError> {
    let sealed = seal_subscription(keys, s);
    tx.execute(
        "UPDATE subscriptions SET url = $2, plugin_id = $3, transform_plugin_id = $4, description = $5,
            event_types = $6, headers = $7, format = $8, status = $9, status_reason = $10, secret = $11,
            previous_secret = $12, previous_secret_expires_at = $13, verify = $14,
            rate_limit_per_second = $15, airy_api_secret = $16, failing_since = $17, updated_at = $18,
            max_in_flight = $19, ordering = $20
         WHERE seq = $1",
        &[
            &s.seq,
            &s.url,
            &s.plugin_id,
            &s.transform_plugin_id,
            &s.description,
            &json(&s.event_types),
            &json(&s.headers),
            &s.format.as_str(),
            &s.status.as_str(),
            &s.status_reason,
            &sealed.secret,
            &sealed.previous_secret,
            &s.previous_secret_expires_at,
            &s.verify,
            &s.rate_limit_per_second.map(i64::from),
            &sealed.airy_api_secret,
            &s.failing_since,
            &s.updated_at,
            &s.max_in_flight.map(i64::from),
            &s.ordering.as_str(),
        ],
    )
    .await
    .map_err(db)?;
    if s.ordering == DeliveryOrdering::None {
        // Deliveries held back behind an earlier one of their conversation go now.
        tx.execute(
            "UPDATE deliveries SET next_attempt_at = COALESCE(next_attempt_at, $2), ordering_key = NULL
             WHERE subscription_seq = $1 AND status = 'pending' AND ordering_key IS NOT NULL",
            &[&s.seq, &s.updated_at],
        )
        .await
        .map_err(db)?;
    }
    index_event_types(tx, s).await
}

async fn index_event_types(tx: &impl GenericClient, s: &Subscription) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM subscription_event_types WHERE subscription_seq = $1",
        &[&s.seq],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "INSERT INTO subscription_event_types (account_id, event_type, subscription_seq)
         SELECT $1, t, $3 FROM UNNEST($2::text[]) AS t ON CONFLICT DO NOTHING",
        &[&s.account_id, &s.event_types, &s.seq],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// One subscription of the account, secrets opened; `lock` holds its row until the
/// transaction ends.
pub(super) async fn get_in(
    c: &impl GenericClient,
    keys: &Keyring,
    account_id: &str,
    id: &str,
    lock: bool,
) -> Result<Subscription, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE id = $1 AND account_id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let r = c
        .query_opt(&sql, &[&id, &account_id])
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
    opened(keys, &r)
}

/// The account's Airy webhook; `lock` holds its row until the transaction ends.
async fn airy_in(
    c: &impl GenericClient,
    keys: &Keyring,
    account_id: &str,
    lock: bool,
) -> Result<Option<Subscription>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE account_id = $1 AND airy_api_secret IS NOT NULL{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    c.query_opt(&sql, &[&account_id])
        .await
        .map_err(db)?
        .map(|r| opened(keys, &r))
        .transpose()
}

impl PgStore {
    /// Stores a new subscription.
    pub async fn create_subscription(
        &self,
        mut sub: Subscription,
    ) -> Result<Subscription, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        insert(&tx, &self.keys, &mut sub, self.quotas).await?;
        tx.commit().await.map_err(db)?;
        Ok(sub)
    }

    /// One subscription of the account.
    pub async fn get_subscription(
        &self,
        account_id: String,
        id: String,
    ) -> Result<Subscription, StoreError> {
        let client = self.client().await?;
        get_in(&client, &self.keys, &account_id, &id, false).await
    }

    /// The account's subscriptions, newest first.
    pub async fn list_subscriptions(
        &self,
        account_id: String,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Subscription>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM subscriptions WHERE account_id = $1 AND seq < $2
                     ORDER BY seq DESC LIMIT $3"
                ),
                &[
                    &account_id,
                    &cursor.unwrap_or(i64::MAX),
                    &(limit as i64 + 1),
                ],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                let s = opened(&self.keys, r)?;
                Ok((s.seq, s))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page::from_rows(rows, limit))
    }

    /// Applies `change` to a subscription and saves it, atomically: the row is locked from
    /// the read to the commit, so a concurrent change on any node applies after this one.
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let mut sub = get_in(&tx, &self.keys, &account_id, &id, true).await?;
        let out = change(&mut sub)?;
        save(&tx, &self.keys, &sub).await?;
        tx.commit().await.map_err(db)?;
        Ok((sub, out))
    }

    /// Deletes a subscription and its deliveries.
    pub async fn delete_subscription(
        &self,
        account_id: String,
        id: String,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM subscriptions WHERE id = $1 AND account_id = $2",
                &[&id, &account_id],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    /// Moves a listener subscription's expiry (`wasmhook listen`): while its command line is
    /// connected, and when it leaves.
    pub async fn touch_listener(
        &self,
        account_id: String,
        id: String,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE subscriptions SET listen_expires_at = $3
                 WHERE id = $1 AND account_id = $2 AND listen_expires_at IS NOT NULL",
                &[&id, &account_id, &expires_at],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    /// Deletes the listener subscriptions (and their deliveries) whose expiry has passed, except
    /// those in `connected`, whose expiry moves to `grace` from now; returns the ids deleted.
    pub async fn delete_expired_listeners(
        &self,
        now: i64,
        connected: Vec<String>,
        grace: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "UPDATE subscriptions SET listen_expires_at = $2
             WHERE id = ANY($1) AND listen_expires_at IS NOT NULL",
            &[&connected, &(now + grace)],
        )
        .await
        .map_err(db)?;
        // One node at a time deletes (the others only move their own listeners' expiry):
        // the sweep's advisory lock, held until this transaction ends, skipped when taken.
        let leader: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1)",
                &[&LISTENER_SWEEP_LOCK],
            )
            .await
            .map_err(db)?
            .get(0);
        if !leader {
            tx.commit().await.map_err(db)?;
            return Ok(Vec::new());
        }
        // Another node's command line may be connected to one of these: that node moved its
        // expiry forward, so it is not past `now` here.
        let rows = tx
            .query(
                "DELETE FROM subscriptions
                 WHERE listen_expires_at IS NOT NULL AND listen_expires_at < $1 AND NOT (id = ANY($2))
                 RETURNING id",
                &[&now, &connected],
            )
            .await
            .map_err(db)?;
        let deleted = rows
            .iter()
            .map(|r| get(r, 0))
            .collect::<Result<Vec<String>, _>>()?;
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }

    /// Subscriptions whose circuit breaker is tripped (open or half-open), by id.
    pub async fn tripped_circuits(&self) -> Result<Vec<(String, Circuit)>, StoreError> {
        let client = self.client().await?;
        let now = now_ms();
        client
            .query(
                "SELECT id, breaker_failures, breaker_until FROM subscriptions
                 WHERE breaker_until IS NOT NULL",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                let failures = u32::try_from(int(r, 1)?.unwrap_or(0))
                    .map_err(|_| corrupt("breaker_failures"))?;
                Ok((get(r, 0)?, Circuit::at(failures, int(r, 2)?, now)))
            })
            .collect()
    }

    /// The account's Airy webhook, if it ever subscribed.
    pub async fn airy_webhook(
        &self,
        account_id: String,
    ) -> Result<Option<Subscription>, StoreError> {
        let client = self.client().await?;
        airy_in(&client, &self.keys, &account_id, false).await
    }

    /// Changes the account's Airy webhook with `change`, creating it from `new` first if it has
    /// none. The account's row is locked first, so two nodes cannot both create one.
    pub async fn upsert_airy_webhook<F>(
        &self,
        new: Subscription,
        change: F,
    ) -> Result<Subscription, StoreError>
    where
        F: FnOnce(&mut Subscription) + Send + 'static,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        lock_account(&tx, &new.account_id).await?;
        let sub = match airy_in(&tx, &self.keys, &new.account_id, true).await? {
            Some(mut sub) => {
                change(&mut sub);
                save(&tx, &self.keys, &sub).await?;
                sub
            }
            None => {
                let mut sub = new;
                change(&mut sub);
                insert(&tx, &self.keys, &mut sub, self.quotas).await?;
                sub
            }
        };
        tx.commit().await.map_err(db)?;
        Ok(sub)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Account;
    use crate::store::postgres::{PgOptions, testing};

    /// `n` stores sharing one fresh database and one keyring, as `n` nodes would, with an
    /// account `acc_a`; `None` without a test cluster.
    pub(in crate::store::postgres) async fn nodes(
        quotas: Quotas,
        n: usize,
    ) -> Option<Vec<PgStore>> {
        let base = testing::url()?;
        let url = testing::fresh_database(&base).await;
        let keys = Arc::new(Keyring::ephemeral());
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(
                PgStore::connect(&url, keys.clone(), quotas, PgOptions::default())
                    .await
                    .expect("connect"),
            );
        }
        let account = Account {
            id: "acc_a".into(),
            name: "A".into(),
            created_at: 0,
        };
        nodes[0]
            .create_account(account, crate::auth::new_api_key().1)
            .await
            .unwrap();
        Some(nodes)
    }

    fn url_subscription(account: &str, description: &str) -> Subscription {
        let req = serde_json::from_value(serde_json::json!({
            "url": "https://example.com/hook",
            "event_types": ["message:created", "conversation:updated"],
            "description": description,
        }))
        .unwrap();
        crate::subscriptions::build(account, req, &Default::default()).unwrap()
    }

    const QUOTAS: Quotas = Quotas {
        plugins: 0,
        plugin_bytes: 0,
        subscriptions: 5,
    };

    /// Secrets are sealed at rest and clear when read; pages are newest first with the seq as
    /// cursor; concurrent creations on two nodes stop exactly at the quota; concurrent changes
    /// on two nodes all apply, one after the other.
    #[tokio::test]
    async fn subscriptions_sealed_paged_counted_and_changed_in_turn() {
        let Some(nodes) = nodes(QUOTAS, 2).await else {
            return;
        };
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let node = nodes[i % 2].clone();
                tokio::spawn(async move {
                    node.create_subscription(url_subscription("acc_a", &format!("s{i}")))
                        .await
                })
            })
            .collect();
        let mut created = Vec::new();
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(s) => created.push(s),
                Err(StoreError::Quota(q)) => {
                    assert_eq!((q.quota, q.limit, q.usage), (Quota::Subscriptions, 5, 5));
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((created.len(), refused), (5, 3));

        // Sealed in the table, clear when read, the same through either node.
        let first = &created[0];
        let c = nodes[0].client().await.unwrap();
        let raw: String = c
            .query_one(
                "SELECT secret FROM subscriptions WHERE id = $1",
                &[&first.id],
            )
            .await
            .unwrap()
            .get(0);
        assert_ne!(raw, first.secret, "the secret is sealed at rest");
        assert!(!raw.contains(&first.secret));
        let read = nodes[1]
            .get_subscription("acc_a".into(), first.id.clone())
            .await
            .unwrap();
        assert_eq!(read.secret, first.secret);
        assert_eq!(read.event_types, first.event_types);
        assert_eq!(read.headers, first.headers);
        assert!(matches!(
            nodes[1]
                .get_subscription("acc_other".into(), first.id.clone())
                .await,
            Err(StoreError::NotFound)
        ));

        // Pages of 2, newest first, the cursor being the last seq.
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let page = nodes[0]
                .list_subscriptions("acc_a".into(), 2, cursor)
                .await
                .unwrap();
            assert!(page.items.len() <= 2);
            seen.extend(page.items.iter().map(|s| s.seq));
            if let Some(next) = page.next_cursor {
                assert_eq!(Some(next), page.items.last().map(|s| s.seq));
                cursor = Some(next);
            } else {
                break;
            }
        }
        let mut expected: Vec<_> = created.iter().map(|s| s.seq).collect();
        expected.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(seen, expected);

        // Twenty changes through two nodes at once: each sees the one before.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let node = nodes[i % 2].clone();
                let id = first.id.clone();
                tokio::spawn(async move {
                    node.update_subscription("acc_a".into(), id, move |s| {
                        s.description.push('x');
                        s.secret = format!("whsec_{i}");
                        Ok(s.description.len())
                    })
                    .await
                    .unwrap()
                    .1
                })
            })
            .collect();
        let mut lengths = Vec::new();
        for t in tasks {
            lengths.push(t.await.unwrap());
        }
        lengths.sort_unstable();
        let base = first.description.len();
        assert_eq!(lengths, (base + 1..=base + 20).collect::<Vec<_>>());
        let after = nodes[0]
            .get_subscription("acc_a".into(), first.id.clone())
            .await
            .unwrap();
        assert_eq!(after.description.len(), base + 20);
        assert!(
            after.secret.starts_with("whsec_"),
            "the new secret reads back clear"
        );
        // A change that refuses leaves the row as it was.
        let refused = nodes[0]
            .update_subscription("acc_a".into(), first.id.clone(), |s| {
                s.description = "lost".into();
                Err::<(), _>(StoreError::Conflict("no".into()))
            })
            .await;
        assert!(matches!(refused, Err(StoreError::Conflict(_))));
        assert_eq!(
            nodes[1]
                .get_subscription("acc_a".into(), first.id.clone())
                .await
                .unwrap()
                .description,
            after.description
        );
        // The matching index follows the event types.
        nodes[0]
            .update_subscription("acc_a".into(), first.id.clone(), |s| {
                s.event_types = vec!["*".into()];
                Ok(())
            })
            .await
            .unwrap();
        let c = nodes[0].client().await.unwrap();
        let types: Vec<String> = c
            .query(
                "SELECT event_type FROM subscription_event_types WHERE subscription_seq = $1",
                &[&first.seq],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(types, ["*"]);

        nodes[1]
            .delete_subscription("acc_a".into(), first.id.clone())
            .await
            .unwrap();
        assert!(matches!(
            nodes[1]
                .delete_subscription("acc_a".into(), first.id.clone())
                .await,
            Err(StoreError::NotFound)
        ));
    }

    /// Two nodes creating the account's Airy webhook at once make one; listeners expire unless
    /// connected; tripped circuits are listed.
    #[tokio::test]
    async fn airy_webhook_listeners_and_circuits() {
        let Some(nodes) = nodes(Quotas::UNLIMITED, 2).await else {
            return;
        };
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let node = nodes[i % 2].clone();
                tokio::spawn(async move {
                    let mut new = url_subscription("acc_a", "airy");
                    new.airy_api_secret = Some("airy-secret".into());
                    node.upsert_airy_webhook(new, move |s| s.description.push_str(&i.to_string()))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap().id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "one webhook: {ids:?}");
        let airy = nodes[0]
            .airy_webhook("acc_a".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(airy.airy_api_secret.as_deref(), Some("airy-secret"));
        assert_eq!(
            airy.description.len(),
            "airy".len() + 6,
            "every change applied"
        );
        assert!(
            nodes[0]
                .airy_webhook("acc_b".into())
                .await
                .unwrap()
                .is_none()
        );

        let listener = |expires| {
            let mut s = url_subscription("acc_a", "listen");
            s.listen_expires_at = Some(expires);
            s
        };
        let gone = nodes[0].create_subscription(listener(100)).await.unwrap();
        let kept = nodes[0].create_subscription(listener(100)).await.unwrap();
        let later = nodes[1].create_subscription(listener(100)).await.unwrap();
        nodes[1]
            .touch_listener("acc_a".into(), later.id.clone(), 10_000)
            .await
            .unwrap();
        assert!(matches!(
            nodes[1]
                .touch_listener("acc_a".into(), airy.id.clone(), 10_000)
                .await,
            Err(StoreError::NotFound),
        ));
        let deleted = nodes[0]
            .delete_expired_listeners(500, vec![kept.id.clone()], 1_000)
            .await
            .unwrap();
        assert_eq!(deleted, [gone.id]);
        let kept = nodes[0]
            .get_subscription("acc_a".into(), kept.id.clone())
            .await
            .unwrap();
        assert_eq!(kept.listen_expires_at, Some(1_500));

        assert!(nodes[0].tripped_circuits().await.unwrap().is_empty());
        let c = nodes[0].client().await.unwrap();
        let until = now_ms() + 60_000;
        c.execute(
            "UPDATE subscriptions SET breaker_failures = 7, breaker_until = $2 WHERE id = $1",
            &[&kept.id, &until],
        )
        .await
        .unwrap();
        let tripped = nodes[1].tripped_circuits().await.unwrap();
        assert_eq!(tripped.len(), 1);
        assert_eq!(tripped[0].0, kept.id);
        assert_eq!(tripped[0].1, Circuit::at(7, Some(until), now_ms()));
    }
}

#[cfg(test)]
mod nul_tests {
    use super::*;

    /// PostgreSQL's text cannot hold a NUL character (SQLite's can): a caller who sends one
    /// is told so (a 4xx upstream), never a database failure, and nothing is half-written.
    #[tokio::test]
    async fn a_nul_character_is_the_callers_mistake() {
        let Some(nodes) = super::tests::nodes(Quotas::UNLIMITED, 1).await else {
            return;
        };
        let store = &nodes[0];
        assert!(matches!(
            store
                .get_subscription("acc_a".into(), "sub_\0".into())
                .await,
            Err(StoreError::Invalid(_))
        ));
        let req = serde_json::from_value(serde_json::json!({
            "url": "https://example.com/hook", "description": "a\u{0}b",
        }))
        .unwrap();
        let sub = crate::subscriptions::build("acc_a", req, &Default::default()).unwrap();
        match store.create_subscription(sub).await {
            Err(StoreError::Invalid(m)) => assert!(m.contains("NUL"), "{m}"),
            other => panic!("{other:?}"),
        }
        let page = store
            .list_subscriptions("acc_a".into(), 10, None)
            .await
            .unwrap();
        assert!(page.items.is_empty(), "nothing half-written");
    }
}
