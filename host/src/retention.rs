//! The retention job (`--retention`): settled deliveries, their attempts and events nothing
//! needs any more are deleted once older than the retention, so the database stops growing
//! with history.
//!
//! It runs every quarter of the retention (at most hourly), deleting
//! [`BATCH`] rows per transaction until nothing is left (`Store::purge_older_than`). On a
//! shared database only one node runs it at a time; the others skip their turn.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::metrics::{Metrics, RetentionLabels};
use crate::state::AppState;
use crate::store::Purged;

/// Rows deleted per transaction: small enough that the SQLite writer or a PostgreSQL
/// connection is never held long, large enough that a month of history goes in minutes.
pub const BATCH: usize = 1_000;

/// The longest between two runs.
const MAX_EVERY: Duration = Duration::from_secs(3600);

/// Runs the job until `stop` (nothing when retention is off).
pub async fn run(state: AppState, stop: CancellationToken) {
    let Some(retention) = state.config.retention.0 else {
        return;
    };
    let every = (retention / 4).clamp(Duration::from_millis(10), MAX_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let cutoff = now_ms().saturating_sub(retention.as_millis() as i64);
        let run = state.store.purge_older_than(cutoff, BATCH);
        // Stopping mid-run is safe: each batch is its own transaction, and a dropped run's
        // advisory lock (PostgreSQL) goes with its connection when the store closes.
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = run => result,
        };
        match result {
            Ok(Some(purged)) => record(&state.metrics, purged),
            Ok(None) => tracing::debug!("retention: another node is running it"),
            Err(e) => tracing::warn!(error = %e, "retention: deleting old records"),
        }
    }
}

/// Counts what a run deleted in `/metrics`, and logs it when it deleted anything.
fn record(metrics: &Metrics, purged: Purged) {
    for (table, rows) in [
        ("deliveries", purged.deliveries),
        ("attempts", purged.attempts),
        ("events", purged.events),
    ] {
        metrics
            .retention_deleted
            .get_or_create(&RetentionLabels {
                table: table.to_string(),
            })
            .inc_by(rows);
    }
    if purged.deliveries + purged.events > 0 {
        tracing::info!(
            deliveries = purged.deliveries,
            attempts = purged.attempts,
            events = purged.events,
            batches = purged.batches,
            "retention: old records deleted"
        );
    }
}
