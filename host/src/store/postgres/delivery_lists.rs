//! Pages of deliveries on PostgreSQL, newest first: an account's, a subscription's or an
//! event's, optionally in one status. Same pages and cursors as the SQLite store: each page is
//! one query that reads its index in order and stops after the page.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::decode::{get, int_req};
use super::deliveries::{DELIVERY_COLUMNS, DELIVERY_FROM, delivery_row};
use super::{PgStore, db};
use crate::model::{Delivery, DeliveryStatus};
use crate::store::{DeliveryFilter, DeliveryScope};
use crate::store::{Page, StoreError};

/// A scope resolved to the key its index starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyed {
    /// `deliveries_account_status (account_id, status, seq)`.
    Account,
    /// `deliveries_subscription (subscription_seq, seq)` and
    /// `deliveries_subscription_status (subscription_seq, status, seq)`.
    Subscription,
    /// `deliveries_event (event_seq)`.
    Event,
}

/// The key a page's index starts with: an account id or a seq.
pub(super) enum Key {
    Text(String),
    Seq(i64),
}

/// The query of one page. Parameters: $1 the scope's key (account id, subscription seq or event
/// seq), $2 the cursor (pages continue below this `seq`), $3 the page size, and $4 the status
/// when `in_status`.
pub(super) fn page_sql(keyed: Keyed, in_status: bool) -> String {
    let status = if in_status { " AND d.status = $4" } else { "" };
    match keyed {
        Keyed::Subscription => format!(
            "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM}
             WHERE d.subscription_seq = $1{status} AND d.seq < $2 ORDER BY d.seq DESC LIMIT $3"
        ),
        Keyed::Event => format!(
            "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM}
             WHERE d.event_seq = $1{status} AND d.seq < $2 ORDER BY d.seq DESC LIMIT $3"
        ),
        Keyed::Account if in_status => format!(
            "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM}
             WHERE d.account_id = $1 AND d.status = $4 AND d.seq < $2 ORDER BY d.seq DESC LIMIT $3"
        ),
        // Any status: the newest page of each status from the (account, status, seq) index,
        // merged. Each part reads at most a page of index entries, whatever the account holds.
        Keyed::Account => {
            let parts = DeliveryStatus::ALL
                .iter()
                .map(|st| {
                    format!(
                        "(SELECT seq FROM deliveries
                           WHERE account_id = $1 AND status = '{}' AND seq < $2 ORDER BY seq DESC LIMIT $3)",
                        st.as_str()
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            format!(
                "SELECT {DELIVERY_COLUMNS} FROM ({parts}) AS newest
                   JOIN deliveries d ON d.seq = newest.seq JOIN events e ON e.seq = d.event_seq
                   JOIN subscriptions s ON s.seq = d.subscription_seq
                 ORDER BY d.seq DESC LIMIT $3"
            )
        }
    }
}

/// Reads one page of the deliveries under `key`, newest first, below `cursor`.
pub(super) async fn page(
    c: &impl GenericClient,
    keyed: Keyed,
    key: Key,
    status: Option<DeliveryStatus>,
    limit: usize,
    cursor: Option<i64>,
) -> Result<Page<Delivery>, StoreError> {
    let cursor = cursor.unwrap_or(i64::MAX);
    let size = limit as i64 + 1;
    let status = status.map(|s| s.as_str());
    let key: &(dyn ToSql + Sync) = match &key {
        Key::Text(t) => t,
        Key::Seq(s) => s,
    };
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![key, &cursor, &size];
    if let Some(st) = &status {
        params.push(st);
    }
    let rows = c
        .query(&page_sql(keyed, status.is_some()), &params)
        .await
        .map_err(db)?
        .iter()
        .map(|r| delivery_row(r).map(|d| (d.seq, d)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Page::from_rows(rows, limit))
}

/// The seq of one of the account's subscriptions.
pub(super) async fn subscription_seq(
    c: &impl GenericClient,
    account_id: &str,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    c.query_opt(
        "SELECT seq FROM subscriptions WHERE id = $1 AND account_id = $2",
        &[&id, &account_id],
    )
    .await
    .map_err(db)?
    .map(|r| int_req(&r, 0, "seq"))
    .transpose()
}

/// The seq of one of the account's events.
pub(super) async fn event_seq(
    c: &impl GenericClient,
    account_id: &str,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    c.query_opt(
        "SELECT seq FROM events WHERE account_id = $1 AND id = $2",
        &[&account_id, &id],
    )
    .await
    .map_err(db)?
    .map(|r| get::<i64>(&r, 0))
    .transpose()
}

impl PgStore {
    /// Deliveries, newest first; an unknown subscription or event has none.
    pub async fn list_deliveries(
        &self,
        account_id: String,
        filter: DeliveryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Delivery>, StoreError> {
        let client = self.client().await?;
        let (keyed, key) = match &filter.scope {
            DeliveryScope::Account => (Keyed::Account, Some(Key::Text(account_id))),
            DeliveryScope::Subscription(id) => (
                Keyed::Subscription,
                subscription_seq(&client, &account_id, id)
                    .await?
                    .map(Key::Seq),
            ),
            DeliveryScope::Event(id) => (
                Keyed::Event,
                event_seq(&client, &account_id, id).await?.map(Key::Seq),
            ),
        };
        match key {
            Some(key) => page(&client, keyed, key, filter.status, limit, cursor).await,
            None => Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            }),
        }
    }
}
