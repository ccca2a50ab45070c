//! The outbox: one delivery row per (event, subscription), claimed with a lease and settled
//! with an attempt record.
//!
//! A claim moves `next_attempt_at` to the end of the lease, so a delivery whose worker died
//! simply becomes due again when the lease runs out; nothing has to sweep for orphans.

use rusqlite::{Connection, Transaction, params};

use super::claims::release_next;
use super::{OptionalRow, SqliteStore, StoreError};
use crate::clock::new_id;
use crate::model::{
    Attempt, AttemptRequest, Delivery, DeliveryOrdering, DeliveryStatus, Event, Subscription,
};
use crate::store::{NewEvent, policy};

const INSERT_DELIVERY: &str =
    "INSERT INTO deliveries (id, account_id, event_seq, subscription_seq, status,
        next_attempt_at, last_error, created_at, updated_at, ordering_key)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)";
pub(crate) const ANY_PENDING_OF_KEY: &str =
    "SELECT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_ordering
     WHERE subscription_seq = ?1 AND ordering_key = ?2 AND status = 'pending')";

/// Puts a delivery back in the queue: due at ?2, or held (?3) for an ordered conversation's
/// turn (see `release_next`). Any claim on it is void.
const REQUEUE: &str = "UPDATE deliveries SET status = 'pending', next_attempt_at = CASE WHEN ?3 THEN NULL ELSE ?2 END,
        lease_until = NULL, claim_token = NULL, updated_at = ?2
     WHERE seq = ?1";

/// Creates the deliveries for a freshly inserted event; returns how many are pending.
pub(crate) fn enqueue_for_event(
    tx: &Transaction<'_>,
    event_seq: i64,
    e: &NewEvent,
) -> Result<usize, StoreError> {
    let matches = super::subscriptions::matching(tx, &e.account_id, &e.event_type)?;
    let mut insert = tx.prepare_cached(INSERT_DELIVERY)?;
    let mut pending = 0;
    for m in matches {
        let skip = policy::loop_guard(
            e.causation.as_ref(),
            m.plugin_id.as_deref(),
            m.transform_plugin_id.as_deref(),
        );
        let key = match (m.ordering, &e.conversation) {
            (DeliveryOrdering::Conversation, Some((conversation_id, _))) => Some(conversation_id),
            _ => None,
        };
        let (status, due) = match &skip {
            Some(_) => (DeliveryStatus::Filtered, None),
            None => {
                pending += 1;
                // Behind an earlier pending delivery of its conversation, it waits its turn.
                let held = match key {
                    Some(key) => tx
                        .prepare_cached(ANY_PENDING_OF_KEY)?
                        .query_row(params![m.seq, key], |r| r.get(0))?,
                    None => false,
                };
                (DeliveryStatus::Pending, (!held).then_some(e.received_at))
            }
        };
        insert.execute(params![
            new_id("msg"),
            e.account_id,
            event_seq,
            m.seq,
            status.as_str(),
            due,
            skip,
            e.received_at,
            key
        ])?;
    }
    Ok(pending)
}

/// The delivery columns, in the order [`delivery_row`] reads them; with [`DELIVERY_FROM`],
/// every query that returns deliveries reads them through this one mapping.
pub(super) const DELIVERY_COLUMNS: &str =
    "d.seq, d.id, e.id, s.id, d.status, d.attempts, d.next_attempt_at, d.last_error,
    d.created_at, d.updated_at";
/// The tables [`DELIVERY_COLUMNS`] come from (`d`, its event `e`, its subscription `s`).
pub(super) const DELIVERY_FROM: &str = "FROM deliveries d JOIN events e ON e.seq = d.event_seq
    JOIN subscriptions s ON s.seq = d.subscription_seq";

/// Reads [`DELIVERY_COLUMNS`] (the first ten columns of the row).
pub(super) fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = r.get(4)?;
    Ok(Delivery {
        seq: r.get(0)?,
        id: r.get(1)?,
        event_id: r.get(2)?,
        subscription_id: r.get(3)?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
        attempts: r.get(5)?,
        next_attempt_at: r.get(6)?,
        last_error: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

fn attempts_of(c: &Connection, delivery_seq: i64) -> Result<Vec<Attempt>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT attempted_at, duration_ms, status_code, error_kind, error_message, response_body,
            request_headers, request_url, request_body, request_body_bytes
         FROM attempts WHERE delivery_seq = ?1 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([delivery_seq], |r| {
            Ok((
                Attempt {
                    attempted_at: r.get(0)?,
                    duration_ms: r.get(1)?,
                    status_code: r.get(2)?,
                    error_kind: r.get(3)?,
                    error_message: r.get(4)?,
                    response_body: r.get(5)?,
                    request: None,
                },
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<i64>>(9)?,
            ))
        })?
        .map(|row| {
            let (mut attempt, headers, url, body, bytes) = row?;
            // Attempts recorded before requests were kept (or that sent none) have no headers.
            if let Some(headers) = headers {
                let headers = serde_json::from_str(&headers)
                    .map_err(|e| StoreError::Corrupt(format!("attempt request headers: {e}")))?;
                let body = body.unwrap_or_default();
                let body_bytes = bytes.map_or(body.len() as u64, |b| b as u64);
                attempt.request = Some(AttemptRequest {
                    url,
                    headers,
                    body_truncated: (body.len() as u64) < body_bytes,
                    body,
                    body_bytes,
                });
            }
            Ok(attempt)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(rows)
}

impl SqliteStore {
    /// One delivery with its attempts.
    pub async fn get_delivery(
        &self,
        account_id: String,
        id: String,
    ) -> Result<(Delivery, Vec<Attempt>), StoreError> {
        self.read(move |c| {
            let d = c
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM} WHERE d.id = ?1 AND d.account_id = ?2"
                ))?
                .query_row(params![id, account_id], delivery_row)
                .found()?;
            let attempts = attempts_of(c, d.seq)?;
            Ok((d, attempts))
        })
        .await
    }

    /// Makes a delivery due now, whatever its status; one in flight is left to its attempt, and
    /// one of an ordered conversation takes its turn behind the delivery in flight, if any.
    pub async fn retry_delivery(
        &self,
        account_id: String,
        id: String,
        now: i64,
    ) -> Result<Delivery, StoreError> {
        self.write(move |tx| {
            let (seq, sub_seq, key, leased_until): (i64, i64, Option<String>, Option<i64>) = tx
                .prepare_cached(
                    "SELECT seq, subscription_seq, ordering_key, lease_until FROM deliveries
                     WHERE id = ?1 AND account_id = ?2",
                )?
                .query_row(params![id, account_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .found()?;
            let in_flight = leased_until.is_some_and(|until| until > now);
            if !in_flight {
                tx.prepare_cached(REQUEUE)?
                    .execute(params![seq, now, key.is_some()])?;
                if let Some(key) = &key {
                    release_next(tx, sub_seq, key, now)?;
                }
            }
            Ok(tx
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM} WHERE d.seq = ?1"
                ))?
                .query_row([seq], delivery_row)?)
        })
        .await
    }

    /// Requeues a subscription's failed deliveries created since `since`; returns how many.
    pub async fn recover_deliveries(
        &self,
        account_id: String,
        subscription_id: String,
        since: i64,
        now: i64,
    ) -> Result<usize, StoreError> {
        let keys = self.keys.clone();
        self.write(move |tx| {
            let sub = super::subscriptions::get_in(tx, &keys, &account_id, &subscription_id)?;
            let failed: Vec<(i64, Option<String>)> = tx
                .prepare_cached(
                    "SELECT seq, ordering_key FROM deliveries
                     WHERE subscription_seq = ?1 AND status = 'failed' AND created_at >= ?2",
                )?
                .query_map(params![sub.seq, since], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut requeue = tx.prepare_cached(REQUEUE)?;
            let mut keys = std::collections::BTreeSet::new();
            for (seq, key) in &failed {
                requeue.execute(params![seq, now, key.is_some()])?;
                keys.extend(key.as_deref());
            }
            // Ordered conversations go again one at a time, oldest first.
            for key in keys {
                release_next(tx, sub.seq, key, now)?;
            }
            Ok(failed.len())
        })
        .await
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
        let keys = self.keys.clone();
        self.write(move |tx| {
            let sub = super::subscriptions::get_by_seq(tx, &keys, subscription_seq)?;
            if sub.status == crate::model::SubscriptionStatus::Disabled {
                return Ok(None);
            }
            tx.execute(
                "UPDATE subscriptions SET status = 'disabled', status_reason = ?2, updated_at = ?3 WHERE seq = ?1",
                params![subscription_seq, reason, now],
            )?;
            Ok(Some(super::events::insert(tx, event(&sub))?.event))
        })
        .await
    }

    /// Pending deliveries in the whole store (for metrics).
    pub async fn queue_depth(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT COUNT(*) FROM deliveries INDEXED BY deliveries_due WHERE status = 'pending'")?
                    .query_row([], |r| r.get(0))?,
            )
        })
        .await
    }
}
