//! Read-side queries for the web console's lists and overview, on PostgreSQL: the same results
//! and cursors as the SQLite store's, each list one paged query on an index, each summary one
//! query per page, never one per row.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::decode::{get, int_req};
use super::deliveries::{DELIVERY_COLUMNS, DELIVERY_FROM, delivery_row};
use super::delivery_lists::{Key, Keyed, page};
use super::events::{EVENT_COLUMNS, event_row};
use super::{PgStore, db};
use crate::model::{Delivery, DeliveryStatus, Event};
use crate::store::{EventSearch, Overview, PluginUse, Target};
use crate::store::{Page, StoreError};

/// The number of columns of [`DELIVERY_COLUMNS`]: the target's come after them.
fn delivery_width() -> usize {
    DELIVERY_COLUMNS.split(',').count()
}

async fn subscription_seq(
    c: &impl GenericClient,
    account_id: &str,
    id: &str,
) -> Result<i64, StoreError> {
    super::delivery_lists::subscription_seq(c, account_id, id)
        .await?
        .ok_or(StoreError::NotFound)
}

/// An account's deliveries, most recently changed first: $1 the account, $2 changed since, $3
/// the status or null, $4 and $5 the (updated_at, seq) to continue below, $6 the page size.
fn account_changed_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM}
         WHERE d.account_id = $1 AND d.updated_at >= $2 AND ($3::text IS NULL OR d.status = $3)
           AND (d.updated_at, d.seq) < ($4, $5)
         ORDER BY d.updated_at DESC, d.seq DESC LIMIT $6"
    )
}

/// The newest delivery of each of the subscriptions in the array $2 of account $1.
fn latest_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM}
         WHERE s.account_id = $1 AND s.id = ANY($2)
           AND d.seq = (SELECT MAX(seq) FROM deliveries WHERE subscription_seq = s.seq)"
    )
}

/// The query of one page of `search`. Parameters: $1 the account, $2 the cursor, $3 the page
/// size, then one per filter given, in the order below.
fn search_sql(search: &EventSearch) -> String {
    let mut filters = String::new();
    let mut n = 3;
    let mut next = || {
        n += 1;
        n
    };
    if search.event_id.is_some() {
        filters.push_str(&format!(" AND id = ${}", next()));
    }
    if search.conversation_id.is_some() {
        // The expression of the `events_conversation` index, verbatim, so that it applies.
        filters.push_str(&format!(
            " AND (payload::jsonb ->> 'conversation_id') = ${}",
            next()
        ));
    }
    if search.event_type.is_some() {
        filters.push_str(&format!(" AND type = ${}", next()));
    }
    if search.from.is_some() {
        filters.push_str(&format!(" AND received_at >= ${}", next()));
    }
    if search.to.is_some() {
        filters.push_str(&format!(" AND received_at < ${}", next()));
    }
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE account_id = $1 AND seq < $2{filters}
         ORDER BY seq DESC LIMIT $3"
    )
}

impl PgStore {
    /// The account's deliveries, most recently changed first, optionally in one status and
    /// changed since a time; `after` is the (updated_at, seq) of the previous page's last row.
    pub async fn account_deliveries(
        &self,
        account_id: String,
        status: Option<DeliveryStatus>,
        since: Option<i64>,
        limit: usize,
        after: Option<(i64, i64)>,
    ) -> Result<(Vec<Delivery>, Option<(i64, i64)>), StoreError> {
        let client = self.client().await?;
        let (before_at, before_seq) = after.unwrap_or((i64::MAX, i64::MAX));
        let mut rows = client
            .query(
                &account_changed_sql(),
                &[
                    &account_id,
                    &since.unwrap_or(i64::MIN),
                    &status.map(|s| s.as_str()),
                    &before_at,
                    &before_seq,
                    &(limit as i64 + 1),
                ],
            )
            .await
            .map_err(db)?
            .iter()
            .map(delivery_row)
            .collect::<Result<Vec<_>, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = more
            .then(|| rows.last().map(|d| (d.updated_at, d.seq)))
            .flatten();
        Ok((rows, next))
    }

    /// A subscription's deliveries, newest first, optionally in one status.
    pub async fn subscription_deliveries(
        &self,
        account_id: String,
        subscription_id: String,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Delivery>, StoreError> {
        let client = self.client().await?;
        let sub = subscription_seq(&client, &account_id, &subscription_id).await?;
        page(
            &client,
            Keyed::Subscription,
            Key::Seq(sub),
            status,
            limit,
            cursor,
        )
        .await
    }

    /// The newest delivery of each of these subscriptions of the account.
    pub async fn latest_deliveries(
        &self,
        account_id: String,
        subscription_ids: Vec<String>,
    ) -> Result<HashMap<String, Delivery>, StoreError> {
        let client = self.client().await?;
        client
            .query(&latest_sql(), &[&account_id, &subscription_ids])
            .await
            .map_err(db)?
            .iter()
            .map(|r| delivery_row(r).map(|d| (d.subscription_id.clone(), d)))
            .collect()
    }

    /// How many of a subscription's deliveries failed (dead letters) created since `since`: what
    /// `recover_deliveries` would requeue.
    pub async fn count_failed_since(
        &self,
        account_id: String,
        subscription_id: String,
        since: i64,
    ) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let sub = subscription_seq(&client, &account_id, &subscription_id).await?;
        let r = client
            .query_one(
                "SELECT COUNT(*) FROM deliveries
                 WHERE subscription_seq = $1 AND status = 'failed' AND created_at >= $2",
                &[&sub, &since],
            )
            .await
            .map_err(db)?;
        get(&r, 0)
    }

    /// An event's deliveries, with where each goes.
    pub async fn event_deliveries(
        &self,
        account_id: String,
        event_id: String,
    ) -> Result<Vec<(Delivery, Target)>, StoreError> {
        let client = self.client().await?;
        let event_seq = super::delivery_lists::event_seq(&client, &account_id, &event_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let at = delivery_width();
        client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS}, s.url, s.plugin_id, s.transform_plugin_id {DELIVERY_FROM}
                     WHERE d.event_seq = $1 ORDER BY d.seq"
                ),
                &[&event_seq],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                Ok((
                    delivery_row(r)?,
                    Target {
                        url: get(r, at)?,
                        plugin_id: get(r, at + 1)?,
                        transform_plugin_id: get(r, at + 2)?,
                    },
                ))
            })
            .collect()
    }

    /// The account's events matching `search`, newest first.
    pub async fn search_events(
        &self,
        account_id: String,
        search: EventSearch,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Event>, StoreError> {
        let client = self.client().await?;
        let cursor = cursor.unwrap_or(i64::MAX);
        let size = limit as i64 + 1;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&account_id, &cursor, &size];
        for v in [
            &search.event_id,
            &search.conversation_id,
            &search.event_type,
        ]
        .into_iter()
        .flatten()
        {
            params.push(v);
        }
        for v in [&search.from, &search.to].into_iter().flatten() {
            params.push(v);
        }
        let rows = client
            .query(&search_sql(&search), &params)
            .await
            .map_err(db)?
            .iter()
            .map(|r| event_row(r).map(|e| (e.seq, e)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page::from_rows(rows, limit))
    }

    /// The events a plugin emitted while handling `event_id` (the other end of causation).
    pub async fn caused_events(
        &self,
        account_id: String,
        event_id: String,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE account_id = $1 AND cause_event_id = $2
                     ORDER BY seq LIMIT $3"
                ),
                &[&account_id, &event_id, &(limit as i64)],
            )
            .await
            .map_err(db)?
            .iter()
            .map(event_row)
            .collect()
    }

    /// The overview of an account at `now`: the last hour's deliveries, plugin errors since
    /// `errors_since`.
    pub async fn overview(
        &self,
        account_id: String,
        now: i64,
        errors_since: i64,
    ) -> Result<Overview, StoreError> {
        let client = self.client().await?;
        let queue_depth = get(
            &client
                .query_one(
                    "SELECT COUNT(*) FROM deliveries d JOIN subscriptions s ON s.seq = d.subscription_seq
                     WHERE s.account_id = $1 AND d.status = 'pending'",
                    &[&account_id],
                )
                .await
                .map_err(db)?,
            0,
        )?;
        let last_hour = client
            .query(
                "SELECT status, COUNT(*) FROM deliveries WHERE account_id = $1 AND updated_at >= $2
                 GROUP BY status ORDER BY status",
                &[&account_id, &(now - 3_600_000)],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                let status: String = get(r, 0)?;
                Ok((
                    DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
                    get(r, 1)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let failing = client
            .query(
                "SELECT id, COALESCE(url, plugin_id, ''), failing_since FROM subscriptions
                 WHERE account_id = $1 AND failing_since IS NOT NULL AND status != 'disabled'
                 ORDER BY failing_since LIMIT 50",
                &[&account_id],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?, int_req(r, 2, "failing_since")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let plugin_errors = client
            .query(
                "SELECT p.id, p.name, COUNT(l.seq) FROM plugins p
                 JOIN plugin_logs l ON l.plugin_id = p.id AND l.level = 'error' AND l.at >= $2
                 WHERE p.account_id = $1 GROUP BY p.id, p.name ORDER BY COUNT(l.seq) DESC, p.id LIMIT 50",
                &[&account_id, &errors_since],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Overview {
            queue_depth,
            last_hour,
            failing,
            plugin_errors,
        })
    }

    /// For each plugin of the account: the subscriptions using it and its error lines since
    /// `errors_since`.
    pub async fn plugin_uses(
        &self,
        account_id: String,
        errors_since: i64,
    ) -> Result<HashMap<String, PluginUse>, StoreError> {
        let client = self.client().await?;
        let mut uses: HashMap<String, PluginUse> = HashMap::new();
        let subs = client
            .query(
                "SELECT id, plugin_id, transform_plugin_id FROM subscriptions
                 WHERE account_id = $1 AND (plugin_id IS NOT NULL OR transform_plugin_id IS NOT NULL)
                 ORDER BY seq",
                &[&account_id],
            )
            .await
            .map_err(db)?;
        for r in &subs {
            let id: String = get(r, 0)?;
            if let Some(p) = get::<Option<String>>(r, 1)? {
                uses.entry(p).or_default().subscriber_of.push(id.clone());
            }
            if let Some(p) = get::<Option<String>>(r, 2)? {
                uses.entry(p).or_default().transform_of.push(id);
            }
        }
        let errors = client
            .query(
                "SELECT p.id, COUNT(l.seq) FROM plugins p
                 JOIN plugin_logs l ON l.plugin_id = p.id AND l.level = 'error' AND l.at >= $2
                 WHERE p.account_id = $1 GROUP BY p.id",
                &[&account_id, &errors_since],
            )
            .await
            .map_err(db)?;
        for r in &errors {
            uses.entry(get(r, 0)?).or_default().errors = get(r, 1)?;
        }
        Ok(uses)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::events::{EventIn, prepare};
    use crate::model::{Account, Causation};
    use crate::quotas::Quotas;
    use crate::store::{DeliveryFilter, DeliveryScope, NewEvent};

    fn event(account: &str, i: usize, at: i64) -> NewEvent {
        let e = EventIn {
            event_type: if i.is_multiple_of(2) {
                "message:created"
            } else {
                "conversation:updated"
            }
            .into(),
            payload: RawValue::from_string(format!(
                r#"{{"i":{i},"conversation_id":"c{}"}}"#,
                i % 3
            ))
            .unwrap(),
            id: None,
            occurred_at: None,
        };
        let mut e = prepare(account, e, None, 1 << 20, "").unwrap();
        e.received_at = at;
        e
    }

    async fn subscribe(store: &PgStore, account: &str) -> String {
        let req = serde_json::from_value(serde_json::json!({
            "url": "https://example.com/hook", "event_types": ["*"],
        }))
        .unwrap();
        let sub = crate::subscriptions::build(account, req, &Default::default()).unwrap();
        store.create_subscription(sub).await.unwrap().id
    }

    /// Every page of `filter`, `limit` at a time, as (seq, status) in order.
    async fn all_pages(
        store: &PgStore,
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

    /// The same pages, cursors, searches and summaries as the SQLite store's: each delivery
    /// once, newest first across statuses; filters narrow; another account's never show.
    #[tokio::test]
    async fn pages_searches_and_summaries() {
        let Some(nodes) = super::super::subscriptions::tests::nodes(Quotas::UNLIMITED, 1).await
        else {
            return;
        };
        let store = &nodes[0];
        store
            .create_account(
                Account {
                    id: "other".into(),
                    name: "O".into(),
                    created_at: 0,
                },
                crate::auth::new_api_key().1,
            )
            .await
            .unwrap();
        let (a, b) = (
            subscribe(store, "acc_a").await,
            subscribe(store, "acc_a").await,
        );
        subscribe(store, "other").await;
        let events: Vec<String> = store
            .ingest(
                (0..20)
                    .map(|i| event("acc_a", i, 1_000 + i as i64))
                    .collect(),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.event.id)
            .collect();
        store
            .ingest((0..5).map(|i| event("other", i, 1_000)).collect())
            .await
            .unwrap();
        // Statuses interleaved by seq, so that every page merges several of them; change
        // times in a few equal groups, so that pages by last change break ties by seq.
        let c = store.client().await.unwrap();
        c.batch_execute(
            "UPDATE deliveries SET status = CASE seq % 4 WHEN 0 THEN 'succeeded'
               WHEN 1 THEN 'failed' WHEN 2 THEN 'filtered' ELSE 'pending' END,
               updated_at = 10000 + seq % 5
             WHERE account_id = 'acc_a'",
        )
        .await
        .unwrap();

        let all = all_pages(store, "acc_a", DeliveryFilter::default(), 7).await;
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
            let only = all_pages(store, "acc_a", filter, 3).await;
            let expected: Vec<_> = all.iter().filter(|(_, s)| s == status).cloned().collect();
            assert_eq!(only, expected, "{status:?}");
        }
        let of_a = DeliveryFilter {
            scope: DeliveryScope::Subscription(a.clone()),
            status: Some(DeliveryStatus::Failed),
        };
        let failed_a = all_pages(store, "acc_a", of_a, 2).await;
        assert!(!failed_a.is_empty() && failed_a.len() < 20);
        assert!(failed_a.iter().all(|(_, s)| *s == DeliveryStatus::Failed));
        let of_event = DeliveryFilter {
            scope: DeliveryScope::Event(events[3].clone()),
            status: None,
        };
        assert_eq!(all_pages(store, "acc_a", of_event, 1).await.len(), 2);
        for scope in [
            DeliveryScope::Event(events[0].clone()),
            DeliveryScope::Subscription("sub_missing".into()),
        ] {
            let filter = DeliveryFilter {
                scope,
                status: None,
            };
            assert!(all_pages(store, "other", filter, 5).await.is_empty());
        }
        assert_eq!(
            all_pages(store, "other", DeliveryFilter::default(), 5)
                .await
                .len(),
            5
        );
        // A subscription's pages are the same whichever call lists them.
        let mut by_sub = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .subscription_deliveries("acc_a".into(), b.clone(), None, 3, cursor)
                .await
                .unwrap();
            by_sub.extend(page.items.iter().map(|d| d.seq));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(by_sub.len(), 20);
        assert!(matches!(
            store
                .subscription_deliveries("other".into(), b.clone(), None, 3, None)
                .await,
            Err(StoreError::NotFound)
        ));

        // By last change: (updated_at, seq) descending, the pair as the cursor.
        let mut changed = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = store
                .account_deliveries("acc_a".into(), None, None, 3, after)
                .await
                .unwrap();
            changed.extend(page.iter().map(|d| (d.updated_at, d.seq)));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let mut expected: Vec<_> = all
            .iter()
            .map(|(seq, _)| (10_000 + seq % 5, *seq))
            .collect();
        expected.sort_unstable_by(|x, y| y.cmp(x));
        assert_eq!(changed, expected);
        let (recent_failed, _) = store
            .account_deliveries(
                "acc_a".into(),
                Some(DeliveryStatus::Failed),
                Some(10_003),
                100,
                None,
            )
            .await
            .unwrap();
        assert!(!recent_failed.is_empty());
        assert!(
            recent_failed
                .iter()
                .all(|d| d.status == DeliveryStatus::Failed && d.updated_at >= 10_003)
        );

        // The newest delivery of each subscription; an event's deliveries with their targets.
        let latest = store
            .latest_deliveries("acc_a".into(), vec![a.clone(), b.clone(), "sub_x".into()])
            .await
            .unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[&a].event_id, events[19]);
        let targets = store
            .event_deliveries("acc_a".into(), events[2].clone())
            .await
            .unwrap();
        assert_eq!(targets.len(), 2);
        assert!(targets.iter().all(|(d, t)| d.event_id == events[2]
            && t.url.as_deref() == Some("https://example.com/hook")
            && t.plugin_id.is_none()));
        assert!(matches!(
            store
                .event_deliveries("other".into(), events[2].clone())
                .await,
            Err(StoreError::NotFound)
        ));
        let failed_of_a = all
            .iter()
            .filter(|(_, s)| *s == DeliveryStatus::Failed)
            .count() as i64;
        let counted = store
            .count_failed_since("acc_a".into(), a.clone(), 0)
            .await
            .unwrap()
            + store
                .count_failed_since("acc_a".into(), b.clone(), 0)
                .await
                .unwrap();
        assert_eq!(counted, failed_of_a);

        // Searches: pages of 3, newest first, each filter and their combinations.
        let search = |s: EventSearch| async move {
            let (mut out, mut cursor) = (Vec::new(), None);
            loop {
                let page = store
                    .search_events("acc_a".into(), s.clone(), 3, cursor)
                    .await
                    .unwrap();
                out.extend(page.items.iter().map(|e| e.id.clone()));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return out,
                }
            }
        };
        let newest_first = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
            (0..20)
                .rev()
                .filter(|i| keep(*i))
                .map(|i| events[i].clone())
                .collect()
        };
        assert_eq!(
            search(EventSearch::default()).await,
            newest_first(&|_| true)
        );
        let typed = EventSearch {
            event_type: Some("message:created".into()),
            ..Default::default()
        };
        assert_eq!(search(typed).await, newest_first(&|i| i % 2 == 0));
        let conversation = EventSearch {
            conversation_id: Some("c1".into()),
            from: Some(1_005),
            ..Default::default()
        };
        assert_eq!(
            search(conversation).await,
            newest_first(&|i| i % 3 == 1 && i >= 5)
        );
        let window = EventSearch {
            from: Some(1_004),
            to: Some(1_010),
            ..Default::default()
        };
        assert_eq!(
            search(window).await,
            newest_first(&|i| (4..10).contains(&i))
        );
        let by_id = EventSearch {
            event_id: Some(events[7].clone()),
            event_type: Some("conversation:updated".into()),
            ..Default::default()
        };
        assert_eq!(search(by_id).await, [events[7].clone()]);

        // Caused events, oldest first.
        let mut caused = event("acc_a", 100, 2_000);
        caused.causation = Some(Causation {
            plugin_id: "plg_x".into(),
            event_id: events[0].clone(),
            depth: 1,
        });
        let caused = store.ingest(vec![caused]).await.unwrap()[0]
            .event
            .id
            .clone();
        let found = store
            .caused_events("acc_a".into(), events[0].clone(), 10)
            .await
            .unwrap();
        assert_eq!(
            found.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            [caused]
        );

        // The overview and the plugins' uses.
        let pending_now: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM deliveries WHERE account_id = 'acc_a' AND status = 'pending'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        c.execute(
            "UPDATE subscriptions SET failing_since = 500 WHERE id = $1",
            &[&a],
        )
        .await
        .unwrap();
        let mut p = crate::model::Plugin {
            id: "plg_err".into(),
            account_id: "acc_a".into(),
            name: "errs".into(),
            config: Default::default(),
            secret_keys: Default::default(),
            allowed_hosts: vec![],
            limits: Default::default(),
            log_level: crate::model::LogLevel::Info,
            instances: Default::default(),
            version: 1,
            latest_version: 1,
            status: crate::model::VersionStatus::Ready,
            failure: None,
            created_at: 0,
            updated_at: 0,
        };
        let v = crate::model::PluginVersion {
            version: 1,
            sha256: String::new(),
            size_bytes: 1,
            wasm_path: String::new(),
            cwasm_path: String::new(),
            engine_hash: String::new(),
            created_at: 0,
            status: crate::model::VersionStatus::Ready,
            failure: None,
        };
        store.create_plugin(p.clone(), v.clone()).await.unwrap();
        p.id = "plg_quiet".into();
        store.create_plugin(p, v).await.unwrap();
        let line = |at: i64, level: &str| crate::model::PluginLogLine {
            at,
            level: level.into(),
            event_id: None,
            message: "m".into(),
        };
        store
            .append_plugin_logs(vec![(
                "plg_err".into(),
                vec![
                    line(100, "error"),
                    line(5_000, "error"),
                    line(5_001, "error"),
                    line(5_002, "info"),
                ],
            )])
            .await
            .unwrap();
        let req = serde_json::from_value(serde_json::json!({
            "plugin_id": "plg_err", "event_types": ["*"],
        }))
        .unwrap();
        let plugin_sub = crate::subscriptions::build("acc_a", req, &Default::default()).unwrap();
        let plugin_sub = store.create_subscription(plugin_sub).await.unwrap().id;
        let overview = store
            .overview("acc_a".into(), 10_000 + 3_600_000, 1_000)
            .await
            .unwrap();
        assert_eq!(overview.queue_depth, pending_now);
        let total: i64 = overview.last_hour.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 40, "{:?}", overview.last_hour);
        let statuses: Vec<&str> = overview.last_hour.iter().map(|(s, _)| s.as_str()).collect();
        let mut sorted = statuses.clone();
        sorted.sort_unstable();
        assert_eq!(statuses, sorted, "by status");
        assert_eq!(
            overview.failing,
            [(a.clone(), "https://example.com/hook".to_string(), 500)]
        );
        assert_eq!(
            overview.plugin_errors,
            [("plg_err".to_string(), "errs".to_string(), 2)]
        );
        let uses = store.plugin_uses("acc_a".into(), 1_000).await.unwrap();
        assert_eq!(uses["plg_err"].subscriber_of, [plugin_sub]);
        assert_eq!(uses["plg_err"].errors, 2);
        assert!(!uses.contains_key("plg_quiet"));
    }
}
