//! Pages of deliveries, newest first: an account's, a subscription's or an event's, optionally
//! in one status. Each page is one query that reads its index in order and stops after the page
//! (no sort of the whole set, no query per row); `tests::every_page_reads_an_index` holds them
//! to it.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use super::deliveries::{DELIVERY_COLUMNS, DELIVERY_FROM, delivery_row};
use super::{Page, SqliteStore, StoreError};
use crate::model::{Delivery, DeliveryStatus};
use crate::store::{DeliveryFilter, DeliveryScope};

/// A scope resolved to the key its index starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyed {
    /// `deliveries_account_status (account_id, status, seq)`.
    Account,
    /// `deliveries_subscription (subscription_seq, seq)` and
    /// `deliveries_subscription_status (subscription_seq, status, seq)`.
    Subscription,
    /// `deliveries_event (event_seq)`, whose entries are in `seq` order within an event.
    Event,
}

/// The query of one page. Parameters: ?1 the scope's key (account id, subscription seq or event
/// seq), ?2 the cursor (pages continue below this `seq`), ?3 the page size, and ?4 the status
/// when `in_status`.
pub(super) fn page_sql(keyed: Keyed, in_status: bool) -> String {
    let status = if in_status { " AND d.status = ?4" } else { "" };
    match keyed {
        Keyed::Subscription => format!(
            "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM}
             WHERE d.subscription_seq = ?1{status} AND d.seq < ?2 ORDER BY d.seq DESC LIMIT ?3"
        ),
        Keyed::Event => format!(
            "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM}
             WHERE d.event_seq = ?1{status} AND d.seq < ?2 ORDER BY d.seq DESC LIMIT ?3"
        ),
        Keyed::Account if in_status => format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d INDEXED BY deliveries_account_status
               JOIN events e ON e.seq = d.event_seq JOIN subscriptions s ON s.seq = d.subscription_seq
             WHERE d.account_id = ?1 AND d.status = ?4 AND d.seq < ?2 ORDER BY d.seq DESC LIMIT ?3"
        ),
        // Any status: the newest page of each status from the same index, merged. Each part
        // reads at most a page of index entries, whatever the account holds.
        Keyed::Account => {
            let parts = DeliveryStatus::ALL
                .iter()
                .map(|st| {
                    format!(
                        "SELECT seq FROM (SELECT seq FROM deliveries INDEXED BY deliveries_account_status
                           WHERE account_id = ?1 AND status = '{}' AND seq < ?2 ORDER BY seq DESC LIMIT ?3)",
                        st.as_str()
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            format!(
                "SELECT {DELIVERY_COLUMNS} FROM ({parts}) AS newest
                   JOIN deliveries d ON d.seq = newest.seq JOIN events e ON e.seq = d.event_seq
                   JOIN subscriptions s ON s.seq = d.subscription_seq
                 ORDER BY d.seq DESC LIMIT ?3"
            )
        }
    }
}

/// Reads one page of the deliveries under `key`, newest first, below `cursor`.
pub(super) fn page(
    c: &Connection,
    keyed: Keyed,
    key: Value,
    status: Option<DeliveryStatus>,
    limit: usize,
    cursor: Option<i64>,
) -> Result<Page<Delivery>, StoreError> {
    let mut values = vec![
        key,
        Value::Integer(cursor.unwrap_or(i64::MAX)),
        Value::Integer(limit as i64 + 1),
    ];
    if let Some(st) = status {
        values.push(Value::Text(st.as_str().into()));
    }
    let rows = c
        .prepare_cached(&page_sql(keyed, status.is_some()))?
        .query_map(rusqlite::params_from_iter(values), |r| {
            delivery_row(r).map(|d| (d.seq, d))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(rows, limit))
}

/// The seq of one of the account's subscriptions.
pub(super) fn subscription_seq(
    c: &Connection,
    account_id: &str,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(
        c.prepare_cached("SELECT seq FROM subscriptions WHERE id = ?1 AND account_id = ?2")?
            .query_row(params![id, account_id], |r| r.get(0))
            .optional()?,
    )
}

/// The seq of one of the account's events.
pub(super) fn event_seq(
    c: &Connection,
    account_id: &str,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(
        c.prepare_cached("SELECT seq FROM events WHERE account_id = ?1 AND id = ?2")?
            .query_row(params![account_id, id], |r| r.get(0))
            .optional()?,
    )
}

impl SqliteStore {
    /// Deliveries, newest first; an unknown subscription or event has none.
    pub async fn list_deliveries(
        &self,
        account_id: String,
        filter: DeliveryFilter,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Delivery>, StoreError> {
        self.read(move |c| {
            let (keyed, key) = match &filter.scope {
                DeliveryScope::Account => (Keyed::Account, Some(Value::Text(account_id))),
                DeliveryScope::Subscription(id) => (
                    Keyed::Subscription,
                    subscription_seq(c, &account_id, id)?.map(Value::Integer),
                ),
                DeliveryScope::Event(id) => (
                    Keyed::Event,
                    event_seq(c, &account_id, id)?.map(Value::Integer),
                ),
            };
            match key {
                Some(key) => page(c, keyed, key, filter.status, limit, cursor),
                None => Ok(Page {
                    items: Vec::new(),
                    next_cursor: None,
                }),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::events::{EventIn, prepare};
    use crate::model::Account;
    use crate::store::NewApiKey;
    use crate::store::SyncMode;
    use crate::subscriptions::{CreateSubscription, build};

    async fn store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            dir.path(),
            SyncMode::Normal,
            crate::secrets::Keyring::ephemeral().into(),
        )
        .unwrap();
        for (id, byte) in [("acc", 1), ("other", 2)] {
            let account = Account {
                id: id.into(),
                name: id.into(),
                created_at: 0,
            };
            let key = NewApiKey {
                id: format!("key_{id}"),
                hash: [byte; 32],
                prefix: "whk_".into(),
            };
            store.create_account(account, key).await.unwrap();
        }
        (store, dir)
    }

    async fn subscribe(store: &SqliteStore, account: &str) -> String {
        let req: CreateSubscription = serde_json::from_value(serde_json::json!({
            "url": "https://example.com/hook", "event_types": ["*"],
        }))
        .unwrap();
        let sub = build(account, req, &Default::default()).unwrap();
        store.create_subscription(sub).await.unwrap().id
    }

    async fn ingest(store: &SqliteStore, account: &str, n: usize) -> Vec<String> {
        let events = (0..n)
            .map(|i| {
                let e = EventIn {
                    event_type: "message:created".into(),
                    payload: RawValue::from_string(format!(r#"{{"i":{i}}}"#)).unwrap(),
                    id: None,
                    occurred_at: None,
                };
                prepare(account, e, None, 1 << 20, "").unwrap()
            })
            .collect();
        let stored = store.ingest(events).await.unwrap();
        stored.into_iter().map(|s| s.event.id).collect()
    }

    /// Every page of `filter`, `limit` at a time, as (delivery id, status) in order.
    async fn all_pages(
        store: &SqliteStore,
        account: &str,
        filter: DeliveryFilter,
        limit: usize,
    ) -> Vec<(i64, DeliveryStatus)> {
        let (mut out, mut cursor) = (Vec::new(), None);
        loop {
            let page = store
                .list_deliveries(account.into(), filter.clone(), limit, cursor)
                .await
                .unwrap();
            assert!(page.items.len() <= limit);
            out.extend(page.items.iter().map(|d| (d.seq, d.status)));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    /// The account's deliveries in any status come newest first across statuses, each exactly
    /// once over the pages (the per-status pages are merged); a status, a subscription or an
    /// event narrows them; another account's never show.
    #[tokio::test]
    async fn pages_list_each_delivery_once_newest_first() {
        let (store, _dir) = store().await;
        let (a, b) = (
            subscribe(&store, "acc").await,
            subscribe(&store, "acc").await,
        );
        subscribe(&store, "other").await;
        let events = ingest(&store, "acc", 20).await;
        ingest(&store, "other", 5).await;
        // Statuses interleaved by seq, so that every page merges several of them.
        store
            .write(|tx| {
                tx.execute_batch(
                    "UPDATE deliveries SET status = CASE seq % 4 WHEN 0 THEN 'succeeded'
                       WHEN 1 THEN 'failed' WHEN 2 THEN 'filtered' ELSE 'pending' END
                     WHERE account_id = 'acc'",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let all = all_pages(&store, "acc", DeliveryFilter::default(), 7).await;
        assert_eq!(all.len(), 40, "20 events × 2 subscriptions");
        assert!(
            all.windows(2).all(|w| w[0].0 > w[1].0),
            "newest first: {all:?}"
        );
        for status in DeliveryStatus::ALL {
            let filter = DeliveryFilter {
                status: Some(*status),
                ..Default::default()
            };
            let only = all_pages(&store, "acc", filter, 3).await;
            let expected: Vec<_> = all.iter().filter(|(_, s)| s == status).cloned().collect();
            assert_eq!(only, expected, "{status:?}");
        }
        let of_a = DeliveryFilter {
            scope: DeliveryScope::Subscription(a.clone()),
            status: Some(DeliveryStatus::Failed),
        };
        let failed_a = all_pages(&store, "acc", of_a, 2).await;
        assert!(!failed_a.is_empty() && failed_a.len() < 20);
        assert!(failed_a.iter().all(|(_, s)| *s == DeliveryStatus::Failed));
        let of_event = DeliveryFilter {
            scope: DeliveryScope::Event(events[3].clone()),
            status: None,
        };
        assert_eq!(all_pages(&store, "acc", of_event.clone(), 1).await.len(), 2);
        let page = store
            .list_deliveries("acc".into(), of_event, 10, None)
            .await
            .unwrap();
        let mut subs: Vec<_> = page
            .items
            .iter()
            .map(|d| d.subscription_id.clone())
            .collect();
        subs.sort();
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(subs, both);
        // Another account's subscription or event is as unknown as a missing one.
        for scope in [
            DeliveryScope::Event(events[0].clone()),
            DeliveryScope::Subscription("sub_missing".into()),
        ] {
            let filter = DeliveryFilter {
                scope,
                status: None,
            };
            assert!(all_pages(&store, "other", filter, 5).await.is_empty());
        }
        assert_eq!(
            all_pages(&store, "other", DeliveryFilter::default(), 5)
                .await
                .len(),
            5
        );
        store.close().await;
    }
}
