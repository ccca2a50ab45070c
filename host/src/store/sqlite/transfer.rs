//! Export and import of a whole installation on SQLite (see `store::transfer` for what is
//! carried). The export reads one snapshot (a read transaction on a reader); the import is
//! one writer op, so it commits all or nothing, and streams: rows arrive through a channel
//! while the op runs, never all in memory.

use std::sync::{Arc, Mutex};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, Transaction, params};
use tokio::sync::mpsc;

use super::{SqliteStore, StoreError};
use crate::store::transfer::{
    COMPONENT, Cell, ComponentPaths, ImportError, ImportItem, Kind, Row, TABLES, Table,
    event_types, open_row, seal_row, select_list,
};

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Cell::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Cell::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Cell::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Cell::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Cell::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*v))),
        })
    }
}

/// SQLite's plugins have no `seq` column: their rowid is it. The component is the file named
/// by `wasm_path`, read by the export.
fn rename(t: &Table) -> impl Fn(&str) -> Option<&'static str> + '_ {
    move |c| match (t.name, c) {
        ("plugins", "seq") => Some("rowid"),
        ("plugin_versions", COMPONENT) => Some("wasm_path"),
        _ => None,
    }
}

fn order_by(t: &Table) -> &'static str {
    if t.name == "plugins" {
        "rowid"
    } else {
        t.order_by
    }
}

fn cell(r: &rusqlite::Row<'_>, i: usize, kind: Kind) -> rusqlite::Result<Cell> {
    if let ValueRef::Null = r.get_ref(i)? {
        return Ok(Cell::Null);
    }
    Ok(match kind {
        Kind::Int => Cell::Int(r.get(i)?),
        Kind::Text => Cell::Text(r.get(i)?),
        Kind::Bytes => Cell::Bytes(r.get(i)?),
        Kind::Bool => Cell::Bool(r.get(i)?),
    })
}

/// The uploaded component of a version row read with its `wasm_path` in the component's
/// cell: the file's bytes, or null for a failed version or a file gone.
fn read_component(row: &mut Row) -> Result<(), StoreError> {
    let path = match row.get(COMPONENT) {
        Cell::Text(p) if !p.is_empty() => p.clone(),
        _ => String::new(),
    };
    let failed = row.text("status") == Some("failed");
    let bytes = if path.is_empty() || failed {
        Cell::Null
    } else {
        match std::fs::read(&path) {
            Ok(b) => Cell::Bytes(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Cell::Null,
            Err(e) => return Err(StoreError::Database(format!("{path}: {e}"))),
        }
    };
    let at = row
        .table
        .columns
        .iter()
        .position(|c| c.name == COMPONENT)
        .expect("the component column");
    row.cells[at] = bytes;
    Ok(())
}

fn export_in(
    c: &Connection,
    keys: &crate::secrets::Keyring,
    out: &mpsc::Sender<Row>,
) -> Result<(), StoreError> {
    for t in TABLES {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            select_list(t, rename(t)),
            t.name,
            order_by(t)
        );
        let mut stmt = c.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let cells = t
                .columns
                .iter()
                .enumerate()
                .map(|(i, col)| {
                    // The component's cell holds its path here.
                    let kind = if col.name == COMPONENT && t.name == "plugin_versions" {
                        Kind::Text
                    } else {
                        col.kind
                    };
                    cell(r, i, kind)
                })
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut row = Row { table: t, cells };
            if t.name == "plugin_versions" {
                read_component(&mut row)?;
            }
            open_row(keys, &mut row)?;
            if out.blocking_send(row).is_err() {
                // The reader went away: it reports why.
                return Err(StoreError::Closed);
            }
        }
    }
    Ok(())
}

/// The first carried table with a row, if any.
fn first_nonempty(c: &Connection) -> Result<Option<&'static str>, StoreError> {
    for t in TABLES {
        let any: bool = c.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM {})", t.name),
            [],
            |r| r.get(0),
        )?;
        if any {
            return Ok(Some(t.name));
        }
    }
    Ok(None)
}

/// Inserts a row (sealing its secrets), with `extra` columns the dump does not carry.
fn insert(
    tx: &Transaction<'_>,
    mut row: Row,
    keys: &crate::secrets::Keyring,
    extra: &[(&'static str, Cell)],
) -> Result<(), StoreError> {
    let t = row.table;
    seal_row(keys, &mut row)?;
    // The component lives in the file the caller wrote; `extra` names it (`wasm_path`).
    let mut names = Vec::new();
    let mut values: Vec<&dyn ToSql> = Vec::new();
    for (col, cell) in t.columns.iter().zip(&row.cells) {
        if t.name == "plugin_versions" && col.name == COMPONENT {
            continue;
        }
        names.push(if t.name == "plugins" && col.name == "seq" {
            "rowid"
        } else {
            col.name
        });
        values.push(cell);
    }
    for (name, cell) in extra {
        names.push(name);
        values.push(cell);
    }
    let placeholders = (1..=names.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    tx.prepare_cached(&format!(
        "INSERT INTO {} ({}) VALUES ({placeholders})",
        t.name,
        names.join(", ")
    ))?
    .execute(values.as_slice())?;
    if t.name == "subscriptions" {
        let seq = row.int("seq").unwrap_or_default();
        let account = row.text("account_id").unwrap_or_default().to_string();
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO subscription_event_types (account_id, event_type, subscription_seq) VALUES (?1, ?2, ?3)",
        )?;
        for event_type in event_types(&row)? {
            stmt.execute(params![account, event_type, seq])?;
        }
    }
    Ok(())
}

fn import_in(
    tx: &Transaction<'_>,
    keys: &crate::secrets::Keyring,
    mut input: mpsc::Receiver<ImportItem>,
    paths: &dyn Fn(&str, i64) -> String,
) -> Result<(), ImportError> {
    if let Some(table) = first_nonempty(tx)? {
        return Err(ImportError::NotEmpty(table));
    }
    loop {
        match input.blocking_recv() {
            Some(ImportItem::Row(line, row)) => {
                let table = row.table.name;
                let extra = if table == "plugin_versions" {
                    let wasm = paths(
                        row.text("plugin_id").unwrap_or_default(),
                        row.int("version").unwrap_or_default(),
                    );
                    // The target compiles: no artifact yet, and an engine hash no engine has.
                    vec![
                        ("wasm_path", Cell::Text(wasm)),
                        ("cwasm_path", Cell::Text(String::new())),
                        ("engine_hash", Cell::Text(String::new())),
                    ]
                } else {
                    Vec::new()
                };
                insert(tx, row, keys, &extra).map_err(|source| ImportError::Row {
                    line,
                    table,
                    source,
                })?;
            }
            Some(ImportItem::End) => return Ok(()),
            None => return Err(ImportError::Incomplete),
        }
    }
}

impl SqliteStore {
    /// Sends every carried row (secrets opened) from one snapshot, table by table.
    pub async fn export(&self, out: mpsc::Sender<Row>) -> Result<(), StoreError> {
        let keys = self.keys.clone();
        self.read(move |c| {
            // One read transaction: every table from the same snapshot.
            c.execute_batch("BEGIN")?;
            let result = export_in(c, &keys, &out);
            let _ = c.execute_batch("COMMIT");
            result
        })
        .await
    }

    /// The schema's version: the number of migrations applied.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .await
    }

    /// Writes every row of `input` (secrets sealed with this store's keys) in one
    /// transaction, committed only once `input` says [`ImportItem::End`]; refuses a database
    /// that has data. `paths` names the files a version's component was written to.
    pub async fn import(
        &self,
        input: mpsc::Receiver<ImportItem>,
        paths: ComponentPaths,
    ) -> Result<(), ImportError> {
        let keys = self.keys.clone();
        // The writer op must fail as a whole to roll back; why it failed travels beside it.
        let why = Arc::new(Mutex::new(None));
        let slot = why.clone();
        let written = self
            .write(
                move |tx| match import_in(tx, &keys, input, paths.as_ref()) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        *slot.lock().expect("import error slot") = Some(e);
                        Err(StoreError::Invalid("import failed".into()))
                    }
                },
            )
            .await;
        match (written, why.lock().expect("import error slot").take()) {
            (_, Some(e)) => Err(e),
            (Ok(()), None) => Ok(()),
            (Err(e), None) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every column of every carried table is in the dump, or known to be the target's own:
    /// a migration that adds a column fails here until the transfer carries it (or says why not).
    #[test]
    fn every_column_of_the_schema_is_carried() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrations().to_latest(&mut c).unwrap();
        for t in TABLES {
            let mut stmt = c
                .prepare(&format!("PRAGMA table_info({})", t.name))
                .unwrap();
            let stored: BTreeSet<String> = stmt
                .query_map([], |r| r.get::<_, String>(1))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let mut carried: BTreeSet<String> = t
                .columns
                .iter()
                .map(|col| rename(t)(col.name).unwrap_or(col.name).to_string())
                .collect();
            // The rowid is no column of the table; the component is a file.
            carried.remove("rowid");
            if t.name == "plugin_versions" {
                // The files of this node (the import names them) and its engine's hash.
                carried.remove("wasm_path");
                carried.extend(["wasm_path", "cwasm_path", "engine_hash"].map(String::from));
            }
            assert_eq!(stored, carried, "{}", t.name);
        }
    }
}
