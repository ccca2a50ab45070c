//! Retention: settled deliveries, their attempts and events nothing needs any more, deleted
//! in bounded batches.
//!
//! Each batch is one op of the single writer, like every write, so a run never holds the
//! writer for more than one batch: writes queued meanwhile go between two batches.

use rusqlite::params;

use super::{SqliteStore, StoreError};
use crate::store::Purged;

/// The oldest settled deliveries last changed before `?1`, at most `?2` of them, read through
/// `deliveries_settled` (this very condition, in this order): a run reads one batch's rows,
/// or next to nothing when nothing is old enough. The order is total, so the two statements
/// of a batch pick the same deliveries.
const SETTLED: &str = "SELECT seq FROM deliveries
     WHERE status IN ('succeeded', 'failed', 'filtered') AND updated_at < ?1
     ORDER BY updated_at, seq LIMIT ?2";

/// Events received before `?1` that no delivery (pending or settled) and no message refers
/// to, at most `?2` of them. An event with a pending delivery is never among them, and one
/// with a recent settled delivery waits until that delivery ages out. Read through
/// `events_received` (and `deliveries_event`, `messages_event` for the references).
const UNNEEDED_EVENTS: &str = "DELETE FROM events WHERE seq IN (
     SELECT e.seq FROM events e
     WHERE e.received_at < ?1
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)
       AND e.seq NOT IN (SELECT event_seq FROM messages)
     ORDER BY e.received_at, e.seq LIMIT ?2)";

impl SqliteStore {
    /// Deletes what is older than `cutoff` (Unix ms) in batches of at most `batch` rows per
    /// table, until nothing is left to delete.
    pub async fn purge_older_than(
        &self,
        cutoff: i64,
        batch: usize,
    ) -> Result<Option<Purged>, StoreError> {
        let limit = batch.max(1) as i64;
        let mut purged = Purged::default();
        loop {
            let (deliveries, attempts) = self
                .write(move |tx| {
                    let attempts = tx
                        .prepare_cached(&format!(
                            "DELETE FROM attempts WHERE delivery_seq IN ({SETTLED})"
                        ))?
                        .execute(params![cutoff, limit])?;
                    let deliveries = tx
                        .prepare_cached(&format!(
                            "DELETE FROM deliveries WHERE seq IN ({SETTLED})"
                        ))?
                        .execute(params![cutoff, limit])?;
                    Ok((deliveries as u64, attempts as u64))
                })
                .await?;
            purged.batches += 1;
            purged.deliveries += deliveries;
            purged.attempts += attempts;
            if deliveries < limit as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        loop {
            let events = self
                .write(move |tx| {
                    Ok(tx
                        .prepare_cached(UNNEEDED_EVENTS)?
                        .execute(params![cutoff, limit])? as u64)
                })
                .await?;
            purged.batches += 1;
            purged.events += events;
            if events < limit as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(Some(purged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan of `sql` (`?1`, `?2` bound) on the migrated schema, one step a line.
    fn plan(sql: &str) -> String {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        super::super::migrations::migrations()
            .to_latest(&mut c)
            .unwrap();
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps = stmt
            .query_map(params![0i64, 1000i64], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        steps.join("\n")
    }

    #[test]
    fn retention_reads_through_its_indexes() {
        let settled = plan(SETTLED);
        assert!(
            settled.contains("USING INDEX deliveries_settled"),
            "{settled}"
        );
        // The index gives the order: no sort of the candidates.
        assert!(!settled.contains("TEMP B-TREE"), "{settled}");
        let events = plan(UNNEEDED_EVENTS);
        assert!(events.contains("INDEX events_received"), "{events}");
        assert!(events.contains("messages_event"), "{events}");
        assert!(!events.contains("TEMP B-TREE FOR ORDER BY"), "{events}");
    }
}
