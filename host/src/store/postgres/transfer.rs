//! Export and import of a whole installation on PostgreSQL (see `store::transfer` for what is
//! carried). The export reads one snapshot (a read-only `REPEATABLE READ` transaction),
//! streaming each table's rows; the import is one transaction, committed only once its input
//! is complete, after which every identity sequence moves past the imported `seq`s. Its
//! inserts go out in pipelined batches (see `Batch`).

use std::error::Error;

use bytes::BytesMut;
use deadpool_postgres::Transaction;
use futures_util::future::join_all;
use futures_util::{StreamExt, pin_mut};
use tokio::sync::mpsc;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{IsolationLevel, Statement};

use super::decode::get;
use super::{PgStore, db};
use crate::store::StoreError;
use crate::store::transfer::{
    Cell, ComponentPaths, ImportError, ImportItem, Kind, Row, TABLES, event_types, open_row,
    seal_row, select_list,
};

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(v) => v.to_sql(ty, out),
            Cell::Text(t) => t.to_sql(ty, out),
            Cell::Bytes(b) => b.to_sql(ty, out),
            Cell::Bool(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each variant checks the column's type itself when it is written.
        true
    }

    to_sql_checked!();
}

fn cell(r: &tokio_postgres::Row, i: usize, kind: Kind) -> Result<Cell, StoreError> {
    Ok(match kind {
        Kind::Int => get::<Option<i64>>(r, i)?.map_or(Cell::Null, Cell::Int),
        Kind::Text => get::<Option<String>>(r, i)?.map_or(Cell::Null, Cell::Text),
        Kind::Bytes => get::<Option<Vec<u8>>>(r, i)?.map_or(Cell::Null, Cell::Bytes),
        Kind::Bool => get::<Option<bool>>(r, i)?.map_or(Cell::Null, Cell::Bool),
    })
}

/// Transfers read and write far more than a request: no statement or idle limit of the pool's
/// connections applies to them (the transaction ends with its connection if wasmhook dies).
const NO_TIMEOUTS: &str =
    "SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0";

/// Moves a table's identity sequence past its rows.
fn reset_sequence(table: &str) -> String {
    format!(
        "SELECT setval(pg_get_serial_sequence('{table}', 'seq'),
            COALESCE((SELECT MAX(seq) FROM {table}), 0) + 1, false)"
    )
}

impl PgStore {
    /// Sends every carried row (secrets opened) from one snapshot, table by table.
    pub async fn export(&self, out: mpsc::Sender<Row>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        tx.batch_execute(NO_TIMEOUTS).await.map_err(db)?;
        for t in TABLES {
            let sql = format!(
                "SELECT {} FROM {} ORDER BY {}",
                select_list(t, |_| None),
                t.name,
                t.order_by
            );
            let rows = tx
                .query_raw(&sql, std::iter::empty::<&(dyn ToSql + Sync)>())
                .await
                .map_err(db)?;
            pin_mut!(rows);
            while let Some(r) = rows.next().await {
                let r = r.map_err(db)?;
                let cells = t
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| cell(&r, i, c.kind))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut row = Row { table: t, cells };
                open_row(&self.keys, &mut row)?;
                if out.send(row).await.is_err() {
                    // The reader went away: it reports why.
                    return Err(StoreError::Closed);
                }
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    /// The schema's version: the newest migration applied.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM wasmhook_migrations",
                &[],
            )
            .await
            .map_err(db)?;
        get(&row, 0)
    }

    /// Writes every row of `input` (secrets sealed with this store's keys) in one
    /// transaction, committed only once `input` says [`ImportItem::End`]; refuses a database
    /// that has data. `paths` names the files a version's component was written to.
    pub async fn import(
        &self,
        mut input: mpsc::Receiver<ImportItem>,
        paths: ComponentPaths,
    ) -> Result<(), ImportError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute(NO_TIMEOUTS).await.map_err(db)?;
        for t in TABLES {
            // Taken before looking, so two imports into one database cannot both find it empty.
            tx.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", t.name))
                .await
                .map_err(db)?;
            let any: bool = tx
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {})", t.name), &[])
                .await
                .map_err(db)?
                .get(0);
            if any {
                return Err(ImportError::NotEmpty(t.name));
            }
        }
        let mut batch = Batch::default();
        loop {
            match input.recv().await {
                Some(ImportItem::Row(line, row)) => {
                    let table = row.table.name;
                    let statements = prepare(&tx, &self.keys, row, paths.as_ref())
                        .await
                        .map_err(|source| ImportError::Row {
                            line,
                            table,
                            source,
                        })?;
                    if batch.push(line, table, statements) {
                        batch.send(&tx).await?;
                    }
                }
                Some(ImportItem::End) => {
                    batch.send(&tx).await?;
                    break;
                }
                None => return Err(ImportError::Incomplete),
            }
        }
        for t in TABLES.iter().filter(|t| t.has_seq) {
            tx.query_one(&reset_sequence(t.name), &[])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }
}

/// Rows whose statements go to the database together: tokio-postgres sends the requests of
/// futures polled together without waiting for each answer (pipelining), so an import costs
/// a round trip per batch rather than per row. A batch is bounded in rows and in bytes (plugin
/// components are large).
#[derive(Default)]
struct Batch {
    /// Each row's line, table and statements.
    rows: Vec<(u64, &'static str, Statements)>,
    bytes: usize,
}

/// A row's statements with their parameters, in the order they run.
type Statements = Vec<(Statement, Vec<Cell>)>;

const BATCH_ROWS: usize = 256;
const BATCH_BYTES: usize = 4 << 20;

impl Batch {
    /// Adds a row's statements; true when the batch is full.
    fn push(&mut self, line: u64, table: &'static str, statements: Statements) -> bool {
        self.bytes += statements
            .iter()
            .flat_map(|(_, values)| values)
            .map(|v| match v {
                Cell::Text(t) => t.len(),
                Cell::Bytes(b) => b.len(),
                _ => 8,
            })
            .sum::<usize>();
        self.rows.push((line, table, statements));
        self.rows.len() >= BATCH_ROWS || self.bytes >= BATCH_BYTES
    }

    /// Sends every statement of the batch, in order; the first that fails names its row (the
    /// ones after it fail only because the transaction is aborted).
    async fn send(&mut self, tx: &Transaction<'_>) -> Result<(), ImportError> {
        let sends = self.rows.iter().flat_map(|(line, table, statements)| {
            statements.iter().map(move |(stmt, values)| async move {
                let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
                tx.execute(stmt, &params)
                    .await
                    .map_err(|e| ImportError::Row {
                        line: *line,
                        table,
                        source: db(e),
                    })
            })
        });
        let results = join_all(sends).await;
        self.rows.clear();
        self.bytes = 0;
        results.into_iter().try_for_each(|r| r.map(|_| ()))
    }
}

/// A row's statements (its insert, a subscription's event types), its secrets sealed; a
/// version's row also names the component's files in the importing node's data dir and
/// keeps its bytes, which every node compiles from.
async fn prepare(
    tx: &Transaction<'_>,
    keys: &crate::secrets::Keyring,
    mut row: Row,
    paths: &(dyn Fn(&str, i64) -> String + Send + Sync),
) -> Result<Statements, StoreError> {
    let t = row.table;
    seal_row(keys, &mut row)?;
    let mut names: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
    let mut values: Vec<Cell> = row.cells.clone();
    if t.name == "plugin_versions" {
        let wasm = paths(
            row.text("plugin_id").unwrap_or_default(),
            row.int("version").unwrap_or_default(),
        );
        // The target compiles: no artifact yet, and an engine hash no engine has.
        names.extend(["wasm_path", "cwasm_path", "engine_hash"]);
        values.extend([
            Cell::Text(wasm),
            Cell::Text(String::new()),
            Cell::Text(String::new()),
        ]);
    }
    let placeholders = (1..=names.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({placeholders})",
        t.name,
        names.join(", ")
    );
    let mut statements = vec![(tx.prepare_cached(&sql).await.map_err(db)?, values)];
    if t.name == "subscriptions" {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO subscription_event_types (account_id, event_type, subscription_seq)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(db)?;
        for event_type in event_types(&row)? {
            let values = vec![
                row.get("account_id").clone(),
                Cell::Text(event_type),
                row.get("seq").clone(),
            ];
            statements.push((stmt.clone(), values));
        }
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::testing;
    use super::*;

    /// Every column of every carried table is in the dump, or known to be the target's own:
    /// a migration that adds a column fails here until the transfer carries it (or says why not).
    #[tokio::test]
    async fn every_column_of_the_schema_is_carried() {
        let Some(store) = testing::store().await else {
            return;
        };
        let c = store.client().await.unwrap();
        for t in TABLES {
            let stored: BTreeSet<String> = c
                .query(
                    "SELECT column_name::text FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1",
                    &[&t.name],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut carried: BTreeSet<String> =
                t.columns.iter().map(|c| c.name.to_string()).collect();
            if t.name == "plugin_versions" {
                // The files of the importing node and its engine's hash.
                carried.extend(["wasm_path", "cwasm_path", "engine_hash"].map(String::from));
            }
            assert_eq!(stored, carried, "{}", t.name);
        }
    }
}
