//! Versioned schema migrations for PostgreSQL: plain `.sql` files applied in order, each
//! recorded in `wasmhook_migrations`. Nodes starting together take turns (an advisory lock
//! held by the migrating transaction), and DDL is transactional, so a failed migration leaves
//! the schema as it was.

use super::db;
use crate::store::StoreError;

/// The migrations, in order; a migration's version is its position, counting from 1.
const MIGRATIONS: &[(&str, &str)] = &[
    ("initial", include_str!("migrations/0001_initial.sql")),
    (
        "config_changes",
        include_str!("migrations/0002_config_changes.sql"),
    ),
    (
        "retention_indexes",
        include_str!("migrations/0003_retention_indexes.sql"),
    ),
];

/// The advisory lock migrating nodes take turns on (any constant unique to wasmhook).
const MIGRATION_LOCK: i64 = 0x7761_736d_686f_6f6b; // "wasmhook"

/// Applies the pending migrations in one transaction; returns how many were applied. A
/// database migrated by a newer wasmhook is refused (this binary does not know its schema).
pub(super) async fn apply(client: &mut tokio_postgres::Client) -> Result<usize, StoreError> {
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS wasmhook_migrations (
            version     BIGINT PRIMARY KEY,
            name        TEXT NOT NULL,
            applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(db)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM wasmhook_migrations",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::Database(format!(
            "the database's schema is at version {current}, newer than this wasmhook knows \
             ({known}): upgrade wasmhook"
        )));
    }
    let mut applied = 0;
    for (version, (name, sql)) in (1..).zip(MIGRATIONS) {
        if version <= current {
            continue;
        }
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Database(format!("migration {version} ({name}): {}", db(e)))
        })?;
        tx.execute(
            "INSERT INTO wasmhook_migrations (version, name) VALUES ($1, $2)",
            &[&version, name],
        )
        .await
        .map_err(db)?;
        applied += 1;
    }
    tx.commit().await.map_err(db)?;
    Ok(applied)
}
