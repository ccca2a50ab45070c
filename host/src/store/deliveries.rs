//! The outbox: one delivery row per (event, subscription), claimed with a lease and settled
//! with an attempt record.
//!
//! A claim moves `next_attempt_at` to the end of the lease, so a delivery whose worker died
//! simply becomes due again when the lease runs out; nothing has to sweep for orphans.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, params};

use super::events::NewEvent;
use super::{OptionalRow, Page, Store, StoreError};
use crate::clock::new_id;
use crate::model::{Attempt, Delivery, DeliveryStatus, Event, Subscription};

/// Plugins are not given events caused deeper than this many plugin hops.
pub const MAX_PLUGIN_DEPTH: u32 = 8;

/// Creates the deliveries for a freshly inserted event; returns how many are pending.
pub(crate) fn enqueue_for_event(
    tx: &Transaction<'_>,
    event_seq: i64,
    e: &NewEvent,
) -> Result<usize, StoreError> {
    let matches = super::subscriptions::matching(tx, &e.account_id, &e.event_type)?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO deliveries (id, account_id, event_seq, subscription_seq, status, next_attempt_at, last_error,
            created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
    )?;
    let mut pending = 0;
    for (sub_seq, plugin_id, transform_id) in matches {
        let skip = e.causation.as_ref().and_then(|c| {
            let involves_plugin = plugin_id.is_some() || transform_id.is_some();
            if plugin_id.as_deref() == Some(&c.plugin_id)
                || transform_id.as_deref() == Some(&c.plugin_id)
            {
                Some(format!(
                    "not given to plugin {}: it caused this event",
                    c.plugin_id
                ))
            } else if involves_plugin && c.depth > MAX_PLUGIN_DEPTH {
                Some(format!(
                    "causation depth {} exceeds {MAX_PLUGIN_DEPTH}: not given to plugins",
                    c.depth
                ))
            } else {
                None
            }
        });
        let (status, due) = match &skip {
            Some(_) => (DeliveryStatus::Filtered, None),
            None => {
                pending += 1;
                (DeliveryStatus::Pending, Some(e.received_at))
            }
        };
        stmt.execute(params![
            new_id("msg"),
            e.account_id,
            event_seq,
            sub_seq,
            status.as_str(),
            due,
            skip,
            e.received_at
        ])?;
    }
    Ok(pending)
}

/// A delivery claimed for one attempt, with everything needed to make it.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The delivery (its `attempts` counts attempts before this one).
    pub delivery: Delivery,
    /// The event to deliver.
    pub event: Event,
    /// Where it goes.
    pub subscription: Subscription,
}

/// How one attempt ended, to be written back.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The delivery.
    pub delivery_seq: i64,
    /// The attempt made (none when the delivery was only put off, e.g. by a rate limit).
    pub attempt: Option<Attempt>,
    /// The delivery's new status.
    pub status: DeliveryStatus,
    /// When to try next, for a pending delivery.
    pub next_attempt_at: Option<i64>,
    /// The failure, if the attempt failed.
    pub last_error: Option<String>,
}

const COLUMNS: &str =
    "d.seq, d.id, e.id, s.id, d.status, d.attempts, d.next_attempt_at, d.last_error,
    d.created_at, d.updated_at";
const FROM: &str = "FROM deliveries d JOIN events e ON e.seq = d.event_seq JOIN subscriptions s ON s.seq = d.subscription_seq";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
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
        "SELECT attempted_at, duration_ms, status_code, error_kind, error_message, response_body
         FROM attempts WHERE delivery_seq = ?1 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([delivery_seq], |r| {
            Ok(Attempt {
                attempted_at: r.get(0)?,
                duration_ms: r.get(1)?,
                status_code: r.get(2)?,
                error_kind: r.get(3)?,
                error_message: r.get(4)?,
                response_body: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Which deliveries a listing shows.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this subscription's.
    pub subscription_id: Option<String>,
    /// Only this event's.
    pub event_id: Option<String>,
    /// Only in this status.
    pub status: Option<DeliveryStatus>,
}

impl Store {
    /// Claims up to `limit` due deliveries for `lease_ms`.
    pub async fn claim_due(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.write(move |tx| {
            let lease_until = now + lease_ms;
            let mut stmt = tx.prepare_cached(
                "UPDATE deliveries SET next_attempt_at = ?2, lease_until = ?2
                 WHERE seq IN (SELECT seq FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?1
                               ORDER BY next_attempt_at LIMIT ?3)
                 RETURNING seq, id, event_seq, subscription_seq, attempts, last_error, created_at, updated_at",
            )?;
            let claimed = stmt
                .query_map(params![now, lease_until, limit as i64], |r| {
                    Ok((
                        Delivery {
                            seq: r.get(0)?,
                            id: r.get(1)?,
                            event_id: String::new(),
                            subscription_id: String::new(),
                            status: DeliveryStatus::Pending,
                            attempts: r.get(4)?,
                            next_attempt_at: Some(lease_until),
                            last_error: r.get(5)?,
                            created_at: r.get(6)?,
                            updated_at: r.get(7)?,
                        },
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            // One event fans out to many subscriptions and one subscription gets many events:
            // read each once per claim.
            let mut events: HashMap<i64, Event> = HashMap::new();
            let mut subscriptions: HashMap<i64, Subscription> = HashMap::new();
            let mut out = Vec::with_capacity(claimed.len());
            for (mut delivery, event_seq, sub_seq) in claimed {
                let event = match events.get(&event_seq) {
                    Some(e) => e.clone(),
                    None => events.entry(event_seq).or_insert(super::events::get_by_seq(tx, event_seq)?).clone(),
                };
                let subscription = match subscriptions.get(&sub_seq) {
                    Some(s) => s.clone(),
                    None => subscriptions
                        .entry(sub_seq)
                        .or_insert(super::subscriptions::get_by_seq(tx, sub_seq)?)
                        .clone(),
                };
                delivery.event_id = event.id.clone();
                delivery.subscription_id = subscription.id.clone();
                out.push(Claimed { delivery, event, subscription });
            }
            Ok(out)
        })
        .await
    }

    /// When the earliest pending delivery is due, if any is pending.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'",
            )?
            .query_row([], |r| r.get(0))?)
        })
        .await
    }

    /// Writes an attempt's outcome; returns the subscription's `failing_since` afterwards.
    pub async fn record_outcome(&self, o: Outcome, now: i64) -> Result<Option<i64>, StoreError> {
        self.write(move |tx| {
            let sub_seq: i64 = tx
                .prepare_cached("SELECT subscription_seq FROM deliveries WHERE seq = ?1")?
                .query_row([o.delivery_seq], |r| r.get(0))
                .found()?;
            let counted = o.attempt.is_some() as i64;
            tx.prepare_cached(
                "UPDATE deliveries SET status = ?2, next_attempt_at = ?3, lease_until = NULL,
                    last_error = COALESCE(?4, last_error), attempts = attempts + ?5, updated_at = ?6
                 WHERE seq = ?1",
            )?
            .execute(params![o.delivery_seq, o.status.as_str(), o.next_attempt_at, o.last_error, counted, now])?;
            if let Some(a) = &o.attempt {
                tx.prepare_cached(
                    "INSERT INTO attempts (delivery_seq, attempted_at, duration_ms, status_code, error_kind,
                        error_message, response_body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    o.delivery_seq,
                    a.attempted_at,
                    a.duration_ms,
                    a.status_code,
                    a.error_kind,
                    a.error_message,
                    a.response_body
                ])?;
                // A success clears the failure streak; a failure starts it if none is running.
                let failed = a.error_kind.is_some();
                tx.prepare_cached(
                    "UPDATE subscriptions SET failing_since = CASE WHEN ?2 THEN COALESCE(failing_since, ?3) ELSE NULL END
                     WHERE seq = ?1",
                )?
                .execute(params![sub_seq, failed, a.attempted_at])?;
            }
            Ok(tx
                .prepare_cached("SELECT failing_since FROM subscriptions WHERE seq = ?1")?
                .query_row([sub_seq], |r| r.get(0))?)
        })
        .await
    }

    /// Deliveries, newest first.
    pub async fn list_deliveries(
        &self,
        account_id: String,
        filter: DeliveryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Delivery>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} {FROM} WHERE d.account_id = ?1 AND (?2 IS NULL OR s.id = ?2)
                   AND (?3 IS NULL OR e.id = ?3) AND (?4 IS NULL OR d.status = ?4) AND d.seq < ?5
                 ORDER BY d.seq DESC LIMIT ?6"
            ))?;
            let rows = stmt
                .query_map(
                    params![
                        account_id,
                        filter.subscription_id,
                        filter.event_id,
                        filter.status.map(|s| s.as_str()),
                        cursor.unwrap_or(i64::MAX),
                        limit as i64 + 1
                    ],
                    |r| row(r).map(|d| (d.seq, d)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page::from_rows(rows, limit))
        })
        .await
    }

    /// One delivery with its attempts.
    pub async fn get_delivery(
        &self,
        account_id: String,
        id: String,
    ) -> Result<(Delivery, Vec<Attempt>), StoreError> {
        self.read(move |c| {
            let d = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} {FROM} WHERE d.id = ?1 AND d.account_id = ?2"
                ))?
                .query_row(params![id, account_id], row)
                .found()?;
            let attempts = attempts_of(c, d.seq)?;
            Ok((d, attempts))
        })
        .await
    }

    /// Makes a delivery due now, whatever its status.
    pub async fn retry_delivery(
        &self,
        account_id: String,
        id: String,
        now: i64,
    ) -> Result<Delivery, StoreError> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?3, lease_until = NULL, updated_at = ?3
                 WHERE id = ?1 AND account_id = ?2",
                params![id, account_id, now],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(tx.prepare_cached(&format!("SELECT {COLUMNS} {FROM} WHERE d.id = ?1"))?.query_row([&id], row)?)
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
        self.write(move |tx| {
            let sub = super::subscriptions::get_in(tx, &account_id, &subscription_id)?;
            Ok(tx.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?3, lease_until = NULL, updated_at = ?3
                 WHERE subscription_seq = ?1 AND status = 'failed' AND created_at >= ?2",
                params![sub.seq, since, now],
            )?)
        })
        .await
    }

    /// Disables a subscription (if not already) and records `event` in the same transaction.
    pub async fn disable_subscription(
        &self,
        subscription_seq: i64,
        reason: String,
        event: impl FnOnce(&Subscription) -> NewEvent + Send + 'static,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.write(move |tx| {
            let sub = super::subscriptions::get_by_seq(tx, subscription_seq)?;
            if sub.status == crate::model::SubscriptionStatus::Disabled {
                return Ok(false);
            }
            tx.execute(
                "UPDATE subscriptions SET status = 'disabled', status_reason = ?2, updated_at = ?3 WHERE seq = ?1",
                params![subscription_seq, reason, now],
            )?;
            super::events::insert(tx, event(&sub))?;
            Ok(true)
        })
        .await
    }

    /// Pending deliveries in the whole store (for metrics).
    pub async fn queue_depth(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")?
                    .query_row([], |r| r.get(0))?,
            )
        })
        .await
    }
}
