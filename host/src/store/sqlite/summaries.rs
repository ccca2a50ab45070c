//! Read-side queries for the web console's lists and overview: each list is one paged query on
//! an index (see migration 0005), each summary one query per page, never one per row.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::deliveries::{DELIVERY_COLUMNS, DELIVERY_FROM, delivery_row};
use super::delivery_lists::{Keyed, page};
use super::{OptionalRow, Page, SqliteStore, StoreError};
use crate::model::{Delivery, DeliveryStatus, Event};
use crate::store::{EventSearch, Overview, PluginUse, Target};

/// The event columns, in the order `events::row` reads them.
const EVENT: &str = "seq, id, type, payload, occurred_at, received_at, cause_plugin_id, cause_event_id, cause_depth";

fn subscription_seq(c: &Connection, account_id: &str, id: &str) -> Result<i64, StoreError> {
    super::delivery_lists::subscription_seq(c, account_id, id)?.ok_or(StoreError::NotFound)
}

/// An account's deliveries, most recently changed first: ?1 the account, ?2 changed since, ?3
/// the status or null, ?4 and ?5 the (updated_at, seq) to continue below, ?6 the page size.
fn account_changed_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d INDEXED BY deliveries_account_updated
           JOIN events e ON e.seq = d.event_seq JOIN subscriptions s ON s.seq = d.subscription_seq
         WHERE d.account_id = ?1 AND d.updated_at >= ?2 AND (?3 IS NULL OR d.status = ?3)
           AND (d.updated_at < ?4 OR (d.updated_at = ?4 AND d.seq < ?5))
         ORDER BY d.updated_at DESC, d.seq DESC LIMIT ?6"
    )
}

/// The newest delivery of each of the subscriptions in the JSON array ?2 of account ?1.
fn latest_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM}
         WHERE s.account_id = ?1 AND s.id IN (SELECT value FROM json_each(?2))
           AND d.seq = (SELECT MAX(seq) FROM deliveries WHERE subscription_seq = s.seq)"
    )
}

/// A subscription's (?1) dead letters created since ?2.
const COUNT_FAILED_SINCE: &str = "SELECT COUNT(*) FROM deliveries
     WHERE subscription_seq = ?1 AND status = 'failed' AND created_at >= ?2";

/// An event's (?1) deliveries with their targets.
fn event_targets_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS}, s.url, s.plugin_id, s.transform_plugin_id {DELIVERY_FROM}
         WHERE d.event_seq = ?1 ORDER BY d.seq"
    )
}

/// The events of account ?1 caused by event ?2, oldest first, at most ?3.
fn caused_sql() -> String {
    format!(
        "SELECT {EVENT} FROM events WHERE account_id = ?1 AND cause_event_id = ?2
         ORDER BY seq LIMIT ?3"
    )
}

/// Account ?1's pending deliveries.
const QUEUE_DEPTH: &str =
    "SELECT COUNT(*) FROM deliveries d JOIN subscriptions s ON s.seq = d.subscription_seq
     WHERE s.account_id = ?1 AND d.status = 'pending'";
/// Account ?1's deliveries changed since ?2, by status (from the index alone).
const CHANGED_BY_STATUS: &str =
    "SELECT status, COUNT(*) FROM deliveries WHERE account_id = ?1 AND updated_at >= ?2
     GROUP BY status ORDER BY status";
/// Account ?1's subscriptions whose deliveries all fail.
const FAILING: &str = "SELECT id, COALESCE(url, plugin_id, ''), failing_since FROM subscriptions
     WHERE account_id = ?1 AND failing_since IS NOT NULL AND status != 'disabled'
     ORDER BY failing_since LIMIT 50";
/// Account ?1's plugins with error lines since ?2, most first.
const PLUGIN_ERRORS: &str = "SELECT p.id, p.name, COUNT(l.seq) FROM plugins p
     JOIN plugin_logs l ON l.plugin_id = p.id AND l.level = 'error' AND l.at >= ?2
     WHERE p.account_id = ?1 GROUP BY p.id ORDER BY COUNT(l.seq) DESC LIMIT 50";
/// Account ?1's subscriptions that use a plugin.
const PLUGIN_SUBSCRIPTIONS: &str = "SELECT id, plugin_id, transform_plugin_id FROM subscriptions
     WHERE account_id = ?1 AND (plugin_id IS NOT NULL OR transform_plugin_id IS NOT NULL)";
/// Error lines since ?2 of each plugin of account ?1.
const PLUGIN_ERROR_COUNTS: &str = "SELECT p.id, COUNT(l.seq) FROM plugins p
     JOIN plugin_logs l ON l.plugin_id = p.id AND l.level = 'error' AND l.at >= ?2
     WHERE p.account_id = ?1 GROUP BY p.id";

/// The query of one page of `search`. Parameters: ?1 the account, ?2 the cursor, ?3 to ?7 the
/// filters (each clause only when its filter is given), ?8 the page size.
fn search_sql(search: &EventSearch) -> String {
    // Each filter is a fixed clause; the planner picks the index of the most selective one
    // (event id, conversation, type), and walks it newest first.
    let mut filters = String::new();
    if search.event_id.is_some() {
        filters.push_str(" AND id = ?3");
    }
    if search.conversation_id.is_some() {
        filters.push_str(" AND CAST(json_extract(payload, '$.conversation_id') AS TEXT) = ?4");
    }
    if search.event_type.is_some() {
        filters.push_str(" AND type = ?5");
    }
    if search.from.is_some() {
        filters.push_str(" AND received_at >= ?6");
    }
    if search.to.is_some() {
        filters.push_str(" AND received_at < ?7");
    }
    let only_time = (search.from.is_some() || search.to.is_some())
        && search.event_id.is_none()
        && search.conversation_id.is_none()
        && search.event_type.is_none();
    if only_time {
        // A time range alone: the time index holds (account, received_at, seq), so the page's
        // seqs are picked from the index alone (sorting the window's seqs, not its rows), then
        // only the page's rows are read. (Walking the account's events newest first instead
        // would read every event newer than the window.)
        format!(
            "SELECT {EVENT} FROM events WHERE seq IN (
               SELECT seq FROM events INDEXED BY events_account_received
               WHERE account_id = ?1 AND seq < ?2{filters} ORDER BY seq DESC LIMIT ?8)
             ORDER BY seq DESC"
        )
    } else {
        format!(
            "SELECT {EVENT} FROM events WHERE account_id = ?1 AND seq < ?2{filters}
             ORDER BY seq DESC LIMIT ?8"
        )
    }
}

impl SqliteStore {
    /// The account's deliveries, most recently changed first, optionally in one status and
    /// changed since a time; `after` is the (updated_at, seq) of the previous page's last row.
    /// Reads the (account, updated_at, status) index.
    pub async fn account_deliveries(
        &self,
        account_id: String,
        status: Option<DeliveryStatus>,
        since: Option<i64>,
        limit: usize,
        after: Option<(i64, i64)>,
    ) -> Result<(Vec<Delivery>, Option<(i64, i64)>), StoreError> {
        self.read(move |c| {
            let (before_at, before_seq) = after.unwrap_or((i64::MAX, i64::MAX));
            let mut rows = c
                .prepare_cached(&account_changed_sql())?
                .query_map(
                    params![
                        account_id,
                        since.unwrap_or(i64::MIN),
                        status.map(|s| s.as_str()),
                        before_at,
                        before_seq,
                        limit as i64 + 1
                    ],
                    delivery_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            let next = more
                .then(|| rows.last().map(|d| (d.updated_at, d.seq)))
                .flatten();
            Ok((rows, next))
        })
        .await
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
        self.read(move |c| {
            let sub = subscription_seq(c, &account_id, &subscription_id)?;
            page(c, Keyed::Subscription, sub.into(), status, limit, cursor)
        })
        .await
    }

    /// The newest delivery of each of these subscriptions of the account.
    pub async fn latest_deliveries(
        &self,
        account_id: String,
        subscription_ids: Vec<String>,
    ) -> Result<HashMap<String, Delivery>, StoreError> {
        self.read(move |c| {
            let ids = serde_json::to_string(&subscription_ids).expect("strings serialize");
            let rows = c
                .prepare_cached(&latest_sql())?
                .query_map(params![account_id, ids], delivery_row)?
                .map(|d| d.map(|d| (d.subscription_id.clone(), d)))
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// How many of a subscription's deliveries failed (dead letters) created since `since`: what
    /// `recover_deliveries` would requeue.
    pub async fn count_failed_since(
        &self,
        account_id: String,
        subscription_id: String,
        since: i64,
    ) -> Result<i64, StoreError> {
        self.read(move |c| {
            let sub = subscription_seq(c, &account_id, &subscription_id)?;
            Ok(c.prepare_cached(COUNT_FAILED_SINCE)?
                .query_row(params![sub, since], |r| r.get(0))?)
        })
        .await
    }

    /// An event's deliveries, with where each goes.
    pub async fn event_deliveries(
        &self,
        account_id: String,
        event_id: String,
    ) -> Result<Vec<(Delivery, Target)>, StoreError> {
        self.read(move |c| {
            let event_seq: i64 = c
                .prepare_cached("SELECT seq FROM events WHERE account_id = ?1 AND id = ?2")?
                .query_row(params![account_id, event_id], |r| r.get(0))
                .found()?;
            let rows = c
                .prepare_cached(&event_targets_sql())?
                .query_map([event_seq], |r| {
                    Ok((
                        delivery_row(r)?,
                        Target {
                            url: r.get(10)?,
                            plugin_id: r.get(11)?,
                            transform_plugin_id: r.get(12)?,
                        },
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// The account's events matching `search`, newest first.
    pub async fn search_events(
        &self,
        account_id: String,
        search: EventSearch,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Event>, StoreError> {
        self.read(move |c| {
            let sql = search_sql(&search);
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(
                    params![
                        account_id,
                        cursor.unwrap_or(i64::MAX),
                        search.event_id,
                        search.conversation_id,
                        search.event_type,
                        search.from,
                        search.to,
                        limit as i64 + 1
                    ],
                    |r| super::events::row(r).map(|e| (e.seq, e)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page::from_rows(rows, limit))
        })
        .await
    }

    /// The events a plugin emitted while handling `event_id` (the other end of causation).
    pub async fn caused_events(
        &self,
        account_id: String,
        event_id: String,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.read(move |c| {
            let rows = c
                .prepare_cached(&caused_sql())?
                .query_map(
                    params![account_id, event_id, limit as i64],
                    super::events::row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// The overview of an account at `now`: the last hour's deliveries, plugin errors since
    /// `errors_since`.
    pub async fn overview(
        &self,
        account_id: String,
        now: i64,
        errors_since: i64,
    ) -> Result<Overview, StoreError> {
        self.read(move |c| {
            let queue_depth = c
                .prepare_cached(QUEUE_DEPTH)?
                .query_row([&account_id], |r| r.get(0))?;
            let last_hour = c
                .prepare_cached(CHANGED_BY_STATUS)?
                .query_map(params![account_id, now - 3_600_000], |r| {
                    let status: String = r.get(0)?;
                    Ok((
                        DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
                        r.get(1)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let failing = c
                .prepare_cached(FAILING)?
                .query_map([&account_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let plugin_errors = c
                .prepare_cached(PLUGIN_ERRORS)?
                .query_map(params![account_id, errors_since], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Overview {
                queue_depth,
                last_hour,
                failing,
                plugin_errors,
            })
        })
        .await
    }

    /// For each plugin of the account: the subscriptions using it and its error lines since
    /// `errors_since`.
    pub async fn plugin_uses(
        &self,
        account_id: String,
        errors_since: i64,
    ) -> Result<HashMap<String, PluginUse>, StoreError> {
        self.read(move |c| {
            let mut uses: HashMap<String, PluginUse> = HashMap::new();
            let subs = c
                .prepare_cached(PLUGIN_SUBSCRIPTIONS)?
                .query_map([&account_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            for (id, subscriber, transform) in subs {
                if let Some(p) = subscriber {
                    uses.entry(p).or_default().subscriber_of.push(id.clone());
                }
                if let Some(p) = transform {
                    uses.entry(p).or_default().transform_of.push(id);
                }
            }
            let errors = c
                .prepare_cached(PLUGIN_ERROR_COUNTS)?
                .query_map(params![account_id, errors_since], |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            for (id, n) in errors {
                uses.entry(id).or_default().errors = n;
            }
            Ok(uses)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::delivery_lists::{Keyed, page_sql};
    use super::*;
    use crate::store::{Store, SyncMode};

    /// A list query and what its plan must show.
    struct Listed {
        what: &'static str,
        sql: String,
        /// The index it must read.
        index: &'static str,
        /// Why it may sort (a bounded set: a few pages, one account's subscriptions or
        /// plugins, index entries only), or `None`: it reads its index in the page's order.
        sorts: Option<&'static str>,
    }

    fn listed(what: &'static str, sql: String, index: &'static str) -> Listed {
        Listed {
            what,
            sql,
            index,
            sorts: None,
        }
    }

    fn plan(c: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let n = stmt.parameter_count();
        stmt.query_map(rusqlite::params_from_iter(vec![1; n]), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Issue 12, line 16: with many deliveries stored, every list page stays fast because each
    /// of its queries is a paged read of an index, never a scan of a big table nor a sort of a
    /// whole set (the pages are timed with 100,000 deliveries by `wasmhook-load`'s console
    /// scenario, see BENCHMARKS.md). No query runs per row: the handlers make these calls once
    /// per page.
    #[test]
    fn every_list_query_reads_an_index() {
        let dir = tempfile::tempdir().unwrap();
        drop(
            Store::open(
                dir.path(),
                SyncMode::Normal,
                crate::secrets::Keyring::ephemeral().into(),
            )
            .unwrap(),
        );
        let c = Connection::open(dir.path().join("wasmhook.sqlite3")).unwrap();
        let search = |f: fn(&mut EventSearch)| {
            let mut s = EventSearch::default();
            f(&mut s);
            search_sql(&s)
        };
        let queries = vec![
            listed(
                "a subscription's deliveries",
                page_sql(Keyed::Subscription, false),
                "deliveries_subscription",
            ),
            listed(
                "a subscription's deliveries in one status",
                page_sql(Keyed::Subscription, true),
                "deliveries_subscription_status",
            ),
            listed(
                "an event's deliveries",
                page_sql(Keyed::Event, false),
                "deliveries_event",
            ),
            listed(
                "an event's deliveries in one status",
                page_sql(Keyed::Event, true),
                "deliveries_event",
            ),
            listed(
                "the account's deliveries in one status",
                page_sql(Keyed::Account, true),
                "deliveries_account_status",
            ),
            Listed {
                sorts: Some("merges one page per status"),
                ..listed(
                    "the account's deliveries",
                    page_sql(Keyed::Account, false),
                    "deliveries_account_status",
                )
            },
            Listed {
                sorts: Some("only deliveries changed in the same millisecond, among themselves"),
                ..listed(
                    "the account's deliveries by last change",
                    account_changed_sql(),
                    "deliveries_account_updated",
                )
            },
            listed(
                "the latest delivery of each subscription",
                latest_sql(),
                "deliveries_subscription",
            ),
            listed(
                "failed since (recover's count)",
                COUNT_FAILED_SINCE.into(),
                "deliveries_subscription_status",
            ),
            listed(
                "an event's deliveries with their targets",
                event_targets_sql(),
                "deliveries_event",
            ),
            listed("events caused by an event", caused_sql(), "events_caused"),
            listed("queue depth", QUEUE_DEPTH.into(), "deliveries_subscription"),
            Listed {
                sorts: Some("counts the window's index entries by status"),
                ..listed(
                    "deliveries changed in the last hour",
                    CHANGED_BY_STATUS.into(),
                    "deliveries_account_updated",
                )
            },
            Listed {
                sorts: Some("one account's failing subscriptions"),
                ..listed(
                    "failing subscriptions",
                    FAILING.into(),
                    "subscriptions_account",
                )
            },
            Listed {
                sorts: Some("one account's plugins"),
                ..listed(
                    "plugins with errors",
                    PLUGIN_ERRORS.into(),
                    "plugin_logs_plugin",
                )
            },
            listed(
                "subscriptions using plugins",
                PLUGIN_SUBSCRIPTIONS.into(),
                "subscriptions_account",
            ),
            Listed {
                sorts: Some("groups one account's plugins"),
                ..listed(
                    "error lines per plugin",
                    PLUGIN_ERROR_COUNTS.into(),
                    "plugin_logs_plugin",
                )
            },
            listed("events", search(|_| {}), "events_account"),
            listed(
                "events by type",
                search(|s| s.event_type = Some("t".into())),
                "events_account_type",
            ),
            listed(
                "events by conversation",
                search(|s| s.conversation_id = Some("c".into())),
                "events_conversation",
            ),
            listed(
                "events by id",
                search(|s| s.event_id = Some("e".into())),
                "events_public_id",
            ),
            Listed {
                sorts: Some("sorts the window's seqs from the covering index, then reads a page"),
                ..listed(
                    "events in a time range",
                    search(|s| {
                        s.from = Some(1);
                        s.to = Some(2);
                    }),
                    "COVERING INDEX events_account_received",
                )
            },
            listed(
                "a conversation in a time range",
                search(|s| {
                    s.conversation_id = Some("c".into());
                    s.from = Some(1);
                }),
                "events_conversation",
            ),
            listed(
                "events of a type in a time range",
                search(|s| {
                    s.event_type = Some("t".into());
                    s.to = Some(2);
                }),
                "events_account_type",
            ),
            listed(
                "subscriptions",
                super::super::subscriptions::list_sql(),
                "subscriptions_account",
            ),
            Listed {
                sorts: Some("one account's plugins"),
                ..listed(
                    "plugins",
                    super::super::plugins::list_sql(),
                    "plugins_account",
                )
            },
            listed(
                "a plugin's log",
                super::super::plugins::LOGS.into(),
                "plugin_logs_plugin",
            ),
        ];
        const BIG: &[&str] = &[
            "deliveries",
            "d",
            "events",
            "e",
            "attempts",
            "plugin_logs",
            "l",
        ];
        let mut wrong = Vec::new();
        for q in queries {
            let plan = plan(&c, &q.sql);
            let what = q.what;
            if !plan.iter().any(|step| step.contains(q.index)) {
                wrong.push(format!("{what}: does not read {}: {plan:?}", q.index));
            }
            for step in &plan {
                let table = step.strip_prefix("SCAN ").map(|t| t.split(' ').next());
                if table.flatten().is_some_and(|t| BIG.contains(&t)) && !step.contains(" USING ") {
                    wrong.push(format!("{what}: scans a whole table: {plan:?}"));
                }
                if q.sorts.is_none() && step.contains("TEMP B-TREE") {
                    wrong.push(format!(
                        "{what}: sorts instead of reading an index in order: {plan:?}"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
