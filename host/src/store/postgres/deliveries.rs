//! Operations on single deliveries on PostgreSQL: read one with its attempts, retry one,
//! recover a subscription's failed ones, disable a subscription with its event, the queue's
//! depth. The same rules as SQLite's (`store::sqlite::deliveries`); an ordered conversation's
//! deliveries are requeued under its advisory lock (see `events`).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::claims::release_next;
use super::events::{Retry, lock_conversations, write_in};
use super::{PgStore, db};
use crate::model::{Attempt, AttemptRequest, Delivery, DeliveryStatus, Event, Subscription};
use crate::store::{NewEvent, StoreError};

/// The delivery columns, in the order [`delivery_row`] reads them; with [`DELIVERY_FROM`],
/// every query that returns deliveries reads them through this one mapping.
pub(in crate::store) const DELIVERY_COLUMNS: &str =
    "d.seq, d.id, e.id, s.id, d.status, d.attempts, d.next_attempt_at, d.last_error,
    d.created_at, d.updated_at";
/// The tables [`DELIVERY_COLUMNS`] come from (`d`, its event `e`, its subscription `s`).
pub(in crate::store) const DELIVERY_FROM: &str =
    "FROM deliveries d JOIN events e ON e.seq = d.event_seq
    JOIN subscriptions s ON s.seq = d.subscription_seq";

/// Reads [`DELIVERY_COLUMNS`] (the first ten columns of the row).
pub(in crate::store) fn delivery_row(r: &Row) -> Result<Delivery, StoreError> {
    let status: String = r.try_get(4).map_err(db)?;
    let attempts: i64 = r.try_get(5).map_err(db)?;
    Ok(Delivery {
        seq: r.try_get(0).map_err(db)?,
        id: r.try_get(1).map_err(db)?,
        event_id: r.try_get(2).map_err(db)?,
        subscription_id: r.try_get(3).map_err(db)?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
        attempts: u32::try_from(attempts).map_err(|_| StoreError::Corrupt("attempts".into()))?,
        next_attempt_at: r.try_get(6).map_err(db)?,
        last_error: r.try_get(7).map_err(db)?,
        created_at: r.try_get(8).map_err(db)?,
        updated_at: r.try_get(9).map_err(db)?,
    })
}

/// Puts deliveries back in the queue: due at `$2`, or held (`$3`) for an ordered
/// conversation's turn (see `claims::release_next`). Any claim on them is void.
const REQUEUE: &str = "UPDATE deliveries SET status = 'pending',
        next_attempt_at = CASE WHEN $3::boolean THEN NULL ELSE $2::bigint END,
        lease_until = NULL, claim_token = NULL, updated_at = $2
     WHERE seq = ANY($1)";

async fn attempts_of(
    c: &impl GenericClient,
    delivery_seq: i64,
) -> Result<Vec<Attempt>, StoreError> {
    let rows = c
        .query(
            "SELECT attempted_at, duration_ms, status_code, error_kind, error_message, response_body,
                request_headers, request_url, request_body, request_body_bytes
             FROM attempts WHERE delivery_seq = $1 ORDER BY seq",
            &[&delivery_seq],
        )
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            let status_code: Option<i64> = r.try_get(2).map_err(db)?;
            let mut attempt = Attempt {
                attempted_at: r.try_get(0).map_err(db)?,
                duration_ms: r.try_get(1).map_err(db)?,
                status_code: status_code
                    .map(|c| {
                        u16::try_from(c).map_err(|_| StoreError::Corrupt("status_code".into()))
                    })
                    .transpose()?,
                error_kind: r.try_get(3).map_err(db)?,
                error_message: r.try_get(4).map_err(db)?,
                response_body: r.try_get(5).map_err(db)?,
                request: None,
            };
            let headers: Option<String> = r.try_get(6).map_err(db)?;
            // Attempts that sent no request (a plugin subscriber) have no headers.
            if let Some(headers) = headers {
                let headers = serde_json::from_str(&headers)
                    .map_err(|e| StoreError::Corrupt(format!("attempt request headers: {e}")))?;
                let body: Option<String> = r.try_get(8).map_err(db)?;
                let bytes: Option<i64> = r.try_get(9).map_err(db)?;
                let body = body.unwrap_or_default();
                let body_bytes = bytes.map_or(body.len() as u64, |b| b as u64);
                attempt.request = Some(AttemptRequest {
                    url: r.try_get(7).map_err(db)?,
                    headers,
                    body_truncated: (body.len() as u64) < body_bytes,
                    body,
                    body_bytes,
                });
            }
            Ok(attempt)
        })
        .collect()
}

async fn delivery_by_seq(c: &impl GenericClient, seq: i64) -> Result<Delivery, StoreError> {
    let r = c
        .query_one(
            &format!("SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM} WHERE d.seq = $1"),
            &[&seq],
        )
        .await
        .map_err(db)?;
    delivery_row(&r)
}

/// A subscription by its seq, secrets opened (through the account's lookup, which owns the
/// row's decoding).
pub(in crate::store) async fn subscription_by_seq(
    c: &impl GenericClient,
    keys: &crate::secrets::Keyring,
    seq: i64,
) -> Result<Subscription, StoreError> {
    let r = c
        .query_opt(
            "SELECT account_id, id FROM subscriptions WHERE seq = $1",
            &[&seq],
        )
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
    let (account_id, id): (String, String) = (r.get(0), r.get(1));
    super::subscriptions::get_in(c, keys, &account_id, &id, false).await
}

impl PgStore {
    /// One delivery with its attempts.
    pub async fn get_delivery(
        &self,
        account_id: String,
        id: String,
    ) -> Result<(Delivery, Vec<Attempt>), StoreError> {
        let mut client = self.client().await?;
        // One snapshot for both reads: an outcome settled between them would show an attempt
        // next to the status it had before.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM} WHERE d.id = $1 AND d.account_id = $2"
                ),
                &[&id, &account_id],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        let d = delivery_row(&row)?;
        let attempts = attempts_of(&tx, d.seq).await?;
        tx.commit().await.map_err(db)?;
        Ok((d, attempts))
    }

    /// Makes a delivery due now, whatever its status; one in flight is left to its attempt, and
    /// one of an ordered conversation takes its turn behind the delivery in flight, if any.
    pub async fn retry_delivery(
        &self,
        account_id: String,
        id: String,
        now: i64,
    ) -> Result<Delivery, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let (seq, sub_seq, key): (i64, i64, Option<String>) = tx
            .query_opt(
                "SELECT seq, subscription_seq, ordering_key FROM deliveries
                 WHERE id = $1 AND account_id = $2",
                &[&id, &account_id],
            )
            .await
            .map_err(db)?
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .ok_or(StoreError::NotFound)?;
        // The conversation's lock before the row's, as everywhere.
        if let Some(key) = &key {
            lock_conversations(&tx, &[(sub_seq, key.clone())])
                .await
                .map_err(db)?;
        }
        let leased_until: Option<i64> = tx
            .query_one(
                "SELECT lease_until FROM deliveries WHERE seq = $1 FOR UPDATE",
                &[&seq],
            )
            .await
            .map_err(db)?
            .get(0);
        let in_flight = leased_until.is_some_and(|until| until > now);
        let mut due = false;
        if !in_flight {
            let stmt = tx.prepare_cached(REQUEUE).await.map_err(db)?;
            tx.execute(&stmt, &[&vec![seq], &now, &key.is_some()])
                .await
                .map_err(db)?;
            due = match &key {
                Some(key) => release_next(&tx, sub_seq, key, now).await?,
                None => true,
            };
        }
        let d = delivery_by_seq(&tx, seq).await?;
        tx.commit().await.map_err(db)?;
        drop(client);
        if due {
            self.notify_due().await;
        }
        Ok(d)
    }

    /// Requeues a subscription's failed deliveries created since `since`; returns how many.
    pub async fn recover_deliveries(
        &self,
        account_id: String,
        subscription_id: String,
        since: i64,
        now: i64,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let sub =
            super::subscriptions::get_in(&tx, &self.keys, &account_id, &subscription_id, false)
                .await?;
        let failed: Vec<(i64, Option<String>)> = tx
            .query(
                "SELECT seq, ordering_key FROM deliveries
                 WHERE subscription_seq = $1 AND status = 'failed' AND created_at >= $2",
                &[&sub.seq, &since],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut keys: Vec<String> = failed.iter().filter_map(|(_, k)| k.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        let conversations: Vec<(i64, String)> = keys.iter().map(|k| (sub.seq, k.clone())).collect();
        lock_conversations(&tx, &conversations).await.map_err(db)?;
        let stmt = tx.prepare_cached(REQUEUE).await.map_err(db)?;
        let (plain, ordered): (Vec<_>, Vec<_>) = failed.iter().partition(|(_, k)| k.is_none());
        let plain: Vec<i64> = plain.iter().map(|(s, _)| *s).collect();
        let ordered: Vec<i64> = ordered.iter().map(|(s, _)| *s).collect();
        tx.execute(&stmt, &[&plain, &now, &false])
            .await
            .map_err(db)?;
        tx.execute(&stmt, &[&ordered, &now, &true])
            .await
            .map_err(db)?;
        // Ordered conversations go again one at a time, oldest first.
        for key in &keys {
            release_next(&tx, sub.seq, key, now).await?;
        }
        tx.commit().await.map_err(db)?;
        drop(client);
        if !failed.is_empty() {
            self.notify_due().await;
        }
        Ok(failed.len())
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
        let mut client = self.client().await?;
        let mut event = Some(event);
        let mut built: Option<NewEvent> = None;
        for pass in 1.. {
            let tx = client.transaction().await.map_err(db)?;
            let disabled = tx
                .execute(
                    "UPDATE subscriptions SET status = 'disabled', status_reason = $2, updated_at = $3
                     WHERE seq = $1 AND status <> 'disabled'",
                    &[&subscription_seq, &reason, &now],
                )
                .await
                .map_err(db)?;
            if disabled == 0 {
                // Already disabled (or gone: then there is nothing to disable either).
                return Ok(None);
            }
            let e = match built.take() {
                Some(e) => e,
                None => {
                    let sub = subscription_by_seq(&tx, &self.keys, subscription_seq).await?;
                    (event.take().expect("built once"))(&sub)
                }
            };
            match write_in(&tx, &[std::slice::from_ref(&e)]).await {
                Ok(mut answers) => {
                    let ingested = answers.remove(0)?.remove(0);
                    tx.commit().await.map_err(db)?;
                    drop(client);
                    if ingested.deliveries > 0 {
                        self.notify_due().await;
                    }
                    return Ok(Some(ingested.event));
                }
                Err(Retry::Again) | Err(Retry::Db(_)) if pass < 4 => {
                    built = Some(e);
                    continue;
                }
                Err(Retry::Again) => {
                    return Err(StoreError::Database(
                        "the event kept racing other nodes' inserts".into(),
                    ));
                }
                Err(Retry::Db(e)) | Err(Retry::Fail(e)) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Pending deliveries in the whole store (for metrics).
    pub async fn queue_depth(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
                &[],
            )
            .await
            .map_err(db)?
            .get(0))
    }
}
