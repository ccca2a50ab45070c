//! Subscriptions and the (account, event type) matching index kept beside them. The secret
//! fields are sealed when written and opened when read (see `super::sealing`).

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{OptionalRow, Page, SqliteStore, StoreError};
use crate::clock::now_ms;
use crate::model::{Circuit, DeliveryOrdering, Format, Subscription, SubscriptionStatus};
use crate::quotas::{Quota, Quotas};
use crate::secrets::Keyring;
use crate::store::sealing::{open_subscription, seal_subscription};

const COLUMNS: &str = "seq, id, account_id, url, plugin_id, transform_plugin_id, description, event_types,
    headers, format, status, status_reason, secret, previous_secret, previous_secret_expires_at, verify,
    rate_limit_per_second, airy_api_secret, failing_since, created_at, updated_at, max_in_flight,
    ordering, breaker_failures, breaker_until, listen_expires_at";

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_string(), rusqlite::types::Type::Text)
}

/// The row as stored: its secret fields still sealed (see [`open_subscription`]).
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscription> {
    let event_types: String = r.get(7)?;
    let headers: String = r.get(8)?;
    let format: String = r.get(9)?;
    let status: String = r.get(10)?;
    let ordering: String = r.get(22)?;
    Ok(Subscription {
        seq: r.get(0)?,
        id: r.get(1)?,
        account_id: r.get(2)?,
        url: r.get(3)?,
        plugin_id: r.get(4)?,
        transform_plugin_id: r.get(5)?,
        description: r.get(6)?,
        event_types: serde_json::from_str(&event_types).map_err(|_| corrupt("event_types"))?,
        headers: serde_json::from_str(&headers).map_err(|_| corrupt("headers"))?,
        format: Format::parse(&format).ok_or_else(|| corrupt("format"))?,
        status: SubscriptionStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        status_reason: r.get(11)?,
        secret: r.get(12)?,
        previous_secret: r.get(13)?,
        previous_secret_expires_at: r.get(14)?,
        verify: r.get(15)?,
        rate_limit_per_second: r.get(16)?,
        airy_api_secret: r.get(17)?,
        failing_since: r.get(18)?,
        created_at: r.get(19)?,
        updated_at: r.get(20)?,
        max_in_flight: r.get(21)?,
        ordering: DeliveryOrdering::parse(&ordering).ok_or_else(|| corrupt("ordering"))?,
        circuit: Circuit::at(r.get(23)?, r.get(24)?, now_ms()),
        listen_expires_at: r.get(25)?,
    })
}

/// One page of account ?1's subscriptions below seq ?2, newest first, at most ?3.
pub(super) fn list_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE account_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
    )
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

/// Inserts a subscription, unless the account already has as many as `quotas` allow (counted
/// in this transaction, so concurrent creations cannot both pass).
fn insert(
    tx: &Transaction<'_>,
    keys: &Keyring,
    s: &mut Subscription,
    quotas: Quotas,
) -> Result<(), StoreError> {
    let count: u64 = tx
        .prepare_cached("SELECT COUNT(*) FROM subscriptions WHERE account_id = ?1")?
        .query_row([&s.account_id], |r| r.get(0))?;
    quotas.check(Quota::Subscriptions, count, 1)?;
    let sealed = seal_subscription(keys, s);
    tx.prepare_cached(
        "INSERT INTO subscriptions (id, account_id, url, plugin_id, transform_plugin_id, description,
            event_types, headers, format, status, status_reason, secret, previous_secret,
            previous_secret_expires_at, verify, rate_limit_per_second, airy_api_secret, failing_since,
            created_at, updated_at, max_in_flight, ordering, listen_expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
            ?21, ?22, ?23)",
    )?
    .execute(params![
        s.id,
        s.account_id,
        s.url,
        s.plugin_id,
        s.transform_plugin_id,
        s.description,
        json(&s.event_types),
        json(&s.headers),
        s.format.as_str(),
        s.status.as_str(),
        s.status_reason,
        sealed.secret,
        sealed.previous_secret,
        s.previous_secret_expires_at,
        s.verify,
        s.rate_limit_per_second,
        sealed.airy_api_secret,
        s.failing_since,
        s.created_at,
        s.updated_at,
        s.max_in_flight,
        s.ordering.as_str(),
        s.listen_expires_at,
    ])?;
    s.seq = tx.last_insert_rowid();
    index_event_types(tx, s)
}

fn save(tx: &Transaction<'_>, keys: &Keyring, s: &Subscription) -> Result<(), StoreError> {
    let sealed = seal_subscription(keys, s);
    tx.prepare_cached(
        "UPDATE subscriptions SET url = ?2, plugin_id = ?3, transform_plugin_id = ?4, description = ?5,
            event_types = ?6, headers = ?7, format = ?8, status = ?9, status_reason = ?10, secret = ?11,
            previous_secret = ?12, previous_secret_expires_at = ?13, verify = ?14,
            rate_limit_per_second = ?15, airy_api_secret = ?16, failing_since = ?17, updated_at = ?18,
            max_in_flight = ?19, ordering = ?20
         WHERE seq = ?1",
    )?
    .execute(params![
        s.seq,
        s.url,
        s.plugin_id,
        s.transform_plugin_id,
        s.description,
        json(&s.event_types),
        json(&s.headers),
        s.format.as_str(),
        s.status.as_str(),
        s.status_reason,
        sealed.secret,
        sealed.previous_secret,
        s.previous_secret_expires_at,
        s.verify,
        s.rate_limit_per_second,
        sealed.airy_api_secret,
        s.failing_since,
        s.updated_at,
        s.max_in_flight,
        s.ordering.as_str(),
    ])?;
    if s.ordering == DeliveryOrdering::None {
        // Deliveries held back behind an earlier one of their conversation go now.
        tx.prepare_cached(RELEASE_HELD)?
            .execute(params![s.seq, s.updated_at])?;
    }
    index_event_types(tx, s)
}

/// Frees the held deliveries of a subscription that no longer keeps conversation order.
const RELEASE_HELD: &str = "UPDATE deliveries INDEXED BY deliveries_ordering
     SET next_attempt_at = COALESCE(next_attempt_at, ?2), ordering_key = NULL
     WHERE subscription_seq = ?1 AND status = 'pending' AND ordering_key IS NOT NULL";

fn index_event_types(tx: &Transaction<'_>, s: &Subscription) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM subscription_event_types WHERE subscription_seq = ?1")?
        .execute([s.seq])?;
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO subscription_event_types (account_id, event_type, subscription_seq) VALUES (?1, ?2, ?3)",
    )?;
    for t in &s.event_types {
        stmt.execute(params![s.account_id, t, s.seq])?;
    }
    Ok(())
}

pub(crate) fn get_in(
    c: &Connection,
    keys: &Keyring,
    account_id: &str,
    id: &str,
) -> Result<Subscription, StoreError> {
    let sub = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE id = ?1 AND account_id = ?2"
        ))?
        .query_row(params![id, account_id], row)
        .found()?;
    open_subscription(keys, sub)
}

pub(crate) fn get_by_seq(
    c: &Connection,
    keys: &Keyring,
    seq: i64,
) -> Result<Subscription, StoreError> {
    let sub = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE seq = ?1"
        ))?
        .query_row([seq], row)
        .found()?;
    open_subscription(keys, sub)
}

/// An active subscription that wants an event.
pub(crate) struct Match {
    pub seq: i64,
    pub plugin_id: Option<String>,
    pub transform_plugin_id: Option<String>,
    pub ordering: DeliveryOrdering,
}

/// The active subscriptions of `account_id` that want events of `event_type`.
pub(crate) fn matching(
    c: &Connection,
    account_id: &str,
    event_type: &str,
) -> Result<Vec<Match>, StoreError> {
    // A subscription to both `*` and the type comes twice; dropped here rather than by
    // DISTINCT, whose temporary b-tree costs every ingested event more than the query itself.
    let mut stmt = c.prepare_cached(
        "SELECT s.seq, s.plugin_id, s.transform_plugin_id, s.ordering
         FROM subscription_event_types t JOIN subscriptions s ON s.seq = t.subscription_seq
         WHERE t.account_id = ?1 AND t.event_type IN (?2, '*') AND s.status = 'active'",
    )?;
    let mut rows: Vec<Match> = Vec::new();
    let mut found = stmt.query(params![account_id, event_type])?;
    while let Some(r) = found.next()? {
        let seq = r.get(0)?;
        if rows.iter().any(|m| m.seq == seq) {
            continue;
        }
        let ordering: String = r.get(3)?;
        rows.push(Match {
            seq,
            plugin_id: r.get(1)?,
            transform_plugin_id: r.get(2)?,
            ordering: DeliveryOrdering::parse(&ordering).ok_or_else(|| corrupt("ordering"))?,
        });
    }
    Ok(rows)
}

impl SqliteStore {
    /// Stores a new subscription.
    pub async fn create_subscription(
        &self,
        mut sub: Subscription,
    ) -> Result<Subscription, StoreError> {
        let keys = self.keys.clone();
        let quotas = self.quotas;
        self.write(move |tx| {
            insert(tx, &keys, &mut sub, quotas)?;
            Ok(sub)
        })
        .await
    }

    /// One subscription of the account.
    pub async fn get_subscription(
        &self,
        account_id: String,
        id: String,
    ) -> Result<Subscription, StoreError> {
        let keys = self.keys.clone();
        self.read(move |c| get_in(c, &keys, &account_id, &id)).await
    }

    /// The account's subscriptions, newest first.
    pub async fn list_subscriptions(
        &self,
        account_id: String,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Subscription>, StoreError> {
        let keys = self.keys.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&list_sql())?;
            let rows = stmt
                .query_map(
                    params![account_id, cursor.unwrap_or(i64::MAX), limit as i64 + 1],
                    row,
                )?
                .map(|s| {
                    let s = open_subscription(&keys, s?)?;
                    Ok((s.seq, s))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Page::from_rows(rows, limit))
        })
        .await
    }

    /// Applies `change` to a subscription and saves it, atomically. `change` may refuse with an
    /// error; what it returns is handed back beside the saved subscription.
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
        let keys = self.keys.clone();
        self.write(move |tx| {
            let mut sub = get_in(tx, &keys, &account_id, &id)?;
            let out = change(&mut sub)?;
            save(tx, &keys, &sub)?;
            Ok((sub, out))
        })
        .await
    }

    /// Deletes a subscription and its deliveries.
    pub async fn delete_subscription(
        &self,
        account_id: String,
        id: String,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM subscriptions WHERE id = ?1 AND account_id = ?2",
                params![id, account_id],
            )?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    /// Moves a listener subscription's expiry (`wasmhook listen`): while its command line is
    /// connected, and when it leaves.
    pub async fn touch_listener(
        &self,
        account_id: String,
        id: String,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE subscriptions SET listen_expires_at = ?3
                 WHERE id = ?1 AND account_id = ?2 AND listen_expires_at IS NOT NULL",
                params![id, account_id, expires_at],
            )?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    /// Deletes the listener subscriptions (and their deliveries) whose expiry has passed, except
    /// those in `connected`, whose expiry moves to `grace` from now; returns the ids deleted.
    pub async fn delete_expired_listeners(
        &self,
        now: i64,
        connected: Vec<String>,
        grace: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.write(move |tx| {
            let mut touch = tx.prepare_cached(
                "UPDATE subscriptions SET listen_expires_at = ?2
                 WHERE id = ?1 AND listen_expires_at IS NOT NULL",
            )?;
            for id in &connected {
                touch.execute(params![id, now + grace])?;
            }
            let expired: Vec<String> = tx
                .prepare_cached(
                    "SELECT id FROM subscriptions
                     WHERE listen_expires_at IS NOT NULL AND listen_expires_at < ?1",
                )?
                .query_map([now], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut deleted = Vec::new();
            for id in expired.into_iter().filter(|id| !connected.contains(id)) {
                tx.execute("DELETE FROM subscriptions WHERE id = ?1", [&id])?;
                deleted.push(id);
            }
            Ok(deleted)
        })
        .await
    }

    /// Subscriptions whose circuit breaker is tripped (open or half-open), by id.
    pub async fn tripped_circuits(&self) -> Result<Vec<(String, Circuit)>, StoreError> {
        self.read(|c| {
            let now = now_ms();
            let rows = c
                .prepare_cached(
                    "SELECT id, breaker_failures, breaker_until FROM subscriptions
                     WHERE breaker_until IS NOT NULL",
                )?
                .query_map([], |r| {
                    Ok((r.get(0)?, Circuit::at(r.get(1)?, r.get(2)?, now)))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// The account's Airy webhook, if it ever subscribed.
    pub async fn airy_webhook(
        &self,
        account_id: String,
    ) -> Result<Option<Subscription>, StoreError> {
        let keys = self.keys.clone();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM subscriptions WHERE account_id = ?1 AND airy_api_secret IS NOT NULL"
            ))?
            .query_row([&account_id], row)
            .optional()?
            .map(|s| open_subscription(&keys, s))
            .transpose()
        })
        .await
    }

    /// Changes the account's Airy webhook with `change`, creating it from `new` first if it has none.
    pub async fn upsert_airy_webhook<F>(
        &self,
        new: Subscription,
        change: F,
    ) -> Result<Subscription, StoreError>
    where
        F: FnOnce(&mut Subscription) + Send + 'static,
    {
        let keys = self.keys.clone();
        let quotas = self.quotas;
        self.write(move |tx| {
            let existing = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM subscriptions WHERE account_id = ?1 AND airy_api_secret IS NOT NULL"
                ))?
                .query_row([&new.account_id], row)
                .optional()?
                .map(|s| open_subscription(&keys, s))
                .transpose()?;
            match existing {
                Some(mut sub) => {
                    change(&mut sub);
                    save(tx, &keys, &sub)?;
                    Ok(sub)
                }
                None => {
                    let mut sub = new;
                    change(&mut sub);
                    insert(tx, &keys, &mut sub, quotas)?;
                    Ok(sub)
                }
            }
        })
        .await
    }
}
