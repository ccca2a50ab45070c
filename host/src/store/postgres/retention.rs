//! Retention: settled deliveries, their attempts and events nothing needs any more, deleted
//! in bounded batches, by one node at a time.
//!
//! **One node at a time.** A run first takes the session-level advisory lock
//! [`RETENTION_LOCK`] with `pg_try_advisory_lock` on one pooled connection and keeps it for
//! the run; a node that finds it taken skips its run (the node holding it is doing the work).
//! The lock is released at the end of the run, or by the database itself when that
//! connection dies, so a node killed mid-run never blocks the others.
//!
//! **Bounded batches.** Each batch is its own short transaction on that connection, deleting
//! at most `batch` rows of one table; the run yields between batches. Rows are picked
//! `FOR UPDATE SKIP LOCKED`: a delivery another transaction is changing right now (a retry
//! of a dead letter making it pending again) is left for the next run, and the status is
//! checked again once locked, so a pending delivery is never deleted.

use super::{PgStore, db};
use crate::store::{Purged, StoreError};

/// The advisory lock of the retention run (any constant unique to wasmhook's jobs; the
/// migrations use another).
const RETENTION_LOCK: i64 = 0x7768_5f72_6574_6e31; // "wh_retn1"

/// At most `$2` settled deliveries last changed before `$1`, oldest first, and their
/// attempts; returns how many of each were deleted. Read through `deliveries_settled`, which
/// has this very condition and order, so a run that finds nothing reads next to nothing.
const PURGE_DELIVERIES: &str = "WITH doomed AS (
        SELECT seq FROM deliveries
        WHERE status IN ('succeeded', 'failed', 'filtered') AND updated_at < $1
        ORDER BY updated_at, seq LIMIT $2
        FOR UPDATE SKIP LOCKED),
     gone_attempts AS (
        DELETE FROM attempts WHERE delivery_seq IN (SELECT seq FROM doomed) RETURNING 1),
     gone AS (
        DELETE FROM deliveries WHERE seq IN (SELECT seq FROM doomed) RETURNING 1)
     SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM gone_attempts)";

/// At most `$2` events received before `$1` that no delivery (pending or settled) and no
/// message refers to. An event with a pending delivery is never among them, and one with a
/// recent settled delivery waits until that delivery ages out. Read through `events_received`
/// (and `deliveries_event`, `messages_event` for the references).
const PURGE_EVENTS: &str = "WITH doomed AS (
        SELECT e.seq FROM events e
        WHERE e.received_at < $1
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)
          AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.event_seq = e.seq)
        ORDER BY e.received_at, e.seq LIMIT $2
        FOR UPDATE SKIP LOCKED)
     DELETE FROM events WHERE seq IN (SELECT seq FROM doomed)";

impl PgStore {
    /// Deletes what is older than `cutoff` (Unix ms) in batches of at most `batch` rows per
    /// table, until nothing is left to delete. `None` when another node is running it.
    pub async fn purge_older_than(
        &self,
        cutoff: i64,
        batch: usize,
    ) -> Result<Option<Purged>, StoreError> {
        let mut client = self.client().await?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&RETENTION_LOCK])
            .await
            .map_err(db)?
            .get(0);
        if !locked {
            return Ok(None);
        }
        let result = purge(&mut client, cutoff, batch.max(1) as i64).await;
        // The lock belongs to the connection, which goes back to the pool: release it, or,
        // when that fails, close the connection (which releases it too).
        if client
            .execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_LOCK])
            .await
            .is_err()
        {
            drop(deadpool_postgres::Object::take(client));
        }
        result.map(Some)
    }
}

async fn purge(
    client: &mut deadpool_postgres::Object,
    cutoff: i64,
    limit: i64,
) -> Result<Purged, StoreError> {
    let mut purged = Purged::default();
    loop {
        let tx = client.transaction().await.map_err(db)?;
        let row = tx
            .query_one(PURGE_DELIVERIES, &[&cutoff, &limit])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let (deliveries, attempts): (i64, i64) = (row.get(0), row.get(1));
        purged.batches += 1;
        purged.deliveries += deliveries as u64;
        purged.attempts += attempts as u64;
        if deliveries < limit {
            break;
        }
        tokio::task::yield_now().await;
    }
    loop {
        let tx = client.transaction().await.map_err(db)?;
        let events = tx
            .execute(PURGE_EVENTS, &[&cutoff, &limit])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        purged.batches += 1;
        purged.events += events;
        if events < limit as u64 {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::testing;

    /// The plan of the candidates (the `doomed` step) of `sql` with `$1` and `$2` bound, with
    /// sequential and bitmap scans priced out: on an empty test table the planner would pick
    /// them whatever the indexes, so this shows which index the step can read in order.
    async fn plan(store: &PgStore, sql: &str) -> String {
        let mut client = store.client().await.unwrap();
        let tx = client.transaction().await.unwrap();
        tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            .await
            .unwrap();
        let rows = tx
            .query(&format!("EXPLAIN {sql}"), &[&0i64, &1000i64])
            .await
            .unwrap();
        // The CTE's lines are indented deeper than its `  CTE doomed` heading; the steps
        // after it (at the heading's depth or less) delete what it picked.
        let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let start = lines
            .iter()
            .position(|l| l.trim() == "CTE doomed")
            .unwrap_or_else(|| panic!("no CTE doomed in {lines:?}"));
        lines[start + 1..]
            .iter()
            .take_while(|l| l.len() - l.trim_start().len() > 2)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn retention_reads_through_its_indexes() {
        let Some(store) = testing::store().await else {
            return;
        };
        let deliveries = plan(&store, PURGE_DELIVERIES).await;
        assert!(
            deliveries.contains("Index Scan using deliveries_settled"),
            "{deliveries}"
        );
        // The index gives the order: no sort of the candidates.
        assert!(!deliveries.contains("Sort"), "{deliveries}");
        let events = plan(&store, PURGE_EVENTS).await;
        for index in ["events_received", "deliveries_event", "messages_event"] {
            assert!(events.contains(index), "{index}: {events}");
        }
        assert!(!events.contains("Sort"), "{events}");
    }
}
